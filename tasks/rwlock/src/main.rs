//! `rwlock`: the std-like sync primitives of `libtask::sync` — `RwLock`,
//! `Condvar`, `Once`/`OnceLock` — used by tasks that fault inside
//! checkpoint scopes while holding them, and the invariants that must
//! survive: no torn table seen by a reader, every read given back exactly,
//! every item consumed once, one initialization, nothing left held.
//!
//! Why one task with roles: the faults are only interesting between tasks
//! that share the objects, and one binary keeps the region's layout in one
//! place (`at`). The faults are deliberate (`ud2`, once per boot each,
//! where a flag in the region says so); the sweeps and campaigns
//! (`faults/rwlock-sweep.toml`) add injected ones anywhere.
//!
//! Roles, by manifest `arg`:
//!
//! | arg | role | checks |
//! |---|---|---|
//! | 1 / 101 | writer: [`WRITES`] moves between `a` and `b` under the write lock (101 faults once mid-move); every eighth drops its guard in an inner scope and relocks there (a deferred release taken back) | `rwlock:writer-done` |
//! | 2 / 102 | reader: [`READS`] checks of `a + b` under a read lock, some with a second, nested read in an inner scope (102 faults once holding both), some dropping the outer read in an inner scope (deferred to its commit) | `rwlock:reader-done` (value = torn tables seen: must be 0) |
//! | 3 | producer: [`ITEMS`] items into a `Mutex` queue, `notify_one` each | `rwlock:produced` |
//! | 4 / 104 | consumer: takes items, waiting on the `Condvar` (104 faults once right after a wait, holding the mutex) | `rwlock:consumer-done` (value = items taken) |
//! | 5 / 105 | initializer: `OnceLock::get_or_init` (105 faults once inside the closure) | `rwlock:once` (value = the config's magic) |
//! | 6 | hanger: takes the write lock and spins until the watchdog fires; restarted, reads and exits | `rwlock:hanger-restarted` |
//! | 7 | hung-lock waiter: waits up to 4 s for the write lock the hanger holds | `rwlock:hung-released` (ok: got it, poisoned) |
//! | 200 + n | auditor: waits for n workers, then checks everything | `rwlock:total`, `rwlock:writes`, `rwlock:items`, `rwlock:once-runs`, `rwlock:locks-released` |
//!
//! Every role needs the capability `rw:map` (region `rw`, 8 KiB).
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};
use libtask::checkpoint::checkpoint;
use libtask::sync::{Condvar, FromBytes, Mutex, MutexGuard, OnceLock, Region, RwLock, TryLockError};
use libtask::{Start, println, report, syscall};

libtask::entry!(main);

/// `a + b`, always (outside a writer's critical section).
const TOTAL: u64 = 10_000;
pub const WRITES: u64 = 60;
pub const READS: u64 = 80;
pub const ITEMS: u64 = 40;
/// The config every initializer agrees on.
const MAGIC: u64 = 0x5eed_c0de;
/// The deliberate faults happen at this iteration.
const FAULT_AT: u64 = 17;
/// Iterations of busy work (~4 guest instructions each) in each writer's
/// and reader's critical section: time for injections at random times to
/// land while the locks are held (`faults/rwlock-kills.toml`).
const WORK: u64 = 40_000;

/// Busy work the optimiser cannot remove.
#[inline(never)]
fn work(n: u64) -> u64 {
    let mut x = 0u64;
    for i in 0..n {
        x = core::hint::black_box(x.wrapping_add(i));
    }
    x
}

#[derive(FromBytes, Clone, Copy)]
#[repr(C)]
struct Table {
    a: u64,
    b: u64,
    /// Moves completed (each exactly once, re-runs included).
    writes: u64,
    /// A move in progress: the old `a` and `b` (undo record), `active`.
    active: u64,
    old_a: u64,
    old_b: u64,
}

#[derive(FromBytes, Clone, Copy)]
#[repr(C)]
struct Queue {
    items: u64,
    produced: u64,
    consumed: u64,
    /// The producer is done: consumers leave once the queue is empty.
    closed: u64,
}

#[derive(FromBytes, Clone, Copy)]
#[repr(C)]
struct Config {
    magic: u64,
    by: u64,
}

