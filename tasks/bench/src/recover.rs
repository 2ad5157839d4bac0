//! Fault → running again at the checkpoint: the whole transactional
//! recovery of one fault, with the real fault server doing it.
//!
//! One round ([`round`]; role 8 runs them after `scope` and `lock`): open
//! a checkpoint scope; in it, write one byte to each of `pages` private
//! pages (copy-on-write: each becomes a version the rollback must undo),
//! lock two `Mutex`es and allocate one `Arc` in region `shared` (three
//! registry entries of this scope), descend so that the fault happens
//! `frames` frames below the scope's, and there store the TSC into a word
//! of the shared region and execute `ud2`. The kernel reports the fault to
//! `faults`, where the real fault server (`fault-server/server`, priority
//! 0) runs its whole path for a fault in a scope: the backtrace (a stack
//! walk, an event, a console line per frame), the retry policy, a second
//! walk to the scope's frame, the recovery page read and checked, the
//! releases (two `CAS64` + wake to poison and unlock the mutexes, one
//! `FETCH_ADD32` and the `frees` count for the Arc; a `release` event and
//! a console line each), `ROLLBACK` (pages and registers back: the 8 or 64
//! pages, and the stack and recovery pages the scope also dirtied), its
//! console line and `fault_report`. The task runs again from
//! `CHECKPOINT_OPEN` with attempt 1, and the scope's body reads the TSC
//! first thing:
//!
//! * figure = TSC on the re-run − the TSC stored before the fault, minus
//!   the empty window (the same store, load and second `rdtsc` with no
//!   fault between).
//!
//! Why the stamp is in the shared region: a rollback restores all
//! registers and all private memory to the open of the scope — a TSC kept
//! in a register or on the stack would be the one from *before* the scope.
//! Shared regions are never rolled back.
//!
//! The variants:
//!
//! | figure | pages | frames |
//! |---|---|---|
//! | `fault_to_checkpoint_cold` | 8 | 10; the task's first fault, a single round: the server reads the task's ELF (symbols, unwind tables) and caches it by task id |
//! | `fault_to_checkpoint` | 8 | 10 |
//! | `fault_to_checkpoint_64_pages` | 64 | 10 |
//! | `fault_to_checkpoint_20_frames` | 8 | 20 |
//! | `fault_to_checkpoint_40_frames` | 8 | 40 |
//! | `rollback_per_page` | (64-page − 8-page) / 56: everything but the pages cancels |
//! | `walk_per_frame` | (40-frame − 20-frame) / 20 |
//!
//! How the rounds are kept comparable. A round is ~5 × 10^5 instructions,
//! and the 1 kHz timer interrupts every 10^6 under icount: left to chance,
//! half the rounds would count a tick's handler. So each round starts right
//! after a tick (the task polls `ticks()` until it changes, outside the
//! measured window) and ends long before the next: no round holds a tick.
//! What is left between two rounds of one variant is drift: the server's
//! heap, the width of the TSC printed in every event and so on move a round
//! by up to a few thousand instructions over the run — nothing next to a
//! round, but as much as the 56 pages or 20 frames of a difference. So the
//! four variants take turns ([`WARM_ROUNDS`] turns), and a difference is
//! the *median over the turns* of the two variants measured back to back,
//! never a difference of two minima measured far apart. The four
//! `fault_to_checkpoint*` figures are the minimum over their turns.
//!
//! "Frames" counts the stack the server walks to reach the scope: the
//! faulting frame is #0 (`descend`) and the scope's frame
//! (`checkpoint<…>`, the body inlined in it) is #(frames − 1). The server
//! walks the stack twice: once for the backtrace event, which lists at
//! most 16 frames (`fault-server/server/src/backtrace.rs`), and once to the
//! scope's frame. With 20 and 40 frames the first walk is the same — 16
//! frames of `descend` — so their difference is only the second walk's 20
//! more frames. (10 against 30 would not do: at 10 the backtrace reaches
//! past the scope into other functions, each a row-cache miss and a longer
//! name, and costs more than the 16 identical frames at 30.) The 20 extra
//! frames are all the same function, so that walk runs from the walker's
//! row cache: it is the warm per-frame cost.
//!
//! The manifest gives this task `max_restarts = 1000` so that the
//! server's per-scope retry policy never escalates during the rounds, and
//! the fault server must be the one in the image at priority 0. After the
//! rounds the role checks what the releases should have left: both
//! mutexes unlocked, no Arc slot counted, every allocation freed exactly
//! once (`bench:recovered_state`, not ok otherwise, which fails the run).

use crate::measure::{best, report_figure, tsc};
use crate::shared::{self, REGION, SLOTS, SharedRegion};
use crate::syscall::ROUNDS;
use core::hint::black_box;
use core::sync::atomic::{AtomicU64, Ordering};
use libtask::checkpoint::checkpoint;
use libtask::report;
use libtask::sync::{Arc, Mutex, MutexGuard};

