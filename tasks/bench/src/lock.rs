//! The registry's cost on an uncontended lock: `libtask::sync::Mutex`
//! against a bare spinlock in the same shared region.
//!
//! Both locks live in region `shared` (`shared.rs`), the mutex
//! `Statics::lock`, the spinlock — one `AtomicU32` — `Statics::spin`, and role 8
//! runs three loops of [`ITERS`] iterations, with nothing else
//! competing:
//!
//! * **lock_unlock_spin**: `compare_exchange(0 → id)` (a `lock cmpxchg`)
//!   then `store(0)`: the least a lock in shared memory can cost;
//! * **lock_unlock_mutex**: `Mutex::lock()` and dropping the guard, outside
//!   any checkpoint scope: the same `CAS` and swap, plus what makes the
//!   mutex recoverable — the registry entry pushed (three stores into the
//!   task's recovery page) and removed (one store), see
//!   `libtask/src/sync/registry.rs` — the scope check of the drop, and the
//!   poison check whose answer the loop consumes (as a user does);
//! * **registry_cost** = mutex − spinlock, per lock + unlock.
//!
//! Each loop is timed per round and the empty loop (the same `black_box`ed
//! counter, no lock) subtracted; the best of [`ROUNDS`] rounds counts, as
//! everywhere (`measure.rs`). A first `lock()` before measuring registers
//! the recovery page with the kernel (`SET_RECOVERY`, once per task), so
//! the loops see only the steady state. Both loops are Rust, not asm: the
//! mutex *is* library code, and the spinlock is written the way a task
//! would write it; both compile to a loop around their atomics.

use crate::measure::{best, report_figure, timed};
use crate::shared::{REGION, SLOTS, SharedRegion};
use crate::syscall::ROUNDS;
use core::hint::black_box;
use core::sync::atomic::Ordering;
use libtask::report;
use libtask::sync::PoisonError;

/// Lock + unlock pairs per round.
const ITERS: u64 = 100;

/// Part of role 8: reports `bench:lock_unlock_spin`, `bench:lock_unlock_mutex`,
/// `bench:registry_cost`.
pub fn measure(id: u64) {
    let Ok(region) = SharedRegion::open_arcs(REGION, SLOTS) else { return report("bench:lock_unlock_mutex", false, 0) };
    let (mutex, spin) = (&region.statics().lock, &region.statics().spin);
    let me = id as u32;
    drop(mutex.lock().unwrap_or_else(PoisonError::into_inner));

    let empty = best(ROUNDS, || {
        timed(|| {
            for i in 0..ITERS {
                black_box(i);
            }
        })
    });
    let bare = best(ROUNDS, || {
        timed(|| {
            for i in 0..ITERS {
                black_box(i);
                while spin.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_err() {
                    core::hint::spin_loop();
                }
                spin.store(0, Ordering::Release);
            }
        })
    });
    let registered = best(ROUNDS, || {
        timed(|| {
            for i in 0..ITERS {
                black_box(i);
                // What a user looks at (poisoned or not), nothing more:
                // `black_box(&guard)` would spill the whole guard to the
                // stack, a cost of the benchmark, not of the mutex.
                let guard = mutex.lock();
                black_box(guard.is_err());
                drop(guard);
            }
        })
    });
    let clean = !mutex.is_locked() && !mutex.is_poisoned() && spin.load(Ordering::Relaxed) == 0;
    report_figure("bench:lock_unlock_spin", bare, empty, ITERS);
    report_figure("bench:lock_unlock_mutex", if clean { registered } else { 0 }, empty, ITERS);
    report_figure("bench:registry_cost", registered, bare, ITERS);
}
