//! Shared regions: a header, a statics area, and fixed-size Arc slots.
//!
//! The kernel maps a region (manifest `[[region]]`, capability
//! `"NAME:map"`) zeroed, at the same address in every task holding it;
//! `REGION` tells a task where (`rax`) and how large (`rdx`). This module
//! gives the bytes a structure every holder — and the fault server — agrees
//! on (`recovery::layout`, which has the word map):
//!
//! * a 64-byte **header**: magic, init state, the layout, statistics;
//! * a **statics area**: objects at offsets the tasks agree on, typically a
//!   [`Mutex`](super::Mutex) over the shared data, and atomics. The region
//!   starts zeroed, so a `Mutex<T>` there is unlocked, clean, and holds the
//!   all-zero `T` before anyone touches it;
//! * **Arc slots** of one size: `{generation, count}` then the payload;
//!   count 0 means free ([`super::arc`]).
//!
//! ## Initialization, race-free
//!
//! Every task calls [`Region::open`] with the layout it expects. The first
//! to `CAS` the state word `0 → 1` writes the header (and runs the
//! optional `init` on the statics), then the magic, then state 2, and wakes
//! the others, who sleep on the state word until it is 2 (bounded:
//! [`INIT_TIMEOUT_MS`]). Everyone then checks the header against the layout
//! it expected and keeps a *private copy* of the validated geometry: what
//! other tasks write into the header later cannot move our slots. A task
//! restarted while it was the initializer finds state 1 with its own id and
//! initializes again.

use super::futex;
use super::{Shared, SyncError};
use abi::syscall::nr;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use recovery::layout::{REGION_HEADER_SIZE, REGION_MAGIC, arc, region as off};

/// How long a task waits for another to initialize a region.
pub const INIT_TIMEOUT_MS: u64 = 2000;

/// What a task expects of a region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Bytes of the statics area.
    pub statics: u32,
    /// Payload bytes per Arc slot (0 with `slots` 0: no Arcs).
    pub slot_payload: u32,
    pub slots: u32,
}

/// The region's statistics words.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub allocs: u32,
    pub frees: u32,
    pub double_frees: u32,
    pub alloc_failures: u32,
}

/// An opened region, with its validated geometry.
#[derive(Clone, Copy, Debug)]
pub struct Region {
    base: u64,
    size: u64,
    statics: u32,
    slot_size: u32,
    slots: u32,
    slots_offset: u32,
}

