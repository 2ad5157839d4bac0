//! `txn`: the task side of the acceptance tests of transactional recovery
//! (`qemu-tests/tests/recovery_acceptance.rs`, issue 6). Each role sets up
//! one situation in which a fault must be recovered exactly, and reports
//! what it saw with `check` events; the test asserts on those and on the
//! kernel's and the fault server's events.
//!
//! | arg | role | checks |
//! |---|---|---|
//! | 1 | rollback: a private static counter, a heap `Vec` and `BTreeMap`, a stack array and a heap growth modified in a scope that faults (`ud2`) on attempt 0 | `rollback:counter`, `rollback:heap`, `rollback:stack`, `rollback:attempt` (on attempt 1: all back to their pre-scope values), `rollback:committed` (after the scope: attempt 1's writes kept) |
//! | 10 | holder: in a scope, locks the mutex, takes a reference to the owner's Arc, tears the data, sleeps (the waiter blocks on the lock), faults | `mutex-at-fault:holder-retry-clean`, `arc-at-fault:count-on-retry`, `arc-at-fault:held-not-freed`, `arc-at-fault:freed-once` |
//! | 13 | holder of the Arc reference only (no lock, no sleep) | as 10, without `mutex-at-fault:*` |
//! | 11 | owner: allocates the Arc, publishes it, drops its reference once the holder has its own | `arc-at-fault:owner-dropped` |
//! | 12 | waiter: blocks on the mutex the holder holds, is woken by the fault server's release | `mutex-at-fault:waiter-poisoned` (value = ms waited), `mutex-at-fault:clear-poison` |
//! | 20 | killee: a long critical section (no system call) in a scope; the plan kills it there | `kill:retried` (value = attempt) |
//! | 21 | kill waiter: blocks on the killee's mutex | `kill:waiter-poisoned` |
//! | 30 | escalator: nested scopes, a fault in the inner one on every run | `nest:outer`, `nest:inner` (value = restarts * 100 + attempt) |
//! | 40 | sleeper: sleeps 3 s inside a scope on attempt 0 (the plan kills it there) | `pending:retried` (value = the fault's seq) |
//! | 50 | storm worker: [`STORM_ROUNDS`] scopes, each sleeping 1 ms, spinning ~0.5 ms (no system call) and faulting on its attempt 0 — `ud2`, a null read, a `div` by zero or `hlt` (#GP), by task id and round — so many instances keep the fault server busy while a plan injects more | `storm:retry` (at each retry, value = the seq of the fault that rolled it back), `storm:done` (value = rollbacks seen since the task's last start) |
//!
//! | 60, 61, 62 | SMP stress (`stress.rs`): hammers, a faulter, the owner who checks | `stress:*` |
//!
//! Roles 10 to 21 need `txn:map` (region `txn`, 8 KiB); the others need
//! nothing. Every wait on another task is bounded, so a broken recovery
//! shows up as a failed check, never as a hung test.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use libtask::abi::fault::FaultKind;
use libtask::checkpoint::{self, checkpoint};
use libtask::sync::{Arc, FromBytes, Mutex, MutexGuard, PoisonError, Region, SharedArc};
use libtask::{Start, println, report, syscall};

mod stress;

libtask::entry!(main);

#[derive(FromBytes, Clone, Copy)]
#[repr(C)]
struct Guarded {
    /// 1 while an update is half done.
    torn: u64,
    value: u64,
}

#[derive(FromBytes, Clone, Copy)]
#[repr(C)]
struct Obj {
    tag: u64,
    data: [u64; 7],
}

/// The region's statics.
#[derive(FromBytes)]
#[repr(C)]
struct Shared {
    lock: Mutex<Guarded>,
    /// The owner published X.
    ready: AtomicU32,
    /// The holder holds the lock (attempt 0).
    holding: AtomicU32,
    /// The holder kept its X reference.
    holder_has: AtomicU32,
    owner_dropped: AtomicU32,
    waiter_done: AtomicU32,
    /// X's token (`SharedArc::to_words`).
    x: [AtomicU64; 2],
    klock: Mutex<u64>,
    /// The killee is in its critical section.
    kholding: AtomicU32,
    /// The kill waiter is done.
    kdone: AtomicU32,
}

/// Region `txn`: the statics, and Arc slots of `Obj`.
type Txn = Region<Shared, Obj>;
const SLOTS: u32 = 4;

