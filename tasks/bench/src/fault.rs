//! Fault delivery and resumption: the path Rewind exists for.
//!
//! The faulter (arg 6) reads the TSC into `r15` and executes `ud2`. The
//! kernel saves its registers, reports the fault (a console line and a
//! `fault` event: part of the cost, as in any real fault) and delivers the
//! fault message to the `bench-faults` endpoint, where the supervisor (arg
//! 7, priority 0, caps `bench-faults:recv` and `supervisor`) waits in
//! `recv` — not `faults`, which the real fault server serves for the
//! recovery benchmark (`recover.rs`). Every other role but that one sends
//! its faults here too (manifest `fault_endpoint`), so a fault of any
//! role is a reported failure, never a silent restart. The
//! message carries the faulter's registers, so `regs.r15` is the TSC just
//! before the fault, and the supervisor reads the TSC the moment `recv`
//! returns:
//!
//! * **fault_to_server** = arrival − r15: from the fault to the fault server
//!   holding the message (trap entry, fault report, delivery, switch);
//!
//! then the supervisor does what a fault server does to resume a task past
//! a faulting instruction: `TASK_CTL GET_REGS`, `rip += 2` (the length of
//! `ud2`), `SET_REGS`, `RESUME` (the kernel writes a `resume` event), and
//! waits in `recv` again; the faulter runs on after its `ud2` and reads the
//! TSC:
//!
//! * **fault_to_resume** = after − r15: the whole round, from the fault to
//!   the task running again, the server's work included.
//!
//! The supervisor's `recv` is asm against the raw registers, not
//! `libtask::ipc::recv_into`, so that its `rdtsc` is the first instruction
//! after the `syscall`; the resume uses `libtask::supervise`, as a real
//! fault server would.
//!
//! Both subtract the empty window: the same asm with no `ud2` in it. Each
//! of [`FAULTS`] faults is one round (see `measure.rs`); the best counts.
//! A fault of any other kind, or from elsewhere, is unexpected: the
//! supervisor stops the task and reports `bench:unexpected_fault` (not ok).

use crate::measure::{best, report_figure};
use crate::syscall::ROUNDS;
use core::arch::asm;
use libtask::abi::fault::{FAULT_LABEL, FaultKind, FaultMessage};
use libtask::abi::ipc::{FAULT_BADGE, MAX_BUFFER, WAIT_FOREVER};
use libtask::abi::syscall::{Error, nr};
use libtask::report;
use libtask::supervise;

/// Faults measured.
const FAULTS: u32 = 20;
/// The endpoint this supervisor serves (see the top).
const ENDPOINT: &str = "bench-faults";
/// Vector of #UD, the exception `ud2` raises.
const INVALID_OPCODE: u64 = 6;
/// Length of the `ud2` instruction.
const UD2_LEN: u64 = 2;

/// Role 6: faults [`FAULTS`] times; reports `bench:fault_to_resume`.
pub fn faulter() {
    let empty = best(ROUNDS, || window::<false>());
    let total = best(FAULTS, || window::<true>());
    report_figure("bench:fault_to_resume", total, empty, 1);
}

/// Role 7: the fault server. Reports `bench:fault_to_server` after
/// [`FAULTS`] faults, then keeps serving (the image ends with it waiting).
pub fn supervisor() {
    let Ok(faults) = libtask::ipc::cap(ENDPOINT) else { return report("bench:fault_to_server", false, 0) };
    let faults = faults.index();
    let empty = best(ROUNDS, || window::<false>());
    let mut buf = [0u8; MAX_BUFFER];
    let (mut seen, mut held) = (0, u64::MAX);
    loop {
        let got = recv(faults, &mut buf);
        // Only the kernel sends on `faults`: anything else is a failed
        // receive, and retrying it would spin at priority 0 for ever.
        let msg = FaultMessage::from_bytes(&buf[..(got.len as usize).min(MAX_BUFFER)]);
        let Some(msg) = msg.filter(|_| got.badge == FAULT_BADGE && got.label == FAULT_LABEL) else {
            return report("bench:unexpected_message", false, got.label);
        };
        if msg.kind != FaultKind::Exception as u64 || msg.vector != INVALID_OPCODE {
            report("bench:unexpected_fault", false, msg.task);
            let _ = supervise::stop(msg.task, 0);
            continue;
        }
        held = held.min(got.arrival.wrapping_sub(msg.regs.r15));
        if let Err(e) = skip_ud2(msg.task) {
            report("bench:fault_to_server", false, e as u64);
        }
        seen += 1;
        if seen == FAULTS {
            report_figure("bench:fault_to_server", held, empty, 1);
        }
    }
}

