//! `libtask`: what a Rewind task is written against.
//!
//! A task is a `#![no_std]`, `#![no_main]` Rust binary in `tasks/<name>/`
//! that depends on this crate and names its `main` with [`entry!`]. That is
//! all it needs: this crate supplies everything a bare-metal binary would
//! otherwise have to write itself.
//!
//! | module | what it gives a task | why it is here |
//! |---|---|---|
//! | [`start`] | `_start`, [`entry!`], [`Start`] | the kernel's entry contract (registers, stack, "never return") is met once, in assembly with CFI that ends stack walks |
//! | [`syscall`] | one typed function per system call, `Result<_, Error>` | tasks never handle call numbers or negative `rax` codes |
//! | [`print`] | [`print!`], [`println!`] | one line = one `WRITE`, so preempted tasks' lines do not tear |
//! | [`heap`] | the global allocator (`alloc::vec::Vec`, `Box`... work) | grows with `MAP` on demand; a task that never allocates never maps |
//! | [`panic`] | the panic handler | reports message, file and line (event `task_panic`) without allocating, then the task ends |
//! | [`buf`] | [`FixedBuf`], text formatting without a heap | shared by `println!` and the panic handler |
//! | [`ipc`] | capabilities by name, `send`/`call`/`recv`/`reply`/`reply_recv`, `signal`/`wait`; typed requests and replies ([`ipc::typed`], postcard) | the thirteen-register IPC convention (and `rbx`, which Rust asm cannot name) is handled once |
//! | [`checkpoint`] | [`checkpoint()`]: run a closure in a scope the fault server can roll back and re-run | the open/commit syscalls return twice; the scope's bookkeeping in the recovery page must follow exactly |
//! | [`sync`] | typed shared regions, `Mutex` (poisoning) and `Arc<T>` in them, the recovery page and its registries | the fault server releases what a faulted task held, from the registries; see `docs/recovery.md` |
//! | [`time`] | `Instant`, `Duration`, `sleep` on the guest clock | std's shape over `TICKS`, the clock every kernel timeout counts in |
//! | [`supervise`] | `TASK_CTL` (registers, memory, image, resume/restart/stop) and `emit` | the fault server's tools; any other task gets `Denied` |
//!
//! [`report`] emits a `check` event: the way test tasks tell the QEMU tests
//! (which read the event stream) what happened.
//!
//! How a task is built and linked (the linker script `targets/task.ld`
//! reaches every task through this crate's build.rs) is described at the
//! top of that script; a walk-through for a new task is in
//! `docs/first-task.md`. Checkpoints, the shared `Mutex` and `Arc` and
//! their registries are described in `docs/recovery.md`.
#![no_std]

pub mod buf;
pub mod checkpoint;
pub mod heap;
pub mod ipc;
pub mod panic;
pub mod print;
pub mod start;
pub mod supervise;
pub mod sync;
pub mod syscall;
pub mod time;

/// The kernel interface this crate is built on (layout, syscall numbers).
pub use abi;
pub use abi::syscall::Error;
pub use buf::FixedBuf;
pub use checkpoint::checkpoint;
pub use start::{Start, Termination};

/// Emits a `check` event named `name` with result `ok` and a `value`: how
/// test tasks report their outcome. A report the kernel refuses (a name it
/// finds unusable) is not silently lost: it is printed on the console.
pub fn report(name: &str, ok: bool, value: u64) {
    if let Err(e) = syscall::report(name, ok, value) {
        println!("report {name:?} (ok={ok}, value={value:#x}) refused: {}", e.name());
    }
}

/// Ends the task with `code` (the `EXIT` system call).
pub fn exit(code: u64) -> ! {
    syscall::exit(code)
}
