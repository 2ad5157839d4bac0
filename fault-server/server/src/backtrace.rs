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

use crate::image::TaskImage;
use crate::memory::WindowMemory;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use libtask::abi::fault::Parsed;
use walker::{Frame, Regs, Stop, Walker};

/// Most frames walked and listed.
pub const MAX_FRAMES: usize = 16;

/// A walked stack.
pub struct Backtrace {
    /// `(pc, pc to name it by)` per frame, innermost first.
    pub frames: Vec<(u64, u64)>,
    /// How the walk ended.
    pub stop: String,
    /// Pages read from the task outside the message's stack copy.
    pub pages_read: u64,
}

/// Walks the stack of fault `p`.
pub fn walk<'a>(image: &'a TaskImage, walker: &mut Walker<'a, 32>, p: &Parsed<'_>) -> Backtrace {
    let mut bt = Backtrace { frames: Vec::new(), stop: String::new(), pages_read: 0 };
    let eh = match image.unwind() {
        Ok(eh) => eh,
        Err(e) => {
            bt.stop = e;
            return bt;
        }
    };
    let memory = WindowMemory::new(p.msg.task, p.msg.stack_base, p.stack);
    walker.max_depth = MAX_FRAMES;
    let mut frames = [Frame { pc: 0, cfa: 0, regs: Regs::new(), signal: false, exact_pc: false }; MAX_FRAMES];
    let (n, stop) = walker.walk_into(&eh, crate::recover::fault_regs(&p.msg), &memory, &mut frames);
    for f in &frames[..n] {
        bt.frames.push((f.pc, if f.exact_pc { f.pc } else { f.pc.saturating_sub(1) }));
    }
    bt.stop = stop_name(stop);
    bt.pages_read = memory.pages_read();
    bt
}

fn stop_name(stop: Stop) -> String {
    match stop {
        Stop::Outermost => "outermost".into(),
        Stop::DepthLimit => "depth_limit".into(),
        Stop::NoFde { pc } => format!("no_fde at {pc:#x}"),
        Stop::Unreadable { addr } => format!("unreadable {addr:#x}"),
        other => format!("{other:?}"),
    }
}
