//! Backtraces: walk the faulted task's stack and name its frames.
//!
//! The walker (`fault-server/walker`) reads the task's `.eh_frame` through
//! its `.eh_frame_hdr` search table, both taken from the task's ELF file
//! (task images are static, not relocated: section addresses are runtime
//! addresses), and the task's stack through [`TaskMemory`]. It starts from
//! the registers in the fault message, so frame 0 is the faulting
//! instruction, and stops at `_start` (whose CFI marks the outermost frame)
//! or at the first thing it cannot trust — the reason is reported as
//! `stop`. Frames are named from the ELF symbol table; a caller's pc is a
//! return address, so it is looked up at `pc - 1` (the call instruction).
//!
//! The frames also go to the console, one line each (`  #0 0x400b32
//! bank::transfer`), after a header line with the task, the fault and how
//! the walk ended: the console is where a person watching `cargo xtask
//! run` sees what failed.
//!
//! The event body must stay under the kernel's 2 KiB: at most
//! [`MAX_FRAMES`] frames are listed, symbol names are cut to
//! [`MAX_SYMBOL`] bytes, and frames are dropped from the end until the
//! body fits (`truncated` says so).

use crate::body::{Body, MAX_BODY, escape};
use crate::image::{TaskImage, Unwind};
use crate::memory::TaskMemory;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use libtask::abi::fault::FaultMessage;
use libtask::println;
use walker::{Regs, Stop};

/// Most frames walked and listed.
pub const MAX_FRAMES: usize = 16;
/// Longest symbol name listed.
const MAX_SYMBOL: usize = 80;

/// The unwind tables of `image` and the faulting registers of `msg`: where
/// every walk of a faulted task starts.
pub fn walk_start<'a>(image: &'a TaskImage, msg: &FaultMessage) -> Result<(Unwind<'a>, Regs), String> {
    let eh = image.unwind()?;
    let r = &msg.regs;
    let regs = Regs::from_dwarf_array([
        r.rax, r.rdx, r.rcx, r.rbx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15,
        r.rip,
    ]);
    Ok((eh, regs))
}

/// The `backtrace` event body for the fault `msg` of `task`.
pub fn backtrace(task: u64, image: &TaskImage, msg: &FaultMessage) -> Body {
    let base = Body::new().u64("task", task).u64("seq", msg.seq);
    let (eh, regs) = match walk_start(image, msg) {
        Ok(start) => start,
        Err(e) => return base.raw("frames", "[]").str("stop", &e),
    };
    let memory = TaskMemory::new(task);
    let mut frames = [(0u64, false); MAX_FRAMES];
    let mut n = 0;
    let stop = eh.walk(regs, &memory, MAX_FRAMES, |f| {
        let Some(slot) = frames.get_mut(n) else { return false };
        *slot = (f.pc, f.exact_pc);
        n += 1;
        true
    });
    let symbols = image.symbols();
    let stop = stop_name(stop);
    println!("fault-server: task {task} fault {} backtrace ({n} frames, {stop}):", msg.seq);
    let mut listed: Vec<String> = frames[..n]
        .iter()
        .enumerate()
        .map(|(i, &(pc, exact_pc))| {
            let lookup = if exact_pc { pc } else { pc.saturating_sub(1) };
            let name = symbols.lookup(lookup).map(|sym| format!("{:#}", sym.demangled()));
            println!("  #{i} {pc:#x} {}", name.as_deref().unwrap_or("?"));
            let mut entry = format!("{{\"pc\":\"{pc:#x}\",\"symbol\":\"");
            match &name {
                Some(name) => escape(&mut entry, name, MAX_SYMBOL),
                None => entry.push('?'),
            }
            entry.push_str("\"}");
            entry
        })
        .collect();
    let mut truncated = false;
    loop {
        let json = format!("[{}]", listed.join(","));
        let body = Body::new()
            .u64("task", task)
            .u64("seq", msg.seq)
            .u64("count", listed.len() as u64)
            .str("stop", &stop)
            .bool("truncated", truncated)
            .u64("pages_read", memory.fetched.get())
            .raw("frames", &json);
        if body.len() <= MAX_BODY || listed.is_empty() {
            return body;
        }
        listed.pop();
        truncated = true;
    }
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
