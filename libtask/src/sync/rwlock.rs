//! `RwLock<T>` in shared memory: many readers or one writer, any of whom
//! may fault, with every read given back exactly once.
//!
//! Layout (`recovery::layout::rwlock`; 8-aligned, in a region's statics
//! area): `+0` the writer word (0, or the writer's task id | `CONTENDED`),
//! `+4` poison, `+8` the drain word, `+16` [`READERS`] reader slots (0, or
//! the id of a task holding one read), then the data.
//!
//! ## Why reader slots, not a reader count
//!
//! A count says how many reads are held, not whose: a task that faults
//! between its increment and its registry store (or its decrement and its
//! removal) would leave the fault server unable to tell whether to give a
//! read back. So each read held occupies a slot holding the reader's id —
//! the owner-in-object of the mutex, per read — and the registry lists one
//! entry per read (tag `RWLOCK_READ`, `abi::checkpoint::lock_tag`), before
//! the slot is taken and until after it is given back. A task's slots are
//! interchangeable: a read guard gives back *any* slot holding its id
//! (normally the first it probes), so the only thing that matters is how
//! many it holds. At a fault the server counts the task's slots and gives
//! back all but the reads of the scopes that survive the rollback (which
//! are held: see `recovery::plan`'s `locks`) — exact at every instruction
//! of `read` and of the read guard's drop, swept by `faults/rwlock-sweep.toml`.
//! The price: at most [`READERS`] reads at once, over all tasks; the next
//! reader waits for a slot (on the drain word).
//!
//! ## The protocol (writer-preferring)
//!
//! * **read**: list the read → while the writer word is non-zero, wait on
//!   it (set `CONTENDED`, `FUTEX_WAIT` in slices) → `CAS` a free slot
//!   `0 → me` → read the writer word again: still 0, the read is held;
//!   else a writer came between the two loads: give the slot back (so it
//!   can drain) and wait for it. The slot `CAS` and the second load are
//!   `SeqCst`, as the writer's store and its slot loads: of a reader and a
//!   writer racing, at least one sees the other (Dekker). A task that
//!   holds a read already takes another even while a writer waits (the
//!   writer cannot get in before that read goes anyway): nested reads, in
//!   nested scopes say, never deadlock against a waiting writer.
//! * **read unlock**: swap a slot holding `me` to 0 → bump the drain word
//!   by 2 → if its sleeper bit was set, wake all on it → unlist.
//! * **write**: list the write → `CAS` the writer word `0 → me` (or wait
//!   on it, as a mutex: spin, `CONTENDED`, sliced sleeps) — from here no
//!   new reader gets in → wait until every slot is 0, sleeping on the
//!   drain word (set its sleeper bit, look at the slots again, sleep on the
//!   value). Writer-preferring: a waiting writer holds the word, so a
//!   stream of readers cannot starve it.
//! * **write unlock**: swap the writer word to 0 → wake all on it if
//!   `CONTENDED` (readers and writers sleep on it alike) → unlist.
//! * **poison**: a fault holding the write lock poisons (`read` and
//!   `write` then return `Err(PoisonError)`, with the guard). A faulted
//!   reader does not poison: it could not have written.
//!
//! At a fault, a write entry is released by the writer word (it names its
//! owner: `PoisonAndUnlockRwLock`, which wakes all), the read entries by
//! the slots (`ReleaseRwLockReads`, which bumps the drain word and wakes
//! all on it, always: a wake the task owed is never lost). Guards dropped
//! inside a deeper scope than the one that took them are deferred to its
//! commit, as mutex guards ([`crate::sync`]).
//!
//! Every sleep is at most [`WAIT_SLICE_MS`]: the sleeper bit is cleared
//! by a writer that finished draining, so a reader waiting for a slot at
//! that moment may miss its wake and waits out its slice instead.
//! Hostile words cost that lock, nothing more: a garbage writer is waited
//! for; our own id in the writer word or in reader slots, with no entry of
//! ours listing it (an earlier run of this task nobody released), is taken
//! over, poisoned / given back.

