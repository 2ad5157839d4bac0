//! Shared regions, typed: a header, the user's statics struct, Arc slots.
//!
//! The kernel maps a region (manifest `[[region]]`, capability
//! `"NAME:map"`) zeroed, at the same address in every task holding it;
//! `REGION` tells a task where (`rax`) and how large (`rdx`). A task opens
//! it as a [`Region<S, T>`]: `S` is one `#[repr(C)]` struct of everything
//! the tasks share at fixed places (mutexes, atomics), `T` the payload type
//! of its [`Arc`](super::Arc) slots ([`NoArcs`] for none). The bytes get a
//! structure every holder — and the fault server — agrees on
//! (`recovery::layout`, which has the word map):
//!
//! * a 64-byte **header**: magic, init state, the layout, statistics, and
//!   a fingerprint of `S` and `T`;
//! * the **statics area**: one `S`, handed out as `&'static S` by
//!   [`Region::statics`]. The region starts zeroed and `S: FromBytes`, so
//!   the all-zero `S` is a value (a `Mutex` unlocked and clean, atomics 0)
//!   before anyone touches it;
//! * **Arc slots** of one size, derived from `T`: `{generation, count}`
//!   then a `T`; count 0 means free ([`super::arc`]).
//!
//! ## No two views of the same bytes
//!
//! The only way to a reference into a region is through its type: the
//! statics as `&S`, a slot's payload as `&T` (through an `Arc<T>`). Within
//! a task, the first `open` of a region fixes its `(S, T)`
//! ([`super::views`]); opening it again as other types is
//! `Err(TypeMismatch)`. Across tasks, the header carries a fingerprint of
//! both types (name, size, alignment), written by the initializer and
//! checked by everyone else: tasks must declare the region with the *same*
//! types — the same declaration, in one crate, not two look-alikes.
//!
//! ## Initialization, race-free
//!
//! The first task to `CAS` the state word `0 → 1` writes the header (and
//! runs the optional `init` on the statics), then the magic, then state 2,
//! and wakes the others, who sleep on the state word until it is 2
//! (bounded: [`INIT_TIMEOUT_MS`]). Everyone then checks the header against
//! the geometry it computed from its types and keeps a *private copy*: what
//! other tasks write into the header later cannot move our slots. A task
//! restarted while it was the initializer finds state 1 with its own id and
//! initializes again.

use super::{SyncError, futex, views};
use abi::syscall::nr;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use recovery::layout::{REGION_MAGIC, arc, region as off};
use zerocopy::FromBytes;

/// How long a task waits for another to initialize a region.
pub const INIT_TIMEOUT_MS: u64 = 2000;

/// The slot type of a region without Arc slots.
#[derive(FromBytes, Clone, Copy, Debug)]
#[repr(C)]
pub struct NoArcs;

/// The region's statistics words.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub allocs: u32,
    pub frees: u32,
    pub double_frees: u32,
    pub alloc_failures: u32,
}

/// A region's validated geometry (what `Arc` and the header code need;
/// untyped).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    base: u64,
    size: u64,
    statics: u32,
    slot_size: u32,
    slots: u32,
    slots_offset: u32,
    /// Fingerprints of the statics and slot types.
    types: [u32; 2],
}

/// An opened region whose statics are an `S` and whose Arc slots hold `T`s.
pub struct Region<S, T = NoArcs> {
    g: Geometry,
    _t: PhantomData<fn() -> (S, T)>,
}

impl<S, T> Clone for Region<S, T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<S, T> Copy for Region<S, T> {}

impl<S, T> core::fmt::Debug for Region<S, T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Region").field("base", &self.g.base).field("slots", &self.g.slots).finish()
    }
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

impl<S: FromBytes + Sync + 'static> Region<S> {
    /// Opens region `name` (a capability of this task), without Arc slots.
    pub fn open(name: &str) -> Result<Region<S>, SyncError> {
        Region::open_arcs_init(name, 0, |_| {})
    }

    /// As [`Region::open`]; the task that initializes the region runs
    /// `init` on its statics before anyone else sees them.
    pub fn open_init(name: &str, init: impl FnOnce(&'static S)) -> Result<Region<S>, SyncError> {
        Region::open_arcs_init(name, 0, init)
    }
}

impl<S: FromBytes + Sync + 'static, T: FromBytes + Sync + 'static> Region<S, T> {
    /// What `S` and `T` must be, checked when the program is compiled.
    const TYPES_FIT: () = {
        // The statics start 64-aligned (the header's size), slots 8-aligned.
        assert!(core::mem::align_of::<S>() <= 64, "a region's statics may be at most 64-aligned");
        assert!(core::mem::align_of::<T>() <= 8, "an Arc payload may be at most 8-aligned");
        // The last reference may be given back by the fault server, which
        // runs no code of the task: a payload must have nothing to drop.
        assert!(!core::mem::needs_drop::<T>(), "an Arc payload must not need drop");
    };

    /// Opens region `name` with `slots` Arc slots of `T` (every task that
    /// opens the region passes the same number: the header records it).
    pub fn open_arcs(name: &str, slots: u32) -> Result<Region<S, T>, SyncError> {
        Region::open_arcs_init(name, slots, |_| {})
    }

