//! Carrying out a release with the three atomic operations the kernel
//! offers a supervisor on another task's memory.
//!
//! The fault server implements [`SharedOps`] with `TASK_CTL CAS64`,
//! `FETCH_ADD32` and `FUTEX_WAKE` on the faulted task (shared regions are
//! mapped at the same address in every holder, so the task's addresses are
//! the ones to pass); the tests implement it over a byte array. Keeping the
//! sequence of operations here, next to [`crate::plan`], keeps the whole
//! release logic in one host-tested place.
//!
//! Each action decides from what the atomic operations *return*, never
//! from an earlier read, so other tasks racing on the same words (waiters
//! setting `CONTENDED`, a new owner taking a just-unlocked mutex) cannot
//! make it release something the faulted task does not hold.

use crate::layout::{arc, mutex, once, region, rwlock};
use crate::plan::Action;

/// How many times a poison-and-unlock retries its `CAS64` when the word
/// pair changed under it (each retry means another task set `CONTENDED` or
/// touched the poison word; more than a few means a hostile task).
pub const MUTEX_CAS_TRIES: usize = 4;

/// The atomic operations on the faulted task's memory (`TASK_CTL`).
pub trait SharedOps {
    type Error;
    /// `CAS64`: compare-and-swap of the `u64` at `addr`; returns the value
    /// found (equal to `old` iff the swap happened).
    fn cas64(&mut self, addr: u64, old: u64, new: u64) -> Result<u64, Self::Error>;
    /// `FETCH_ADD32`: adds `delta` to the `u32` at `addr`; returns the old value.
    fn fetch_add32(&mut self, addr: u64, delta: i32) -> Result<u32, Self::Error>;
    /// `FUTEX_WAKE`: wakes up to `n` waiters on `addr`; returns how many.
    fn futex_wake(&mut self, addr: u64, n: u64) -> Result<u64, Self::Error>;
}

/// What a release found and did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The task held the mutex: it is now unlocked and poisoned.
    MutexReleased { contended: bool, woken: u64 },
    /// The task did not hold it (the fault came before its lock or after its
    /// unlock): untouched, but one waiter woken in case the unlock's wake
    /// was what the fault interrupted.
    MutexNotHeld { owner: u32, woken: u64 },
    /// The word pair kept changing: gave up after [`MUTEX_CAS_TRIES`].
    MutexContested,
    /// One reference given back; `freed` if it was the last.
    ArcDecremented { count: u32, freed: bool },
    /// The count was already 0: restored, counted as a double free.
    ArcUnderflow,
    /// `released` of the task's `held` read locks of an `RwLock` given
    /// back (the others belong to scopes that survive).
    ReadsReleased { released: u32, held: u32 },
}

impl Outcome {
    /// Short name, for `release` events.
    pub const fn name(&self) -> &'static str {
        match self {
            Outcome::MutexReleased { .. } => "released",
            Outcome::MutexNotHeld { .. } => "not_held",
            Outcome::MutexContested => "contested",
            Outcome::ArcDecremented { freed: true, .. } => "freed",
            Outcome::ArcDecremented { freed: false, .. } => "decremented",
            Outcome::ArcUnderflow => "underflow",
            Outcome::ReadsReleased { released: 0, .. } => "not_held",
            Outcome::ReadsReleased { .. } => "released",
        }
    }
}

impl Outcome {
    /// The outcome as `TASK_CTL RECOVER` writes it back:
    /// `(outcome code, value, extra)` (`abi::ipc::recover`).
    pub const fn to_words(&self) -> (u64, u64, u64) {
        use abi::ipc::recover as r;
        match *self {
            Outcome::MutexReleased { contended, woken } => (r::MUTEX_RELEASED, woken, contended as u64),
            Outcome::MutexNotHeld { owner, woken } => (r::MUTEX_NOT_HELD, woken, owner as u64),
            Outcome::MutexContested => (r::MUTEX_CONTESTED, 0, 0),
            Outcome::ArcDecremented { count, freed } => (r::ARC_DECREMENTED, count as u64, freed as u64),
            Outcome::ArcUnderflow => (r::ARC_UNDERFLOW, 0, 0),
            Outcome::ReadsReleased { released, held } => (r::READS_RELEASED, released as u64, held as u64),
        }
    }

