//! Typed wrappers over the system calls of `abi::syscall`.
//!
//! One function per call, named after it, taking Rust types and returning
//! `Result<_, Error>` decoded from `rax` with `abi::syscall::Error::decode`,
//! so a task never sees raw numbers or negative error codes. Addresses are
//! `u64`, as in the ABI: the kernel checks them all, which is why
//! [`write_raw`] and [`map`] may be called with any address and are still
//! safe. The only `unsafe` wrapper is [`unmap`], which can take memory away
//! from Rust code that still uses it.

pub mod raw;

use abi::syscall::{Error, nr};

/// Decodes a raw result.
fn decode(ret: u64) -> Result<u64, Error> {
    Error::decode(ret)
}

/// `NULL`: enters the kernel and returns; for measuring the entry path.
pub fn null() -> Result<u64, Error> {
    // SAFETY: NULL touches no memory.
    decode(unsafe { raw::syscall0(nr::NULL) })
}

/// `WRITE`: writes `text` to the console; returns the number of bytes written.
pub fn write(text: &str) -> Result<usize, Error> {
    write_raw(text.as_ptr() as u64, text.len() as u64).map(|n| n as usize)
}

/// `WRITE` with an arbitrary address. The kernel checks `[ptr, ptr + len)`
/// (user range, mapped, readable) and answers `Err(BadPointer)` for a
/// bad one, so this is safe to call with any value: it is how tests check
/// that the kernel does.
pub fn write_raw(ptr: u64, len: u64) -> Result<u64, Error> {
    // SAFETY: WRITE only reads the buffer, and the kernel checks it.
    decode(unsafe { raw::syscall2(nr::WRITE, ptr, len) })
}

/// `YIELD`: gives up the rest of the time slice.
pub fn yield_now() {
    // SAFETY: YIELD touches no memory. It cannot fail.
    unsafe { raw::syscall0(nr::YIELD) };
}

/// `SLEEP`: blocks for at least `ms` milliseconds.
pub fn sleep(ms: u64) -> Result<(), Error> {
    // SAFETY: SLEEP touches no memory.
    decode(unsafe { raw::syscall1(nr::SLEEP, ms) }).map(drop)
}

/// `EXIT`: ends the task with `code`.
pub fn exit(code: u64) -> ! {
    // SAFETY: EXIT does not return.
    unsafe { raw::syscall5_noreturn(nr::EXIT, code, 0, 0, 0, 0) }
}

/// `TASK_ID`: the caller's task id.
pub fn task_id() -> u64 {
    // SAFETY: TASK_ID touches no memory. It cannot fail.
    unsafe { raw::syscall0(nr::TASK_ID) }
}

/// `CLOCK`: the time stamp counter (guest instructions under icount).
pub fn clock() -> u64 {
    // SAFETY: CLOCK touches no memory. It cannot fail.
    unsafe { raw::syscall0(nr::CLOCK) }
}

/// The time stamp counter read in ring 3 (`rdtsc`, no system call: the
/// kernel leaves CR4.TSD clear): the same clock as [`clock`], for timing
/// a path without disturbing it.
#[inline(always)]
pub fn tsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: `rdtsc` reads a counter into edx:eax; no memory, no flags.
    unsafe { core::arch::asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    ((hi as u64) << 32) | lo as u64
}

/// `TICKS`: timer ticks since boot (milliseconds).
pub fn ticks() -> u64 {
    // SAFETY: TICKS touches no memory. It cannot fail.
    unsafe { raw::syscall0(nr::TICKS) }
}

/// `SET_PRIORITY`: runs this task at `priority` (0 most urgent), which must
/// be numerically at least its manifest priority: a task can only make
/// itself less urgent, or go back to its own priority. While lowered, the
/// kernel hands the manifest priority back when a fault arrives on an
/// endpoint this task receives on, or after `abi::syscall::LOWERED_MAX_TICKS`
/// ticks: deferred work is late, never starved.
pub fn set_priority(priority: u8) -> Result<(), Error> {
    // SAFETY: SET_PRIORITY touches no memory.
    Error::decode(unsafe { raw::syscall1(nr::SET_PRIORITY, priority as u64) }).map(drop)
}

/// `SET_PRIORITY(PRIORITY_OWN)`: back to the manifest priority.
pub fn restore_priority() -> Result<(), Error> {
    // SAFETY: SET_PRIORITY touches no memory.
    Error::decode(unsafe { raw::syscall1(nr::SET_PRIORITY, abi::syscall::PRIORITY_OWN) }).map(drop)
}

/// `MAP`: maps `len` bytes (rounded up to pages) of zeroed memory, at `hint`
/// if nonzero, else where the kernel chooses; `flags`: writable or
/// executable (`abi::syscall::MapFlags`; not both). Returns the address of
/// the first byte.
///
/// Safe: the kernel only maps free addresses (a hint over existing memory,
/// or outside user space, is an error), so no memory Rust uses can change.
pub fn map(hint: u64, len: u64, flags: abi::syscall::MapFlags) -> Result<*mut u8, Error> {
    // SAFETY: MAP only adds memory at addresses nothing uses yet.
    decode(unsafe { raw::syscall3(nr::MAP, hint, len, flags.bits()) }).map(|a| a as *mut u8)
}

/// `UNMAP`: unmaps `len` bytes at `addr`, pages earlier returned by [`map`].
///
/// # Safety
/// Nothing may use the memory afterwards (no live references, no allocator
/// heap in it).
pub unsafe fn unmap(addr: *mut u8, len: u64) -> Result<(), Error> {
    // SAFETY: the caller guarantees the range is no longer used.
    decode(unsafe { raw::syscall2(nr::UNMAP, addr as u64, len) }).map(drop)
}

/// `REPORT`: emits a `check` event (`name`, `ok`, `value`) stamped with the
/// caller's task id. [`crate::report`] is the form tasks normally use.
pub fn report(name: &str, ok: bool, value: u64) -> Result<(), Error> {
    // SAFETY: REPORT only reads `name`, a live &str.
    decode(unsafe { raw::syscall4(nr::REPORT, name.as_ptr() as u64, name.len() as u64, ok as u64, value) }).map(drop)
}

/// `PANIC`: reports a panic (event `task_panic`) and ends the task.
pub fn panic(message: &str, file: &str, line: u32) -> ! {
    // SAFETY: PANIC reads the two live strings and does not return.
    unsafe {
        raw::syscall5_noreturn(
            nr::PANIC,
            message.as_ptr() as u64,
            message.len() as u64,
            file.as_ptr() as u64,
            file.len() as u64,
            line as u64,
        )
    }
}
