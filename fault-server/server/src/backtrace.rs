//! Backtraces: the faulted task's stack, walked for the report.
//!
//! The walker (`fault-server/walker`) reads the task's `.eh_frame` through
//! its `.eh_frame_hdr` search table, both taken from the task's ELF file
//! (task images are static, not relocated: section addresses are runtime
//! addresses), and the task's stack from the copy the fault message
//! carries ([`WindowMemory`]), so the walk shows the stack *at the fault*
//! even though the report is made after the task was rolled back and runs
//! again. It starts from the registers in the fault message, so frame 0 is
//! the faulting instruction, and stops at `_start` (whose CFI marks the
//! outermost frame), at [`MAX_FRAMES`], or at the first thing it cannot
//! trust — the reason is reported as `stop`.
//!
//! Frames are named in the report from the ELF symbol table; a caller's pc
//! is a return address, so it is looked up at `pc - 1` (the call).

use crate::image::Unwinder;
use crate::memory::WindowMemory;
use alloc::vec::Vec;
use libtask::abi::fault::Parsed;
use walker::Stop;

/// Most frames walked and listed.
pub const MAX_FRAMES: usize = 16;

/// A walked stack.
pub struct Backtrace {
    /// `(pc, exact)` per frame, innermost first: `exact` when the pc is the
    /// instruction itself (frame 0, trap frames), else a return address.
    pub frames: Vec<(u64, bool)>,
    /// How the walk ended, or why it could not start.
    pub stop: Result<Stop, &'static str>,
    /// Pages read from the task outside the message's stack copy.
    pub pages_read: u64,
}

/// Walks the stack of fault `p`.
pub fn walk(unwinder: &Unwinder, p: &Parsed<'_>) -> Backtrace {
    let memory = WindowMemory::new(p.msg.task, p.msg.stack_base, p.stack);
    // The visitor keeps what the report needs of each frame (no array of
    // whole frames: each carries a register file).
    let mut frames = Vec::with_capacity(MAX_FRAMES);
    let stop = unwinder.walk_for_report(crate::recover::fault_regs(&p.msg), &memory, MAX_FRAMES, |f| {
        frames.push((f.pc, f.exact_pc));
        true
    });
    Backtrace { frames, stop, pages_read: memory.pages_read() }
}