    /// The inverse of [`Outcome::to_words`]; `None` for `NOT_DONE`,
    /// `FAILED` or an unknown code.
    pub const fn from_words(code: u64, value: u64, extra: u64) -> Option<Outcome> {
        use abi::ipc::recover as r;
        Some(match code {
            r::MUTEX_RELEASED => Outcome::MutexReleased { contended: extra != 0, woken: value },
            r::MUTEX_NOT_HELD => Outcome::MutexNotHeld { owner: extra as u32, woken: value },
            r::MUTEX_CONTESTED => Outcome::MutexContested,
            r::ARC_DECREMENTED => Outcome::ArcDecremented { count: value as u32, freed: extra != 0 },
            r::ARC_UNDERFLOW => Outcome::ArcUnderflow,
            r::READS_RELEASED => Outcome::ReadsReleased { released: value as u32, held: extra as u32 },
            _ => return None,
        })
    }

    /// Whether the release poisoned a mutex.
    pub const fn poisoned(&self) -> bool {
        matches!(self, Outcome::MutexReleased { .. })
    }
}

impl Action {
    /// The action as a `TASK_CTL RECOVER` operation.
    pub const fn to_op(&self) -> abi::ipc::recover::ReleaseOp {
        use abi::ipc::recover::{ARC, MUTEX, ONCE, RWLOCK_READS, RWLOCK_WRITE, ReleaseOp};
        const fn at(kind: u64, addr: u64, region_base: u64) -> ReleaseOp {
            ReleaseOp { kind, addr, region_base, outcome: 0, value: 0, extra: 0 }
        }
        match *self {
            Action::PoisonAndUnlockRwLock { addr } => at(RWLOCK_WRITE, addr, 0),
            // The count to keep travels in the op's third word.
            Action::ReleaseRwLockReads { addr, keep } => at(RWLOCK_READS, addr, keep),
            Action::ResetOnce { addr } => at(ONCE, addr, 0),
            Action::PoisonAndUnlockMutex { addr } => {
                ReleaseOp { kind: MUTEX, addr, region_base: 0, outcome: 0, value: 0, extra: 0 }
            }
            Action::ArcDecrement { addr, region_base } => {
                ReleaseOp { kind: ARC, addr, region_base, outcome: 0, value: 0, extra: 0 }
            }
        }
    }

    /// The operation as an action; `None` for an unknown kind.
    pub const fn from_op(op: &abi::ipc::recover::ReleaseOp) -> Option<Action> {
        use abi::ipc::recover::{ARC, MUTEX, ONCE, RWLOCK_READS, RWLOCK_WRITE};
        match op.kind {
            MUTEX => Some(Action::PoisonAndUnlockMutex { addr: op.addr }),
            ARC => Some(Action::ArcDecrement { addr: op.addr, region_base: op.region_base }),
            RWLOCK_WRITE => Some(Action::PoisonAndUnlockRwLock { addr: op.addr }),
            RWLOCK_READS => Some(Action::ReleaseRwLockReads { addr: op.addr, keep: op.region_base }),
            ONCE => Some(Action::ResetOnce { addr: op.addr }),
            _ => None,
        }
    }
}

/// Performs `action` for the faulted task `task` (its id is what its mutex
/// words hold when it owns them).
pub fn execute<O: SharedOps>(action: &Action, task: u64, ops: &mut O) -> Result<Outcome, O::Error> {
    match *action {
        Action::PoisonAndUnlockMutex { addr } => poison_and_unlock::<O, 1>(addr, task, ops),
        Action::ArcDecrement { addr, region_base } => arc_decrement(addr, region_base, ops),
        // The writer word and the once state are mutex-shaped word pairs
        // (owner id | CONTENDED, poison) at the object's start.
        Action::PoisonAndUnlockRwLock { addr } => poison_and_unlock::<O, WAKE_ALL>(addr + rwlock::WRITER, task, ops),
        // COMPLETE is no initializer's id: a task with it owns nothing
        // (0 cannot match either: no owner word holds it).
        Action::ResetOnce { addr } => {
            let task = if task >= once::COMPLETE as u64 { 0 } else { task };
            poison_and_unlock::<O, WAKE_ALL>(addr + once::STATE, task, ops)
        }
        Action::ReleaseRwLockReads { addr, keep } => release_reads(addr, keep, task, ops),
    }
}

/// `FUTEX_WAKE` count meaning "everyone".
pub const WAKE_ALL: u64 = u32::MAX as u64;