fn main(start: Start) -> u64 {
    match start.arg {
        1 => rollback(),
        30 => escalator(),
        40 => sleeper(),
        50 => storm_worker(start.id),
        60..=62 => {
            let region = match stress::Stress::open_arcs("stress", stress::SLOTS) {
                Ok(r) => r,
                Err(e) => {
                    println!("txn {}: region stress: {e}", start.id);
                    report("stress:region", false, 0);
                    return 1;
                }
            };
            match start.arg {
                60 => stress::hammer(&region, start.id),
                61 => stress::faulter(&region),
                _ => stress::owner(&region),
            }
        }
        arg => {
            let region = match Txn::open_arcs("txn", SLOTS) {
                Ok(r) => r,
                Err(e) => {
                    println!("txn {}: region: {e}", start.id);
                    report("txn:region", false, 0);
                    return 1;
                }
            };
            match arg {
                10 => holder(&region, true),
                13 => holder(&region, false),
                11 => owner(&region),
                12 => waiter(&region),
                20 => killee(&region),
                21 => kill_waiter(&region),
                other => {
                    println!("txn: unknown role {other}");
                    return 2;
                }
            }
        }
    }
    0
}

fn ud2() {
    // SAFETY: ud2 raises #UD: the fault these tests are about. No memory touched.
    unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
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

// ---- arg 1: private memory is rolled back ----

/// A private static: in the task's data segment, rolled back like the rest.
static COUNTER: AtomicU64 = AtomicU64::new(0);

fn rollback() {
    COUNTER.store(41, Ordering::Relaxed);
    let original: Vec<u64> = (0..1024).map(|i| i * 3).collect();
    let mut heap = original.clone(); // 8 KiB: three pages
    let mut map: BTreeMap<u64, u64> = (0..64).map(|i| (i, i * i)).collect();
    let mut stack = [7u64; 64];
    let got = checkpoint(|a| {
        if a.is_retry() {
            let n = COUNTER.load(Ordering::Relaxed);
            report("rollback:counter", n == 41, n);
            let map_ok = map.len() == 64 && map.iter().all(|(&k, &v)| v == k * k);
            report("rollback:heap", heap == original && map_ok, heap.len() as u64);
            report("rollback:stack", stack.iter().all(|&x| x == 7), stack[5]);
            let f = a.last_fault;
            let seq = f.map_or(0, |f| f.seq);
            report(
                "rollback:attempt",
                a.number == 1 && f.is_some_and(|f| f.kind() == Some(FaultKind::Exception) && f.seq != 0),
                seq,
            );
        }
        COUNTER.fetch_add(1000, Ordering::Relaxed);
        heap[0] = 0xdead;
        heap.push(5);
        map.remove(&3);
        map.insert(1000, 1);
        stack[5] = 99;
        // Growth of the heap inside the scope: new pages from MAP, which the
        // rollback does not take back — the retry must still allocate.
        let big = vec![0xabu8; 256 * 1024];
        if a.number == 0 {
            println!("txn rollback: faulting with the counter at {}", COUNTER.load(Ordering::Relaxed));
            ud2();
        }
        big.iter().map(|&b| b as u64).sum::<u64>()
    });
    let n = COUNTER.load(Ordering::Relaxed);
    let kept = got == Ok(0xab * 256 * 1024)
        && n == 1041
        && heap[0] == 0xdead
        && heap.len() == 1025
        && !map.contains_key(&3)
        && stack[5] == 99;
    report("rollback:committed", kept, n);
}

// ---- args 10, 11, 12: a Mutex and an Arc held at the fault ----

fn ledger(region: &Txn) -> &'static Mutex<Guarded> {
    &region.statics().lock
}

