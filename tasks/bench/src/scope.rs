//! What a checkpoint scope costs when nothing faults: opening and
//! committing one, and the first write to each page inside it.
//!
//! **checkpoint_open_commit**: `libtask::checkpoint::checkpoint(|_| ())` in
//! a loop of [`OPEN_ITERS`], minus the same loop without it. That is
//! everything a scope costs with an empty body: `CHECKPOINT_OPEN` (the
//! kernel records the registers, writes libtask's depth and scope record
//! into the recovery page, write-protects the pages written since the
//! previous open — here the stack page, from the loop — and preserves the
//! stack page below the caller's stack pointer: one page copy), libtask's
//! bookkeeping (nothing written on the way in), and `CHECKPOINT_COMMIT`
//! (the preserved frame freed, the recovery page made writable again for
//! libtask's depth store after it). All of that is in the figure: it is
//! what an empty scope costs a task.
//!
//! The open no longer walks the page tables, so its cost does not grow with
//! the task; the role still reports **checkpoint_pages**, the private
//! writable pages of the task (its data segment, `.data` + `.bss`, from the
//! linker script's symbols, and its stack, [`STACK_KIB`], the manifest's),
//! for reference: what an open that protected every page would touch.
//!
//! **first_write_in_scope**: inside one open scope, `rdtsc` / one byte
//! store / `rdtsc` on a page not yet written in the scope — the store
//! raises a #PF, the kernel copies the page into a fresh frame, maps the
//! copy writable and keeps the original for a rollback, and the store runs
//! again — minus the same window on a page already written (the store
//! itself, no fault). Each round uses a fresh page of [`FRESH_PAGES`]
//! mapped (and touched) before the scope opened; the best round counts.

use crate::measure::{best, report_figure, timed};
use crate::shared;
use crate::syscall::ROUNDS;
use core::arch::asm;
use core::hint::black_box;
use libtask::abi::layout::PAGE_SIZE;
use libtask::checkpoint::checkpoint;
use libtask::report;

/// Scopes opened and committed per round.
const OPEN_ITERS: u64 = 4;
/// Pages for the first-write rounds: one per round, and one already dirty.
const FRESH_PAGES: u64 = ROUNDS as u64 + 1;
/// The stack of this role: `stack_kib` of its manifest entry (the default).
const STACK_KIB: u64 = 64;

unsafe extern "C" {
    /// End of the call-frame information: the data segment starts at the
    /// next page (targets/task.ld).
    static __eh_frame_end: u8;
    /// End of `.bss`, page-aligned.
    static __image_end: u8;
}

/// Part of role 8 (its first): reports `bench:checkpoint_open_commit`, `bench:checkpoint_pages`,
/// `bench:first_write_in_scope`.
pub fn measure() {
    let pages = private_pages();
    let empty = best(ROUNDS, || timed(|| scope_loop::<false>(OPEN_ITERS)));
    scope_loop::<true>(1); // registers the recovery page (once per task)
    let total = best(ROUNDS, || timed(|| scope_loop::<true>(OPEN_ITERS)));
    report_figure("bench:checkpoint_open_commit", total, empty, OPEN_ITERS);
    report("bench:checkpoint_pages", pages > 0, pages);

    let Some(base) = shared::pages(FRESH_PAGES) else { return report("bench:first_write_in_scope", false, 0) };
    let measured = checkpoint(|_| {
        let dirty = shared::page(base, 0);
        store_window(dirty);
        let empty = best(ROUNDS, || store_window(dirty));
        let mut next = 0;
        let total = best(ROUNDS, || {
            next += 1;
            store_window(shared::page(base, next))
        });
        (total, empty)
    });
    let (total, empty) = measured.unwrap_or((0, 0));
    report_figure("bench:first_write_in_scope", total, empty, 1);
}

/// Private writable pages: the data segment and the stack.
fn private_pages() -> u64 {
    let data = (&raw const __eh_frame_end as u64).next_multiple_of(PAGE_SIZE);
    let end = &raw const __image_end as u64;
    end.saturating_sub(data) / PAGE_SIZE + STACK_KIB * 1024 / PAGE_SIZE
}

/// `n` empty scopes (`SCOPE = false`: the loop alone).
#[inline(never)]
fn scope_loop<const SCOPE: bool>(n: u64) {
    for i in 0..n {
        black_box(i);
        if SCOPE {
            let _ = black_box(checkpoint(|_| ()));
        }
    }
}

/// TSC, one byte store to `addr`, TSC; returns the difference.
///
/// Register contract: writes rax, rdx (rdtsc), a scratch register for the
/// first reading (declared), and the byte at `addr`.
#[inline(never)]
fn store_window(addr: *mut u8) -> u64 {
    let ticks: u64;
    // SAFETY: `addr` is in a page this task mapped writable; the store may
    // fault (copy-on-write inside a scope), which the kernel handles and
    // returns from transparently.
    unsafe {
        asm!("rdtsc", "shl rdx, 32", "or rax, rdx", "mov {t}, rax",
             "mov byte ptr [{a}], 1",
             "rdtsc", "shl rdx, 32", "or rax, rdx", "sub rax, {t}",
             a = in(reg) addr, t = out(reg) _, out("rax") ticks, out("rdx") _, options(nostack));
    }
    ticks
}