/// Gives back the task's reads of the `RwLock` at `addr` but `keep` (see
/// [`Action::ReleaseRwLockReads`]). The faulted task is stopped, so the
/// slots holding its id change only by this (or by a hostile task, which
/// can only make the count smaller); other tasks' reads in the same pair
/// may come and go, so each pair is cleared by a `CAS64` from the value
/// found, retried as a mutex's.
fn release_reads<O: SharedOps>(addr: u64, keep: u64, task: u64, ops: &mut O) -> Result<Outcome, O::Error> {
    let me = task as u32;
    let pairs = rwlock::READERS as u64 / 2;
    let slots = addr + rwlock::READER_SLOTS;
    let mine = |v: u64| (v as u32 == me) as u32 + ((v >> 32) as u32 == me) as u32;
    let mut held = 0u32;
    if task != 0 && task <= rwlock::OWNER_MASK as u64 {
        for p in 0..pairs {
            held += mine(ops.cas64(slots + 8 * p, 0, 0)?);
        }
    }
    let mut todo = (held as u64).saturating_sub(keep) as u32;
    let mut released = 0u32;
    for p in 0..pairs {
        if todo == 0 {
            break;
        }
        let at = slots + 8 * p;
        let mut old = ops.cas64(at, 0, 0)?;
        for _ in 0..MUTEX_CAS_TRIES {
            // Clear up to `todo` halves of `old` that hold our id.
            let (mut new, mut n) = (old, 0u32);
            for shift in [0, 32] {
                if n < todo && (old >> shift) as u32 == me {
                    new &= !(0xffff_ffffu64 << shift);
                    n += 1;
                }
            }
            if n == 0 {
                break;
            }
            let found = ops.cas64(at, old, new)?;
            if found == old {
                released += n;
                todo -= n;
                break;
            }
            old = found;
        }
    }
    ops.fetch_add32(addr + rwlock::DRAIN, rwlock::DRAIN_STEP as i32)?;
    ops.futex_wake(addr + rwlock::DRAIN, WAKE_ALL)?;
    Ok(Outcome::ReadsReleased { released, held })
}

/// `WAKE`: how many waiters a release wakes (a mutex's one; all for the
/// `RwLock` writer word and the `Once` state, where everyone sleeps).
/// A plain unlock of the mutex at `addr` held by `task` — libtask's own
/// `MutexGuard` drop (swap the owner word to 0, wake one waiter if it said
/// `CONTENDED`), no poison: what the kernel does for a mutex release
/// marked `RELEASE_AT_COMMIT`. The owner word is changed only if it names
/// `task` (a `CAS64` keeping the poison word as found, retried as
/// [`Action::PoisonAndUnlockMutex`]'s); otherwise nothing is done.
pub fn unlock<O: SharedOps>(addr: u64, task: u64, ops: &mut O) -> Result<Outcome, O::Error> {
    let me = task as u32;
    if task > mutex::OWNER_MASK as u64 || me == 0 {
        return Ok(Outcome::MutexNotHeld { owner: 0, woken: 0 });
    }
    let mut old = me as u64;
    for _ in 0..MUTEX_CAS_TRIES {
        let new = old & !0xffff_ffff;
        let found = ops.cas64(addr + mutex::WORD, old, new)?;
        if found == old {
            let contended = found as u32 & mutex::CONTENDED != 0;
            let woken = if contended { ops.futex_wake(addr + mutex::WORD, 1)? } else { 0 };
            return Ok(Outcome::MutexReleased { contended, woken });
        }
        let owner = found as u32 & mutex::OWNER_MASK;
        if owner != me {
            return Ok(Outcome::MutexNotHeld { owner, woken: 0 });
        }
        old = found;
    }
    Ok(Outcome::MutexContested)
}

