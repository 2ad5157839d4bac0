//! `Condvar` in shared memory: sleeping until another task says the data
//! under a `Mutex` changed, std-shaped, with waiters and notifiers that may
//! fault.
//!
//! Layout (`recovery::layout::condvar`): `+0` a sequence word bumped by
//! every notify, on which waiters sleep; `+4` reserved. `wait` reads the
//! sequence *before* it unlocks the mutex, then sleeps while it is
//! unchanged (`FUTEX_WAIT` compares in the kernel), so a notify between
//! the unlock and the sleep is never missed; then it locks the mutex again.
//!
//! **Faults.** A waiter does not hold the mutex while it sleeps, and the
//! condvar holds nothing of anybody's: no registry entry, nothing for the
//! fault server to release. A waiter rolled back simply is not waiting any
//! more (its scope re-runs from its start, and locks and waits again if it
//! still must). A faulted notifier's notify either happened or did not,
//! like any store. The one cost is a `notify_one` whose wake went to a
//! waiter that faulted before it could act on it: the other waiters must
//! not sleep forever on a notification that was, in effect, lost. So every
//! sleep is at most [`WAIT_SLICE_MS`], and a waiter whose slice ends looks
//! at the sequence: moved means a notify happened that may have been meant
//! for it, and it returns (a wakeup std allows as spurious; callers loop on
//! their condition, as with std, or use [`Condvar::wait_while`]). A lost
//! notification costs the others at most one slice, never a hang.
//!
//! A guard of an outer checkpoint scope cannot be waited with inside an
//! inner one (its release is deferred to the commit): that is a panic.

use super::futex::{self, Wait};
use super::mutex::{LockResult, MutexGuard, PoisonError};
use core::sync::atomic::{AtomicU32, Ordering};
use zerocopy::FromBytes;

/// Longest single sleep (the cost of a notification lost to a fault).
pub const WAIT_SLICE_MS: u64 = 100;

/// A condition variable for a `Mutex` in the same or another region
/// (`FromBytes`: a field of a region's statics struct).
#[derive(FromBytes)]
#[repr(C, align(8))]
pub struct Condvar {
    seq: AtomicU32,
    _reserved: AtomicU32,
}

const _: () = assert!(core::mem::offset_of!(Condvar, seq) as u64 == recovery::layout::condvar::SEQ);
const _: () = assert!(core::mem::size_of::<Condvar>() as u64 == recovery::layout::condvar::SIZE);

/// Whether a timed wait returned because its time ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitTimeoutResult(bool);

impl WaitTimeoutResult {
    pub fn timed_out(&self) -> bool {
        self.0
    }
}

impl Condvar {
    /// Wakes one waiter (if it faults before acting on it, the others see
    /// the notify within a slice: see the module note).
    pub fn notify_one(&self) {
        self.seq.fetch_add(1, Ordering::Release);
        let _ = futex::wake(&self.seq, 1);
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) {
        self.seq.fetch_add(1, Ordering::Release);
        let _ = futex::wake(&self.seq, u32::MAX as u64);
    }

    /// Unlocks `guard`'s mutex, sleeps until notified (or a spurious
    /// wakeup), locks it again. `Err` if the mutex came back poisoned.
    pub fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> LockResult<MutexGuard<'a, T>> {
        self.wait_until(guard, None).0
    }

    /// Waits while `condition` holds of the data (checked under the lock).
    pub fn wait_while<'a, T>(
        &self,
        mut guard: MutexGuard<'a, T>,
        mut condition: impl FnMut(&mut T) -> bool,
    ) -> LockResult<MutexGuard<'a, T>> {
        let mut poisoned = false;
        while condition(&mut guard) {
            guard = match self.wait(guard) {
                Ok(g) => g,
                Err(p) => {
                    poisoned = true;
                    p.into_inner()
                }
            };
        }
        if poisoned { Err(PoisonError::new(guard)) } else { Ok(guard) }
    }

    /// As [`Condvar::wait`], at most `ms` milliseconds.
    pub fn wait_timeout<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        ms: u64,
    ) -> LockResult<(MutexGuard<'a, T>, WaitTimeoutResult)> {
        let deadline = crate::syscall::ticks().saturating_add(ms);
        let (locked, timed_out) = self.wait_until(guard, Some(deadline));
        let r = WaitTimeoutResult(timed_out);
        match locked {
            Ok(g) => Ok((g, r)),
            Err(p) => Err(PoisonError::new((p.into_inner(), r))),
        }
    }

    fn wait_until<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        deadline: Option<u64>,
    ) -> (LockResult<MutexGuard<'a, T>>, bool) {
        // Read before the unlock: a notify after it changes the word.
        let seq = self.seq.load(Ordering::Acquire);
        let mutex = guard.unlock_for_wait();
        let timed_out = loop {
            let now = crate::syscall::ticks();
            if deadline.is_some_and(|d| now >= d) {
                break true;
            }
            let ms = deadline.map_or(WAIT_SLICE_MS, |d| (d - now).clamp(1, WAIT_SLICE_MS));
            match futex::wait(&self.seq, seq, ms) {
                Ok(Wait::Woken | Wait::Changed) => break false,
                Ok(Wait::TimedOut) => {}
                // Not a shared word: no sleep happened; do not spin hot.
                Err(_) => crate::syscall::yield_now(),
            }
            // A slice ended: a notify that moved the word woke somebody
            // else, who may have faulted before acting on it.
            if self.seq.load(Ordering::Acquire) != seq {
                break false;
            }
        };
        (mutex.lock(), timed_out)
    }
}
