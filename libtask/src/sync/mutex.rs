//! `Mutex<T>` in shared memory: a futex lock whose holder may fault.
//!
//! Layout (`recovery::layout::mutex`; 8-aligned, in a region's statics
//! struct or in the payload of an `Arc<Mutex<T>>`):
//! `+0` the lock word — 0 unlocked, else the owner's task id, with
//! `MUTEX_CONTENDED` (bit 31) set when a task may be sleeping on it; `+4`
//! the poison word; then the data. Declare one as a field of a region's
//! statics struct ([`Region::statics`](super::Region::statics)) or put one
//! in an Arc ([`Mutex::new`]): a mutex only works in a region, because the
//! fault server refuses registry addresses anywhere else.
//!
//! * **Lock**: `CAS(0 → me)`; no system call when uncontended. Otherwise
//!   spin briefly, then set `CONTENDED` and `FUTEX_WAIT` on the word; a task
//!   woken takes the lock as `me | CONTENDED` (it cannot know whether others
//!   still sleep), so its unlock wakes the next.
//! * **Unlock**: swap the word to 0; `FUTEX_WAKE(1)` if `CONTENDED` was set.
//! * **Registry**: lock = push the entry → CAS; unlock = swap (+ wake) →
//!   remove the entry. So the entry is listed from before the task can own
//!   the word until after it has let go of it *and* done the wake it owed:
//!   it means "may be held", and the fault server decides by the word
//!   itself (who owns it), whatever instruction the fault hit — it poisons
//!   and unlocks exactly the mutexes the task holds, and wakes one waiter
//!   for each entry. No intent slot is needed.
//!
//!   Uncontended, that is the whole registry cost (`cargo xtask bench`
//!   `registry_cost`): lock = the page's registration check, the fast push
//!   ([`registry::push_top`]: the slot at `count`, three stores), the
//!   `CAS`, the poison check; unlock = the scope check (deferred?), the
//!   swap, the `CONTENDED` test, and `count` back by one (a guard dropped
//!   out of order leaves a tombstone instead). A failed `CAS` may mean the
//!   task holds the mutex already (a deferred release it takes back):
//!   the slow path finds the earlier entry and drops the new one; in
//!   between the mutex is listed twice, which the fault server treats as
//!   one listing of the outermost scope (`recovery::plan`).
//! * **Poison**: set by the fault server when it releases a mutex for a
//!   task that faulted holding it; `lock()` then returns
//!   `Err(PoisonError)`, which still carries the guard (std's semantics —
//!   std's own poisoning does not exist under `panic = "abort"`, where a
//!   panic never unwinds through a guard). [`Mutex::clear_poison`] once
//!   the data is repaired.
//!
//! A shared word any task may scribble on never makes this code misbehave
//! beyond that lock: a garbage owner is waited for (with bounded sleeps, so
//! a lost wake costs a tick, not forever), and our own id in the word
//! without a registry entry — left by an earlier run of this task that
//! nobody released — is taken over, poisoned.

use super::futex::{self, Wait};
use super::registry::{self, Kind};
use core::cell::UnsafeCell;
use core::fmt;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU32, Ordering};
use recovery::layout::mutex::{CONTENDED, OWNER_MASK, POISONED};
use zerocopy::FromBytes;

/// Spins on a held lock before sleeping (on one CPU the holder cannot run
/// while we spin, so this is short: it only covers a holder on another CPU).
const SPIN_LIMIT: u32 = 64;
/// Longest single sleep: a wake lost to a fault costs at most this.
const WAIT_SLICE_MS: u64 = 100;

/// A mutual-exclusion lock over a `T` in a shared region. `FromBytes`
/// (derived: every bit pattern of its words and of a `FromBytes` `T` is a
/// value), so it can be a field of a region's statics struct.
#[derive(FromBytes)]
#[repr(C, align(8))]
pub struct Mutex<T> {
    word: AtomicU32,
    poison: AtomicU32,
    data: UnsafeCell<T>,
}

