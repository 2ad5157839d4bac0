//! The resume convention: a task may ask to be resumed past a `ud2`.
//!
//! `ud2` with `rax == abi::fault::RESUME_REQUEST` means "resume me after
//! this instruction with `rax = 0`". The server verifies the request on its
//! own terms — the fault is #UD, `rax` holds the request and the two bytes
//! at RIP really are `0f 0b` in the task's memory — then rewrites the held
//! task's registers (`GET_REGS`, `rip += 2`, `rax = 0`, `SET_REGS`) and
//! resumes it (`RESUME`). Every other register is left as the task had it,
//! which is what the `resumer` test task checks. It demonstrates the "resume
//! with new registers" answer of the fault protocol; a real use is a task
//! that traps on purpose to be inspected (a breakpoint of sorts).

use libtask::Error;
use libtask::abi::fault::{FaultKind, FaultMessage, RESUME_REQUEST};
use libtask::supervise;

/// `#UD`.
const INVALID_OPCODE: u64 = 6;
const UD2: [u8; 2] = [0x0f, 0x0b];

/// Whether the fault is a resume request.
pub fn is_request(msg: &FaultMessage) -> bool {
    if msg.kind != FaultKind::Exception as u64 || msg.vector != INVALID_OPCODE || msg.regs.rax != RESUME_REQUEST {
        return false;
    }
    let mut at_rip = [0u8; 2];
    supervise::read_mem(msg.task, msg.regs.rip, &mut at_rip).is_ok() && at_rip == UD2
}

/// Resumes the task after its `ud2` with `rax = 0`; returns the new RIP.
pub fn resume_past_ud2(task: u64) -> Result<u64, Error> {
    let mut regs = supervise::get_regs(task)?;
    regs.rip += UD2.len() as u64;
    regs.rax = 0;
    supervise::set_regs(task, &regs)?;
    supervise::resume(task)?;
    Ok(regs.rip)
}
