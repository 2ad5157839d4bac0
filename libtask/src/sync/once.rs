//! `Once` and `OnceLock<T>` in shared memory: one initialization for all
//! the tasks sharing a region, which an initializer that faults leaves
//! re-runnable, not stuck "running".
//!
//! Layout (`recovery::layout::once`; 8-aligned, in a region's statics
//! area): `+0` the state word — 0 incomplete, `COMPLETE`, else the running
//! initializer's task id | `CONTENDED` (waiters sleep on it); `+4` poison
//! (1: an initializer faulted); a `OnceLock`'s value at `+8`.
//!
//! **Protocol**, the mutex's: list the `Once` (registry tag `ONCE`) →
//! `CAS(0 → me)` (or wait while another runs it: spin, `CONTENDED`,
//! sleeps of at most [`WAIT_SLICE_MS`]) → run the closure → clear the
//! poison → swap the state to `COMPLETE` → wake all if `CONTENDED` →
//! unlist. At a fault the entry means "may be running it", and the fault
//! server decides by the state word (`ResetOnce`): if it names the task,
//! it becomes 0 with the poison word set, and every waiter is woken — one
//! of them (or the rolled-back task itself) runs the closure again, and
//! [`OnceState::is_poisoned`] tells it an earlier run faulted (what it
//! wrote may be half done). `COMPLETE` is no task's id, so a fault after
//! the swap leaves it complete. Unlike std's `Once`, a faulted initializer
//! does not make `call_once` panic: re-running is the point.
//!
//! The entry is pushed and removed at the same scope depth (the closure's
//! own scopes are balanced), so it is never deferred. Our own id in the
//! state word without an entry of ours (an earlier run of this task that
//! nobody released) is taken over, poisoned; a `call_once` from inside its
//! own closure is a panic (it would wait for itself).

use super::futex::{self, Wait};
use super::registry::{self, Kind};
use abi::checkpoint::lock_tag;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, Ordering};
use recovery::layout::once::{COMPLETE, CONTENDED, OWNER_MASK, POISONED};
use zerocopy::FromBytes;

/// Spins on a running initializer before sleeping.
const SPIN_LIMIT: u32 = 64;
/// Longest single sleep: a wake lost to a fault costs at most this.
pub const WAIT_SLICE_MS: u64 = 100;

/// One-time initialization shared by the tasks of a region (`FromBytes`:
/// a field of a region's statics struct).
#[derive(FromBytes)]
#[repr(C, align(8))]
pub struct Once {
    state: AtomicU32,
    poison: AtomicU32,
}

const _: () = assert!(core::mem::offset_of!(Once, state) as u64 == recovery::layout::once::STATE);
const _: () = assert!(core::mem::offset_of!(Once, poison) as u64 == recovery::layout::once::POISON);

/// What the closure of [`Once::call_once_force`] is told.
pub struct OnceState {
    poisoned: bool,
}

impl OnceState {
    /// Whether an earlier initializer faulted while running it.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }
}

impl Once {
    /// Its address (what registries and the fault server see).
    pub fn addr(&self) -> u64 {
        self as *const Self as u64
    }

    pub fn is_completed(&self) -> bool {
        self.state.load(Ordering::Acquire) == COMPLETE
    }

    /// Whether an initializer faulted and nobody has completed it since.
    pub fn is_poisoned(&self) -> bool {
        self.poison.load(Ordering::Relaxed) != 0
    }

    /// Runs `f` if no task has completed it, once over all tasks; returns
    /// when it is complete (by whoever ran it).
    pub fn call_once(&self, f: impl FnOnce()) {
        self.call_once_force(|_| f())
    }

    /// As [`Once::call_once`], telling `f` whether an earlier run faulted.
    pub fn call_once_force(&self, f: impl FnOnce(&OnceState)) {
        if !self.is_completed() {
            self.run(f);
        }
    }

    #[inline(never)]
    fn run(&self, f: impl FnOnce(&OnceState)) {
        let me = registry::task_id();
        let tagged = self.addr() | lock_tag::ONCE;
        if registry::find(Kind::Mutex, tagged).is_some() {
            panic!("Once at {:#x}: call_once inside its own closure: it would wait for itself", self.addr());
        }
        let slot = super::rwlock::list(tagged);
        // Listed: from here a fault is decided by the state word.
        let mut spins = 0;
        let mut contended = 0;
        loop {
            let s = self.state.load(Ordering::Acquire);
            if s == COMPLETE {
                registry::remove(Kind::Mutex, slot);
                return;
            }
            if s == 0 {
                if self.state.compare_exchange(0, me | contended, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                    break;
                }
                continue;
            }
            if s & OWNER_MASK == me {
                // An earlier run of this task, never released: take over.
                self.poison.store(POISONED, Ordering::Relaxed);
                break;
            }
            if spins < SPIN_LIMIT {
                spins += 1;
                core::hint::spin_loop();
                continue;
            }
            if s & CONTENDED == 0
                && self.state.compare_exchange(s, s | CONTENDED, Ordering::Relaxed, Ordering::Relaxed).is_err()
            {
                continue;
            }
            contended = CONTENDED;
            match futex::wait(&self.state, s | CONTENDED, WAIT_SLICE_MS) {
                Ok(Wait::Woken | Wait::Changed | Wait::TimedOut) => {}
                Err(_) => crate::syscall::yield_now(),
            }
        }
        f(&OnceState { poisoned: self.is_poisoned() });
        self.poison.store(0, Ordering::Relaxed);
        let old = self.state.swap(COMPLETE, Ordering::Release);
        if old & CONTENDED != 0 {
            let _ = futex::wake(&self.state, u32::MAX as u64);
        }
        registry::remove(Kind::Mutex, slot);
    }
}

/// A value initialized once, shared by the tasks of a region. The value
/// is written in place and never dropped (it lives in shared memory, which
/// other tasks may have written anything into: `T: FromBytes`).
#[derive(FromBytes)]
#[repr(C, align(8))]
pub struct OnceLock<T> {
    once: Once,
    value: UnsafeCell<T>,
}

const _: () = assert!(core::mem::offset_of!(OnceLock<u64>, value) as u64 == recovery::layout::once::DATA);

// SAFETY: the value is written only by the task running the Once (the
// state word names it) and read, shared, only once it is COMPLETE
// (Acquire): std's bounds.
unsafe impl<T: Send + Sync> Sync for OnceLock<T> {}

impl<T> OnceLock<T> {
    /// The value, if some task has initialized it.
    pub fn get(&self) -> Option<&T> {
        // SAFETY: complete: written once, never again (see the Sync impl).
        self.once.is_completed().then(|| unsafe { &*self.value.get() })
    }

    /// The value, initialized by `f` if no task has done it yet.
    pub fn get_or_init(&self, f: impl FnOnce() -> T) -> &T {
        // SAFETY: the Once runs the closure only in the task its state
        // word names: nobody else writes or reads the value meanwhile. A
        // write, not an assignment: the bytes there are no value to drop.
        self.once.call_once(|| unsafe { core::ptr::write(self.value.get(), f()) });
        self.get().expect("a Once returns complete")
    }

    /// Initializes it with `value`; `Err(value)` if it already was.
    pub fn set(&self, value: T) -> Result<(), T> {
        let mut mine = Some(value);
        // SAFETY: as in get_or_init.
        self.once.call_once(|| unsafe { core::ptr::write(self.value.get(), mine.take().expect("run once")) });
        match mine {
            None => Ok(()),
            Some(v) => Err(v),
        }
    }

    /// The `Once` underneath (for `is_poisoned`, `addr`).
    pub fn once(&self) -> &Once {
        &self.once
    }
}