const _: () = assert!(core::mem::offset_of!(Mutex<u64>, word) as u64 == recovery::layout::mutex::WORD);
const _: () = assert!(core::mem::offset_of!(Mutex<u64>, poison) as u64 == recovery::layout::mutex::POISON);
const _: () = assert!(core::mem::offset_of!(Mutex<u64>, data) as u64 == recovery::layout::mutex::DATA);
// The derive holds for shared data, and a mutex over it is shared data too
// (a field of a statics struct, an Arc payload): checked when libtask builds.
const _: () = {
    const fn from_bytes<T: FromBytes>() {}
    from_bytes::<Mutex<u64>>();
    from_bytes::<Mutex<[u32; 4]>>();
    from_bytes::<[Mutex<u64>; 2]>();
};

// SAFETY: the data is only reached through a guard, which exists only while
// the lock word names this task (std's bound: the data moves between tasks
// under the lock, so `T: Send`).
unsafe impl<T: Send> Sync for Mutex<T> {}

/// The lock is held while this lives; dropping it unlocks (or defers the
/// unlock to the commit of an inner scope; see [`crate::sync`]).
pub struct MutexGuard<'a, T> {
    mutex: &'a Mutex<T>,
    slot: usize,
    /// Not Send: the lock word names this task.
    _task: core::marker::PhantomData<*const ()>,
}

/// A lock acquired from a mutex whose previous holder faulted.
pub struct PoisonError<G> {
    guard: G,
}

impl<G> PoisonError<G> {
    /// The guard: the lock is held all the same.
    pub fn into_inner(self) -> G {
        self.guard
    }
    pub fn get_ref(&self) -> &G {
        &self.guard
    }
    pub fn get_mut(&mut self) -> &mut G {
        &mut self.guard
    }
}

impl<G> fmt::Debug for PoisonError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PoisonError { .. }")
    }
}

impl<G> fmt::Display for PoisonError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("poisoned lock: a holder faulted while holding it")
    }
}

impl<G> core::error::Error for PoisonError<G> {}

impl<G> PoisonError<G> {
    /// A poison error around `guard` (std's constructor).
    pub fn new(guard: G) -> PoisonError<G> {
        PoisonError { guard }
    }
}

pub type LockResult<G> = Result<G, PoisonError<G>>;

/// Why a `try_lock` did not return a clean guard.
pub enum TryLockError<G> {
    Poisoned(PoisonError<G>),
    /// Held by another task (for [`Mutex::try_lock_for`]: for the whole time).
    WouldBlock,
}

impl<G> fmt::Debug for TryLockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryLockError::Poisoned(_) => f.write_str("Poisoned(..)"),
            TryLockError::WouldBlock => f.write_str("WouldBlock"),
        }
    }
}

impl<G> fmt::Display for TryLockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryLockError::Poisoned(p) => p.fmt(f),
            TryLockError::WouldBlock => f.write_str("try_lock failed because the operation would block"),
        }
    }
}

impl<G> core::error::Error for TryLockError<G> {}

impl<G> From<PoisonError<G>> for TryLockError<G> {
    fn from(e: PoisonError<G>) -> TryLockError<G> {
        TryLockError::Poisoned(e)
    }
}

pub type TryLockResult<G> = Result<G, TryLockError<G>>;

impl<T> Mutex<T> {
    /// An unlocked, clean mutex over `value`: to put in an Arc
    /// (`Arc::new_in(&region, Mutex::new(v))`). A mutex in a region's
    /// statics needs no constructor: the zeroed region holds one already.
    pub const fn new(value: T) -> Mutex<T> {
        Mutex { word: AtomicU32::new(0), poison: AtomicU32::new(0), data: UnsafeCell::new(value) }
    }

    /// Its address (what registries and the fault server see).
    pub fn addr(&self) -> u64 {
        self as *const Self as u64
    }