fn poison_and_unlock<O: SharedOps, const WAKE: u64>(addr: u64, task: u64, ops: &mut O) -> Result<Outcome, O::Error> {
    let me = task as u32;
    let released = (mutex::POISONED as u64) << 32;
    let mut outcome = Outcome::MutexContested;
    if task > mutex::OWNER_MASK as u64 || me == 0 {
        // No task id this large (or zero) can be in an owner word.
        outcome = Outcome::MutexNotHeld { owner: 0, woken: 0 };
    } else {
        let mut old = me as u64; // the likely pair: owned by us, clean, nobody waiting
        for _ in 0..MUTEX_CAS_TRIES {
            let found = ops.cas64(addr + mutex::WORD, old, released)?;
            if found == old {
                outcome = Outcome::MutexReleased { contended: found as u32 & mutex::CONTENDED != 0, woken: 0 };
                break;
            }
            let owner = found as u32 & mutex::OWNER_MASK;
            // A poison word that is neither clean nor poisoned is no
            // mutex's: a word pair that merely starts with our id.
            if owner != me || (found >> 32) > mutex::POISONED as u64 {
                outcome = Outcome::MutexNotHeld { owner, woken: 0 };
                break;
            }
            old = found;
        }
    }
    // As libtask's unlock: a task sleeps on the word only after setting
    // `CONTENDED` in it (and `FUTEX_WAIT` checks the word under the kernel
    // lock), so a release from a word without it has nobody to wake.
    let n = match outcome {
        Outcome::MutexReleased { contended: false, .. } => 0,
        _ => ops.futex_wake(addr + mutex::WORD, WAKE)?,
    };
    Ok(match outcome {
        Outcome::MutexReleased { contended, .. } => Outcome::MutexReleased { contended, woken: n },
        Outcome::MutexNotHeld { owner, .. } => Outcome::MutexNotHeld { owner, woken: n },
        other => other,
    })
}