/// The region's statics: every object the roles share.
#[derive(FromBytes)]
#[repr(C)]
struct Shared {
    table: RwLock<Table>,
    queue: Mutex<Queue>,
    cv: Condvar,
    config: OnceLock<Config>,
    /// Workers finished.
    done: AtomicU32,
    /// Bit per deliberate fault done (once per boot each).
    faulted: AtomicU32,
    /// Initializer closures started.
    once_runs: AtomicU32,
    /// The hanger holds the write lock.
    held: AtomicU32,
    /// The hanger hung once.
    hung: AtomicU32,
}

fn main(start: Start) -> u64 {
    let region = match Region::<Shared>::open_init("rw", init) {
        Ok(r) => r,
        Err(e) => {
            println!("rwlock {}: region: {e}", start.id);
            report("rwlock:region", false, 0);
            return 1;
        }
    };
    let s: &Shared = region.statics();
    match start.arg {
        1 | 101 => writer(s, start.id, start.arg > 100),
        2 | 102 => reader(s, start.arg > 100),
        3 => producer(s),
        4 | 104 => consumer(s, start.arg > 100),
        5 | 105 => initializer(s, start.id, start.arg > 100),
        6 => hanger(s),
        7 => hung_waiter(s),
        a @ 201..=299 => auditor(s, (a - 200) as u32),
        other => {
            println!("rwlock: unknown role {other}");
            return 2;
        }
    }
    0
}

/// The opening table, by the task that initializes the region.
fn init(s: &'static Shared) {
    let mut g = s.table.write().unwrap_or_else(|p| p.into_inner());
    *g = Table { a: TOTAL, b: 0, writes: 0, active: 0, old_a: 0, old_b: 0 };
}

/// Whether this task is the one to fault deliberately for `bit` (once per
/// boot: the flag lives in the region, which a rollback does not undo).
fn fault_now(s: &Shared, faulty: bool, n: u64, bit: u32) -> bool {
    faulty && n == FAULT_AT && s.faulted.fetch_or(bit, Ordering::Relaxed) & bit == 0
}

/// Fault bits of [`fault_now`] (one deliberate fault each per boot).
mod bit {
    pub const WRITER: u32 = 1;
    pub const INNER_READ: u32 = 2;
    pub const READ: u32 = 4;
    pub const CONSUMER: u32 = 8;
    pub const ONCE: u32 = 16;
}

fn ud2(what: &str) {
    println!("rwlock: faulting {what}");
    // SAFETY: ud2 raises #UD: the fault the demo is about. No memory touched.
    unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
}

fn set(place: &mut u64, value: u64) {
    // SAFETY: a valid &mut. Volatile: the order of these stores is what a
    // repairer reads after a fault, so the compiler must keep it.
    unsafe { core::ptr::write_volatile(place, value) }
}

fn writer(s: &Shared, id: u64, faulty: bool) {
    let mut rng = id.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    for n in 0..WRITES {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let r = checkpoint(|_| {
            let mut g = match s.table.write() {
                Ok(g) => g,
                Err(p) => {
                    // A writer faulted mid-move: undo it from the record.
                    let mut g = p.into_inner();
                    if g.active != 0 {
                        let (a, b) = (g.old_a, g.old_b);
                        set(&mut g.a, a);
                        set(&mut g.b, b);
                        set(&mut g.active, 0);
                    }
                    s.table.clear_poison();
                    report("rwlock:repaired", true, n);
                    g
                }
            };
            let amount = if g.a > 0 { rng % g.a.min(100) + 1 } else { 0 };
            let (a, b) = (g.a, g.b);
            set(&mut g.old_a, a);
            set(&mut g.old_b, b);
            set(&mut g.active, 1);
            set(&mut g.a, a - amount.min(a));
            work(WORK);
            if fault_now(s, faulty, n, bit::WRITER) {
                ud2("holding the write lock, mid-move");
            }
            set(&mut g.b, b + amount.min(a));
            set(&mut g.active, 0);
            let w = g.writes;
            set(&mut g.writes, w + 1);
            // Move it back half the time, so both sides keep changing.
            if rng & 1 == 0 {
                let (a, b) = (g.a, g.b);
                set(&mut g.a, a + b);
                set(&mut g.b, 0);
            }
            if n % 8 == 3 {
                // Dropped in an inner scope: unlocked at its commit
                // (deferred); relocked inside it first, taken back.
                let _ = checkpoint(move |_| {
                    drop(g);
                    let again = s.table.write();
                    drop(again);
                });
            }
        });
        if r.is_err() {
            report("rwlock:checkpoint", false, n);
        }
        if n % 4 == 0 {
            syscall::yield_now();
        }
    }
    s.done.fetch_add(1, Ordering::Release);
    report("rwlock:writer-done", true, WRITES);
}

