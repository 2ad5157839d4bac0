//! `bank`: accounts in a shared region under one `Mutex`, transfers in
//! checkpoint scopes, and the invariant that money is neither created nor
//! destroyed — even when a teller faults in the middle of a transfer.
//!
//! Why it works: a transfer writes an undo **journal** into the shared
//! ledger (old balances, `active = 1`) before it touches a balance, and
//! clears it after. If the teller faults between the debit and the credit,
//! the fault server poisons and unlocks the mutex (from the teller's
//! registry) and rolls the teller's scope back; whoever locks next gets
//! `Err(PoisonError)`, undoes the journalled transfer, clears the poison,
//! and goes on. The rolled-back teller re-runs the same transfer (its
//! scope's attempt 1), so every transfer happens exactly once. (A fault
//! server that only restarts the teller from its image works too: the
//! restarted teller finds the mutex still owned by its own id and takes it
//! over, poisoned — `libtask::sync::mutex` — then repairs the same way.)
//!
//! Roles, by manifest `arg`:
//!
//! | arg | role | checks |
//! |---|---|---|
//! | 1 | teller: [`TRANSFERS`] transfers between pseudo-random accounts | `bank:teller-done` |
//! | 2 | teller of [`LONG_TRANSFERS`] transfers (the mixed campaign's) | as 1 |
//! | 101 | teller that faults (`ud2`) once per boot, mid-transfer, holding the lock | `bank:teller-done`; `bank:retried` (value = fault seq) when its scope is re-run; `bank:repaired` by whoever repairs |
//! | 200 + n | auditor: waits for n tellers, then checks the total | `bank:tellers-done`, `bank:total` (value = the sum) |
//! | 300 | checkpoint self-test (no shared data needed but the region) | `checkpoint:*` |
//! | 301 / 302 | contention test: holder / waiter | `mutex:holder`, `mutex:contended` (value = ms waited), `mutex:uncontended` |
//!
//! Every role needs the capability `bank:map` (region `bank`, 8 KiB).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use core::ops::ControlFlow;
use core::sync::atomic::{AtomicU32, Ordering};
use libtask::checkpoint::{self, checkpoint};
use libtask::sync::{FromBytes, Mutex, MutexGuard, PoisonError, Region};
use libtask::{Start, println, report, syscall};

libtask::entry!(main);

const ACCOUNTS: usize = 8;
const OPENING: u64 = 1000;
const TOTAL: u64 = ACCOUNTS as u64 * OPENING;
/// Transfers per teller.
pub const TRANSFERS: u64 = 200;
/// Transfers per long-running teller (`faults/campaign-10k.toml`).
pub const LONG_TRANSFERS: u64 = 1000;
/// The faulty teller faults in this transfer.
const FAULT_AT: u64 = 37;
/// Iterations of a teller's work per transfer (~4 guest instructions each).
const TELLER_WORK: u64 = 25_000;

/// Busy work the optimiser cannot remove.
#[inline(never)]
fn work(n: u64) -> u64 {
    let mut x = 0u64;
    for i in 0..n {
        x = core::hint::black_box(x.wrapping_add(i));
    }
    x
}

/// The undo record of the transfer in progress.
#[derive(FromBytes, Clone, Copy)]
#[repr(C)]
struct Journal {
    active: u64,
    from: u64,
    to: u64,
    old_from: u64,
    old_to: u64,
}

#[derive(FromBytes, Clone, Copy)]
#[repr(C)]
struct Ledger {
    balances: [u64; ACCOUNTS],
    journal: Journal,
}

/// The region's statics: everything the roles share.
#[derive(FromBytes)]
#[repr(C)]
struct Shared {
    ledger: Mutex<Ledger>,
    /// Tellers finished.
    done: AtomicU32,
    /// The fault happened (once per boot).
    injected: AtomicU32,
    /// The contention holder has the lock.
    held: AtomicU32,
    contend: Mutex<u64>,
    selftest: Mutex<u64>,
}

/// The region `bank`, seen as a `Shared`.
type Bank = Region<Shared>;

