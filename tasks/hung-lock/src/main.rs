//! `hung-lock`: a task takes a shared mutex and never lets go —
//! `let _g = m.lock(); loop {}` — and the system must end with the mutex
//! released and poisoned and the other tasks going on.
//!
//! No unwinding can help: the loop has no call, so there is no landing pad
//! to run the guard's drop. The kernel's watchdog (manifest `watchdog_ms`)
//! stops the hanger after that long without a system call and turns it into
//! a fault of kind `watchdog` at whatever instruction it was at; the fault
//! server reads the hanger's registry, poisons and unlocks the mutex, and
//! wakes the waiter sleeping on it.
//!
//! Roles, by manifest `arg`:
//!
//! | arg | role | checks |
//! |---|---|---|
//! | 1 | hanger: lock, then spin forever; on a restart (second run in the boot) lock, report and exit | `hung-lock:restarted` (value = 1 if it found the lock poisoned) |
//! | 2 | waiter: waits up to [`WAIT_MS`] for the lock | `hung-lock:released` (ok: got it, poisoned; value 0 = timed out, 1 = poisoned, 2 = clean) |
//! | 3 | bystander: works and sleeps while the hanger spins | `hung-lock:bystander` (value = rounds) |
//!
//! Every role needs the capability `hung:map` (region `hung`, 4 KiB).
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};
use libtask::sync::{FromBytes, Mutex, Region, TryLockError};
use libtask::{Start, println, report, syscall};

libtask::entry!(main);

/// How long the waiter waits for the hung lock.
pub const WAIT_MS: u64 = 4000;

/// The region's statics.
#[derive(FromBytes)]
#[repr(C)]
struct Shared {
    lock: Mutex<u64>,
    /// The hanger holds the lock.
    held: AtomicU32,
    /// The hanger hung once this boot.
    hung: AtomicU32,
}

fn main(start: Start) -> u64 {
    let region = match Region::<Shared>::open("hung") {
        Ok(r) => r,
        Err(e) => {
            println!("hung-lock {}: region: {e}", start.id);
            report("hung-lock:region", false, 0);
            return 1;
        }
    };
    let Shared { lock: m, held, hung } = region.statics();
    match start.arg {
        1 => hanger(m, held, hung),
        2 => waiter(m, held),
        3 => bystander(held),
        other => {
            println!("hung-lock: unknown role {other}");
            return 2;
        }
    }
    0
}

fn hanger(m: &Mutex<u64>, held: &AtomicU32, hung: &AtomicU32) {
    if hung.swap(1, Ordering::Relaxed) != 0 {
        // Restarted by the fault server: behave this time.
        let (poisoned, mut g) = match m.lock() {
            Ok(g) => (false, g),
            Err(p) => (true, p.into_inner()),
        };
        *g += 1;
        drop(g);
        report("hung-lock:restarted", true, poisoned as u64);
        return;
    }
    let _g = m.lock();
    held.store(1, Ordering::Release);
    println!("hung-lock: holding the lock and spinning");
    loop {
        core::hint::spin_loop();
    }
}

fn waiter(m: &Mutex<u64>, held: &AtomicU32) {
    let deadline = syscall::ticks() + 5000;
    while held.load(Ordering::Acquire) == 0 && syscall::ticks() < deadline {
        let _ = syscall::sleep(1);
    }
    let t0 = syscall::ticks();
    let (ok, value) = match m.try_lock_for(WAIT_MS) {
        Err(TryLockError::Poisoned(p)) => {
            let mut g = p.into_inner();
            *g += 1;
            m.clear_poison();
            (true, 1)
        }
        Ok(_) => (false, 2), // released but not poisoned: wrong
        Err(TryLockError::WouldBlock) => (false, 0),
    };
    println!(
        "hung-lock waiter: after {} ms: {}",
        syscall::ticks() - t0,
        ["still held", "released, poisoned", "released, clean"][value as usize]
    );
    report("hung-lock:released", ok, value);
}

fn bystander(held: &AtomicU32) {
    while held.load(Ordering::Acquire) == 0 {
        let _ = syscall::sleep(1);
    }
    let mut rounds = 0u64;
    let mut x = 1u64;
    for _ in 0..20 {
        for i in 0..10_000u64 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
        }
        rounds += 1;
        let _ = syscall::sleep(10);
    }
    report("hung-lock:bystander", rounds == 20 && x != 0, rounds);
}