/// Checks the table under a read lock; every eighth read also takes a
/// second read in an inner scope (the case where a rollback must give back
/// the inner read and keep the outer one). Counts torn tables seen.
fn reader(s: &Shared, faulty: bool) {
    let mut torn = 0u64;
    let mut poisoned = 0u64;
    for n in 0..READS {
        let r = checkpoint(|_| {
            let (bad, pois) = match s.table.read() {
                Ok(g) => (g.a + g.b != TOTAL, false),
                Err(p) => {
                    // A writer faulted; its move is undone by the next
                    // writer. The data may be torn: not a failure.
                    drop(p.into_inner());
                    (false, true)
                }
            };
            let _outer = s.table.read();
            work(WORK);
            if n % 8 == 0 {
                let _ = checkpoint(|_| {
                    let _inner = s.table.read();
                    if fault_now(s, faulty, n + 1, bit::INNER_READ) {
                        ud2("holding two reads, an outer and an inner scope's");
                    }
                });
            }
            if fault_now(s, faulty, n, bit::READ) {
                ud2("holding a read");
            }
            if n % 8 == 4 {
                // The outer scope's read, dropped in an inner scope: given
                // back at the inner scope's commit (deferred), not before.
                let _ = checkpoint(move |_| drop(_outer));
            }
            (bad, pois)
        });
        match r {
            Ok((bad, pois)) => {
                torn += bad as u64;
                poisoned += pois as u64;
            }
            Err(_) => report("rwlock:checkpoint", false, n),
        }
        if n % 4 == 0 {
            syscall::yield_now();
        }
    }
    s.done.fetch_add(1, Ordering::Release);
    println!("rwlock reader: {READS} reads, {torn} torn, {poisoned} poisoned");
    report("rwlock:reader-done", torn == 0, torn);
}

fn lock_queue<'a>(q: &'a Mutex<Queue>) -> MutexGuard<'a, Queue> {
    match q.lock() {
        Ok(g) => g,
        Err(p) => {
            // A consumer faulted holding it, before it took its item (the
            // take and the count are one store each, after the fault
            // point): the queue is whole.
            q.clear_poison();
            p.into_inner()
        }
    }
}

fn producer(s: &Shared) {
    for n in 0..ITEMS {
        let r = checkpoint(|_| {
            let mut g = lock_queue(&s.queue);
            g.items += 1;
            g.produced += 1;
            drop(g);
            s.cv.notify_one();
        });
        if r.is_err() {
            report("rwlock:checkpoint", false, n);
        }
        let _ = syscall::sleep(2);
    }
    let r = checkpoint(|_| {
        lock_queue(&s.queue).closed = 1;
        s.cv.notify_all();
    });
    s.done.fetch_add(1, Ordering::Release);
    report("rwlock:produced", r.is_ok(), ITEMS);
}

/// Takes items until the producer is done and the queue empty.
fn consumer(s: &Shared, faulty: bool) {
    let mut taken = 0u64;
    let mut n = 0u64;
    loop {
        let r = checkpoint(|_| {
            let g = lock_queue(&s.queue);
            let mut g = match s.cv.wait_while(g, |q| q.items == 0 && q.closed == 0) {
                Ok(g) => g,
                Err(p) => {
                    s.queue.clear_poison();
                    p.into_inner()
                }
            };
            // The third wait: early, whoever gets how many items.
            if fault_now(s, faulty, n + FAULT_AT - 2, bit::CONSUMER) {
                ud2("right after a Condvar wait, holding the mutex");
            }
            if g.items == 0 {
                return false; // closed and empty
            }
            g.items -= 1;
            g.consumed += 1;
            true
        });
        n += 1;
        match r {
            Ok(true) => taken += 1,
            Ok(false) => break,
            Err(_) => report("rwlock:checkpoint", false, n),
        }
    }
    s.done.fetch_add(1, Ordering::Release);
    report("rwlock:consumer-done", true, taken);
}

