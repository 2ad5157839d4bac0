//! The benchmark's shared region and the private pages the checkpoint
//! benchmarks dirty.
//!
//! Region `shared` (manifest `[[region]]`, capability `shared:map`) holds
//! what must outlive a rollback or be shared the way real tasks share it:
//! the two mutexes and the Arc slots the recovery benchmark holds when it
//! faults, the word its TSC stamp is kept in across the rollback (a
//! rollback restores every register and all *private* memory to the
//! scope's open, so a stamp anywhere else would be erased), and the two
//! locks the lock benchmark compares. Offsets are fixed here for every
//! role that opens it (the statics area is checked against [`LAYOUT`] by
//! `Region::open`).
//!
//! Private pages come from `MAP`, not the heap or `.bss`: a role maps the
//! pages it dirties itself, so no other role's address space (and so no
//! other role's checkpoint open, which walks every page) carries them.

use libtask::abi::layout::PAGE_SIZE;
use libtask::abi::syscall::map_flags;
use libtask::sync::Layout;

/// The region's name in the manifest.
pub const REGION: &str = "shared";

/// Offsets in the statics area.
pub mod at {
    /// `Mutex<u64>`: the first mutex the recovery benchmark holds.
    pub const HELD_A: u32 = 0;
    /// `Mutex<u64>`: the second.
    pub const HELD_B: u32 = 16;
    /// `AtomicU64`: the TSC just before the fault.
    pub const STAMP: u32 = 32;
    /// `AtomicU32`: the bare spinlock.
    pub const SPIN: u32 = 40;
    /// `Mutex<u64>`: the registry mutex of the lock benchmark.
    pub const LOCK: u32 = 48;
}

/// Statics, and four Arc slots of one `u64` (the benchmark holds one).
pub const LAYOUT: Layout = Layout { statics: 64, slot_payload: 8, slots: 4 };

/// `n` fresh private writable pages, mapped and touched (so that they are
/// present before any scope opens). `None` if `MAP` refused.
pub fn pages(n: u64) -> Option<*mut u8> {
    let base = libtask::syscall::map(0, n * PAGE_SIZE, map_flags::WRITE).ok()?;
    for i in 0..n {
        // SAFETY: inside the `n` pages just mapped, writable, used by nothing.
        unsafe { core::ptr::write_volatile(base.add((i * PAGE_SIZE) as usize), 0) };
    }
    Some(base)
}

/// The first byte of page `i` of `base`.
pub fn page(base: *mut u8, i: u64) -> *mut u8 {
    base.wrapping_add((i * PAGE_SIZE) as usize)
}