use super::futex::{self, Wait};
use super::mutex::{LockResult, PoisonError, TryLockError, TryLockResult};
use super::registry::{self, Kind};
use abi::checkpoint::lock_tag;
use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU32, Ordering};
use recovery::layout::rwlock::{CONTENDED, DRAIN_SLEEPERS, DRAIN_STEP, OWNER_MASK, POISONED, READERS};
use zerocopy::FromBytes;

/// Spins on a held writer word before sleeping.
const SPIN_LIMIT: u32 = 64;
/// Longest single sleep: a wake lost to a fault costs at most this.
pub const WAIT_SLICE_MS: u64 = 100;
/// `FUTEX_WAKE` count for "everyone".
const ALL: u64 = u32::MAX as u64;

/// A reader-writer lock over a `T` in a shared region. `FromBytes`
/// (derived), so it can be a field of a region's statics struct.
#[derive(FromBytes)]
#[repr(C, align(8))]
pub struct RwLock<T> {
    writer: AtomicU32,
    poison: AtomicU32,
    drain: AtomicU32,
    _reserved: AtomicU32,
    readers: [AtomicU32; READERS],
    data: UnsafeCell<T>,
}

mod offsets {
    use super::RwLock;
    use core::mem::offset_of;
    use recovery::layout::rwlock as l;
    const _: () = assert!(offset_of!(RwLock<u64>, writer) as u64 == l::WRITER);
    const _: () = assert!(offset_of!(RwLock<u64>, poison) as u64 == l::POISON);
    const _: () = assert!(offset_of!(RwLock<u64>, drain) as u64 == l::DRAIN);
    const _: () = assert!(offset_of!(RwLock<u64>, readers) as u64 == l::READER_SLOTS);
    const _: () = assert!(offset_of!(RwLock<u64>, data) as u64 == l::DATA);
}

// SAFETY: the data is reached only through guards: shared ones while this
// task's id is in a reader slot and the writer word is 0, the exclusive
// one while the writer word names this task and every slot is 0 (std's
// bounds: readers share `&T` across tasks, a writer moves data between
// them).
unsafe impl<T: Send + Sync> Sync for RwLock<T> {}
const _: () = {
    const fn from_bytes<T: FromBytes>() {}
    from_bytes::<RwLock<u64>>();
};

/// One read held while this lives.
pub struct RwLockReadGuard<'a, T> {
    lock: &'a RwLock<T>,
    slot: usize,
    _task: core::marker::PhantomData<*const ()>,
}

/// The write lock is held while this lives.
pub struct RwLockWriteGuard<'a, T> {
    lock: &'a RwLock<T>,
    slot: usize,
    _task: core::marker::PhantomData<*const ()>,
}

/// Lists `tagged` in the mutex registry (the slot at `count`, else a
/// tombstone); a full registry is a panic, as for a mutex.
pub(super) fn list(tagged: u64) -> usize {
    if let Some(slot) = registry::push_top(Kind::Mutex, tagged) {
        return slot;
    }
    let Some(slot) = registry::free_slot(Kind::Mutex) else {
        panic!("the registry is full ({} locks held)", abi::checkpoint::MAX_MUTEXES);
    };
    registry::push(Kind::Mutex, slot, tagged);
    slot
}

fn deadline_passed(deadline: Option<u64>) -> bool {
    deadline.is_some_and(|d| crate::syscall::ticks() >= d)
}

fn slice(deadline: Option<u64>) -> u64 {
    deadline.map_or(WAIT_SLICE_MS, |d| d.saturating_sub(crate::syscall::ticks()).clamp(1, WAIT_SLICE_MS))
}

fn sleep(word: &AtomicU32, expected: u32, ms: u64) {
    match futex::wait(word, expected, ms) {
        Ok(Wait::Woken | Wait::Changed | Wait::TimedOut) => {}
        // Not a shared word: sleeping is impossible, yield instead.
        Err(_) => crate::syscall::yield_now(),
    }
}

impl<T> RwLock<T> {
    /// Its address (what registries and the fault server see).
    pub fn addr(&self) -> u64 {
        self as *const Self as u64
    }

