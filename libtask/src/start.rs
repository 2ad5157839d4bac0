//! The task entry point: `_start` in assembly, then Rust, then `EXIT`.
//!
//! The kernel starts a task at its ELF entry point in ring 3 with
//! `rsp = abi::layout::USER_STACK_TOP` (16-byte aligned), `rdi` = the task
//! id, `rsi` = the `arg` word of its manifest entry, `rdx` = its instance
//! index (manifest `count > 1`: 0, 1, ...; else 0), every other register 0.
//! There is no caller to return to, so `_start` is written in assembly:
//!
//! * its CFI says `.cfi_undefined rip`, the DWARF way of marking the
//!   outermost frame, so a stack walk (the fault server's, or the kernel's)
//!   ends cleanly here instead of reading garbage above the stack top;
//! * it `call`s [`rust_start`] with `rdi`/`rsi`/`rdx` untouched (they are
//!   already the first three arguments of the C calling convention) and an aligned
//!   stack (`rsp` is 16-aligned before the `call`, as the ABI wants);
//! * `rbp` is cleared, so frame-pointer walkers stop here too.
//!
//! [`rust_start`] calls the task's `main`, which [`entry!`](crate::entry)
//! exports under a fixed symbol name, and ends the task with `EXIT` and the
//! code `main` returned. A task that forgets `entry!` fails to link with
//! "undefined symbol: __rewind_task_main".

use crate::syscall;

/// What the kernel passes to a task at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Start {
    /// The task's id (as in the event stream).
    pub id: u64,
    /// The `arg` word of the task's manifest entry (default 0).
    pub arg: u64,
    /// Which instance of its manifest entry this task is: `0..count` for
    /// an entry with `count > 1` (the task named `NAME-i` gets `i`), else 0.
    /// Every instance gets the same `arg`; this tells them apart.
    pub instance: u32,
}

/// What a task's `main` may return: turned into the `EXIT` code.
pub trait Termination {
    fn exit_code(self) -> u64;
}

impl Termination for () {
    fn exit_code(self) -> u64 {
        0
    }
}

impl Termination for u64 {
    fn exit_code(self) -> u64 {
        self
    }
}

impl Termination for Result<(), abi::syscall::Error> {
    /// `Ok` exits 0; `Err(e)` prints the error and exits with its code.
    fn exit_code(self) -> u64 {
        match self {
            Ok(()) => 0,
            Err(e) => {
                crate::println!("main returned error {e}");
                e as u64
            }
        }
    }
}

// _start: register contract on entry as in the module comment. Clobbers rbp;
// never returns (rust_start ends the task; the ud2 is never reached).
core::arch::global_asm!(
    ".section .text._start, \"ax\", @progbits",
    ".global _start",
    ".type _start, @function",
    "_start:",
    ".cfi_startproc",
    ".cfi_undefined rip",
    "    xor ebp, ebp",
    "    call {rust_start}",
    "    ud2",
    ".cfi_endproc",
    ".size _start, . - _start",
    rust_start = sym rust_start,
);

unsafe extern "Rust" {
    /// The task's `main`, wrapped and exported by [`entry!`](crate::entry).
    safe fn __rewind_task_main(start: Start) -> u64;
}

/// Called by `_start` with the task id, the manifest's `arg` and the
/// instance index.
extern "C" fn rust_start(id: u64, arg: u64, instance: u64) -> ! {
    let code = __rewind_task_main(Start { id, arg, instance: instance as u32 });
    syscall::exit(code)
}

/// Declares the task's `main`: `fn main(start: libtask::Start) -> R` where
/// `R` is `()`, `u64` (the exit code) or `Result<(), libtask::Error>`.
///
/// ```ignore
/// #![no_std]
/// #![no_main]
/// libtask::entry!(main);
/// fn main(start: libtask::Start) {
///     libtask::println!("task {} says hello", start.id);
/// }
/// ```
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[unsafe(export_name = "__rewind_task_main")]
        fn __rewind_task_main(start: $crate::Start) -> u64 {
            let main: fn($crate::Start) -> _ = $main;
            $crate::Termination::exit_code(main(start))
        }
    };
}
