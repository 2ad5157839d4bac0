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
//! * **Across tasks**: a task passes the slot's [`Arc::addr`] and
//!   [`Arc::generation`] (through a shared queue, a message...) *while it
//!   still holds its own reference*; the receiver takes its own with
//!   [`Arc::acquire`], which refuses a slot that was freed or reused
//!   meanwhile (`Stale`), and the sender may drop after that.
//!
//! Why `T: Plain` (and so `Copy`): the payload is shared memory other
//! tasks can see, and the last reference may be dropped by the fault server,
//! which runs no code of the task — there must be no drop glue to run.

use super::refcount;
use super::region::{Region, count_of, header_word_of};
use super::registry::{self, Kind};
use super::{Plain, SyncError};
use core::marker::PhantomData;
use core::ops::Deref;
use core::sync::atomic::{AtomicU32, Ordering};
use recovery::layout::{arc as slot_off, region as off};

/// A shared reference to a `T` in a region's Arc slot.
pub struct Arc<T: Plain> {
    addr: u64,
    /// This task's registry slot for the object.
    slot: usize,
    /// Not Send: the registry entry is this task's.
    _t: PhantomData<*const T>,
}

impl<T: Plain> Arc<T> {
    fn fits(region: &Region) -> Result<(), SyncError> {
        if core::mem::size_of::<T>() as u64 > region.payload() || core::mem::align_of::<T>() > 8 {
            return Err(SyncError::TooLarge);
        }
        Ok(())
    }

    /// Allocates a slot of `region` holding `value`.
    pub fn new_in(region: &Region, value: T) -> Result<Arc<T>, SyncError> {
        Self::fits(region)?;
        for i in 0..region.slots() {
            let addr = region.slot_addr(i);
            if count_of(addr).load(Ordering::Relaxed) != 0 {
                continue;
            }
            let (slot, old) = take_reference(addr)?;
            if old != 0 {
                release_slot(slot); // another task's, allocated meanwhile
                continue;
            }
            region.word(off::ALLOCS).fetch_add(1, Ordering::Relaxed);
            generation_of(addr).fetch_add(1, Ordering::Relaxed);
            // SAFETY: the slot is ours alone (count was 0, now 1, and nobody
            // else knows its address yet); the payload fits (checked) at an
            // 8-aligned address, and T: Plain needs no drop of the old bytes.
            unsafe { core::ptr::write_volatile((addr + slot_off::PAYLOAD) as *mut T, value) };
            core::sync::atomic::fence(Ordering::Release);
            return Ok(Arc { addr, slot, _t: PhantomData });
        }
        region.word(off::ALLOC_FAILURES).fetch_add(1, Ordering::Relaxed);
        Err(SyncError::Full)
    }

    /// Takes a reference to the object at `addr` (a slot of `region`) of
    /// `generation`, which another task holds and passed on.
    pub fn acquire(region: &Region, addr: u64, generation: u32) -> Result<Arc<T>, SyncError> {
        Self::fits(region)?;
        if !region.is_slot(addr) {
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
                    region.word(off::ALLOCS).fetch_add(1, Ordering::Relaxed);
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

    /// The slot's address, to pass to another task.
    pub fn addr(this: &Self) -> u64 {
        this.addr
    }

    /// The slot's allocation generation, to pass along with the address.
    pub fn generation(this: &Self) -> u32 {
        generation_of(this.addr).load(Ordering::Relaxed)
    }

    /// Shared references, all tasks together.
    pub fn strong_count(this: &Self) -> u32 {
        count_of(this.addr).load(Ordering::Relaxed)
    }
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

impl<T: Plain> Clone for Arc<T> {
    /// One more handle on this task's reference: no shared memory touched.
    fn clone(&self) -> Self {
        let n = registry::arc_handles(self.slot);
        assert!(n < u32::MAX, "Arc handle count overflow");
        registry::set_arc_handles(self.slot, n + 1);
        Arc { addr: self.addr, slot: self.slot, _t: PhantomData }
    }
}

impl<T: Plain> Drop for Arc<T> {
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

impl<T: Plain> Deref for Arc<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: we hold a reference, so the slot stays allocated; the
        // payload was written before the address was handed out and is not
        // written again (no API does); T: Plain is valid for any bytes a
        // hostile task could write there.
        unsafe { &*((self.addr + slot_off::PAYLOAD) as *const T) }
    }
}