fn main(start: Start) -> u64 {
    let region = match Bank::open_init("bank", init) {
        Ok(r) => r,
        Err(e) => {
            println!("bank {}: region: {e}", start.id);
            report("bank:region", false, 0);
            return 1;
        }
    };
    match start.arg {
        1 => teller(&region, start.id, TRANSFERS, false),
        2 => teller(&region, start.id, LONG_TRANSFERS, false),
        101 => teller(&region, start.id, TRANSFERS, true),
        a @ 201..=299 => auditor(&region, (a - 200) as u32),
        300 => selftest(&region),
        301 => holder(&region),
        302 => waiter(&region),
        other => {
            println!("bank: unknown role {other}");
            return 2;
        }
    }
    0
}

/// Opening balances, by the task that initializes the region.
fn init(shared: &Shared) {
    let mut g = lock(&shared.ledger);
    g.balances = [OPENING; ACCOUNTS];
}

/// Locks, repairing and un-poisoning the ledger if a holder faulted.
fn lock_ledger(m: &Mutex<Ledger>) -> MutexGuard<'_, Ledger> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => {
            let mut g = poisoned.into_inner();
            let undone = repair(&mut g);
            m.clear_poison();
            println!("bank: ledger was poisoned; undid a torn transfer: {undone}");
            report("bank:repaired", true, undone as u64);
            g
        }
    }
}

/// Locks, ignoring poison (for data without an invariant to repair).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn set(place: &mut u64, value: u64) {
    // SAFETY: a valid &mut. Volatile: the order of these stores is what a
    // repairer reads after a fault, so the compiler must keep it.
    unsafe { core::ptr::write_volatile(place, value) }
}

/// Undoes a journalled transfer; true if there was one.
fn repair(l: &mut Ledger) -> bool {
    let j = l.journal;
    if j.active == 0 {
        return false;
    }
    // Shared data is hostile: indices are checked, not trusted.
    if (j.from as usize) < ACCOUNTS && (j.to as usize) < ACCOUNTS {
        set(&mut l.balances[j.from as usize], j.old_from);
        set(&mut l.balances[j.to as usize], j.old_to);
    }
    set(&mut l.journal.active, 0);
    true
}

fn transfer(l: &mut Ledger, from: usize, to: usize, amount: u64, fault: bool) -> bool {
    if from == to || l.balances[from] < amount {
        return false;
    }
    let (old_from, old_to) = (l.balances[from], l.balances[to]);
    set(&mut l.journal.from, from as u64);
    set(&mut l.journal.to, to as u64);
    set(&mut l.journal.old_from, old_from);
    set(&mut l.journal.old_to, old_to);
    set(&mut l.journal.active, 1);
    set(&mut l.balances[from], old_from - amount);
    if fault {
        println!("bank: faulting mid-transfer ({amount} from {from} to {to}), lock held");
        // SAFETY: ud2 raises #UD: the fault the demo is about. No memory touched.
        unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
    }
    set(&mut l.balances[to], old_to + amount);
    set(&mut l.journal.active, 0);
    true
}

