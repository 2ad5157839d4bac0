//! The timer tick: what one interrupt of the boot CPU's 1 kHz clock costs
//! the task it interrupts (role 1, after the null system call).
//!
//! The task spins a two-instruction asm loop (`dec`/`jnz`) of [`SPIN`]
//! iterations — 2 × 10^7 instructions, 20 ms under icount, so about 20
//! ticks land in it — right after a tick (so the window's tick count is
//! exact), and counts the ticks with `ticks()` around it. Everything the
//! window took beyond its own instructions is the ticks': the interrupt
//! entry and exit, the clock's bookkeeping (`sched::Scheduler::tick`: the
//! deadline test, or the scan of the task table when a deadline is due),
//! the scheduler pass every [`crate::syscall`] slice end. The figure is
//! that excess per tick. The other tasks of the image wait meanwhile (the
//! servers in `recv`, the other roles runnable below priority 1), so the
//! table the clock would scan is the whole image's.

use crate::measure::{report_figure, timed};
use core::arch::asm;

/// Loop iterations in the window (2 instructions each).
const SPIN: u64 = 10_000_000;

/// Reports `bench:timer_tick`.
#[inline(never)]
pub fn measure() {
    let empty = timed(|| spin(1));
    let t = libtask::syscall::ticks();
    while libtask::syscall::ticks() == t {
        core::hint::spin_loop();
    }
    let t0 = libtask::syscall::ticks();
    let total = timed(|| spin(SPIN));
    let ticks = libtask::syscall::ticks().saturating_sub(t0);
    // The window less its own loop (the empty window's one iteration
    // counted in `empty`).
    report_figure("bench:timer_tick", total.saturating_sub(2 * (SPIN - 1)), empty, ticks);
}

/// `n` (> 0) iterations of `dec; jnz`.
#[inline(never)]
fn spin(n: u64) {
    // SAFETY: register-only loop; the counter and flags are clobbered (declared).
    unsafe { asm!("2:", "dec {n}", "jnz 2b", n = inout(reg) n => _, options(nostack, nomem)) };
}
