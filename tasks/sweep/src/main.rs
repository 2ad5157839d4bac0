//! `sweep`: the task side of the crash-window sweep
//! (`qemu-tests/tests/recovery_acceptance.rs`, issue 6). The test forces a
//! fault at every instruction of one operation — `Mutex::lock`, unlock (a
//! guard's drop), `Arc::from_token` (a reference to another task's object),
//! the drop of an Arc's last handle, `Arc::new_in` — by injecting at the
//! entry of the `#[inline(never)]` wrapper below that performs it, K
//! single-steps later, one sweeper instance per K. Each sweeper performs
//! its operation once, inside a checkpoint scope, so the fault is
//! recovered by release + rollback; the checker then verifies that nothing
//! was left behind: every sweeper finished, no mutex is still held, the
//! shared object's count is exactly the checker's own reference, and the
//! region's statistics balance.
//!
//! The mutex operations are swept under contention, which is where the
//! protocol's windows are (`docs/recovery.md`): each lock or unlock
//! sweeper `i` has a partner `i` and a mutex of its own, `M[i]`.
//!
//! * lock: the partner holds `M[i]` for 20 ms; the sweeper's lock spins,
//!   sleeps on the futex, is woken by the partner's unlock. The partner
//!   then checks that `M[i]` can be locked again (`sweep:lock-free`).
//! * unlock: the sweeper holds `M[i]` until its partner is asleep on it,
//!   then unlocks (swap, `FUTEX_WAKE`). The partner reports how long it
//!   waited (`sweep:waiter`, ok below 90 ms: woken by the unlock or the
//!   fault server's release, not by the end of a 100 ms wait slice — a
//!   lost wake).
//!
//! | arg | role | checks |
//! |---|---|---|
//! | 100 + i | lock sweeper `i` | `sweep:done` (value = attempts) |
//! | 200 + i | unlock sweeper `i` | `sweep:done` |
//! | 300 + i | Arc acquire sweeper (`i` < 100) | `sweep:done` |
//! | 400 + i | Arc drop sweeper (acquires X, drops it: the count goes back) | `sweep:done` |
//! | 500 + i | Arc allocation sweeper (allocates, drops: allocated and freed) | `sweep:done` |
//! | 600 + i | lock partner `i` | `sweep:lock-free` |
//! | 700 + i | unlock partner `i` | `sweep:waiter` (value = ms waited) |
//! | 900 + n | checker: publishes X, waits for n sweepers | `sweep:all-done`, `sweep:x-count` (value = X's count: 1), `sweep:unlocked` (value = mutexes still held), `sweep:stats` (value = allocs << 32 \| frees), `sweep:double-frees`, `sweep:live` |
//!
//! Every role needs `sweep:map` (region `sweep`, 8 KiB). `i` < [`PAIRS`].
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use libtask::checkpoint::checkpoint;
use libtask::sync::{Arc, FromBytes, LockResult, Mutex, MutexGuard, PoisonError, Region, SharedArc, SyncError};
use libtask::{Start, println, report, syscall};

libtask::entry!(main);

/// Sweeper/partner pairs a region has room for.
pub const PAIRS: u32 = 32;

#[derive(FromBytes, Clone, Copy)]
#[repr(C)]
pub struct Obj {
    tag: u64,
    sum: u64,
}

/// The region's statics.
#[derive(FromBytes)]
#[repr(C)]
pub struct Shared {
    /// X's token, as two words (`SharedArc::to_words`).
    x: [AtomicU64; 2],
    /// X is published.
    ready: AtomicU32,
    /// Sweepers finished.
    done: AtomicU32,
    /// Per pair: four flags, indexed by [`at`].
    pairs: [[AtomicU32; 4]; PAIRS as usize],
    /// Per pair: its mutex.
    mutexes: [Mutex<u64>; PAIRS as usize],
}

/// Indices of a pair's flags.
mod at {
    pub const S_HOLDING: usize = 0;
    pub const Q_WAITING: usize = 1;
    pub const Q_HOLDING: usize = 2;
    pub const S_DONE: usize = 3;
}

/// Region `sweep`: the statics, and Arc slots of `Obj`.
pub type Sweep = Region<Shared, Obj>;
const SLOTS: u32 = 72;

