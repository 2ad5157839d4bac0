//! `Arc<T>` in shared memory: a counted slot of a region, freed at zero.
//!
//! Slot layout (`recovery::layout::arc`; 8-aligned): `+0` generation,
//! `+4` count (shared references; 0 = free), then the payload `T`.
//!
//! * **Allocate** ([`Arc::new_in`]): find a slot whose count reads 0 and
//!   take a reference to it with the same asm `lock xadd` as any clone. If
//!   the count was 0 the slot is ours (generation + 1, payload written,
//!   `allocs` + 1); if another task got there first we hold a reference to
//!   *its* object, which we give back, and move on. So there is one way to
//!   take a reference and one to give it back, both exact under faults, and
//!   no "allocated but not counted" state for a fault to leak.
//! * **Free**: the decrement that takes the count from 1 to 0 frees the
//!   slot; that task (or the fault server, for a task that faulted) counts
//!   it in the region's `frees`. A decrement that finds 0 is undone and
//!   counted in `double_frees` — it never wraps the count.
//! * **One registered reference per task and object**: clones and drops
//!   within a task only change a private handle count next to the registry
//!   entry (rolled back with the task's memory, so never wrong); the shared
//!   count moves when the first handle appears and the last goes away. It
//!   keeps the registries free of duplicates — which is what lets the fault
//!   server tell an in-flight reference from a registered one.
//! * **Across tasks**: [`Arc::share`] makes a [`SharedArc<T>`] token (the
//!   slot's address and generation; `Copy`, serde-serializable, or two words
//!   with [`SharedArc::to_words`]) to send *while the sender still holds its
//!   own reference* — e.g. inside an IPC `call`, which blocks the sender
//!   until the reply. The receiver takes its own reference with
//!   [`Arc::from_token`], which refuses a slot that was freed or reused
//!   meanwhile (`Stale`); the sender may drop after that.
//! * **`strong_count`** counts the *tasks* holding a reference (each holds
//!   one, whatever its number of handles); [`Arc::handle_count`] is this
//!   task's handles.
//!
//! The payload is any `T: FromBytes + Sync` with no drop glue (checked at
//! compile time by [`Region`]): valid for any bytes a hostile task could
//! write, shared only as `&T` (mutable through interior mutability —
//! `Arc<Mutex<U>>`, atomics), and never dropped: the last reference may be
//! given back by the fault server, which runs no code of the task. A
//! `Mutex` in a payload is released by the fault server like one in the
//! statics (poisoned and unlocked before the reference is given back: the
//! layout check accepts mutexes in slot payloads).

use super::SyncError;
use super::refcount;
use super::region::{Geometry, Region, count_of, header_word_of};
use super::registry::{self, Kind};
use core::marker::PhantomData;
use core::ops::Deref;
use core::sync::atomic::{AtomicU32, Ordering};
use recovery::layout::{arc as slot_off, region as off};
use zerocopy::FromBytes;

/// A shared reference to a `T` in a region's Arc slot.
pub struct Arc<T> {
    addr: u64,
    /// This task's registry slot for the object.
    slot: usize,
    /// Not Send: the registry entry is this task's.
    _t: PhantomData<*const T>,
}

/// An Arc passed to another task: the slot's address and generation,
/// typed. It holds no reference itself; [`Arc::from_token`] takes one.
/// `FromBytes` (for a `FromBytes` `T`), so it may itself be shared data —
/// a mailbox in a region, for instance.
#[derive(FromBytes)]
#[repr(C)]
pub struct SharedArc<T> {
    addr: u64,
    generation: u64,
    _t: PhantomData<T>,
}

// A token may itself live in shared memory (a mailbox of tokens).
const _: () = {
    const fn from_bytes<T: FromBytes>() {}
    from_bytes::<SharedArc<u64>>();
    from_bytes::<super::Mutex<[SharedArc<u64>; 4]>>();
};

impl<T> Clone for SharedArc<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SharedArc<T> {}

impl<T> PartialEq for SharedArc<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.addr, self.generation) == (other.addr, other.generation)
    }
}
impl<T> Eq for SharedArc<T> {}

impl<T> core::fmt::Debug for SharedArc<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "SharedArc({:#x}, generation {})", self.addr, self.generation)
    }
}

impl<T> SharedArc<T> {
    /// As two message words: `[addr, generation]`.
    pub fn to_words(self) -> [u64; 2] {
        [self.addr, self.generation]
    }