fn holder(region: &Txn, with_lock: bool) {
    let m = ledger(region);
    if !wait_flag(&region.statics().ready, 5000) {
        report("arc-at-fault:ready", false, 0);
        return;
    }
    let token = SharedArc::<Obj>::from_words(region.statics().x.each_ref().map(|w| w.load(Ordering::Acquire)));
    let got = checkpoint(|a| {
        if a.is_retry() && with_lock {
            // The waiter was woken by the release: let it see the poison.
            wait_flag(&region.statics().waiter_done, 5000);
        }
        if !with_lock {
            // Only the reference is held at the fault.
            let x = Arc::from_token(region, token).ok()?;
            let count = Arc::strong_count(&x);
            if a.number == 0 {
                println!("txn holder: faulting with a reference (count {count})");
                ud2();
            }
            return Some((x, count, true, a.number));
        }
        let r = m.lock();
        let clean = r.is_ok();
        let mut g = r.unwrap_or_else(PoisonError::into_inner);
        let x = Arc::from_token(region, token).ok()?;
        let count = Arc::strong_count(&x);
        g.torn = 1;
        if a.number == 0 {
            region.statics().holding.store(1, Ordering::Release);
            // Holding both: the waiter blocks on the lock meanwhile.
            let _ = syscall::sleep(50);
            println!("txn holder: faulting with the lock and a reference (count {count})");
            ud2();
        }
        g.value += 1;
        g.torn = 0;
        drop(g);
        Some((x, count, clean, a.number))
    });
    let Ok(Some((x, count, clean, attempt))) = got else {
        report("arc-at-fault:holder", false, 0);
        return;
    };
    if with_lock {
        // The waiter cleared the poison before we locked again.
        report("mutex-at-fault:holder-retry-clean", clean && attempt == 1, attempt);
    }
    // The owner's and ours: the faulted attempt's reference was given back.
    report("arc-at-fault:count-on-retry", count == 2, count as u64);
    region.statics().holder_has.store(1, Ordering::Release);
    wait_flag(&region.statics().owner_dropped, 5000);
    let s = region.stats();
    let now = Arc::strong_count(&x);
    report("arc-at-fault:held-not-freed", now == 1 && s.frees == 0 && region.live_slots() == 1, now as u64);
    drop(x); // the last reference: frees the slot
    let s = region.stats();
    let ok = s.allocs == 1 && s.frees == 1 && s.double_frees == 0 && region.live_slots() == 0;
    println!(
        "txn holder: allocs {} frees {} double frees {} live {}",
        s.allocs,
        s.frees,
        s.double_frees,
        region.live_slots()
    );
    report("arc-at-fault:freed-once", ok, s.frees as u64);
}

fn owner(region: &Txn) {
    let x = match Arc::new_in(region, Obj { tag: 0x0b1e, data: [1; 7] }) {
        Ok(x) => x,
        Err(e) => {
            println!("txn owner: {e:?}");
            report("arc-at-fault:owner-dropped", false, 0);
            return;
        }
    };
    for (w, v) in region.statics().x.iter().zip(Arc::share(&x).to_words()) {
        w.store(v, Ordering::Relaxed);
    }
    region.statics().ready.store(1, Ordering::Release);
    let waited = wait_flag(&region.statics().holder_has, 10_000);
    drop(x);
    region.statics().owner_dropped.store(1, Ordering::Release);
    report("arc-at-fault:owner-dropped", waited, 0);
}

fn waiter(region: &Txn) {
    let m = ledger(region);
    if !wait_flag(&region.statics().holding, 5000) {
        report("mutex-at-fault:waiter-poisoned", false, 0);
        return;
    }
    let t0 = syscall::ticks();
    // Blocks: the holder holds it until it faults.
    match m.lock() {
        Err(p) => {
            let waited = syscall::ticks() - t0;
            let mut g = p.into_inner();
            let torn = g.torn;
            g.torn = 0; // the repair
            m.clear_poison();
            drop(g);
            println!("txn waiter: got the lock poisoned after {waited} ms (torn {torn})");
            report("mutex-at-fault:waiter-poisoned", torn == 1, waited);
            let again = m.lock();
            let clean = again.is_ok() && !m.is_poisoned();
            drop(again);
            report("mutex-at-fault:clear-poison", clean, 0);
        }
        Ok(g) => {
            drop(g);
            report("mutex-at-fault:waiter-poisoned", false, syscall::ticks() - t0);
        }
    }
    region.statics().waiter_done.store(1, Ordering::Release);
}

// ---- args 20, 21: a kill in the middle of a critical section ----

fn killee(region: &Txn) {
    let m = &region.statics().klock;
    let got = checkpoint(|a| {
        if a.is_retry() {
            wait_flag(&region.statics().kdone, 5000);
        }
        let mut g: MutexGuard<'_, u64> = m.lock().unwrap_or_else(PoisonError::into_inner);
        *g += 1;
        if a.number == 0 {
            region.statics().kholding.store(1, Ordering::Release);
            // A long critical section without a system call (the plan kills
            // us in it); one in a million rounds looks at the clock, so a
            // kill that never comes ends as a failed check, not a hang.
            let start = syscall::ticks();
            let mut x = 1u64;
            for i in 0u64.. {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
                if i % 1_000_000 == 0 && syscall::ticks() > start + 5000 {
                    break;
                }
            }
            report("kill:not-killed", false, x);
        }
        a.number
    });
    report("kill:retried", got == Ok(1), got.unwrap_or(0));
}

