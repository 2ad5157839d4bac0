//! The null system call and the context switch.
//!
//! **null_syscall**: `NULL` in a loop of [`NULL_ITERS`]; the figure is one
//! `syscall` instruction's round trip: entry stub, dispatch, exit. The loop
//! is asm (not `libtask::syscall::null()`, which adds the two or three
//! instructions of decoding `rax` in optimised builds and more in debug
//! ones) so that only the kernel's side differs between build profiles.
//!
//! **context_switch**: two tasks of the same priority, alone at it, each
//! calling `YIELD` in a loop: each yield gives up the slice, and round robin
//! picks the other task, so every yield is one switch between two address
//! spaces (save, pick, CR3 write, restore). The measuring task (arg 2)
//! times rounds of [`SWITCH_ITERS`] of its own yields; in a round the
//! partner (arg 3) yields as often, so the round holds 2 × iterations
//! switches and 2 × iterations loop bodies: the figure is
//! `(round - 2 × empty loop) / (2 × iterations)`, a yield system call
//! included. A yield never waits for the 10 ms slice to run out: it sets the
//! slice to zero, and `switch_to` gives the incoming task a fresh one.
//!
//! Alignment: both start with [`WARMUP`] yields, so the first measured
//! round finds the pair already alternating. The partner yields a few more
//! times than the measurer: the measurer's last yield must still find it
//! there (had the partner exited first, that yield would return to the
//! measurer itself, without a switch, and make a round look cheap). Its
//! extra yields, once the measurer is gone, return to itself at once.

use crate::measure::{best, report_figure, timed};
use core::arch::asm;
use libtask::abi::syscall::nr;

/// Rounds per figure (the best counts, see `measure.rs`).
pub const ROUNDS: u32 = 20;
/// Null system calls per round (~10^5 instructions).
const NULL_ITERS: u64 = 500;
/// Yields of the measuring task per round.
const SWITCH_ITERS: u64 = 50;
/// Yields before measuring.
const WARMUP: u64 = 4;

/// Role 1: reports `bench:null_syscall`, then `bench:timer_tick` (`tick.rs`).
pub fn null() {
    let empty = best(ROUNDS, || timed(|| null_loop::<false>(NULL_ITERS)));
    let total = best(ROUNDS, || timed(|| null_loop::<true>(NULL_ITERS)));
    report_figure("bench:null_syscall", total, empty, NULL_ITERS);
    crate::tick::measure();
}

/// Role 2: reports `bench:context_switch`.
pub fn switch_measure() {
    let empty = best(ROUNDS, || timed(|| yield_loop::<false>(SWITCH_ITERS)));
    yield_loop::<true>(WARMUP);
    let total = best(ROUNDS, || timed(|| yield_loop::<true>(SWITCH_ITERS)));
    report_figure("bench:context_switch", total, 2 * empty, 2 * SWITCH_ITERS);
}

/// Role 3: the measurer's partner; yields as often, and a little more.
pub fn switch_partner() {
    yield_loop::<true>(WARMUP + ROUNDS as u64 * SWITCH_ITERS + 2);
}

/// `n` (> 0) iterations of `mov eax, NULL; [syscall]; dec; jnz`: with
/// `CALL = false` the empty loop, one instruction shorter per iteration.
#[inline(never)]
fn null_loop<const CALL: bool>(n: u64) {
    if CALL {
        // SAFETY: NULL touches no memory; the kernel preserves every register
        // but rax, rcx, r11 (declared); the counter lives in another one.
        unsafe {
            asm!("2:", "mov eax, {nr}", "syscall", "dec {n}", "jnz 2b",
                 nr = const nr::NULL, n = inout(reg) n => _,
                 out("rax") _, out("rcx") _, out("r11") _, options(nostack));
        }
    } else {
        // SAFETY: register-only loop; rax and flags clobbered (declared).
        unsafe {
            asm!("2:", "mov eax, {nr}", "dec {n}", "jnz 2b",
                 nr = const nr::NULL, n = inout(reg) n => _, out("rax") _, options(nostack));
        }
    }
}

/// `n` (> 0) iterations of `mov eax, YIELD; [syscall]; dec; jnz`.
#[inline(never)]
fn yield_loop<const CALL: bool>(n: u64) {
    if CALL {
        // SAFETY: YIELD touches no memory; registers as in `null_loop`.
        unsafe {
            asm!("2:", "mov eax, {nr}", "syscall", "dec {n}", "jnz 2b",
                 nr = const nr::YIELD, n = inout(reg) n => _,
                 out("rax") _, out("rcx") _, out("r11") _, options(nostack));
        }
    } else {
        // SAFETY: register-only loop; rax and flags clobbered (declared).
        unsafe {
            asm!("2:", "mov eax, {nr}", "dec {n}", "jnz 2b",
                 nr = const nr::YIELD, n = inout(reg) n => _, out("rax") _, options(nostack));
        }
    }
}