    /// Shared access, waiting while a writer holds or waits for the lock.
    pub fn read(&self) -> LockResult<RwLockReadGuard<'_, T>> {
        let slot = self.acquire_read(None).expect("a read without deadline does not time out");
        self.checked(RwLockReadGuard { lock: self, slot, _task: core::marker::PhantomData })
    }

    /// Exclusive access, waiting for the other writers and the readers.
    pub fn write(&self) -> LockResult<RwLockWriteGuard<'_, T>> {
        let slot = self.acquire_write(None).expect("a write without deadline does not time out");
        self.checked(RwLockWriteGuard { lock: self, slot, _task: core::marker::PhantomData })
    }

    /// Shared access if it can be had within `ms` milliseconds.
    pub fn try_read_for(&self, ms: u64) -> TryLockResult<RwLockReadGuard<'_, T>> {
        match self.acquire_read(Some(crate::syscall::ticks().saturating_add(ms))) {
            Some(slot) => self
                .checked(RwLockReadGuard { lock: self, slot, _task: core::marker::PhantomData })
                .map_err(TryLockError::Poisoned),
            None => Err(TryLockError::WouldBlock),
        }
    }

    /// Exclusive access if it can be had within `ms` milliseconds.
    pub fn try_write_for(&self, ms: u64) -> TryLockResult<RwLockWriteGuard<'_, T>> {
        match self.acquire_write(Some(crate::syscall::ticks().saturating_add(ms))) {
            Some(slot) => self
                .checked(RwLockWriteGuard { lock: self, slot, _task: core::marker::PhantomData })
                .map_err(TryLockError::Poisoned),
            None => Err(TryLockError::WouldBlock),
        }
    }

    pub fn try_read(&self) -> TryLockResult<RwLockReadGuard<'_, T>> {
        self.try_read_for(0)
    }

    pub fn try_write(&self) -> TryLockResult<RwLockWriteGuard<'_, T>> {
        self.try_write_for(0)
    }

    /// Reads held now, by all tasks (a snapshot, for tests and reports).
    pub fn readers(&self) -> u32 {
        self.readers.iter().filter(|r| r.load(Ordering::Relaxed) != 0).count() as u32
    }

    /// Whether a writer holds (or is draining) it now (a snapshot).
    pub fn is_write_locked(&self) -> bool {
        self.writer.load(Ordering::Relaxed) & OWNER_MASK != 0
    }

    pub fn is_poisoned(&self) -> bool {
        self.poison.load(Ordering::Relaxed) != 0
    }

    /// Declares the data consistent again.
    pub fn clear_poison(&self) {
        self.poison.store(0, Ordering::Relaxed);
    }

    fn checked<G>(&self, guard: G) -> LockResult<G> {
        if self.is_poisoned() { Err(PoisonError::new(guard)) } else { Ok(guard) }
    }

    /// Lists a read and takes a reader slot; the registry slot, or `None`
    /// at `deadline` (unlisted again).
    #[inline(never)]
    fn acquire_read(&self, deadline: Option<u64>) -> Option<usize> {
        let me = registry::task_id(); // registers the page first
        let slot = list(self.addr() | lock_tag::RWLOCK_READ);
        // Listed: from here a fault gives back what the slots say we hold.
        let mut spins = 0;
        loop {
            let w = self.writer.load(Ordering::SeqCst);
            if w == 0 {
                if let Some(r) = self.take_reader_slot(me) {
                    if self.writer.load(Ordering::SeqCst) == 0 {
                        return Some(slot);
                    }
                    // A writer came between the two loads: let it drain us.
                    self.give_back(r);
                    continue;
                }
                // Every slot is taken: wait for one on the drain word.
                if deadline_passed(deadline) {
                    registry::remove(Kind::Mutex, slot);
                    return None;
                }
                let v = self.drain.fetch_or(DRAIN_SLEEPERS, Ordering::SeqCst) | DRAIN_SLEEPERS;
                if self.readers.iter().all(|r| r.load(Ordering::SeqCst) != 0) {
                    sleep(&self.drain, v, slice(deadline));
                }
                continue;
            }
            // A task that holds a read already takes another even while a
            // writer waits: the writer waits for that read anyway, so
            // waiting for the writer would be waiting for ourselves.
            if w & OWNER_MASK != me
                && self.readers.iter().any(|r| r.load(Ordering::Relaxed) == me)
                && self.take_reader_slot(me).is_some()
            {
                return Some(slot);
            }
            if w & OWNER_MASK == me {
                if registry::find(Kind::Mutex, self.addr() | lock_tag::RWLOCK_WRITE).is_some() {
                    panic!(
                        "RwLock at {:#x}: read by the task holding its write lock: it would wait for itself",
                        self.addr()
                    );
                }
                // Ours by id but not listed: an earlier run of this task held
                // it and nobody released it. Release it, poisoned.
                if self.writer.compare_exchange(w, 0, Ordering::SeqCst, Ordering::Relaxed).is_ok() {
                    self.poison.store(POISONED, Ordering::Relaxed);
                    let _ = futex::wake(&self.writer, ALL);
                }
                continue;
            }
            if spins < SPIN_LIMIT {
                spins += 1;
                core::hint::spin_loop();
                continue;
            }
            if deadline_passed(deadline) {
                registry::remove(Kind::Mutex, slot);
                return None;
            }
            if w & CONTENDED == 0
                && self.writer.compare_exchange(w, w | CONTENDED, Ordering::Relaxed, Ordering::Relaxed).is_err()
            {
                continue;
            }
            sleep(&self.writer, w | CONTENDED, slice(deadline));
        }
    }

    /// A free reader slot, now holding `me`.
    fn take_reader_slot(&self, me: u32) -> Option<usize> {
        let start = me as usize % READERS;
        (0..READERS)
            .map(|i| (start + i) % READERS)
            .find(|&i| self.readers[i].compare_exchange(0, me, Ordering::SeqCst, Ordering::Relaxed).is_ok())
    }

    /// Frees reader slot `r` (ours) and wakes a draining writer.
    fn give_back(&self, r: usize) {
        self.readers[r].store(0, Ordering::SeqCst);
        self.drained();
    }

    /// After a read went: bump the drain word, wake its sleepers.
    fn drained(&self) {
        let old = self.drain.fetch_add(DRAIN_STEP, Ordering::SeqCst);
        if old & DRAIN_SLEEPERS != 0 {
            let _ = futex::wake(&self.drain, ALL);
        }
    }

    /// Gives back one read of this task: any slot holding its id (they
    /// are interchangeable; see the module note). False if none does.
    fn release_read(&self) -> bool {
        let me = registry::task_id();
        let start = me as usize % READERS;
        for i in (0..READERS).map(|i| (start + i) % READERS) {
            if self.readers[i].compare_exchange(me, 0, Ordering::SeqCst, Ordering::Relaxed).is_ok() {
                self.drained();
                return true;
            }
        }
        false
    }

    /// Lists the write, takes the writer word, drains the readers; the
    /// registry slot, or `None` at `deadline` (released and unlisted).
    #[inline(never)]
    fn acquire_write(&self, deadline: Option<u64>) -> Option<usize> {
        let me = registry::task_id();
        let tagged = self.addr() | lock_tag::RWLOCK_WRITE;
        // Listed already: a write of ours whose release was deferred (taken
        // back, without touching shared memory) or a second write (a panic).
        if let Some(earlier) = registry::find(Kind::Mutex, tagged) {
            if registry::is_deferred(Kind::Mutex, earlier) {
                registry::set_deferred(Kind::Mutex, earlier, false);
                return Some(earlier);
            }
            panic!("RwLock at {:#x} write-locked twice by task {me}: it would wait for itself", self.addr());
        }
        let slot = list(tagged);
        if !self.take_writer(me, deadline) {
            registry::remove(Kind::Mutex, slot);
            return None;
        }
        if self.drain_readers(me, deadline) {
            return Some(slot);
        }
        unlock_write(&self.writer, slot);
        None
    }

    /// The writer word: `0 → me`, or wait for it as a mutex's.
    fn take_writer(&self, me: u32, deadline: Option<u64>) -> bool {
        let mut spins = 0;
        let mut contended = 0;
        loop {
            let w = self.writer.load(Ordering::Relaxed);
            if w == 0 {
                // A task woken from the word cannot know whether others
                // still sleep on it: it keeps CONTENDED, so its unlock wakes.
                if self.writer.compare_exchange(0, me | contended, Ordering::SeqCst, Ordering::Relaxed).is_ok() {
                    return true;
                }
                continue;
            }
            if w & OWNER_MASK == me {
                // Ours, not listed before this call: an earlier run's.
                self.poison.store(POISONED, Ordering::Relaxed);
                return true;
            }
            if spins < SPIN_LIMIT {
                spins += 1;
                core::hint::spin_loop();
                continue;
            }
            if deadline_passed(deadline) {
                return false;
            }
            if w & CONTENDED == 0
                && self.writer.compare_exchange(w, w | CONTENDED, Ordering::Relaxed, Ordering::Relaxed).is_err()
            {
                continue;
            }
            contended = CONTENDED;
            sleep(&self.writer, w | CONTENDED, slice(deadline));
        }
    }

    /// Waits until no reader slot is taken (we hold the writer word, so
    /// no new read gets in). Our own reads: listed, a deadlock (a panic);
    /// not listed, an earlier run's (given back).
    fn drain_readers(&self, me: u32, deadline: Option<u64>) -> bool {
        loop {
            if self.readers.iter().all(|r| r.load(Ordering::SeqCst) == 0) {
                self.drain.fetch_and(!DRAIN_SLEEPERS, Ordering::Relaxed);
                core::sync::atomic::fence(Ordering::Acquire);
                return true;
            }
            if self.readers.iter().any(|r| r.load(Ordering::Relaxed) == me) {
                if registry::find(Kind::Mutex, self.addr() | lock_tag::RWLOCK_READ).is_some() {
                    panic!(
                        "RwLock at {:#x}: write by a task holding a read of it: it would wait for itself",
                        self.addr()
                    );
                }
                while self.release_read() {}
                continue;
            }
            if deadline_passed(deadline) {
                return false;
            }
            let v = self.drain.fetch_or(DRAIN_SLEEPERS, Ordering::SeqCst) | DRAIN_SLEEPERS;
            if self.readers.iter().any(|r| r.load(Ordering::SeqCst) != 0) {
                sleep(&self.drain, v, slice(deadline));
            }
        }
    }
}

