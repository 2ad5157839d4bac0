//! `doubler`: a deliberately wrong task, the test of golden runs
//! (`xtask/src/inject/golden.rs`, `docs/campaigns.md`).
//!
//! It counts rounds of work in a shared region. The *wrong* role does the
//! update inside the round's checkpoint scope, before the work:
//!
//! ```ignore
//! checkpoint(|_| { tally.fetch_add(1); work(); })
//! ```
//!
//! Shared memory is not rolled back, so when a fault in `work` rolls the
//! scope back, its re-run (`attempt.is_retry()`) adds 1 again: every
//! rollback silently doubles one update. Its own check is disabled — it
//! reports `doubler:tally` with `ok: true` whatever the value — so only a
//! comparison with a fault-free run can tell: the golden run's tally is
//! [`ROUNDS`], the faulted run's is one more per rollback. The *right* role
//! does the same work and updates after the scope commits, exactly once, and
//! checks its tally; faults in it are rolled back and change nothing.
//!
//! Roles, by manifest `arg`:
//!
//! | arg | role | checks |
//! |---|---|---|
//! | 1 | wrong, own check disabled | `doubler:progress` (value = tally, every 10 rounds), `doubler:tally` (ok: true, value = tally) |
//! | 2 | wrong, own check enabled | the same; `doubler:tally` is ok only if tally = [`ROUNDS`] |
//! | 3 | right: the update after the commit | the same, checked |
//!
//! Each role counts in its own word of the region `doubler` (capability
//! `doubler:map`), so instances of different roles do not mix.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};
use libtask::checkpoint::checkpoint;
use libtask::sync::{FromBytes, Region};
use libtask::{Start, println, report};

libtask::entry!(main);

/// Rounds of work; the tally a correct run ends with.
pub const ROUNDS: u64 = 40;
/// Iterations of work per round (~4 guest instructions each).
const WORK: u64 = 20_000;

/// The region's statics: a tally per role (index = the role's `arg`).
#[derive(FromBytes)]
#[repr(C)]
struct Tallies([AtomicU64; 8]);

/// Busy work the optimiser cannot remove: where the injections land.
#[inline(never)]
fn work(n: u64) -> u64 {
    let mut x = 0u64;
    for i in 0..n {
        x = core::hint::black_box(x.wrapping_add(i));
    }
    x
}

fn main(start: Start) -> u64 {
    let region = match Region::<Tallies>::open("doubler") {
        Ok(r) => r,
        Err(e) => {
            println!("doubler {}: region: {e}", start.id);
            report("doubler:region", false, 0);
            return 1;
        }
    };
    let (wrong, checked) = match start.arg {
        1 => (true, false),
        2 => (true, true),
        3 => (false, true),
        other => {
            println!("doubler: unknown role {other}");
            return 2;
        }
    };
    let tally = &region.statics().0[start.arg as usize]; // 1..=3: checked above
    for round in 1..=ROUNDS {
        let r = checkpoint(|attempt| {
            if wrong {
                // THE BUG: a shared update inside the scope. A rollback does
                // not undo it; the re-run does it again.
                tally.fetch_add(1, Ordering::Relaxed);
            }
            if attempt.is_retry() {
                println!("doubler {}: round {round} re-run (attempt {})", start.id, attempt.number);
            }
            work(WORK)
        });
        if r.is_err() {
            report("doubler:checkpoint", false, round);
        }
        if !wrong {
            tally.fetch_add(1, Ordering::Relaxed);
        }
        if round % 10 == 0 {
            report("doubler:progress", true, tally.load(Ordering::Relaxed));
        }
    }
    let t = tally.load(Ordering::Relaxed);
    println!("doubler {} (arg {}): tally {t} after {ROUNDS} rounds", start.id, start.arg);
    report("doubler:tally", !checked || t == ROUNDS, t);
    0
}