/// `REGION`: base and size of the region behind capability `cap`.
fn region_call(cap: u64) -> Result<(u64, u64), abi::syscall::Error> {
    let (base, size): (u64, u64);
    // SAFETY: REGION touches no memory; it returns the base in rax and the
    // size in rdx (declared as outputs), clobbers rcx/r11 like every
    // syscall, and preserves every other register.
    unsafe {
        core::arch::asm!("syscall", inlateout("rax") nr::REGION => base, in("rdi") cap, lateout("rdx") size,
            lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    abi::syscall::Error::decode(base).map(|b| (b, size))
}

const fn align_up(x: u64, to: u64) -> u64 {
    x.div_ceil(to) * to
}

impl Region {
    /// Opens region `name` (a capability of this task) with `layout`.
    pub fn open(name: &str, layout: Layout) -> Result<Region, SyncError> {
        Region::open_with(name, layout, |_| {})
    }

    /// As [`Region::open`]; the task that initializes the region runs
    /// `init` on it (e.g. to fill its statics) before anyone else sees it.
    pub fn open_with(name: &str, layout: Layout, init: impl FnOnce(&Region)) -> Result<Region, SyncError> {
        let cap = crate::ipc::cap(name).map_err(SyncError::Region)?;
        let (base, size) = region_call(cap.index()).map_err(SyncError::Region)?;
        let region = Region::geometry(base, size, layout)?;
        let state = region.word(off::STATE);
        let me = registry_id();
        let won = match state.compare_exchange(
            off::STATE_UNTOUCHED,
            off::STATE_INITIALIZING,
            Ordering::Acquire,
            Ordering::Acquire,
        ) {
            Ok(_) => true,
            // Our own earlier run started and never finished: again.
            Err(off::STATE_INITIALIZING) => region.word(off::INITIALIZER).load(Ordering::Relaxed) == me,
            Err(_) => false,
        };
        if won {
            region.word(off::INITIALIZER).store(me, Ordering::Relaxed);
            region.word(off::STATICS_SIZE).store(region.statics, Ordering::Relaxed);
            region.word(off::SLOT_SIZE).store(region.slot_size, Ordering::Relaxed);
            region.word(off::SLOT_COUNT).store(region.slots, Ordering::Relaxed);
            region.word(off::SLOTS_OFFSET).store(region.slots_offset, Ordering::Relaxed);
            init(&region);
            region.magic().store(REGION_MAGIC, Ordering::Relaxed);
            state.store(off::STATE_READY, Ordering::Release);
            let _ = futex::wake(state, u32::MAX as u64);
        } else {
            region.wait_ready()?;
        }
        region.check_header()?;
        Ok(region)
    }

    /// The geometry `layout` gives in `[base, base + size)`.
    fn geometry(base: u64, size: u64, layout: Layout) -> Result<Region, SyncError> {
        let statics = align_up(layout.statics as u64, 8);
        let slots_offset = align_up(REGION_HEADER_SIZE + statics, 64);
        let slot_size = align_up(arc::HEADER + layout.slot_payload as u64, 8);
        let end = slots_offset + slot_size * layout.slots as u64;
        if end > size || slots_offset > u32::MAX as u64 || slot_size > u32::MAX as u64 {
            return Err(SyncError::TooSmall);
        }
        Ok(Region {
            base,
            size,
            statics: statics as u32,
            slot_size: slot_size as u32,
            slots: layout.slots,
            slots_offset: slots_offset as u32,
        })
    }

    fn wait_ready(&self) -> Result<(), SyncError> {
        let state = self.word(off::STATE);
        let deadline = crate::syscall::ticks() + INIT_TIMEOUT_MS;
        loop {
            let s = state.load(Ordering::Acquire);
            if s == off::STATE_READY {
                return Ok(());
            }
            if s != off::STATE_INITIALIZING {
                return Err(SyncError::BadHeader);
            }
            if crate::syscall::ticks() >= deadline {
                return Err(SyncError::InitTimeout);
            }
            let _ = futex::wait(state, s, 10);
        }
    }

    /// The header another task wrote must describe our geometry.
    fn check_header(&self) -> Result<(), SyncError> {
        if self.magic().load(Ordering::Relaxed) != REGION_MAGIC {
            return Err(SyncError::BadHeader);
        }
        let theirs = [off::STATICS_SIZE, off::SLOT_SIZE, off::SLOT_COUNT, off::SLOTS_OFFSET]
            .map(|o| self.word(o).load(Ordering::Relaxed));
        if theirs != [self.statics, self.slot_size, self.slots, self.slots_offset] {
            return Err(SyncError::LayoutMismatch);
        }
        Ok(())
    }

    pub fn base(&self) -> u64 {
        self.base
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The object of type `S` at `offset` in the statics area, which must
    /// be aligned for `S` (a `Mutex` is 8-aligned: the fault server checks
    /// registry addresses for that).
    pub fn get<S: Shared>(&self, offset: u32) -> Result<&'static S, SyncError> {
        let size = core::mem::size_of::<S>() as u64;
        if core::mem::align_of::<S>() > 64 {
            return Err(SyncError::Misaligned);
        }
        if offset as u64 + size > self.statics as u64 {
            return Err(SyncError::OutOfRange);
        }
        let addr = self.base + off::STATICS + offset as u64;
        if !addr.is_multiple_of(core::mem::align_of::<S>() as u64) {
            return Err(SyncError::Misaligned);
        }
        // SAFETY: `[addr, addr + size)` is inside the statics area of a
        // region mapped for the task's lifetime, aligned for S; S: Shared is
        // valid for every bit pattern and Sync through interior mutability,
        // so a shared `&'static` to it is sound whatever others write.
        Ok(unsafe { &*(addr as *const S) })
    }

    pub fn stats(&self) -> Stats {
        let w = |o| self.word(o).load(Ordering::Relaxed);
        Stats {
            allocs: w(off::ALLOCS),
            frees: w(off::FREES),
            double_frees: w(off::DOUBLE_FREES),
            alloc_failures: w(off::ALLOC_FAILURES),
        }
    }

    /// Slots whose count is not 0 now.
    pub fn live_slots(&self) -> u32 {
        (0..self.slots).filter(|&i| count_of(self.slot_addr(i)).load(Ordering::Relaxed) != 0).count() as u32
    }

    pub(crate) fn slots(&self) -> u32 {
        self.slots
    }

    /// Payload bytes per slot.
    pub(crate) fn payload(&self) -> u64 {
        self.slot_size as u64 - arc::HEADER
    }

    pub(crate) fn slot_addr(&self, i: u32) -> u64 {
        self.base + self.slots_offset as u64 + i as u64 * self.slot_size as u64
    }

    /// Whether `addr` is the start of one of our slots.
    pub(crate) fn is_slot(&self, addr: u64) -> bool {
        let first = self.base + self.slots_offset as u64;
        addr >= first
            && (addr - first).is_multiple_of(self.slot_size as u64)
            && (addr - first) / (self.slot_size as u64) < self.slots as u64
    }

    /// A `u32` of the header.
    pub(crate) fn word(&self, offset: u64) -> &'static AtomicU32 {
        // SAFETY: header words are 4-aligned, inside the region (mapped for
        // the task's lifetime); atomics are valid for every bit pattern.
        unsafe { &*((self.base + offset) as *const AtomicU32) }
    }

    fn magic(&self) -> &'static AtomicU64 {
        // SAFETY: as for `word`; the magic is 8-aligned at offset 0.
        unsafe { &*((self.base + off::MAGIC) as *const AtomicU64) }
    }
}

/// The count word of the slot at `addr`.
pub(crate) fn count_of(addr: u64) -> &'static AtomicU32 {
    // SAFETY: callers pass slot addresses of an opened region (mapped for the
    // task's lifetime, 8-aligned); the count is the slot's second u32.
    unsafe { &*((addr + arc::COUNT) as *const AtomicU32) }
}

/// The header word at `offset` of the region holding `addr` (regions sit
/// at `SHARED_BASE + i * SHARED_STRIDE`, so the base is `addr` rounded
/// down to the stride: `abi::layout`).
pub(crate) fn header_word_of(addr: u64, offset: u64) -> &'static AtomicU32 {
    let base = addr & !(abi::layout::SHARED_STRIDE - 1);
    // SAFETY: `addr` is in a region this task opened; its header is at the
    // stride-aligned base, mapped for the task's lifetime.
    unsafe { &*((base + offset) as *const AtomicU32) }
}

fn registry_id() -> u32 {
    super::registry::task_id()
}