/// Turns: rounds of each warm variant.
const WARM_ROUNDS: usize = ROUNDS as usize;
/// Dirty pages of the main figure and of the rollback comparison.
const PAGES: u64 = 8;
const MANY_PAGES: u64 = 64;
/// Frames from the fault to the scope's frame, inclusive: the main figure,
/// and the two deeper than the backtrace's 16 that give the walk per frame
/// (both well under the 64 frames the server walks at most to find a
/// scope: deeper, it would escalate to a fresh start).
const FRAMES: u32 = 10;
const DEEP: u32 = 20;
const DEEPER: u32 = 40;

/// What a round works on.
struct Ctx {
    region: SharedRegion,
    held_a: &'static Mutex<u64>,
    held_b: &'static Mutex<u64>,
    stamp: &'static AtomicU64,
    /// [`MANY_PAGES`] private pages.
    pages: *mut u8,
}

/// The warm variants, `(pages, frames)`, in the order of a turn.
const VARIANTS: [(u64, u32); 4] = [(PAGES, FRAMES), (MANY_PAGES, FRAMES), (PAGES, DEEP), (PAGES, DEEPER)];

/// Reports the figures of the table above.
pub fn measure() {
    let Some(ctx) = setup() else { return report("bench:fault_to_checkpoint", false, 0) };
    let empty = best(ROUNDS, || empty_window(ctx.stamp));
    let (cold, _) = after_tick(|| round(&ctx, PAGES, FRAMES));
    let mut turns = [[0u64; VARIANTS.len()]; WARM_ROUNDS];
    // The fault of the main figure's best round: xtask breaks its cost
    // into phases from that fault's `fault_report`.
    let mut best_main = (u64::MAX, 0);
    for turn in turns.iter_mut() {
        for (v, &(pages, frames)) in VARIANTS.iter().enumerate() {
            let (value, seq) = after_tick(|| round(&ctx, pages, frames));
            turn[v] = value;
            if v == 0 && value < best_main.0 {
                best_main = (value, seq);
            }
        }
    }
    report("bench:fault_to_checkpoint_seq", best_main.1 != 0, best_main.1);
    // The whole cost, reporting included: one more round, after which this
    // task sleeps, so the server's deferred report runs at once; xtask
    // takes the time of that fault's last event.
    let (_, seq) = after_tick(|| round(&ctx, PAGES, FRAMES));
    let _ = libtask::syscall::sleep(20);
    report("bench:fault_to_report_seq", seq != 0, seq);
    let min = |v: usize| turns.iter().map(|t| t[v]).min().unwrap_or(0);
    let diffs = |a: usize, b: usize| {
        let mut d = [0u64; WARM_ROUNDS];
        for (d, t) in d.iter_mut().zip(&turns) {
            *d = t[b].saturating_sub(t[a]);
        }
        d.sort_unstable();
        d[WARM_ROUNDS / 2]
    };
    let (per_page, per_frame) = (diffs(0, 1), diffs(2, 3));

    let stats = ctx.region.stats();
    let clean = !ctx.held_a.is_locked()
        && !ctx.held_b.is_locked()
        && ctx.region.live_slots() == 0
        && stats.allocs as usize == 2 + VARIANTS.len() * WARM_ROUNDS
        && stats.frees == stats.allocs
        && stats.double_frees == 0;
    report("bench:recovered_state", clean, stats.frees as u64);
    report_figure("bench:fault_to_checkpoint_cold", cold, empty, 1);
    report_figure("bench:fault_to_checkpoint", min(0), empty, 1);
    report_figure("bench:fault_to_checkpoint_64_pages", min(1), empty, 1);
    report_figure("bench:fault_to_checkpoint_20_frames", min(2), empty, 1);
    report_figure("bench:fault_to_checkpoint_40_frames", min(3), empty, 1);
    report_figure("bench:rollback_per_page", per_page, 0, MANY_PAGES - PAGES);
    report_figure("bench:walk_per_frame", per_frame, 0, (DEEPER - DEEP) as u64);
}

