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
use libtask::sync::{Arc, Layout, Mutex, MutexGuard, Region};
use libtask::{println, report, syscall};

use super::{Guarded, Obj, ud2, wait_flag};

/// Rounds per hammer.
pub const ROUNDS: u64 = 5000;
/// Faults the faulter takes (one per scope).
pub const FAULTS: u64 = 20;
/// Hammers the owner waits for.
pub const HAMMERS: u32 = 3;

mod at {
    pub const A: u32 = 0; // Mutex<Guarded>: 24 bytes
    pub const B: u32 = 32; // Mutex<Guarded>
    pub const X_ADDR: u32 = 64; // AtomicU64
    pub const X_GEN: u32 = 72; // AtomicU64
    pub const READY: u32 = 80; // AtomicU32: the Arc is published
    pub const DONE: u32 = 84; // AtomicU32: hammers and faulter finished
}
pub const LAYOUT: Layout = Layout { statics: 128, slot_payload: core::mem::size_of::<Obj>() as u32, slots: 4 };

fn mutex(region: &Region, at: u32) -> &'static Mutex<Guarded> {
    region.get::<Mutex<Guarded>>(at).expect("mutex in the statics")
}

fn word32(region: &Region, at: u32) -> &'static AtomicU32 {
    region.get::<AtomicU32>(at).expect("flag in the statics")
}

fn word64(region: &Region, at: u32) -> &'static AtomicU64 {
    region.get::<AtomicU64>(at).expect("word in the statics")
}

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

fn published(region: &Region) -> Option<(u64, u32)> {
    if !wait_flag(word32(region, at::READY), 10_000) {
        return None;
    }
    Some((word64(region, at::X_ADDR).load(Ordering::Acquire), word64(region, at::X_GEN).load(Ordering::Acquire) as u32))
}

pub fn hammer(region: &Region, id: u64) {
    let Some((addr, generation)) = published(region) else {
        report("stress:hammer", false, u64::MAX);
        return;
    };
    let (a, b) = (mutex(region, at::A), mutex(region, at::B));
    let mut broken = 0u64;
    for round in 0..ROUNDS {
        let Ok(x) = Arc::<Obj>::acquire(region, addr, generation) else {
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
    word32(region, at::DONE).fetch_add(1, Ordering::AcqRel);
}

pub fn faulter(region: &Region) {
    let Some((addr, generation)) = published(region) else {
        report("stress:faulter", false, u64::MAX);
        return;
    };
    let a = mutex(region, at::A);
    let mut rollbacks = 0;
    for _ in 0..FAULTS {
        let got = checkpoint(|att| {
            let x = Arc::<Obj>::acquire(region, addr, generation).ok()?;
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
    word32(region, at::DONE).fetch_add(1, Ordering::AcqRel);
}

pub fn owner(region: &Region) {
    let x = match Arc::new_in(region, Obj { tag: 0x57e55, data: [2; 7] }) {
        Ok(x) => x,
        Err(e) => {
            println!("txn stress owner: {e:?}");
            report("stress:arc-count", false, 0);
            return;
        }
    };
    word64(region, at::X_ADDR).store(Arc::addr(&x), Ordering::Relaxed);
    word64(region, at::X_GEN).store(Arc::generation(&x) as u64, Ordering::Relaxed);
    word32(region, at::READY).store(1, Ordering::Release);
    let deadline = syscall::ticks() + 60_000;
    while word32(region, at::DONE).load(Ordering::Acquire) < HAMMERS + 1 && syscall::ticks() < deadline {
        let _ = syscall::sleep(5);
    }
    let done = word32(region, at::DONE).load(Ordering::Acquire);
    // Every reference the others took was given back, the faulted ones by
    // the fault server: only ours is left.
    let count = Arc::strong_count(&x);
    report("stress:arc-count", done == HAMMERS + 1 && count == 1, count as u64);
    let (a, b) = (mutex(region, at::A), mutex(region, at::B));
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
