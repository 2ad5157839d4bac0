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

use crate::layout::{arc, mutex, region};
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
        use abi::ipc::recover::{ARC, MUTEX, ReleaseOp};
        match *self {
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
        use abi::ipc::recover::{ARC, MUTEX};
        match op.kind {
            MUTEX => Some(Action::PoisonAndUnlockMutex { addr: op.addr }),
            ARC => Some(Action::ArcDecrement { addr: op.addr, region_base: op.region_base }),
            _ => None,
        }
    }
}

/// Performs `action` for the faulted task `task` (its id is what its mutex
/// words hold when it owns them).
pub fn execute<O: SharedOps>(action: &Action, task: u64, ops: &mut O) -> Result<Outcome, O::Error> {
    match *action {
        Action::PoisonAndUnlockMutex { addr } => poison_and_unlock(addr, task, ops),
        Action::ArcDecrement { addr, region_base } => arc_decrement(addr, region_base, ops),
    }
}

fn poison_and_unlock<O: SharedOps>(addr: u64, task: u64, ops: &mut O) -> Result<Outcome, O::Error> {
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
        _ => ops.futex_wake(addr + mutex::WORD, 1)?,
    };
    Ok(match outcome {
        Outcome::MutexReleased { contended, .. } => Outcome::MutexReleased { contended, woken: n },
        Outcome::MutexNotHeld { owner, .. } => Outcome::MutexNotHeld { owner, woken: n },
        other => other,
    })
}

fn arc_decrement<O: SharedOps>(addr: u64, base: u64, ops: &mut O) -> Result<Outcome, O::Error> {
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
    extern crate std;
    use super::*;
    use std::vec::Vec;

    /// Memory at `BASE..BASE + len`, with a log of futex wakes.
    struct Mem {
        bytes: Vec<u8>,
        wakes: Vec<(u64, u64)>,
    }

    const BASE: u64 = 0x2000_0000_0000;

    impl Mem {
        fn new() -> Mem {
            Mem { bytes: std::vec![0; 4096], wakes: Vec::new() }
        }
        fn at(&self, addr: u64) -> usize {
            (addr - BASE) as usize
        }
        fn u32(&self, addr: u64) -> u32 {
            let i = self.at(addr);
            u32::from_le_bytes(self.bytes[i..i + 4].try_into().unwrap())
        }
        fn set32(&mut self, addr: u64, v: u32) {
            let i = self.at(addr);
            self.bytes[i..i + 4].copy_from_slice(&v.to_le_bytes());
        }
        fn u64(&self, addr: u64) -> u64 {
            let i = self.at(addr);
            u64::from_le_bytes(self.bytes[i..i + 8].try_into().unwrap())
        }
    }

    impl SharedOps for Mem {
        type Error = ();
        fn cas64(&mut self, addr: u64, old: u64, new: u64) -> Result<u64, ()> {
            let found = self.u64(addr);
            if found == old {
                let i = self.at(addr);
                self.bytes[i..i + 8].copy_from_slice(&new.to_le_bytes());
            }
            Ok(found)
        }
        fn fetch_add32(&mut self, addr: u64, delta: i32) -> Result<u32, ()> {
            let old = self.u32(addr);
            self.set32(addr, old.wrapping_add(delta as u32));
            Ok(old)
        }
        fn futex_wake(&mut self, addr: u64, n: u64) -> Result<u64, ()> {
            self.wakes.push((addr, n));
            Ok(0)
        }
    }

    const M: u64 = BASE + 0x40;

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
        let mut mem = Mem::new();
        mem.set32(M, 7 | mutex::CONTENDED);
        let out = execute(&Action::PoisonAndUnlockMutex { addr: M }, 7, &mut mem).unwrap();
        assert_eq!(out, Outcome::MutexReleased { contended: true, woken: 0 });
        assert_eq!((mem.u32(M), mem.u32(M + 4)), (0, mutex::POISONED));
        assert_eq!(mem.wakes, [(M, 1)]);
    }

    #[test]
    fn mutex_of_another_task_is_left_alone() {
        for word in [0, 8, 8 | mutex::CONTENDED] {
            let mut mem = Mem::new();
            mem.set32(M, word);
            let out = execute(&Action::PoisonAndUnlockMutex { addr: M }, 7, &mut mem).unwrap();
            assert_eq!(out, Outcome::MutexNotHeld { owner: word & mutex::OWNER_MASK, woken: 0 });
            assert_eq!((mem.u32(M), mem.u32(M + 4)), (word, 0), "word {word:#x} changed");
            assert_eq!(mem.wakes.len(), 1, "the wake is owed anyway");
        }
    }

    #[test]
    fn already_poisoned_mutex_is_released_too() {
        let mut mem = Mem::new();
        mem.set32(M, 7);
        mem.set32(M + 4, mutex::POISONED);
        let out = execute(&Action::PoisonAndUnlockMutex { addr: M }, 7, &mut mem).unwrap();
        assert!(matches!(out, Outcome::MutexReleased { .. }));
        assert_eq!((mem.u32(M), mem.u32(M + 4)), (0, mutex::POISONED));
    }

    #[test]
    fn impossible_task_ids_never_match_an_owner() {
        let mut mem = Mem::new();
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
        let mut mem = Mem::new();
        mem.set32(M, 7);
        mem.set32(M + 4, 0x1234);
        let out = execute(&Action::PoisonAndUnlockMutex { addr: M }, 7, &mut mem).unwrap();
        assert!(matches!(out, Outcome::MutexNotHeld { owner: 7, .. }), "{out:?}");
        assert_eq!((mem.u32(M), mem.u32(M + 4)), (7, 0x1234));
    }

    const SLOT: u64 = BASE + 0x100;

    #[test]
    fn arc_decrement_frees_at_zero_and_counts() {
        let mut mem = Mem::new();
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