/// Resumes `task` after its `ud2`: GET_REGS, rip += 2, SET_REGS, RESUME.
fn skip_ud2(task: u64) -> Result<(), Error> {
    let mut regs = supervise::get_regs(task)?;
    regs.rip += UD2_LEN;
    supervise::set_regs(task, &regs)?;
    supervise::resume(task)
}

/// One measuring window: TSC into r15, `ud2` (if `FAULT`), TSC again;
/// returns the difference. The kernel resumes the task after the `ud2`
/// with r15 as it was (the supervisor writes back the registers it read).
///
/// Register contract: writes rax, rdx (rdtsc), r15 (declared); `ud2`
/// faults and comes back here with every register the supervisor restored.
#[inline(never)]
fn window<const FAULT: bool>() -> u64 {
    let (before, after): (u64, u64);
    if FAULT {
        // SAFETY: register-only; the `ud2` traps to the kernel, which
        // suspends this task until the supervisor resumes it past the
        // `ud2` with its registers and memory unchanged.
        unsafe {
            asm!("rdtsc", "shl rdx, 32", "or rax, rdx", "mov r15, rax",
                 "ud2",
                 "rdtsc", "shl rdx, 32", "or rax, rdx",
                 out("rax") after, out("rdx") _, out("r15") before, options(nostack));
        }
    } else {
        // SAFETY: register-only; rax, rdx, r15 and flags declared.
        unsafe {
            asm!("rdtsc", "shl rdx, 32", "or rax, rdx", "mov r15, rax",
                 "rdtsc", "shl rdx, 32", "or rax, rdx",
                 out("rax") after, out("rdx") _, out("r15") before, options(nostack));
        }
    }
    after.wrapping_sub(before)
}

/// What [`recv`] got.
struct Received {
    badge: u64,
    label: u64,
    /// Bytes in the buffer.
    len: u64,
    /// The TSC right after `recv` returned.
    arrival: u64,
}

/// `recv` on `cap` into `buf`, reading the TSC as the first thing after.
///
/// Register contract (abi::ipc): in `rax` = RECV, `rdi` = cap, `r14`/`r15`
/// = buffer and capacity, `rbx` = WAIT_FOREVER (saved around the call: LLVM
/// reserves rbx); out `rdi` = badge, `rsi` = label, `r13` = bytes, words in
/// rdx/r10/r8/r9 (unused: the fault message repeats them). The `rdtsc`
/// comes right after the `syscall` and overwrites rax, the call's result:
/// a failed receive is recognised instead by `rdi`, which then still holds
/// the capability index, never [`FAULT_BADGE`].
fn recv(cap: u64, buf: &mut [u8; MAX_BUFFER]) -> Received {
    let (badge, label, len, lo, hi): (u64, u64, u64, u64, u64);
    // SAFETY: the contract above; the kernel writes at most `MAX_BUFFER`
    // bytes to `buf`, which is exclusively borrowed and that long.
    unsafe {
        asm!(
            "mov {saved}, rbx",
            "mov ebx, {forever}",
            "syscall",
            "rdtsc",
            "mov rbx, {saved}",
            saved = out(reg) _,
            forever = const WAIT_FOREVER,
            inout("rax") nr::RECV => lo,
            inout("rdi") cap => badge,
            inout("rsi") 0u64 => label,
            out("rdx") hi,
            out("r10") _, out("r8") _, out("r9") _,
            inout("r13") 0u64 => len,
            in("r14") buf.as_mut_ptr(),
            in("r15") MAX_BUFFER,
            out("rcx") _, out("r11") _,
            options(nostack),
        );
    }
    Received { badge, label, len, arrival: (hi << 32) | (lo & 0xffff_ffff) }
}
