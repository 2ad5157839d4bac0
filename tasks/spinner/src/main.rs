//! `spinner`: shows preemption. Run two or more instances (the manifest
//! gives each a different `arg`, printed to tell them apart). Each one spins
//! without ever yielding; every [`REPORT_EVERY`] iterations it reports the
//! check `progress` (ok, value = iterations so far; a console line for the
//! first, the half-way and the last), and
//! after [`REPORTS`] reports (`arg - 1000` for an `arg` above 1000) it exits 0. The kernel has to take the CPU away
//! from one instance to run the other, so with a working timer and scheduler
//! the `progress` events of the instances interleave; without preemption,
//! one instance's events would all come before the other's.
//!
//! The spin is a two-instruction asm loop (`dec`/`jnz`), so a report costs
//! the same guest instructions in every build profile: [`REPORT_EVERY`]
//! iterations are 1,000,000 instructions, 1 ms of guest time under
//! `--icount` (shift 0: 1 instruction = 1 ns) and about 2.5 ms under plain
//! TCG (measured: two instances alternate every ~4 reports, one 10 ms time
//! slice each). An instance's whole run, 50 reports, takes ~0.1 s alone
//! and ~0.25 s sharing the CPU with another: far under a second.
#![no_std]
#![no_main]

use core::ops::ControlFlow;
use libtask::{Start, println, report};

/// Iterations between two reports (2 instructions each).
const REPORT_EVERY: u64 = 500_000;
/// Reports before the task exits.
const REPORTS: u64 = 50;

libtask::entry!(main);

fn main(start: Start) {
    // `arg` 1000 + n: n reports instead of [`REPORTS`] (the long-running
    // spinners of the mixed `faults/campaign-10k.toml`).
    let reports = if start.arg > 1000 { start.arg - 1000 } else { REPORTS };
    let (mut count, mut n) = (0, 0);
    // The whole run is one chain of checkpoint scopes, one per chunk of
    // work (`checkpoint::repeat`): a fault anywhere in a chunk — or in its
    // report, or while the spinner waits for the CPU — rolls the chunk
    // back to the previous chunk's commit and re-runs it. `count` and `n`
    // are private memory, rolled back with it; a report the failed run
    // made is made again (the same value: the golden-run comparison of
    // `cargo xtask inject` reads it as a rewind).
    let ran = libtask::checkpoint::repeat(|_attempt| {
        spin(REPORT_EVERY);
        count += REPORT_EVERY;
        n += 1;
        // Every report is an event; the console gets the first, the half
        // way and the last, so that a demo's fault story is not buried
        // under progress lines.
        if n == 1 || n % (reports / 2).max(1) == 0 {
            println!("spinner {} (arg {}): report {}/{}, {} iterations", start.id, start.arg, n, reports, count);
        }
        report("progress", true, count);
        if n >= reports { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
    });
    if let Err(e) = ran {
        println!("spinner {}: checkpoint refused: {}", start.id, e.name());
    }
}

/// Burns `iterations` × 2 instructions without touching memory or the kernel.
fn spin(iterations: u64) {
    // SAFETY: a register-only loop: counts `iterations` (> 0) down to 0 in
    // the register it is given; no memory, no stack, flags clobbered (asm
    // blocks clobber flags unless they say `preserves_flags`).
    unsafe {
        core::arch::asm!("2:", "dec {n}", "jnz 2b", n = inout(reg) iterations => _, options(nomem, nostack));
    }
}