/// Gives back one reference to the Arc slot at `addr` (region at `base`):
/// [`Action::ArcDecrement`]'s operations, which are exactly libtask's own
/// release (`libtask::sync::arc`) — also what the kernel does for a
/// release marked `RELEASE_AT_COMMIT`.
pub fn arc_decrement<O: SharedOps>(addr: u64, base: u64, ops: &mut O) -> Result<Outcome, O::Error> {
    let old = ops.fetch_add32(addr + arc::COUNT, -1)?;
    match old {
        0 => {
            ops.fetch_add32(addr + arc::COUNT, 1)?;
            ops.fetch_add32(base + region::DOUBLE_FREES, 1)?;
            Ok(Outcome::ArcUnderflow)
        }
        1 => {
            ops.fetch_add32(base + region::FREES, 1)?;
            Ok(Outcome::ArcDecremented { count: 0, freed: true })
        }
        n => Ok(Outcome::ArcDecremented { count: n - 1, freed: false }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{BASE, Mem};

    const M: u64 = BASE + 0x40;

    #[test]
    fn plain_unlock_keeps_the_poison_word_and_wakes_only_when_contended() {
        // Held by 7, poisoned earlier (a repaired mutex stays flagged), nobody waiting.
        let mut m = Mem::new(4096);
        m.set32(M, 7);
        m.set32(M + 4, mutex::POISONED);
        assert_eq!(unlock(M, 7, &mut m), Ok(Outcome::MutexReleased { contended: false, woken: 0 }));
        assert_eq!((m.u32(M), m.u32(M + 4)), (0, mutex::POISONED));
        assert!(m.wakes.is_empty());
        // Contended: unlocked and one waiter woken.
        m.set32(M, 7 | mutex::CONTENDED);
        assert_eq!(unlock(M, 7, &mut m), Ok(Outcome::MutexReleased { contended: true, woken: 0 }));
        assert_eq!(m.u32(M), 0);
        assert_eq!(m.wakes, [(M, 1)]);
        // Someone else's (or nobody's): untouched.
        m.set32(M, 9);
        assert_eq!(unlock(M, 7, &mut m), Ok(Outcome::MutexNotHeld { owner: 9, woken: 0 }));
        assert_eq!(m.u32(M), 9);
        assert_eq!(unlock(M, 0, &mut m), Ok(Outcome::MutexNotHeld { owner: 0, woken: 0 }));
    }

    #[test]
    fn outcomes_and_actions_round_trip_through_recover_words() {
        let outcomes = [
            Outcome::MutexReleased { contended: true, woken: 1 },
            Outcome::MutexNotHeld { owner: 9, woken: 0 },
            Outcome::MutexContested,
            Outcome::ArcDecremented { count: 3, freed: false },
            Outcome::ArcDecremented { count: 0, freed: true },
            Outcome::ArcUnderflow,
        ];
        for o in outcomes {
            let (c, v, e) = o.to_words();
            assert_eq!(Outcome::from_words(c, v, e), Some(o));
        }
        assert_eq!(Outcome::from_words(0, 0, 0), None);
        for a in [Action::PoisonAndUnlockMutex { addr: M }, Action::ArcDecrement { addr: SLOT, region_base: BASE }] {
            assert_eq!(Action::from_op(&a.to_op()), Some(a));
        }
    }

    #[test]
    fn held_mutex_is_poisoned_unlocked_and_woken() {
        let mut mem = Mem::new(4096);
        mem.set32(M, 7 | mutex::CONTENDED);
        let out = execute(&Action::PoisonAndUnlockMutex { addr: M }, 7, &mut mem).unwrap();
        assert_eq!(out, Outcome::MutexReleased { contended: true, woken: 0 });
        assert_eq!((mem.u32(M), mem.u32(M + 4)), (0, mutex::POISONED));
        assert_eq!(mem.wakes, [(M, 1)]);
    }

    #[test]
    fn mutex_of_another_task_is_left_alone() {
        for word in [0, 8, 8 | mutex::CONTENDED] {
            let mut mem = Mem::new(4096);
            mem.set32(M, word);
            let out = execute(&Action::PoisonAndUnlockMutex { addr: M }, 7, &mut mem).unwrap();
            assert_eq!(out, Outcome::MutexNotHeld { owner: word & mutex::OWNER_MASK, woken: 0 });
            assert_eq!((mem.u32(M), mem.u32(M + 4)), (word, 0), "word {word:#x} changed");
            assert_eq!(mem.wakes.len(), 1, "the wake is owed anyway");
        }
    }

    #[test]
    fn already_poisoned_mutex_is_released_too() {
        let mut mem = Mem::new(4096);
        mem.set32(M, 7);
        mem.set32(M + 4, mutex::POISONED);
        let out = execute(&Action::PoisonAndUnlockMutex { addr: M }, 7, &mut mem).unwrap();
        assert!(matches!(out, Outcome::MutexReleased { .. }));
        assert_eq!((mem.u32(M), mem.u32(M + 4)), (0, mutex::POISONED));
    }

    #[test]
    fn impossible_task_ids_never_match_an_owner() {
        let mut mem = Mem::new(4096);
        mem.set32(M, 0);
        let out = execute(&Action::PoisonAndUnlockMutex { addr: M }, 0, &mut mem).unwrap();
        assert!(matches!(out, Outcome::MutexNotHeld { .. }));
        mem.set32(M, 5);
        let out = execute(&Action::PoisonAndUnlockMutex { addr: M }, (1 << 32) | 5, &mut mem).unwrap();
        assert!(matches!(out, Outcome::MutexNotHeld { .. }));
        assert_eq!(mem.u32(M), 5);
    }

    #[test]
    fn a_word_pair_that_is_no_mutex_is_left_alone() {
        // Low word = our id, high word neither 0 nor POISONED: not a mutex.
        let mut mem = Mem::new(4096);
        mem.set32(M, 7);
        mem.set32(M + 4, 0x1234);
        let out = execute(&Action::PoisonAndUnlockMutex { addr: M }, 7, &mut mem).unwrap();
        assert!(matches!(out, Outcome::MutexNotHeld { owner: 7, .. }), "{out:?}");
        assert_eq!((mem.u32(M), mem.u32(M + 4)), (7, 0x1234));
    }

    const SLOT: u64 = BASE + 0x100;

    #[test]
    fn arc_decrement_frees_at_zero_and_counts() {
        let mut mem = Mem::new(4096);
        mem.set32(SLOT + 4, 2);
        let act = Action::ArcDecrement { addr: SLOT, region_base: BASE };
        assert_eq!(execute(&act, 7, &mut mem), Ok(Outcome::ArcDecremented { count: 1, freed: false }));
        assert_eq!(execute(&act, 7, &mut mem), Ok(Outcome::ArcDecremented { count: 0, freed: true }));
        assert_eq!(mem.u32(BASE + region::FREES), 1);
        assert_eq!(execute(&act, 7, &mut mem), Ok(Outcome::ArcUnderflow));
        assert_eq!(mem.u32(SLOT + 4), 0, "an underflow is undone");
        assert_eq!(mem.u32(BASE + region::DOUBLE_FREES), 1);
        assert_eq!(mem.u32(BASE + region::FREES), 1);
    }
}

#[cfg(test)]
mod lock_tests {
    //! The RwLock and Once releases on a byte array.
    use super::*;
    use crate::fake::{BASE, Mem};
    use crate::layout::{once, rwlock};
    const L: u64 = BASE + 0x40;

    fn mem() -> Mem {
        Mem::new(0x200)
    }

    /// Reader slot `i` of the RwLock at `L`.
    fn slot(m: &Mem, i: u64) -> u32 {
        m.u32(L + rwlock::READER_SLOTS + 4 * i)
    }

    #[test]
    fn reads_beyond_keep_are_given_back_and_the_drain_woken() {
        let mut m = mem();
        for (i, id) in [(0, 7), (1, 9), (4, 7), (5, 7), (15, 7)] {
            m.set32(L + rwlock::READER_SLOTS + 4 * i, id);
        }
        let out = execute(&Action::ReleaseRwLockReads { addr: L, keep: 1 }, 7, &mut m).unwrap();
        assert_eq!(out, Outcome::ReadsReleased { released: 3, held: 4 });
        assert_eq!((0..16).filter(|&i| slot(&m, i) == 7).count(), 1);
        assert_eq!(slot(&m, 1), 9, "another task's read is untouched");
        assert_eq!(m.u32(L + rwlock::DRAIN), rwlock::DRAIN_STEP);
        assert_eq!(m.wakes, [(L + rwlock::DRAIN, WAKE_ALL)]);
        // Nothing (more) to give back: still the drain bump and the wake.
        let out = execute(&Action::ReleaseRwLockReads { addr: L, keep: 1 }, 7, &mut m).unwrap();
        assert_eq!(out, Outcome::ReadsReleased { released: 0, held: 1 });
        assert_eq!(out.name(), "not_held");
        assert_eq!(m.wakes.len(), 2);
        // Impossible ids own no slot.
        let out = execute(&Action::ReleaseRwLockReads { addr: L, keep: 0 }, 0, &mut m).unwrap();
        assert_eq!(out, Outcome::ReadsReleased { released: 0, held: 0 });
    }

    #[test]
    fn a_writer_is_poisoned_released_and_everyone_woken() {
        let mut m = mem();
        m.set32(L + rwlock::WRITER, 7 | rwlock::CONTENDED);
        let out = execute(&Action::PoisonAndUnlockRwLock { addr: L }, 7, &mut m).unwrap();
        assert_eq!(out, Outcome::MutexReleased { contended: true, woken: 0 });
        assert_eq!((m.u32(L), m.u32(L + rwlock::POISON)), (0, rwlock::POISONED));
        assert_eq!(m.wakes, [(L, WAKE_ALL)]);
        // Another task's writer word: untouched (the wake is owed anyway).
        m.set32(L, 8);
        let out = execute(&Action::PoisonAndUnlockRwLock { addr: L }, 7, &mut m).unwrap();
        assert!(matches!(out, Outcome::MutexNotHeld { owner: 8, .. }));
        assert_eq!(m.u32(L), 8);
    }

    #[test]
    fn a_once_being_run_is_reset_poisoned_a_complete_one_is_not() {
        let mut m = mem();
        m.set32(L + once::STATE, 7 | once::CONTENDED);
        let out = execute(&Action::ResetOnce { addr: L }, 7, &mut m).unwrap();
        assert!(out.poisoned());
        assert_eq!((m.u32(L), m.u32(L + once::POISON)), (0, once::POISONED), "incomplete, poisoned: re-runnable");
        assert_eq!(m.wakes, [(L, WAKE_ALL)]);
        let mut m = mem();
        m.set32(L + once::STATE, once::COMPLETE);
        let out = execute(&Action::ResetOnce { addr: L }, 7, &mut m).unwrap();
        assert!(matches!(out, Outcome::MutexNotHeld { .. }));
        assert_eq!(m.u32(L), once::COMPLETE, "done stays done");
        // No task id can match COMPLETE.
        let out = execute(&Action::ResetOnce { addr: L }, once::COMPLETE as u64, &mut m).unwrap();
        assert!(matches!(out, Outcome::MutexNotHeld { .. }), "{out:?}");
    }

    #[test]
    fn lock_actions_and_outcomes_round_trip_through_recover_words() {
        for a in [
            Action::PoisonAndUnlockRwLock { addr: L },
            Action::ReleaseRwLockReads { addr: L, keep: 3 },
            Action::ResetOnce { addr: L },
        ] {
            assert_eq!(Action::from_op(&a.to_op()), Some(a));
        }
        let o = Outcome::ReadsReleased { released: 2, held: 5 };
        let (c, v, e) = o.to_words();
        assert_eq!(Outcome::from_words(c, v, e), Some(o));
    }
}
