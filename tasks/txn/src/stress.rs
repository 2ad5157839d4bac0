//! Roles 60–62 of `txn`: the SMP stress of issue 14 — hammers on several
//! CPUs lock two shared `Mutex`es and take references to a shared `Arc`
//! as fast as they can while a faulter, inside a checkpoint scope, tears
//! the data under one of the locks with a reference held and faults, over
//! and over. The fault server (on whatever CPU) must release exactly what
//! the faulter held: the owner checks at the end that nothing leaked (both
//! locks free, unpoisoned), the Arc's count is back to its own reference,
//! and the counters add up to exactly the increments made (a lost or
//! doubled release, or a rollback racing a running task, breaks one of
//! them). Region `stress` (`stress:map`); every wait is bounded.
//!
//! | arg | role | checks |
//! |---|---|---|
//! | 60 | hammer: [`ROUNDS`] rounds of Arc acquire, lock A, bump, lock B, bump | `stress:hammer` (value = torn states seen without poison: 0) |
//! | 61 | faulter: [`FAULTS`] scopes, each tearing A's data with a reference held and faulting on attempt 0 | `stress:faulter` (value = rollbacks: [`FAULTS`]) |
//! | 62 | owner: creates the Arc, waits for the others (arg2 = how many hammers), checks | `stress:arc-count`, `stress:locks-free`, `stress:total-a`, `stress:total-b` |

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use libtask::checkpoint::checkpoint;
use libtask::sync::{Arc, FromBytes, Mutex, MutexGuard, Region, SharedArc};
use libtask::{println, report, syscall};

use super::{Guarded, Obj, ud2, wait_flag};

/// Rounds per hammer.
pub const ROUNDS: u64 = 5000;
/// Faults the faulter takes (one per scope).
pub const FAULTS: u64 = 20;
/// Hammers the owner waits for.
pub const HAMMERS: u32 = 3;

/// The statics of region `stress`.
#[derive(FromBytes)]
#[repr(C)]
pub struct Shared {
    a: Mutex<Guarded>,
    b: Mutex<Guarded>,
    /// The Arc's token (`SharedArc::to_words`).
    x: [AtomicU64; 2],
    /// The Arc is published.
    ready: AtomicU32,
    /// Hammers and faulter finished.
    done: AtomicU32,
}

/// Region `stress`: the statics, and Arc slots of `Obj`.
pub type Stress = Region<Shared, Obj>;
pub const SLOTS: u32 = 4;

/// Locks `m`; a poisoned lock (the faulter died holding it) is repaired:
/// its torn increment undone, the poison cleared. Returns the guard and
/// whether the data was torn *without* poison (a broken invariant).
fn lock_repairing(m: &Mutex<Guarded>) -> (MutexGuard<'_, Guarded>, bool) {
    match m.lock() {
        Ok(g) => {
            let broken = g.torn != 0;
            (g, broken)
        }
        Err(p) => {
            let mut g = p.into_inner();
            if g.torn != 0 {
                g.value -= 1;
                g.torn = 0;
            }
            m.clear_poison();
            (g, false)
        }
    }
}

fn published(region: &Stress) -> Option<SharedArc<Obj>> {
    if !wait_flag(&region.statics().ready, 10_000) {
        return None;
    }
    Some(SharedArc::<Obj>::from_words(region.statics().x.each_ref().map(|w| w.load(Ordering::Acquire))))
}

pub fn hammer(region: &Stress, id: u64) {
    let Some(token) = published(region) else {
        report("stress:hammer", false, u64::MAX);
        return;
    };
    let (a, b) = (&region.statics().a, &region.statics().b);
    let mut broken = 0u64;
    for round in 0..ROUNDS {
        let Ok(x) = Arc::from_token(region, token) else {
            report("stress:hammer-acquire", false, round);
            break;
        };
        let (mut g, torn) = lock_repairing(a);
        broken += torn as u64;
        g.value += 1;
        drop(g);
        let (mut g, torn) = lock_repairing(b);
        broken += torn as u64;
        g.value += 1;
        drop(g);
        drop(x);
    }
    println!("txn hammer {id}: {ROUNDS} rounds, {broken} broken");
    report("stress:hammer", broken == 0, broken);
    region.statics().done.fetch_add(1, Ordering::AcqRel);
}

pub fn faulter(region: &Stress) {
    let Some(token) = published(region) else {
        report("stress:faulter", false, u64::MAX);
        return;
    };
    let a = &region.statics().a;
    let mut rollbacks = 0;
    for _ in 0..FAULTS {
        let got = checkpoint(|att| {
            let x = Arc::from_token(region, token).ok()?;
            let (mut g, _) = lock_repairing(a);
            // Torn: the increment is made, the flag says it is not done.
            g.torn = 1;
            g.value += 1;
            if att.number == 0 {
                ud2();
            }
            g.torn = 0;
            drop(g);
            drop(x);
            Some(att.number)
        });
        match got {
            Ok(Some(n)) => rollbacks += n,
            _ => {
                report("stress:faulter-scope", false, rollbacks);
                break;
            }
        }
        let _ = syscall::sleep(1);
    }
    report("stress:faulter", rollbacks == FAULTS, rollbacks);
    region.statics().done.fetch_add(1, Ordering::AcqRel);
}

pub fn owner(region: &Stress) {
    let x = match Arc::new_in(region, Obj { tag: 0x57e55, data: [2; 7] }) {
        Ok(x) => x,
        Err(e) => {
            println!("txn stress owner: {e:?}");
            report("stress:arc-count", false, 0);
            return;
        }
    };
    for (w, v) in region.statics().x.iter().zip(Arc::share(&x).to_words()) {
        w.store(v, Ordering::Relaxed);
    }
    region.statics().ready.store(1, Ordering::Release);
    let done_flag = &region.statics().done;
    let deadline = syscall::ticks() + 60_000;
    while done_flag.load(Ordering::Acquire) < HAMMERS + 1 && syscall::ticks() < deadline {
        let _ = syscall::sleep(5);
    }
    let done = done_flag.load(Ordering::Acquire);
    // Every reference the others took was given back, the faulted ones by
    // the fault server: only ours is left.
    let count = Arc::strong_count(&x);
    report("stress:arc-count", done == HAMMERS + 1 && count == 1, count as u64);
    let (a, b) = (&region.statics().a, &region.statics().b);
    let free = !a.is_locked() && !b.is_locked() && !a.is_poisoned() && !b.is_poisoned();
    report("stress:locks-free", free, done as u64);
    // Every hammer bumped each lock's value ROUNDS times; the faulter
    // bumped A's once per scope (its torn attempts undone by the repairs).
    let expected = u64::from(HAMMERS) * ROUNDS;
    let (va, vb) = match (a.try_lock(), b.try_lock()) {
        (Ok(ga), Ok(gb)) => (ga.value, gb.value),
        _ => (u64::MAX, u64::MAX),
    };
    report("stress:total-a", va == expected + FAULTS, va);
    report("stress:total-b", vb == expected, vb);
    drop(x);
}