// ---- the swept operations: one function each, never inlined ----

#[unsafe(no_mangle)]
#[inline(never)]
pub fn sweep_lock(m: &Mutex<u64>) -> LockResult<MutexGuard<'_, u64>> {
    m.lock()
}

#[unsafe(no_mangle)]
#[inline(never)]
pub fn sweep_unlock(g: MutexGuard<'_, u64>) {
    drop(g)
}

#[unsafe(no_mangle)]
#[inline(never)]
pub fn sweep_acquire(region: &Sweep, x: SharedArc<Obj>) -> Result<Arc<Obj>, SyncError> {
    Arc::from_token(region, x)
}

#[unsafe(no_mangle)]
#[inline(never)]
pub fn sweep_drop(x: Arc<Obj>) {
    drop(x)
}

#[unsafe(no_mangle)]
#[inline(never)]
pub fn sweep_alloc(region: &Sweep, value: Obj) -> Result<Arc<Obj>, SyncError> {
    Arc::new_in(region, value)
}

fn main(start: Start) -> u64 {
    let region = match Sweep::open_arcs("sweep", SLOTS) {
        Ok(r) => r,
        Err(e) => {
            println!("sweep {}: region: {e}", start.id);
            report("sweep:region", false, 0);
            return 1;
        }
    };
    let (role, i) = ((start.arg / 100) as u32, (start.arg % 100) as u32);
    if matches!(role, 1 | 2 | 6 | 7) && i >= PAIRS {
        println!("sweep: index {i} out of range");
        return 2;
    }
    match role {
        1 => lock_sweeper(&region, i),
        2 => unlock_sweeper(&region, i),
        3..=5 => arc_sweeper(&region, role),
        6 => lock_partner(&region, i),
        7 => unlock_partner(&region, i),
        9 => checker(&region, i),
        _ => {
            println!("sweep: unknown role {}", start.arg);
            return 2;
        }
    }
    0
}

fn pair_flag(region: &Sweep, i: u32, which: usize) -> &'static AtomicU32 {
    &region.statics().pairs[i as usize][which]
}

fn mutex(region: &Sweep, i: u32) -> &'static Mutex<u64> {
    &region.statics().mutexes[i as usize]
}

/// Waits (sleeping) until `f` is set, at most `ms`; whether it was.
fn wait_flag(f: &AtomicU32, ms: u64) -> bool {
    let deadline = syscall::ticks() + ms;
    while f.load(Ordering::Acquire) == 0 {
        if syscall::ticks() >= deadline {
            return false;
        }
        let _ = syscall::sleep(1);
    }
    true
}

/// A few thousand instructions inside the scope after the swept
/// operation: the sweep's last batches, which fault past the operation's
/// end, still fault inside the scope (a rollback, like the others).
#[inline(never)]
fn pad() {
    let mut x = 1u64;
    for i in 0..1000u64 {
        x = core::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
    }
    core::hint::black_box(x);
}

/// A guard, poisoned or not (a faulted sweeper leaves the lock poisoned).
fn take<'a>(m: &'a Mutex<u64>, r: LockResult<MutexGuard<'a, u64>>) -> MutexGuard<'a, u64> {
    r.unwrap_or_else(|p: PoisonError<_>| {
        m.clear_poison();
        p.into_inner()
    })
}

fn done(region: &Sweep, attempts: Result<u64, libtask::Error>) {
    region.statics().done.fetch_add(1, Ordering::Release);
    report("sweep:done", attempts.is_ok(), attempts.unwrap_or(u64::MAX));
}

fn lock_sweeper(region: &Sweep, i: u32) {
    let m = mutex(region, i);
    wait_flag(pair_flag(region, i, at::Q_HOLDING), 5000);
    let r = checkpoint(|a| {
        let mut g = take(m, sweep_lock(m));
        *g += 1;
        drop(g);
        pad();
        a.number
    });
    pair_flag(region, i, at::S_DONE).store(1, Ordering::Release);
    done(region, r);
}