fn kill_waiter(region: &Txn) {
    let m = &region.statics().klock;
    if !wait_flag(&region.statics().kholding, 5000) {
        report("kill:waiter-poisoned", false, 0);
        return;
    }
    let t0 = syscall::ticks();
    let (poisoned, value) = match m.lock() {
        Err(p) => {
            let g = p.into_inner();
            m.clear_poison();
            (true, *g)
        }
        Ok(g) => (false, *g),
    };
    println!("txn kill waiter: got the lock after {} ms, poisoned {poisoned}, value {value}", syscall::ticks() - t0);
    report("kill:waiter-poisoned", poisoned && value == 1, value);
    region.statics().kdone.store(1, Ordering::Release);
}

// ---- arg 30: nested scopes that fault every time ----

fn escalator() {
    let run = libtask::supervise::restart_count();
    let _ = checkpoint(|outer| {
        report("nest:outer", checkpoint::depth() == 1, run * 100 + outer.number);
        let _ = checkpoint(|inner| {
            report("nest:inner", checkpoint::depth() == 2, run * 100 + inner.number);
            ud2();
        });
    });
    report("nest:escaped", false, run);
}

// ---- arg 40: killed while sleeping in a scope ----

fn sleeper() {
    let got = checkpoint(|a| match a.last_fault {
        None => {
            let _ = syscall::sleep(3000);
            None
        }
        Some(f) => Some(f.seq),
    });
    let seq = got.ok().flatten();
    report("pending:retried", seq.is_some(), seq.unwrap_or(0));
}

// ---- arg 50: a fault storm worker ----

/// Scopes a storm worker runs.
pub const STORM_ROUNDS: u64 = 6;
/// Loop iterations (2 instructions each) spun per attempt: 0.5 ms of guest
/// time under `-icount` (no system call: the task stays runnable and
/// injections that need it running find it so).
const STORM_SPIN: u64 = 250_000;

fn storm_worker(id: u64) {
    let mut rollbacks = 0;
    for round in 0..STORM_ROUNDS {
        let got = checkpoint(|a| {
            if let Some(f) = a.last_fault {
                report("storm:retry", true, f.seq);
            }
            // Asleep in the scope: every worker gets into its scope early,
            // and a kill finds it there.
            let _ = syscall::sleep(1);
            spin(STORM_SPIN);
            if a.number == 0 {
                own_fault(id + round);
            }
            a.number
        });
        match got {
            Ok(n) => rollbacks += n,
            Err(e) => {
                println!("txn storm {id}: checkpoint refused: {}", e.name());
                report("storm:done", false, rollbacks);
                return;
            }
        }
    }
    report("storm:done", true, rollbacks);
}

/// Burns `iterations` x 2 instructions without touching memory or the kernel.
fn spin(iterations: u64) {
    // SAFETY: a register-only loop counting `iterations` (> 0) down to 0 in
    // the register it is given; no memory, no stack, flags clobbered.
    unsafe {
        core::arch::asm!("2:", "dec {n}", "jnz 2b", n = inout(reg) iterations => _, options(nomem, nostack));
    }
}

/// A machine fault of the task's own, by `which % 4`: #UD, #PF, #DE, #GP.
fn own_fault(which: u64) {
    match which % 4 {
        0 => ud2(),
        // SAFETY: reads address 0, which is never mapped: #PF; the read
        // never completes, so its value is never observed.
        1 => unsafe {
            core::arch::asm!("mov {v}, qword ptr [{a}]", a = in(reg) 0u64, v = lateout(reg) _,
                             options(nostack, readonly))
        },
        // SAFETY: raises #DE; rax, rdx and the zero divisor are declared.
        2 => unsafe {
            core::arch::asm!("div {zero}", zero = in(reg) 0u64, inout("rax") 1u64 => _, inout("rdx") 0u64 => _,
                             options(nomem, nostack))
        },
        // SAFETY: `hlt` in ring 3 raises #GP; no memory touched.
        _ => unsafe { core::arch::asm!("hlt", options(nomem, nostack)) },
    }
}