    /// As [`Region::open_arcs`]; the initializer runs `init` on the statics.
    pub fn open_arcs_init(name: &str, slots: u32, init: impl FnOnce(&'static S)) -> Result<Region<S, T>, SyncError> {
        let () = Self::TYPES_FIT;
        let cap = crate::ipc::cap(name).map_err(SyncError::Region)?;
        let (base, size) = region_call(cap.index()).map_err(SyncError::Region)?;
        let types = [views::fingerprint::<S>(), views::fingerprint::<T>()];
        let g = Geometry::new(
            base,
            size,
            core::mem::size_of::<S>() as u64,
            core::mem::size_of::<T>() as u64,
            slots,
            types,
        )?;
        // Before any reference exists: one (S, T) per region in this task.
        let new = views::claim(base, types)?;
        let mut ran_init = false;
        let ready = g.initialize(|| {
            ran_init = true;
            // SAFETY: the statics area holds `size_of::<S>()` bytes at an
            // address 64-aligned (page-aligned base + 64; align_of::<S>() <=
            // 64 by TYPES_FIT); the region is mapped for the task's life.
            init(unsafe { &*((base + off::STATICS) as *const S) })
        });
        if let Err(e) = ready {
            // No `&S` escaped (init did not run, or `ready` would be Ok: the
            // initializer's own header always matches): the claim goes too.
            if new && !ran_init {
                views::unclaim(base);
            }
            return Err(e);
        }
        Ok(Region { g, _t: PhantomData })
    }

    /// The shared statics: the one typed view of the statics area.
    pub fn statics(&self) -> &'static S {
        // SAFETY: as in `open_arcs_init` (size, alignment, mapped forever);
        // S: FromBytes is valid for every bit pattern other tasks may write,
        // and S: Sync, so all its mutation is through atomics or locks. No
        // other type's reference to these bytes exists in this task
        // (`views::claim`).
        unsafe { &*((self.g.base + off::STATICS) as *const S) }
    }
}

impl<S, T> Region<S, T> {
    pub fn base(&self) -> u64 {
        self.g.base
    }

    pub fn size(&self) -> u64 {
        self.g.size
    }

    /// Arc slots of the region.
    pub fn slots(&self) -> u32 {
        self.g.slots
    }

    pub fn stats(&self) -> Stats {
        self.g.stats()
    }

    /// Slots whose count is not 0 now.
    pub fn live_slots(&self) -> u32 {
        (0..self.g.slots).filter(|&i| count_of(self.g.slot_addr(i)).load(Ordering::Relaxed) != 0).count() as u32
    }

    pub(crate) fn geometry(&self) -> &Geometry {
        &self.g
    }
}

impl Geometry {
    /// The geometry of statics of `statics` bytes and `slots` slots of
    /// `payload` bytes in `[base, base + size)` (`recovery::layout::geometry`,
    /// which the fault server's header check is tested against).
    fn new(
        base: u64,
        size: u64,
        statics: u64,
        payload: u64,
        slots: u32,
        types: [u32; 2],
    ) -> Result<Geometry, SyncError> {
        let (statics, slots_offset, slot_size) =
            recovery::layout::geometry(statics, payload, slots, size).ok_or(SyncError::TooSmall)?;
        Ok(Geometry {
            base,
            size,
            statics: statics as u32,
            slot_size: slot_size as u32,
            slots,
            slots_offset: slots_offset as u32,
            types,
        })
    }

    /// The race-free initialization of the module note; `init` runs in
    /// the task that wins it, before the header is marked ready.
    fn initialize(&self, init: impl FnOnce()) -> Result<(), SyncError> {
        let state = self.word(off::STATE);
        let me = super::registry::task_id();
        let won = match state.compare_exchange(
            off::STATE_UNTOUCHED,
            off::STATE_INITIALIZING,
            Ordering::Acquire,
            Ordering::Acquire,
        ) {
            Ok(_) => true,
            // Our own earlier run started and never finished: again.
            Err(off::STATE_INITIALIZING) => self.word(off::INITIALIZER).load(Ordering::Relaxed) == me,
            Err(_) => false,
        };
        if won {
            self.word(off::INITIALIZER).store(me, Ordering::Relaxed);
            for (o, v) in self.header_words() {
                self.word(o).store(v, Ordering::Relaxed);
            }
            init();
            self.magic().store(REGION_MAGIC, Ordering::Relaxed);
            state.store(off::STATE_READY, Ordering::Release);
            let _ = futex::wake(state, u32::MAX as u64);
        } else {
            self.wait_ready()?;
        }
        self.check_header()
    }

    /// The header words this geometry writes and expects.
    fn header_words(&self) -> [(u64, u32); 6] {
        [
            (off::STATICS_SIZE, self.statics),
            (off::SLOT_SIZE, self.slot_size),
            (off::SLOT_COUNT, self.slots),
            (off::SLOTS_OFFSET, self.slots_offset),
            (off::STATICS_TYPE, self.types[0]),
            (off::SLOT_TYPE, self.types[1]),
        ]
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

    /// The header another task wrote must describe our geometry and types.
    fn check_header(&self) -> Result<(), SyncError> {
        if self.magic().load(Ordering::Relaxed) != REGION_MAGIC {
            return Err(SyncError::BadHeader);
        }
        let [geometry @ .., (_, statics_type), (_, slot_type)] = self.header_words();
        if geometry.iter().any(|&(o, v)| self.word(o).load(Ordering::Relaxed) != v) {
            return Err(SyncError::LayoutMismatch);
        }
        if self.word(off::STATICS_TYPE).load(Ordering::Relaxed) != statics_type
            || self.word(off::SLOT_TYPE).load(Ordering::Relaxed) != slot_type
        {
            return Err(SyncError::TypeMismatch);
        }
        Ok(())
    }

    fn stats(&self) -> Stats {
        let w = |o| self.word(o).load(Ordering::Relaxed);
        Stats {
            allocs: w(off::ALLOCS),
            frees: w(off::FREES),
            double_frees: w(off::DOUBLE_FREES),
            alloc_failures: w(off::ALLOC_FAILURES),
        }
    }

    pub(crate) fn slots(&self) -> u32 {
        self.slots
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