    /// From [`SharedArc::to_words`]'s two words (anything: checked by
    /// [`Arc::from_token`]).
    pub fn from_words(words: [u64; 2]) -> SharedArc<T> {
        SharedArc { addr: words[0], generation: words[1], _t: PhantomData }
    }
}

impl<T> serde::Serialize for SharedArc<T> {
    fn serialize<Z: serde::Serializer>(&self, s: Z) -> Result<Z::Ok, Z::Error> {
        (self.addr, self.generation).serialize(s)
    }
}

impl<'de, T> serde::Deserialize<'de> for SharedArc<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (addr, generation) = <(u64, u64)>::deserialize(d)?;
        Ok(SharedArc { addr, generation, _t: PhantomData })
    }
}

impl<T: FromBytes + Sync + 'static> Arc<T> {
    /// Allocates a slot of `region` holding `value`. On `Err` the value is
    /// gone (it has no drop glue to run).
    pub fn new_in<S>(region: &Region<S, T>, value: T) -> Result<Arc<T>, SyncError> {
        let g = region.geometry();
        for i in 0..g.slots() {
            let addr = g.slot_addr(i);
            if count_of(addr).load(Ordering::Relaxed) != 0 {
                continue;
            }
            let (slot, old) = take_reference(addr)?;
            if old != 0 {
                release_slot(slot); // another task's, allocated meanwhile
                continue;
            }
            g.word(off::ALLOCS).fetch_add(1, Ordering::Relaxed);
            generation_of(addr).fetch_add(1, Ordering::Relaxed);
            // SAFETY: the slot is ours alone (count was 0, now 1, and nobody
            // else knows its address under this generation); the region's
            // slots hold a T (its geometry comes from size_of::<T>()) at an
            // 8-aligned address (align_of::<T>() <= 8, checked by Region);
            // the old bytes need no drop (no drop glue, checked by Region).
            unsafe { core::ptr::write_volatile((addr + slot_off::PAYLOAD) as *mut T, value) };
            core::sync::atomic::fence(Ordering::Release);
            return Ok(Arc { addr, slot, _t: PhantomData });
        }
        g.word(off::ALLOC_FAILURES).fetch_add(1, Ordering::Relaxed);
        Err(SyncError::Full)
    }

    /// Takes this task's reference to the object another task passed as
    /// `token` (while it still holds its own). `NotASlot` if the token
    /// names no slot of `region`; `Stale` if the slot was freed or
    /// reallocated since.
    pub fn from_token<S>(region: &Region<S, T>, token: SharedArc<T>) -> Result<Arc<T>, SyncError> {
        // A generation is a u32: a token with more is stale by definition.
        let generation = u32::try_from(token.generation).map_err(|_| SyncError::Stale)?;
        acquire(region.geometry(), token.addr, generation)
    }

    /// The token to pass this Arc to another task.
    pub fn share(this: &Self) -> SharedArc<T> {
        SharedArc { addr: this.addr, generation: Arc::generation(this) as u64, _t: PhantomData }
    }
}

impl<T> Arc<T> {
    /// The slot's address.
    pub fn addr(this: &Self) -> u64 {
        this.addr
    }

    /// The slot's allocation generation.
    pub fn generation(this: &Self) -> u32 {
        generation_of(this.addr).load(Ordering::Relaxed)
    }

    /// Tasks holding a reference (one each, whatever their handles): the
    /// shared count. A snapshot; other tasks change it any time.
    pub fn strong_count(this: &Self) -> u32 {
        count_of(this.addr).load(Ordering::Relaxed)
    }

    /// This task's handles (clones) on its one reference.
    pub fn handle_count(this: &Self) -> u32 {
        registry::arc_handles(this.slot)
    }

    /// Whether two Arcs name the same object.
    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        a.addr == b.addr
    }
}

