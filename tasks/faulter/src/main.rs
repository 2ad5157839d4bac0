//! `faulter`: a task that faults on purpose, in the way its manifest `arg`
//! selects. The QEMU tests run one instance per kind (`images/faults.toml`,
//! `images/isolation.toml`) and assert on the event stream that the kernel
//! turned each fault into a `fault` event for this task (and stayed up).
//!
//! | arg | what it does | expected | check `about-to-fault` value |
//! |---|---|---|---|
//! | 1 | `ud2` | #UD (invalid opcode) | 0 |
//! | 2 | read address 0 | #PF, not present | 0 (the address read) |
//! | 3 | `write_volatile` to a `static` in `.rodata` | #PF, protection (write) | the static's address |
//! | 4 | `call` into a heap buffer (heap pages are mapped without EXEC) | #PF, instruction fetch from NX | the buffer's address |
//! | 5 | `div` by a zero register | #DE (divide error) | 0 |
//! | 6 | `hlt` | #GP (privileged) | 0 |
//! | 7 | `cli` | #GP (IOPL 0) | 0 |
//! | 8 | `mov cr3, rax` | #GP (privileged) | 0 |
//! | 9 | unbounded recursion, 16 KiB frames | #PF in the guard page below the stack | 0 (CR2 lies in `[USER_STACK_TOP - stack - 4096, USER_STACK_TOP - stack)`) |
//! | 10 | `WRITE` with bad pointers (kernel, unmapped, straddling, wrapping) | **no fault**: each returns `Err(BadPointer)`; check `bad-pointer` ok, value = mask of cases that did not; exit 0 | — |
//! | 11 | read 0xffff_ffff_8010_0000 (kernel memory) | #PF, protection (user access to a supervisor page) or not present | that address |
//! | 12 | `MAP` with kernel / non-canonical-straddling hints | **no fault**: each refused; check `map-kernel` ok, value = mask of cases that were mapped; exit 0 | — |
//! | 13 | wait 20 ms, then read `USER_MAP_BASE + 0x4000_0000`, which only the `owner` task maps | #PF, not present | that address |
//! | 14 | `panic!` | no fault: `task_panic` event (message, file, line); check `about-to-panic` first | — |
//!
//! Every faulting kind prints what it is about to do, then reports the check
//! `about-to-fault` (ok, value as above) so a test can match it against the
//! `fault` event's address. Should the instruction not fault, the task
//! reports `fault-missed` (ok = false, value = the kind) and exits 1. An
//! unknown `arg` reports `faulter-arg` (ok = false, value = arg), exits 2.
#![no_std]
#![no_main]

extern crate alloc;

mod checks;
mod faults;

use libtask::{Start, println, report};

libtask::entry!(main);

fn main(start: Start) -> u64 {
    let kind = start.arg;
    match kind {
        1 => faults::invalid_opcode(),
        2 => faults::null_read(),
        3 => faults::write_rodata(),
        4 => faults::execute_nx(),
        5 => faults::divide_by_zero(),
        6 => faults::hlt(),
        7 => faults::cli(),
        8 => faults::write_cr3(),
        9 => faults::stack_overflow(),
        10 => return checks::bad_syscall_pointers(),
        11 => faults::read_kernel(),
        12 => return checks::map_kernel_pages(),
        13 => faults::read_other_task(),
        14 => faults::panic(),
        _ => {
            println!("faulter {}: unknown fault kind {kind}", start.id);
            report("faulter-arg", false, kind);
            return 2;
        }
    }
    println!("faulter {}: kind {kind} did not fault", start.id);
    report("fault-missed", false, kind);
    1
}