fn teller(region: &Bank, id: u64, transfers: u64, faulty: bool) {
    // The statics are reached through `region` inside the scope, not kept
    // in a local across it: `faults/checkpoint-sweep.toml` skips 2 bytes
    // into `checkpoint`'s first `cmp`, which then decodes as garbage
    // including `add [rbx + rcx*4 + 0x25], cl` — *before* the scope opens,
    // so no rollback undoes it. With the statics pointer in rbx (where the
    // register allocator put it when it was a local here) that store hit
    // the ledger: silent corruption the sweep rightly counts. The region
    // pointer is private memory. (A property of that injection, not of
    // recovery: any shared pointer live in a register at that instant
    // would do the same.)
    let mut rng = id.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut n = 0;
    // One transfer per run of a `repeat`: each run is a checkpoint scope,
    // chained to the next by one system call, so the teller is inside a
    // scope from its first transfer to its last — working, waiting for
    // the lock, or yielding the CPU (inside the run too) — and any fault,
    // kill or hang there rolls back one transfer, never restarts the
    // teller. `rng` and `n` are private: rolled back with the run.
    let ran = checkpoint::repeat(|attempt| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let (from, to, amount) = ((rng % 8) as usize, ((rng >> 8) % 8) as usize, (rng >> 16) % 50 + 1);
        // A teller's work before it takes the lock: ~0.1 ms of guest time
        // per transfer, inside the scope, so that time-scheduled injections
        // (`faults/bank-storm.toml`, the acceptance tests) land in scopes,
        // and a teller lives as long however cheap scopes get.
        work(TELLER_WORK);
        if let Some(f) = attempt.last_fault {
            println!(
                "bank teller {id}: transfer {n} re-run (attempt {}) after fault {} at {:#x}",
                attempt.number, f.seq, f.pc
            );
            report("bank:retried", true, f.seq);
        }
        let shared = region.statics();
        let mut g = lock_ledger(&shared.ledger);
        let fault = faulty && n == FAULT_AT && shared.injected.swap(1, Ordering::Relaxed) == 0;
        transfer(&mut g, from, to, amount, fault);
        drop(g);
        n += 1;
        if n == transfers {
            return ControlFlow::Break(());
        }
        if n % 8 == 0 {
            syscall::yield_now();
        }
        ControlFlow::Continue(())
    });
    if ran.is_err() {
        report("bank:checkpoint", false, n);
    }
    // Out of every scope: the recovery page and the kernel must both say 0
    // (the checkpoint sweeps' count check).
    let (page, kernel) = (checkpoint::depth(), checkpoint::kernel_depth());
    report("bank:depth", page == 0 && kernel == 0, (page as u64) << 32 | kernel as u64);
    region.statics().done.fetch_add(1, Ordering::Release);
    report("bank:teller-done", true, transfers);
}

fn auditor(region: &Bank, tellers: u32) {
    let ledger = &region.statics().ledger;
    let done = &region.statics().done;
    let deadline = syscall::ticks() + 30_000;
    while done.load(Ordering::Acquire) < tellers && syscall::ticks() < deadline {
        let _ = syscall::sleep(10);
    }
    let finished = done.load(Ordering::Acquire);
    report("bank:tellers-done", finished >= tellers, finished as u64);
    let g = lock_ledger(ledger);
    let sum: u64 = g.balances.iter().sum();
    println!("bank auditor: {finished}/{tellers} tellers done, total {sum} (expected {TOTAL})");
    report("bank:total", sum == TOTAL, sum);
}