    /// Locks, sleeping while another task holds it.
    #[inline]
    pub fn lock(&self) -> LockResult<MutexGuard<'_, T>> {
        let me = registry::task_id(); // registers the page first
        let listed = registry::push_top(Kind::Mutex, self.addr());
        // Listed: from here a fault is released by the word.
        if let Some(slot) = listed
            && self.word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_ok()
        {
            return self.guard(slot);
        }
        match self.acquire_slow(me, listed, None) {
            Some(slot) => self.guard(slot),
            None => unreachable!("a lock without deadline does not time out"),
        }
    }

    /// Locks if it is free now.
    pub fn try_lock(&self) -> TryLockResult<MutexGuard<'_, T>> {
        self.try_lock_for(0)
    }

    /// Locks, waiting at most `ms` milliseconds.
    pub fn try_lock_for(&self, ms: u64) -> TryLockResult<MutexGuard<'_, T>> {
        let deadline = crate::syscall::ticks().saturating_add(ms);
        match self.acquire(Some(deadline)) {
            Some(slot) => self.guard(slot).map_err(TryLockError::Poisoned),
            None => Err(TryLockError::WouldBlock),
        }
    }

    /// Whether some task holds it now (a snapshot, for tests and reports).
    pub fn is_locked(&self) -> bool {
        self.word.load(Ordering::Relaxed) & OWNER_MASK != 0
    }

    pub fn is_poisoned(&self) -> bool {
        self.poison.load(Ordering::Relaxed) != 0
    }

    /// Declares the data consistent again.
    pub fn clear_poison(&self) {
        self.poison.store(0, Ordering::Relaxed);
    }

    #[inline(always)]
    fn guard(&self, slot: usize) -> LockResult<MutexGuard<'_, T>> {
        let guard = MutexGuard { mutex: self, slot, _task: core::marker::PhantomData };
        if self.is_poisoned() { Err(PoisonError { guard }) } else { Ok(guard) }
    }

    /// Takes the lock and registers it; returns the registry slot, or
    /// `None` at `deadline` (in ticks). The fast path: a free slot at the
    /// registry's `count`, and a free word.
    #[inline(always)]
    fn acquire(&self, deadline: Option<u64>) -> Option<usize> {
        let me = registry::task_id(); // registers the page first
        let listed = registry::push_top(Kind::Mutex, self.addr());
        if let Some(slot) = listed
            && self.word.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_ok()
        {
            return Some(slot);
        }
        self.acquire_slow(me, listed, deadline)
    }

    /// A word that is not free (maybe ours), or a full registry array.
    /// `listed`: the slot the fast path pushed, if it could.
    #[cold]
    #[inline(never)]
    fn acquire_slow(&self, me: u32, listed: Option<usize>, deadline: Option<u64>) -> Option<usize> {
        let addr = self.addr();
        // An earlier entry for this mutex: it is ours already. (`find`
        // scans up from slot 0, and the fast push used the top slot, so a
        // hit other than `listed` is the earlier one. Until `listed` is
        // removed the mutex is listed twice: the fault server takes the
        // listings as one, of the outermost scope.)
        if let Some(slot) = registry::find(Kind::Mutex, addr).filter(|&s| Some(s) != listed) {
            if let Some(new) = listed {
                registry::remove(Kind::Mutex, new);
            }
            if registry::is_deferred(Kind::Mutex, slot) {
                // Unlocked inside a scope, but not yet: take it back.
                registry::set_deferred(Kind::Mutex, slot, false);
                return Some(slot);
            }
            panic!("Mutex at {addr:#x} locked twice by task {me}: it would wait for itself");
        }
        let slot = match listed {
            Some(slot) => slot,
            None => {
                let Some(slot) = registry::free_slot(Kind::Mutex) else {
                    panic!("task {me} holds {} mutexes, the registry's capacity", abi::checkpoint::MAX_MUTEXES);
                };
                registry::push(Kind::Mutex, slot, addr);
                slot
            }
        };
        if self.contended(me, deadline) {
            return Some(slot);
        }
        registry::remove(Kind::Mutex, slot);
        None
    }

    /// The slow path: spin, then sleep on the word. True once acquired.
    fn contended(&self, me: u32, deadline: Option<u64>) -> bool {
        let mut spins = 0;
        loop {
            let w = self.word.load(Ordering::Relaxed);
            if w == 0 {
                if self.word.compare_exchange(0, me | CONTENDED, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                    return true;
                }
                continue;
            }
            if w & OWNER_MASK > abi::image::MAX_TASK_ID {
                // No task has that id: this is not a mutex word (a pointer
                // a fault corrupted, or a stray write over the mutex).
                // Waiting on it would wait for nobody, for ever; a panic is
                // a fault, which a scope rolls back.
                panic!("Mutex at {:#x}: word {w:#x} names no task: not a mutex", self.addr());
            }
            if w & OWNER_MASK == me {
                // Ours by id but not in our registry: an earlier run of this
                // task held it and nobody released it. Its data is suspect.
                self.poison.store(POISONED, Ordering::Relaxed);
                core::sync::atomic::fence(Ordering::Acquire);
                return true;
            }
            if spins < SPIN_LIMIT {
                spins += 1;
                core::hint::spin_loop();
                continue;
            }
            let now = crate::syscall::ticks();
            if deadline.is_some_and(|d| now >= d) {
                return false;
            }
            let expected = w | CONTENDED;
            if w & CONTENDED == 0
                && self.word.compare_exchange(w, expected, Ordering::Relaxed, Ordering::Relaxed).is_err()
            {
                continue;
            }
            let slice = deadline.map_or(WAIT_SLICE_MS, |d| (d - now).clamp(1, WAIT_SLICE_MS));
            match futex::wait(&self.word, expected, slice) {
                Ok(Wait::Woken | Wait::Changed | Wait::TimedOut) => {}
                // The kernel refused the word (not in shared memory): sleeping
                // is impossible, so yield instead of spinning hot.
                Err(_) => crate::syscall::yield_now(),
            }
        }
    }
}

