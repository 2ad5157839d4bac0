//! The `syscall` instruction, and nothing else.
//!
//! Register contract (abi::syscall): `rax` = call number, arguments in
//! `rdi`, `rsi`, `rdx`, `r10`, `r8`, `r9`; the result comes back in `rax`
//! (a negative value is `-(abi::syscall::Error)`). The instruction itself
//! overwrites `rcx` (return rip) and `r11` (saved rflags); the kernel
//! preserves every other register. The kernel may read or write the memory
//! that pointer arguments name, so none of these asm blocks claims `nomem`
//! or `readonly`; none touches the stack (`nostack`).
//!
//! These functions return the raw `rax`; [`super`] decodes it.

use core::arch::asm;

/// A call with no arguments.
///
/// # Safety
/// The call must not take away memory that Rust code still uses (e.g.
/// `UNMAP` of a live allocation); every other call is memory-safe for the
/// caller, because the kernel checks every pointer it is given.
#[inline(always)]
pub unsafe fn syscall0(nr: u64) -> u64 {
    let ret;
    // SAFETY: the kernel preserves every register but rax, rcx, r11 (all
    // declared), does not use the user stack, and checks its arguments; the
    // caller upholds the memory contract above.
    unsafe {
        asm!("syscall", inlateout("rax") nr => ret, lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

/// A call with one argument.
///
/// # Safety
/// As [`syscall0`].
#[inline(always)]
pub unsafe fn syscall1(nr: u64, a0: u64) -> u64 {
    let ret;
    // SAFETY: as in `syscall0`; rdi is an input only, preserved by the kernel.
    unsafe {
        asm!("syscall", inlateout("rax") nr => ret, in("rdi") a0,
             lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

/// A call with two arguments.
///
/// # Safety
/// As [`syscall0`].
#[inline(always)]
pub unsafe fn syscall2(nr: u64, a0: u64, a1: u64) -> u64 {
    let ret;
    // SAFETY: as in `syscall0`; the argument registers are inputs only.
    unsafe {
        asm!("syscall", inlateout("rax") nr => ret, in("rdi") a0, in("rsi") a1,
             lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

/// A call with three arguments.
///
/// # Safety
/// As [`syscall0`].
#[inline(always)]
pub unsafe fn syscall3(nr: u64, a0: u64, a1: u64, a2: u64) -> u64 {
    let ret;
    // SAFETY: as in `syscall0`; the argument registers are inputs only.
    unsafe {
        asm!("syscall", inlateout("rax") nr => ret, in("rdi") a0, in("rsi") a1, in("rdx") a2,
             lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

/// A call with four arguments (the fourth in `r10`).
///
/// # Safety
/// As [`syscall0`].
#[inline(always)]
pub unsafe fn syscall4(nr: u64, a0: u64, a1: u64, a2: u64, a3: u64) -> u64 {
    let ret;
    // SAFETY: as in `syscall0`; the argument registers are inputs only.
    unsafe {
        asm!("syscall", inlateout("rax") nr => ret, in("rdi") a0, in("rsi") a1, in("rdx") a2,
             in("r10") a3, lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

/// A call with five arguments (the fifth in `r8`).
///
/// # Safety
/// As [`syscall0`].
#[inline(always)]
pub unsafe fn syscall5(nr: u64, a0: u64, a1: u64, a2: u64, a3: u64, a4: u64) -> u64 {
    let ret;
    // SAFETY: as in `syscall0`; the argument registers are inputs only.
    unsafe {
        asm!("syscall", inlateout("rax") nr => ret, in("rdi") a0, in("rsi") a1, in("rdx") a2,
             in("r10") a3, in("r8") a4, lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

/// A call that never returns (`EXIT`, `PANIC`), with up to five arguments.
///
/// A `ud2` follows the `syscall`: if a kernel bug ever returned from one of
/// these calls, the task stops on an invalid opcode right there instead of
/// running into whatever code follows.
///
/// # Safety
/// `nr` must be a call that does not return.
#[inline(always)]
pub unsafe fn syscall5_noreturn(nr: u64, a0: u64, a1: u64, a2: u64, a3: u64, a4: u64) -> ! {
    // SAFETY: the call ends the task; nothing after it runs (the ud2 guards
    // against a kernel that returns anyway).
    unsafe {
        asm!("syscall", "ud2", in("rax") nr, in("rdi") a0, in("rsi") a1, in("rdx") a2,
             in("r10") a3, in("r8") a4, options(noreturn, nostack));
    }
}
