//! `regcheck`: faults with a known value in every register, so the fault
//! server can check the fault message against what the task really had.
//!
//! Before it faults, the task writes into `REWIND_REGCHECK` (a
//! `#[no_mangle] static`; layout in `fault-server/server/src/regcheck.rs`)
//! the 15 general-purpose register values it is about to load, and — from
//! inside the asm that faults — the address of the faulting instruction and
//! its RSP. RFLAGS is set with `popfq` to [`RFLAGS`]; vector, error code
//! and CR2 are what the architecture says the fault must produce. Then it
//! loads the registers from the block and executes the faulting
//! instruction. The fault server finds the block through the ELF symbol
//! table, compares, and emits the check `regs-match`.
//!
//! One instance per fault kind, selected by the manifest `arg`
//! (`images/regcheck.toml`):
//!
//! | arg | instruction | vector | error code | CR2 |
//! |---|---|---|---|---|
//! | 1 | `ud2` | 6 | 0 | — |
//! | 2 | read address 0 | 14 | 0b100 | 0 |
//! | 3 | write a `static` in `.rodata` | 14 | 0b111 | its address |
//! | 4 | `jmp` into a mapped non-executable page | 14 | 0b10101 | the page (= RIP) |
//! | 5 | `div` by a zero in memory | 0 | 0 | — |
//! | 6, 7, 8 | `hlt`, `cli`, `mov cr3, rax` | 13 | 0 | — |
//! | 9 | `push` with RSP at the bottom of the stack | 14 | 0b110 | RSP − 8 (the guard page) |
//!
//! Kind 9 needs a [`STACK_BYTES`] stack (`stack_kib = 64`, the default).
//! The server restarts the task after the check; on its second run
//! (`libtask::supervise::restart_count() == 1`) it reports the check
//! `regcheck-rerun` and exits 0, which shows the restart ran it from the
//! start. An unknown `arg` reports `regcheck-arg` (ok = false).
#![no_std]
#![no_main]

use libtask::abi::layout::{PAGE_SIZE, USER_STACK_TOP};
use libtask::abi::syscall::MapFlags;
use libtask::{Start, println, report, supervise, syscall};

libtask::entry!(main);

/// The check block (see the module note). Words 24.. are this task's own:
/// 24 = a zero divisor, 25 = the jump target of kind 4, 26 = the RSP of kind 9.
#[unsafe(no_mangle)]
static mut REWIND_REGCHECK: [u64; 27] = [0; 27];

const MAGIC: u64 = 0x5245_4743_4845_434b;
const CHECK_CR2: u64 = 1;
/// RFLAGS at the fault: CF PF AF ZF SF OF, IF and the reserved bit 1.
const RFLAGS: u64 = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x800 | 0x200 | 0x2;
/// The stack size the manifest gives kind 9.
const STACK_BYTES: u64 = 64 * 1024;

/// A page-fault target that is mapped read-only.
static READ_ONLY: u64 = 0x0123_4567_89ab_cdef;

fn set(word: usize, value: u64) {
    // SAFETY: `word` < 27 (all callers use constants below that); the
    // block is only written here and read by the asm of this task and, while
    // the task is held, by the fault server.
    unsafe { (&raw mut REWIND_REGCHECK).cast::<u64>().add(word).write_volatile(value) }
}

/// The distinctive value of register `i` (Registers order) for `kind`.
fn value(kind: u64, i: u64) -> u64 {
    0xc0de_0000_0000_0000 | (kind << 40) | ((i + 1) << 32) | ((i + 1) * 0x0101_0101)
}

fn main(start: Start) -> u64 {
    let kind = start.arg;
    let runs = supervise::restart_count();
    if runs > 0 {
        println!("regcheck {}: run {runs} after a restart, exiting", start.id);
        report("regcheck-rerun", runs == 1, runs);
        return 0;
    }
    if !(1..=9).contains(&kind) {
        report("regcheck-arg", false, kind);
        return 2;
    }
    set(0, MAGIC);
    for i in 0..15 {
        set(2 + i as usize, value(kind, i));
    }
    set(19, RFLAGS);
    let (vector, error_code, cr2) = match kind {
        1 => (6, 0, None),
        2 => (14, 0b100, Some(0)),
        3 => (14, 0b111, Some(&READ_ONLY as *const u64 as u64)),
        4 => {
            let page = match syscall::map(0, PAGE_SIZE, MapFlags::WRITE) {
                Ok(p) => p as u64,
                Err(e) => {
                    report("regcheck-map", false, e as u64);
                    return 1;
                }
            };
            set(17, page);
            set(25, page);
            (14, 0b10101, Some(page))
        }
        5 => (0, 0, None),
        6..=8 => (13, 0, None),
        _ => {
            let bottom = USER_STACK_TOP - STACK_BYTES;
            set(26, bottom);
            (14, 0b110, Some(bottom - 8))
        }
    };
    set(20, vector);
    set(21, error_code);
    set(22, cr2.unwrap_or(0));
    set(23, if cr2.is_some() { CHECK_CR2 } else { 0 });
    set(24, 0);
    println!("regcheck {}: faulting with kind {kind} (vector {vector})", start.id);
    match kind {
        1 => ud2(),
        2 => null_read(),
        3 => write_read_only(),
        4 => execute_nx(),
        5 => divide_by_zero(),
        6 => hlt(),
        7 => cli(),
        8 => write_cr3(),
        _ => stack_overflow(),
    }
}