fn lock_partner(region: &Sweep, i: u32) {
    let m = mutex(region, i);
    let g = take(m, m.lock());
    pair_flag(region, i, at::Q_HOLDING).store(1, Ordering::Release);
    let _ = syscall::sleep(20);
    drop(g);
    wait_flag(pair_flag(region, i, at::S_DONE), 10_000);
    let free = match m.try_lock_for(1000) {
        Ok(_) => true,
        Err(libtask::sync::TryLockError::Poisoned(_)) => true,
        Err(libtask::sync::TryLockError::WouldBlock) => false,
    };
    report("sweep:lock-free", free, i as u64);
}

fn unlock_sweeper(region: &Sweep, i: u32) {
    let m = mutex(region, i);
    let r = checkpoint(|a| {
        let g = take(m, m.lock());
        pair_flag(region, i, at::S_HOLDING).store(1, Ordering::Release);
        wait_flag(pair_flag(region, i, at::Q_WAITING), 5000);
        let _ = syscall::sleep(5); // the partner goes to sleep on the word
        sweep_unlock(g);
        pad();
        a.number
    });
    pair_flag(region, i, at::S_DONE).store(1, Ordering::Release);
    done(region, r);
}

fn unlock_partner(region: &Sweep, i: u32) {
    let m = mutex(region, i);
    wait_flag(pair_flag(region, i, at::S_HOLDING), 5000);
    pair_flag(region, i, at::Q_WAITING).store(1, Ordering::Release);
    let t0 = syscall::ticks();
    let mut g = take(m, m.lock());
    let waited = syscall::ticks() - t0;
    *g += 1;
    drop(g);
    report("sweep:waiter", waited < 90, waited);
}

fn arc_sweeper(region: &Sweep, role: u32) {
    if !wait_flag(&region.statics().ready, 5000) {
        done(region, Err(libtask::Error::Timeout));
        return;
    }
    let x = SharedArc::from_words(region.statics().x.each_ref().map(|w| w.load(Ordering::Acquire)));
    let r = checkpoint(|a| {
        let ok = match role {
            3 => sweep_acquire(region, x).map(drop),
            4 => Arc::from_token(region, x).map(sweep_drop),
            _ => sweep_alloc(region, Obj { tag: 5, sum: a.number }).map(drop),
        };
        if let Err(e) = ok {
            println!("sweep: arc role {role}: {e:?}");
        }
        pad();
        ok.map(|()| a.number)
    });
    done(region, r.map_err(|_| libtask::Error::BadArgument).and_then(|r| r.map_err(|_| libtask::Error::BadArgument)));
}

fn checker(region: &Sweep, n: u32) {
    let x = match Arc::new_in(region, Obj { tag: 0x0b1e, sum: 0 }) {
        Ok(x) => x,
        Err(e) => {
            println!("sweep checker: {e:?}");
            report("sweep:all-done", false, 0);
            return;
        }
    };
    for (w, v) in region.statics().x.iter().zip(Arc::share(&x).to_words()) {
        w.store(v, Ordering::Relaxed);
    }
    region.statics().ready.store(1, Ordering::Release);
    let deadline = syscall::ticks() + 20_000;
    let done = &region.statics().done;
    while done.load(Ordering::Acquire) < n && syscall::ticks() < deadline {
        let _ = syscall::sleep(5);
    }
    let finished = done.load(Ordering::Acquire);
    report("sweep:all-done", finished == n, finished as u64);
    // Let the partners finish with their mutexes.
    let _ = syscall::sleep(50);
    let count = Arc::strong_count(&x);
    report("sweep:x-count", count == 1, count as u64);
    let held = (0..PAIRS).filter(|&i| mutex(region, i).is_locked()).count() as u64;
    report("sweep:unlocked", held == 0, held);
    drop(x);
    let s = region.stats();
    let live = region.live_slots();
    println!(
        "sweep checker: {finished}/{n} done; X count {count}; allocs {} frees {} double frees {} live {live}",
        s.allocs, s.frees, s.double_frees
    );
    report("sweep:stats", s.allocs == s.frees, ((s.allocs as u64) << 32) | s.frees as u64);
    report("sweep:double-frees", s.double_frees == 0, s.double_frees as u64);
    report("sweep:live", live == 0, live as u64);
}