/// Checkpoint scopes without faults: results, nesting, memory, attempts,
/// and the registry's hand-over and deferral across scopes.
fn selftest(region: &Bank) {
    // A scope returns its closure's value and leaves depth as it was.
    let r = checkpoint(|a| (a.number, a.last_fault.is_none(), checkpoint::depth()));
    report("checkpoint:scope", r == Ok((0, true, 1)) && checkpoint::depth() == 0, checkpoint::depth() as u64);

    // Nested scopes keep what they wrote, on the stack and on the heap, over
    // many pages (each first write inside a scope is a copy-on-write fault).
    let mut stack = [0u64; 512];
    let v = checkpoint(|_| {
        let mut v: Vec<u64> = (0..16 * 512).collect();
        let inner = checkpoint(|_| {
            for (i, x) in v.iter_mut().enumerate().step_by(512) {
                *x = i as u64 * 3;
            }
            stack[7] = 77;
            checkpoint::depth()
        });
        (v, inner)
    });
    let ok = match &v {
        Ok((v, Ok(2))) => {
            v.iter().enumerate().all(|(i, &x)| x == if i % 512 == 0 { i as u64 * 3 } else { i as u64 })
                && stack[7] == 77
        }
        _ => false,
    };
    report("checkpoint:nested", ok && checkpoint::depth() == 0, 0);

    // MAX_SCOPES nest; one more is refused without disturbing the others.
    fn nest(k: usize) -> (usize, bool) {
        match checkpoint(|_| if k + 1 < 9 { nest(k + 1) } else { (checkpoint::depth(), false) }) {
            Ok(r) => r,
            Err(e) => (k, e == libtask::Error::BadArgument),
        }
    }
    let (deepest, refused) = nest(0);
    let max = libtask::abi::checkpoint::MAX_SCOPES;
    report("checkpoint:max-depth", deepest == max && refused && checkpoint::depth() == 0, deepest as u64);

    // A guard of the outer scope dropped inside an inner one: the unlock
    // waits for the commit (a rollback would revive the guard).
    let m = &region.statics().selftest;
    let g = lock(m);
    let inside = checkpoint(move |_| {
        drop(g);
        m.is_locked()
    });
    report("checkpoint:deferred-unlock", inside == Ok(true) && !m.is_locked(), 0);

    // Re-locking a mutex whose unlock is deferred takes it back.
    let g = lock(m);
    let relocked = checkpoint(move |_| {
        drop(g);
        let mut g2 = lock(m);
        *g2 += 1;
        drop(g2);
        m.is_locked()
    });
    report("checkpoint:relock-deferred", relocked == Ok(true) && !m.is_locked() && *lock(m) == 1, 0);

    // A guard taken inside a scope and returned from it passes to the
    // parent scope, and unlocks at once when dropped there.
    let g = checkpoint(|_| lock(m)).expect("scope");
    let held = m.is_locked();
    drop(g);
    report("checkpoint:guard-escapes", held && !m.is_locked(), 0);

    // `repeat`: five runs, each in a scope of its own at depth 1 (the
    // kernel says so too), chained by renews; nothing open after it.
    let (mut runs, mut inside) = (0u64, true);
    let r = checkpoint::repeat(|a| {
        runs += 1;
        inside &= a.number == 0 && checkpoint::depth() == 1 && checkpoint::kernel_depth() == 1;
        if runs == 5 { ControlFlow::Break(runs) } else { ControlFlow::Continue(()) }
    });
    let closed = checkpoint::depth() == 0 && checkpoint::kernel_depth() == 0;
    report("checkpoint:repeat", r == Ok(5) && inside && closed, runs);

    // A guard one run takes and the next drops: the drop's unlock waits
    // for the commit (still locked in that run) and is made by the kernel
    // inside the renew (`RELEASE_AT_COMMIT`): unlocked in the next run.
    let mut g = None;
    let (mut runs, mut locked_after_drop, mut free_next_run) = (0u64, 0u64, 0u64);
    let r = checkpoint::repeat(|_| {
        runs += 1;
        if runs % 2 == 1 && runs > 1 && g.is_none() && !m.is_locked() {
            free_next_run += 1;
        }
        match g.take() {
            None => g = Some(lock(m)),
            Some(guard) => {
                drop(guard);
                locked_after_drop += m.is_locked() as u64;
            }
        }
        if runs == 8 { ControlFlow::Break(m.is_locked()) } else { ControlFlow::Continue(()) }
    });
    let closed = checkpoint::depth() == 0 && checkpoint::kernel_depth() == 0;
    let ok = r == Ok(true) && locked_after_drop == 4 && free_next_run == 3 && closed && !m.is_locked();
    report("checkpoint:repeat-deferred", ok, locked_after_drop << 8 | free_next_run);
}

fn holder(region: &Bank) {
    let m = &region.statics().contend;
    let held = &region.statics().held;
    let mut g = lock(m);
    held.store(1, Ordering::Release);
    // Hold it across a sleep: the waiter must find it taken and sleep too.
    let _ = syscall::sleep(130);
    *g = 0xfeed;
    drop(g);
    report("mutex:holder", true, 0);
}

fn waiter(region: &Bank) {
    let m = &region.statics().contend;
    let held = &region.statics().held;
    let deadline = syscall::ticks() + 5000;
    while held.load(Ordering::Acquire) == 0 && syscall::ticks() < deadline {
        let _ = syscall::sleep(1);
    }
    let t0 = syscall::ticks();
    let g = lock(m);
    let waited = syscall::ticks() - t0;
    let seen = *g;
    drop(g);
    println!("mutex waiter: waited {waited} ms, found {seen:#x}");
    // Woken by the unlock (about 130 ms), not by the end of a 100 ms wait
    // slice (200: libtask::sync::mutex sleeps in slices of that length).
    report("mutex:contended", seen == 0xfeed && (100..190).contains(&waited) && !m.is_locked(), waited);

    // Now nobody else uses it: 1000 uncontended lock/unlock pairs.
    let before = *lock(m);
    for _ in 0..1000 {
        *lock(m) += 1;
    }
    let after = *lock(m);
    report("mutex:uncontended", after == before + 1000 && !m.is_poisoned() && !m.is_locked(), after - before);
}