/// Defines `fn $name() -> !`: sets RFLAGS, runs `$pre`, records RIP (the
/// `2:` label, unless `$rip` is empty because the caller set it) and RSP,
/// arms the block, loads all 15 registers from it and runs `$fault`.
///
/// Register contract: clobbers every general-purpose register, RSP for
/// kind 9, and RFLAGS; never returns (the `ud2` after `$fault` makes a
/// fault that did not happen show up as a wrong vector in the check).
macro_rules! fault_with_known_registers {
    ($name:ident, pre: $pre:literal, rip: $rip:literal, fault: $fault:literal $(, $op:ident = sym $sym:path)?) => {
        fn $name() -> ! {
            // SAFETY: the asm only writes the check block (a static of 27
            // words; offsets below 216) and then faults on purpose; it never
            // returns to Rust, so clobbering rbx, rbp and rsp breaks nothing.
            unsafe {
                core::arch::asm!(
                    "push {flags}",
                    "popfq",
                    $pre,
                    $rip,
                    "mov qword ptr [rip + {b} + 144], rsp",
                    "mov qword ptr [rip + {b} + 8], 1",
                    "mov rax, qword ptr [rip + {b} + 16]",
                    "mov rbx, qword ptr [rip + {b} + 24]",
                    "mov rcx, qword ptr [rip + {b} + 32]",
                    "mov rdx, qword ptr [rip + {b} + 40]",
                    "mov rsi, qword ptr [rip + {b} + 48]",
                    "mov rdi, qword ptr [rip + {b} + 56]",
                    "mov rbp, qword ptr [rip + {b} + 64]",
                    "mov r8, qword ptr [rip + {b} + 72]",
                    "mov r9, qword ptr [rip + {b} + 80]",
                    "mov r10, qword ptr [rip + {b} + 88]",
                    "mov r11, qword ptr [rip + {b} + 96]",
                    "mov r12, qword ptr [rip + {b} + 104]",
                    "mov r13, qword ptr [rip + {b} + 112]",
                    "mov r14, qword ptr [rip + {b} + 120]",
                    "mov r15, qword ptr [rip + {b} + 128]",
                    "2:",
                    $fault,
                    "ud2",
                    b = sym REWIND_REGCHECK,
                    flags = const RFLAGS,
                    $($op = sym $sym,)?
                    options(noreturn),
                )
            }
        }
    };
}

fault_with_known_registers!(ud2, pre: "", rip: "lea rax, [rip + 2f]\nmov qword ptr [rip + {b} + 136], rax", fault: "ud2");
fault_with_known_registers!(null_read, pre: "", rip: "lea rax, [rip + 2f]\nmov qword ptr [rip + {b} + 136], rax", fault: "mov rax, qword ptr [0]");
fault_with_known_registers!(write_read_only, pre: "", rip: "lea rax, [rip + 2f]\nmov qword ptr [rip + {b} + 136], rax",
    fault: "mov qword ptr [rip + {ro}], rax", ro = sym READ_ONLY);
fault_with_known_registers!(execute_nx, pre: "", rip: "", fault: "jmp qword ptr [rip + {b} + 200]");
fault_with_known_registers!(divide_by_zero, pre: "", rip: "lea rax, [rip + 2f]\nmov qword ptr [rip + {b} + 136], rax", fault: "div qword ptr [rip + {b} + 192]");
fault_with_known_registers!(hlt, pre: "", rip: "lea rax, [rip + 2f]\nmov qword ptr [rip + {b} + 136], rax", fault: "hlt");
fault_with_known_registers!(cli, pre: "", rip: "lea rax, [rip + 2f]\nmov qword ptr [rip + {b} + 136], rax", fault: "cli");
fault_with_known_registers!(write_cr3, pre: "", rip: "lea rax, [rip + 2f]\nmov qword ptr [rip + {b} + 136], rax", fault: "mov cr3, rax");
fault_with_known_registers!(stack_overflow, pre: "mov rsp, qword ptr [rip + {b} + 208]",
    rip: "lea rax, [rip + 2f]\nmov qword ptr [rip + {b} + 136], rax", fault: "push rax");
