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
//! When the recovery walked to a scope's frame, that walk already went
//! through the innermost frames: it kept them ([`ScopeWalk`]), and the
//! backtrace lists those and walks on from the scope's frame only, so no
//! frame is unwound twice. The frames and the `stop` are the ones a walk
//! from the fault would give (the walker's `walk_from` guarantees it).
//!
//! Frames are named in the report from the ELF symbol table; a caller's pc
//! is a return address, so it is looked up at `pc - 1` (the call).

use crate::image::Unwinder;
use crate::memory::WindowMemory;
use crate::recover::{RECORDED_FRAMES, ScopeWalk};
use alloc::vec::Vec;
use libtask::abi::fault::Parsed;
use walker::Stop;

/// Most frames walked and listed.
pub const MAX_FRAMES: usize = 16;

// The recovery's walk keeps as many frames as a backtrace lists.
const _: () = assert!(RECORDED_FRAMES == MAX_FRAMES);

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

/// Walks the stack of fault `p`, going on from the recovery's walk
/// `walked` if there was one.
pub fn walk(unwinder: &Unwinder, p: &Parsed<'_>, walked: Option<&ScopeWalk>) -> Backtrace {
    let memory = WindowMemory::new(p.msg.task, p.msg.stack_base, p.stack);
    // The visitor keeps what the report needs of each frame (no array of
    // whole frames: each carries a register file).
    let mut frames = Vec::with_capacity(MAX_FRAMES);
    let mut visit = |f: &walker::Frame| {
        frames.push((f.pc, f.exact_pc));
        true
    };
    let (stop, before) = match walked {
        Some(w) => {
            let known = w.index.min(MAX_FRAMES);
            visit_known(&w.frames[..known], &mut visit);
            let stop = if known == MAX_FRAMES {
                // The recovery walked on past these: a walk from the fault
                // would stop at its limit.
                Ok(Stop::DepthLimit)
            } else {
                unwinder.walk_from(&w.resume, &memory, MAX_FRAMES - known, visit)
            };
            (stop, w.pages_read)
        }
        None => (unwinder.walk(crate::recover::fault_regs(&p.msg), &memory, MAX_FRAMES, visit), 0),
    };
    Backtrace { frames, stop, pages_read: before + memory.pages_read() }
}

/// Hands the recorded frames to `visit` as the walker would.
fn visit_known(known: &[(u64, bool)], visit: &mut impl FnMut(&walker::Frame) -> bool) {
    for &(pc, exact_pc) in known {
        visit(&walker::Frame { pc, cfa: 0, regs: walker::Regs::new(), signal: false, exact_pc });
    }
}