/// Unlocks the mutex registered in `slot` (now, not deferred).
pub(crate) fn release_slot(slot: usize) {
    let addr = registry::entry_addr(Kind::Mutex, slot);
    // SAFETY: `addr` is the address of a `Mutex` this task locked, in a
    // shared region (regions are never unmapped); its first word is the
    // lock word, an AtomicU32.
    unlock(unsafe { &*(addr as *const AtomicU32) }, slot)
}

/// Unlocks `word`, registered in `slot`: swap 0, wake if contended, and
/// only then remove the entry — until then a fault is released by the word
/// (which no longer names the task after the swap: nothing but the wake).
#[inline(always)]
fn unlock(word: &AtomicU32, slot: usize) {
    let old = word.swap(0, Ordering::Release);
    if old & CONTENDED != 0 {
        wake(word);
    }
    registry::remove(Kind::Mutex, slot);
}

#[cold]
#[inline(never)]
fn wake(word: &AtomicU32) {
    let _ = futex::wake(word, 1);
}

impl<'a, T> MutexGuard<'a, T> {
    /// Unlocks now for a `Condvar` wait and returns the mutex, to lock
    /// again after it. A guard of an outer checkpoint scope cannot be
    /// unlocked inside an inner one (its release is deferred to the
    /// commit: see [`crate::sync`]), and a wait holding the mutex would
    /// wait forever: that is a panic, with the reason, not a hang.
    pub(super) fn unlock_for_wait(self) -> &'a Mutex<T> {
        let (mutex, slot) = (self.mutex, self.slot);
        if registry::entry_scope(Kind::Mutex, slot) < registry::depth() {
            panic!(
                "Condvar::wait with the guard of Mutex {:#x} from an outer checkpoint scope: it cannot be unlocked here",
                mutex.addr()
            );
        }
        core::mem::forget(self);
        unlock(&mutex.word, slot);
        mutex
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        if registry::is_outer_mutex(self.slot) {
            // Taken by an outer scope: unlock when it is the innermost again.
            registry::set_deferred(Kind::Mutex, self.slot, true);
            return;
        }
        unlock(&self.mutex.word, self.slot);
    }
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while this task holds the lock.
        unsafe { &*self.mutex.data.get() }
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for deref; `&mut self` makes the access exclusive here.
        unsafe { &mut *self.mutex.data.get() }
    }
}