fn initializer(s: &Shared, id: u64, faulty: bool) {
    if !faulty {
        // The faulty one first: the others find it running and wait.
        let _ = syscall::sleep(5);
    }
    let r = checkpoint(|_| {
        let c = s.config.get_or_init(|| {
            s.once_runs.fetch_add(1, Ordering::Relaxed);
            // Long enough for the others to find it running and wait.
            let _ = syscall::sleep(20);
            if fault_now(s, faulty, FAULT_AT, bit::ONCE) {
                ud2("inside the OnceLock initializer");
            }
            Config { magic: MAGIC, by: id }
        });
        *c
    });
    match r {
        Ok(c) => report("rwlock:once", c.magic == MAGIC, c.magic),
        Err(_) => report("rwlock:once", false, 0),
    }
    s.done.fetch_add(1, Ordering::Release);
}

/// `let _g = table.write(); loop {}`: the watchdog must fault it, and the
/// fault server release the write lock, poisoned.
fn hanger(s: &Shared) {
    if s.hung.swap(1, Ordering::Relaxed) != 0 {
        let ok = s.table.read().is_ok() || s.table.is_poisoned();
        report("rwlock:hanger-restarted", ok, 0);
        return;
    }
    let _g = s.table.write();
    s.held.store(1, Ordering::Release);
    println!("rwlock: holding the write lock and spinning");
    loop {
        core::hint::spin_loop();
    }
}

fn hung_waiter(s: &Shared) {
    let deadline = syscall::ticks() + 5000;
    while s.held.load(Ordering::Acquire) == 0 && syscall::ticks() < deadline {
        let _ = syscall::sleep(1);
    }
    let (ok, value) = match s.table.try_write_for(4000) {
        Err(TryLockError::Poisoned(p)) => {
            drop(p.into_inner());
            s.table.clear_poison();
            (true, 1)
        }
        Ok(_) => (false, 2),
        Err(TryLockError::WouldBlock) => (false, 0),
    };
    report("rwlock:hung-released", ok, value);
}

fn auditor(s: &Shared, workers: u32) {
    let deadline = syscall::ticks() + 60_000;
    while s.done.load(Ordering::Acquire) < workers && syscall::ticks() < deadline {
        let _ = syscall::sleep(10);
    }
    let finished = s.done.load(Ordering::Acquire);
    report("rwlock:workers-done", finished >= workers, finished as u64);
    // Nothing may be left held: no read, no write, and both can be had.
    let readers = s.table.readers();
    let write_free = !s.table.is_write_locked();
    let (total, writes) = match s.table.try_write_for(2000) {
        Ok(g) => (g.a + g.b, g.writes),
        Err(TryLockError::Poisoned(p)) => {
            let g = p.into_inner();
            (g.a + g.b, g.writes)
        }
        Err(TryLockError::WouldBlock) => (0, 0),
    };
    let queue_free = !s.queue.is_locked();
    let q = lock_queue(&s.queue);
    let (produced, consumed, items) = (q.produced, q.consumed, q.items);
    drop(q);
    println!(
        "rwlock auditor: {finished}/{workers} done; readers {readers}, write free {write_free}, total {total}, \
         writes {writes}; queue produced {produced} consumed {consumed} left {items}; once runs {}",
        s.once_runs.load(Ordering::Relaxed)
    );
    report("rwlock:total", total == TOTAL, total);
    report("rwlock:writes", true, writes);
    report("rwlock:items", consumed == produced && items == 0, consumed);
    report(
        "rwlock:once-runs",
        s.config.get().is_some_and(|c| c.magic == MAGIC),
        s.once_runs.load(Ordering::Relaxed) as u64,
    );
    report("rwlock:locks-released", readers == 0 && write_free && queue_free && total != 0, readers as u64);
}