/// The main figure alone (the two-CPU rows, `placed.rs`): [`ROUNDS`]
/// rounds of 8 pages and 10 frames, each after a tick; reports the best
/// as `figure` and its fault's `seq` as `seq_name` (xtask reads that
/// fault's phases from its `fault_report`), and
/// `bench:recovered_state_placed` as [`measure`] does
/// `bench:recovered_state` (these rounds' allocations all freed once,
/// both mutexes free, no slot live), counted from what the region held
/// before (another role may have used it first).
pub fn measure_main(figure: &str, seq_name: &str) {
    let Some(ctx) = setup() else { return report(figure, false, 0) };
    let before = ctx.region.stats();
    let empty = best(ROUNDS, || empty_window(ctx.stamp));
    // The task's first fault (the server reads its ELF) is not a round.
    let _ = after_tick(|| round(&ctx, PAGES, FRAMES));
    let mut best_main = (u64::MAX, 0);
    for _ in 0..ROUNDS {
        let (value, seq) = after_tick(|| round(&ctx, PAGES, FRAMES));
        if value < best_main.0 {
            best_main = (value, seq);
        }
    }
    let stats = ctx.region.stats();
    let allocs = stats.allocs.wrapping_sub(before.allocs);
    let clean = !ctx.held_a.is_locked()
        && !ctx.held_b.is_locked()
        && ctx.region.live_slots() == 0
        && allocs == 1 + ROUNDS
        && stats.frees.wrapping_sub(before.frees) == allocs
        && stats.double_frees == before.double_frees;
    report("bench:recovered_state_placed", clean, allocs as u64);
    report(seq_name, best_main.1 != 0, best_main.1);
    report_figure(figure, best_main.0, empty, 1);
}

/// Runs `f` right after a timer tick (see the top), by sleeping until it:
/// the CPU is free meanwhile, so the fault server finishes what it defers
/// (the report of the previous round's fault, `fault_to_report` measures
/// it) and each round's fault finds it waiting in `recv`, as a fault does
/// in a system that is not already recovering one.
fn after_tick<R>(f: impl FnOnce() -> R) -> R {
    let t = libtask::syscall::ticks();
    let _ = libtask::syscall::sleep(1);
    while libtask::syscall::ticks() == t {
        core::hint::spin_loop();
    }
    f()
}

fn setup() -> Option<Ctx> {
    let region = SharedRegion::open_arcs(REGION, SLOTS).ok()?;
    let s = region.statics();
    Some(Ctx { held_a: &s.held_a, held_b: &s.held_b, stamp: &s.stamp, pages: shared::pages(MANY_PAGES)?, region })
}

/// One fault, from the stamp to the re-run of the scope (see the top):
/// the instructions it took and the fault's `seq`.
#[inline(never)]
fn round(ctx: &Ctx, pages: u64, frames: u32) -> (u64, u64) {
    let r = checkpoint(|attempt| {
        if attempt.is_retry() {
            let now = tsc();
            let seq = attempt.last_fault.map_or(0, |f| f.seq);
            return (now.wrapping_sub(ctx.stamp.load(Ordering::Relaxed)), seq);
        }
        for i in 0..pages {
            // SAFETY: one of the `MANY_PAGES` pages this task mapped.
            unsafe { core::ptr::write_volatile(shared::page(ctx.pages, i), 1) };
        }
        let a = lock(ctx.held_a);
        let b = lock(ctx.held_b);
        let arc = Arc::new_in(&ctx.region, 0u64);
        // The scope's frame is #(frames - 1); descend() from here adds the rest.
        let r = descend(frames - 2, ctx.stamp);
        drop((arc, b, a));
        (r, 0)
    });
    r.unwrap_or((0, 0))
}

/// Locks, ignoring the poison the server left (the data means nothing).
fn lock(m: &'static Mutex<u64>) -> MutexGuard<'static, u64> {
    m.lock().unwrap_or_else(|poisoned| {
        m.clear_poison();
        poisoned.into_inner()
    })
}

/// `k` more frames, then the fault (frame #0 is `descend(0)`).
#[inline(never)]
fn descend(k: u32, stamp: &AtomicU64) -> u64 {
    if k == 0 {
        stamp_and_fault(stamp.as_ptr());
    }
    let r = descend(k - 1, stamp);
    black_box(r).wrapping_add(k as u64) // not a tail call: keep the frame
}

/// Stores the TSC at `stamp` and executes `ud2`. Never returns: the server
/// rolls the task back to the scope's open.
#[inline(always)]
fn stamp_and_fault(stamp: *mut u64) -> ! {
    // SAFETY: `stamp` is an 8-aligned word of the shared region (mapped for
    // the task's lifetime); rax and rdx are free to clobber since the asm
    // does not return; `ud2` traps to the kernel.
    unsafe {
        core::arch::asm!("rdtsc", "shl rdx, 32", "or rax, rdx", "mov [rcx], rax", "ud2",
                         in("rcx") stamp, options(noreturn, nostack));
    }
}

/// The measurement's own overhead: stamp, load, TSC, no fault between.
#[inline(never)]
fn empty_window(stamp: &AtomicU64) -> u64 {
    // SAFETY: as in stamp_and_fault, without the ud2; rax, rdx declared.
    unsafe {
        core::arch::asm!("rdtsc", "shl rdx, 32", "or rax, rdx", "mov [rcx], rax",
                         in("rcx") stamp.as_ptr(), out("rax") _, out("rdx") _, options(nostack));
    }
    let now = tsc();
    now.wrapping_sub(stamp.load(Ordering::Relaxed))
}