/// Unlocks the writer word, registered in `slot`: swap 0, wake all if
/// contended, then unlist (a fault before the unlisting is released by
/// the word, which no longer names the task: nothing but the wake).
fn unlock_write(writer: &AtomicU32, slot: usize) {
    let old = writer.swap(0, Ordering::Release);
    if old & CONTENDED != 0 {
        let _ = futex::wake(writer, ALL);
    }
    registry::remove(Kind::Mutex, slot);
}

/// Releases the tagged entry in `slot` now (a deferred release, at the
/// commit that made its scope the innermost again).
pub(crate) fn release_slot(slot: usize) {
    let (addr, tag) = lock_tag::split(registry::entry_addr(Kind::Mutex, slot));
    // SAFETY: `addr` is the address of an `RwLock` this task locked, in a
    // shared region (never unmapped); its words are atomics at the
    // offsets of `recovery::layout::rwlock`, whatever its `T`.
    let lock = unsafe { &*(addr as *const RwLock<()>) };
    if tag == lock_tag::RWLOCK_WRITE {
        unlock_write(&lock.writer, slot);
    } else {
        lock.release_read();
        registry::remove(Kind::Mutex, slot);
    }
}

impl<T> Drop for RwLockReadGuard<'_, T> {
    // Not inlined: one named function for the crash-window sweeps.
    #[inline(never)]
    fn drop(&mut self) {
        if registry::is_outer_mutex(self.slot) {
            registry::set_deferred(Kind::Mutex, self.slot, true);
            return;
        }
        self.lock.release_read();
        registry::remove(Kind::Mutex, self.slot);
    }
}

impl<T> Drop for RwLockWriteGuard<'_, T> {
    #[inline(never)]
    fn drop(&mut self) {
        if registry::is_outer_mutex(self.slot) {
            registry::set_deferred(Kind::Mutex, self.slot, true);
            return;
        }
        unlock_write(&self.lock.writer, self.slot);
    }
}

impl<T> Deref for RwLockReadGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: a read is held: no writer until it is given back.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> Deref for RwLockWriteGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the write lock is held: no other reader or writer.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for RwLockWriteGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for deref; `&mut self` makes the access exclusive here.
        unsafe { &mut *self.lock.data.get() }
    }
}
