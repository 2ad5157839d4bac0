//! The benchmark's shared region and the private pages the checkpoint
//! benchmarks dirty.
//!
//! Region `shared` (manifest `[[region]]`, capability `shared:map`) holds
//! what must outlive a rollback or be shared the way real tasks share it:
//! the two mutexes and the Arc slots the recovery benchmark holds when it
//! faults, the word its TSC stamp is kept in across the rollback (a
//! rollback restores every register and all *private* memory to the
//! scope's open, so a stamp anywhere else would be erased), and the two
//! locks the lock benchmark compares. They are the fields of [`Statics`],
//! in the order (and so at the offsets) they always had; every role opens
//! the region as [`SharedRegion`].
//!
//! Private pages come from `MAP`, not the heap or `.bss`: a role maps the
//! pages it dirties itself, so no other role's address space (and so no
//! other role's checkpoint open, which walks every page) carries them.

use core::sync::atomic::{AtomicU32, AtomicU64};
use libtask::abi::layout::PAGE_SIZE;
use libtask::abi::syscall::MapFlags;
use libtask::sync::{FromBytes, Mutex, Region};

/// The region's name in the manifest.
pub const REGION: &str = "shared";

/// The region's statics.
#[derive(FromBytes)]
#[repr(C)]
pub struct Statics {
    /// The first mutex the recovery benchmark holds.
    pub held_a: Mutex<u64>,
    /// The second.
    pub held_b: Mutex<u64>,
    /// The TSC just before the fault.
    pub stamp: AtomicU64,
    /// The bare spinlock.
    pub spin: AtomicU32,
    _pad: u32,
    /// The registry mutex of the lock benchmark.
    pub lock: Mutex<u64>,
}

/// Statics, and Arc slots of one `u64` (the benchmark holds one).
pub type SharedRegion = Region<Statics, u64>;
/// Arc slots of the region.
pub const SLOTS: u32 = 4;

/// `n` fresh private writable pages, mapped and touched (so that they are
/// present before any scope opens). `None` if `MAP` refused.
pub fn pages(n: u64) -> Option<*mut u8> {
    let base = libtask::syscall::map(0, n * PAGE_SIZE, MapFlags::WRITE).ok()?;
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