/// Takes a reference to the object at `addr` (a slot of `g`) of
/// `generation`.
fn acquire<T>(g: &Geometry, addr: u64, generation: u32) -> Result<Arc<T>, SyncError> {
    if !g.is_slot(addr) {
        return Err(SyncError::NotASlot);
    }
    let arc = match registry::find(Kind::Arc, addr) {
        Some(slot) => {
            // Already ours: one more handle (or back from a deferred drop).
            registry::set_deferred(Kind::Arc, slot, false);
            registry::set_arc_handles(slot, registry::arc_handles(slot).saturating_add(1));
            Arc { addr, slot, _t: PhantomData }
        }
        None => {
            let (slot, old) = take_reference(addr)?;
            let arc = Arc { addr, slot, _t: PhantomData };
            if old == 0 {
                // It was free: we just allocated it, empty. Book it as an
                // allocation so that its free (our drop) balances.
                g.word(off::ALLOCS).fetch_add(1, Ordering::Relaxed);
                drop(arc);
                return Err(SyncError::Stale);
            }
            arc
        }
    };
    if Arc::generation(&arc) != generation {
        return Err(SyncError::Stale); // dropping `arc` gives it back
    }
    core::sync::atomic::fence(Ordering::Acquire);
    Ok(arc)
}

fn generation_of(addr: u64) -> &'static AtomicU32 {
    // SAFETY: slot addresses are 8-aligned in a mapped region; the
    // generation is the slot's first u32.
    unsafe { &*((addr + slot_off::GENERATION) as *const AtomicU32) }
}

/// Takes one shared reference to the slot at `addr` and registers it:
/// returns the registry slot and the count before.
fn take_reference(addr: u64) -> Result<(usize, u32), SyncError> {
    let slot = registry::free_slot(Kind::Arc).ok_or(SyncError::RegistryFull)?;
    // SAFETY: `addr` is a slot of an opened region, so its count word is
    // mapped shared memory; the intent slot is ours.
    let old = unsafe { refcount::inc(count_of(addr).as_ptr(), registry::intent_ptr(), addr, registry::depth()) };
    registry::push(Kind::Arc, slot, addr);
    registry::set_arc_handles(slot, 1);
    registry::clear_intent();
    Ok((slot, old))
}

/// Gives back the shared reference registered in `slot` (now, not deferred).
pub(crate) fn release_slot(slot: usize) {
    let addr = registry::entry_addr(Kind::Arc, slot);
    let count = count_of(addr);
    let entry = registry::addr_ptr(Kind::Arc, slot);
    // SAFETY: `addr` is a slot this task holds a reference to (its count
    // word is mapped shared memory); `entry` is its registry word.
    let old = unsafe { refcount::dec(count.as_ptr(), registry::intent_ptr(), addr, registry::depth(), entry) };
    // The statistics first, right after the decrement: a fault in between
    // loses a `frees` (the count itself is exact), so keep that window to
    // the few instructions of this match.
    match old {
        1 => {
            header_word_of(addr, off::FREES).fetch_add(1, Ordering::Relaxed);
        }
        0 => {
            count.fetch_add(1, Ordering::Relaxed);
            header_word_of(addr, off::DOUBLE_FREES).fetch_add(1, Ordering::Relaxed);
        }
        _ => {}
    }
    registry::trim(Kind::Arc);
    registry::set_arc_handles(slot, 0);
    registry::clear_intent();
}

impl<T> Clone for Arc<T> {
    /// One more handle on this task's reference: no shared memory touched.
    fn clone(&self) -> Self {
        let n = registry::arc_handles(self.slot);
        assert!(n < u32::MAX, "Arc handle count overflow");
        registry::set_arc_handles(self.slot, n + 1);
        Arc { addr: self.addr, slot: self.slot, _t: PhantomData }
    }
}

impl<T> Drop for Arc<T> {
    fn drop(&mut self) {
        let n = registry::arc_handles(self.slot);
        if n > 1 {
            registry::set_arc_handles(self.slot, n - 1);
            return;
        }
        registry::set_arc_handles(self.slot, 0);
        if registry::entry_scope(Kind::Arc, self.slot) < registry::depth() {
            // Registered by an outer scope: give it back when that scope is
            // the innermost again (see crate::sync).
            registry::set_deferred(Kind::Arc, self.slot, true);
            return;
        }
        release_slot(self.slot);
    }
}

impl<T: FromBytes + Sync> Deref for Arc<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: we hold a reference, so the slot stays allocated; an
        // Arc<T> exists only for a slot of a Region<_, T> (new_in,
        // from_token), whose payload is a T, aligned; it was written before
        // the token was handed out and only interior mutability changes it
        // after (T: Sync); T: FromBytes is valid for any bytes a hostile
        // task could write there.
        unsafe { &*((self.addr + slot_off::PAYLOAD) as *const T) }
    }
}
