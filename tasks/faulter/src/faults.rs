//! The faulting kinds: each announces itself (console line and check
//! `about-to-fault` with the address the fault should report), then runs the
//! instruction. They return only if that instruction did not fault.
//!
//! Faults are written in inline asm wherever Rust would otherwise get in the
//! way: a Rust null read or division by zero is caught by a check (a panic,
//! not a machine fault) or is undefined behaviour the optimiser may remove.

use alloc::boxed::Box;
use core::arch::asm;
use core::hint::black_box;
use libtask::abi::layout::USER_MAP_BASE;
use libtask::{println, report, syscall};

/// Announces a fault: a console line, then the check tests match on.
fn about_to_fault(what: &str, address: u64) {
    println!("faulter {}: about to fault: {what} (address {address:#x})", syscall::task_id());
    report("about-to-fault", true, address);
}

/// Reads a word at `address`, as one `mov`.
fn read_at(address: u64) -> u64 {
    let value;
    // SAFETY: a faulting read is the point; if `address` is readable the
    // read has no effect on Rust-visible state.
    unsafe {
        asm!("mov {v}, qword ptr [{a}]", a = in(reg) address, v = lateout(reg) value, options(nostack, readonly))
    };
    value
}

/// 1: `ud2`.
pub fn invalid_opcode() {
    about_to_fault("invalid opcode (ud2)", 0);
    // SAFETY: raises #UD; the kernel does not resume the task after it.
    unsafe { asm!("ud2", options(nomem, nostack)) };
}

/// 2: a read of address 0.
pub fn null_read() {
    about_to_fault("null dereference (read 0)", 0);
    black_box(read_at(0));
}

/// A constant the linker places in `.rodata` (a read-only segment).
static READ_ONLY: u64 = 0x0123_4567_89ab_cdef;

/// 3: a write to `.rodata`.
pub fn write_rodata() {
    let target = (&raw const READ_ONLY).cast_mut();
    about_to_fault("write to read-only memory (.rodata)", target as u64);
    // SAFETY: not sound in Rust terms (the static is immutable): this is a
    // deliberate fault, and the page is read-only, so the write never lands.
    unsafe { target.write_volatile(0) };
}

/// 4: a call into heap memory, which is mapped without EXEC.
pub fn execute_nx() {
    // `ret` (0xc3) all over, so the call would come straight back if the
    // page were executable.
    let code = Box::new([0xc3u8; 16]);
    let entry = code.as_ptr() as u64;
    about_to_fault("execute no-execute memory (heap buffer)", entry);
    // SAFETY: the fetch from a no-execute page faults before anything runs;
    // were it executable, the buffer is a lone `ret` and every
    // caller-saved register is declared clobbered.
    unsafe { asm!("call {entry}", entry = in(reg) entry, clobber_abi("C")) };
    drop(code);
}

/// 5: `div` by a register holding zero.
pub fn divide_by_zero() {
    about_to_fault("divide by zero (div)", 0);
    // SAFETY: raises #DE; rax, rdx (dividend and results) and the zero
    // divisor register are declared.
    unsafe {
        asm!("div {zero}", zero = in(reg) 0u64, inout("rax") 1u64 => _, inout("rdx") 0u64 => _,
             options(nomem, nostack));
    }
}

/// 6: `hlt`, privileged.
pub fn hlt() {
    about_to_fault("privileged instruction (hlt)", 0);
    // SAFETY: raises #GP in ring 3.
    unsafe { asm!("hlt", options(nomem, nostack)) };
}

/// 7: `cli`, needs IOPL 3.
pub fn cli() {
    about_to_fault("privileged instruction (cli)", 0);
    // SAFETY: raises #GP in ring 3 with IOPL 0.
    unsafe { asm!("cli", options(nomem, nostack)) };
}

/// 8: a write to CR3, privileged.
pub fn write_cr3() {
    about_to_fault("privileged instruction (mov cr3)", 0);
    // SAFETY: raises #GP in ring 3; the value is never loaded.
    unsafe { asm!("mov cr3, {v}", v = in(reg) 0u64, options(nostack)) };
}

/// 9: unbounded recursion into the guard page.
pub fn stack_overflow() {
    about_to_fault("stack overflow into the guard page", 0);
    black_box(recurse(0));
}

/// 16 KiB per frame. The target's inline stack probes touch every page of
/// a frame in order, so the first access below the stack hits the guard
/// page itself, never memory further down.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let mut frame = [0u8; 16 * 1024];
    black_box(&mut frame);
    if black_box(depth) == u64::MAX {
        return 0;
    }
    recurse(depth + 1) + frame[depth as usize % frame.len()] as u64
}

/// 11: a read of the kernel's image.
pub fn read_kernel() {
    const KERNEL: u64 = 0xffff_ffff_8010_0000;
    about_to_fault("read kernel memory", KERNEL);
    black_box(read_at(KERNEL));
}

/// Where `owner` maps its page.
const OWNER_PAGE: u64 = USER_MAP_BASE + 0x4000_0000;

/// 13: a read of an address only another task (`owner`) maps.
pub fn read_other_task() {
    // Let `owner` map its page first, so the address is live somewhere.
    if syscall::sleep(20).is_err() {
        let until = syscall::ticks() + 20;
        while syscall::ticks() < until {
            syscall::yield_now();
        }
    }
    about_to_fault("read another task's memory", OWNER_PAGE);
    black_box(read_at(OWNER_PAGE));
}

/// 14: a Rust panic (not a machine fault): exercises the panic handler.
pub fn panic() {
    println!("faulter {}: about to panic", syscall::task_id());
    report("about-to-panic", true, 0);
    panic!("deliberate panic, kind {}", black_box(14));
}
