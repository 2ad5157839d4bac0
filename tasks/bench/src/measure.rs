//! Reading the TSC, picking the best round, reporting a figure.
//!
//! Under `-icount shift=0` one TSC tick is one guest instruction, so a
//! difference of two [`tsc`] reads counts the instructions in between (the
//! second `rdtsc` included, the first not; the empty loop subtracted from
//! each figure has the same pair, so that cancels).
//!
//! Why the *best* round and not the mean of all: the timer interrupts every
//! 10^6 instructions; a round it lands in also counts the interrupt handler
//! (tick bookkeeping, timeouts, EOI), which is not the operation's cost. A
//! round is kept short (well under 10^6 instructions), so most rounds are
//! clean and the smallest is one; within that round the figure is still a
//! mean over its iterations. Rounds of the empty loop are treated the same.
//!
//! The figure goes out as the check `bench:<name>` with its value in guest
//! instructions, which `cargo xtask bench` reads from the event stream.

use core::arch::asm;
use libtask::report;

/// The time stamp counter: guest instructions retired, under icount.
#[inline(always)]
pub fn tsc() -> u64 {
    let (lo, hi): (u64, u64);
    // SAFETY: `rdtsc` is allowed in ring 3 (the kernel leaves CR4.TSD
    // clear); it writes edx:eax (declared) and touches no memory. Not
    // `nomem`, so the compiler keeps it in order with the measured asm.
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nostack, preserves_flags)) };
    (hi << 32) | lo
}

/// The TSC ticks `f` takes.
#[inline(always)]
pub fn timed(f: impl FnOnce()) -> u64 {
    let start = tsc();
    f();
    tsc().wrapping_sub(start)
}

/// The smallest of `rounds` results of `f` (each a TSC difference).
pub fn best(rounds: u32, mut f: impl FnMut() -> u64) -> u64 {
    (0..rounds).map(|_| f()).min().unwrap_or(0)
}

/// Reports figure `name`: `(total - overhead) / ops`, rounded to the
/// nearest instruction. `ok` is false when the operation did not cost more
/// than its overhead (a broken measurement, not a slow kernel).
pub fn report_figure(name: &str, total: u64, overhead: u64, ops: u64) {
    let ok = total > overhead && ops > 0;
    let net = total.saturating_sub(overhead);
    let per_op = if ops == 0 { 0 } else { (net + ops / 2) / ops };
    report(name, ok, per_op);
}
