//! The panic handler: report the panic to the kernel, which ends the task.
//!
//! The message is formatted into a [`FixedBuf`] on the stack: no heap, since
//! the allocator may be what panicked. It goes to the kernel through the
//! `PANIC` system call with the file and line as separate arguments: the
//! `task_panic` event has one field for each, and the kernel also prints
//! "task N (name) panicked at file:line: message" on the console, so the
//! handler prints nothing itself. (A later issue routes panics to the fault
//! server instead, so that a checkpoint can roll the task back; only this
//! file changes then.)
//!
//! A panic while formatting the message (a `Display` impl that panics)
//! would recurse; the second panic skips the formatting and reports a
//! fixed message.

use crate::buf::FixedBuf;
use crate::syscall;
use core::fmt::Write;
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};

/// Longest panic message passed on (longer ones are cut).
const MESSAGE_MAX: usize = 200;

static PANICKING: AtomicBool = AtomicBool::new(false);

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    let (file, line) = info.location().map_or(("<unknown>", 0), |l| (l.file(), l.line()));
    if PANICKING.swap(true, Ordering::Relaxed) {
        syscall::panic("panic while formatting a panic message", file, line);
    }
    let mut message = FixedBuf::<MESSAGE_MAX>::new();
    let _ = write!(message, "{}", info.message());
    syscall::panic(message.as_str(), file, line)
}
