//! Checkpoint scopes: open, commit, roll back.
//!
//! `CHECKPOINT_OPEN` records the caller's whole register frame — the state
//! at the `syscall` instruction, as the kernel will return it — and opens a
//! memory scope in the address space (copy-on-write from now on). A
//! rollback puts both back: memory through `versions.rs`, registers by
//! copying the recorded frame, with `rax` = the attempt number. The task
//! thus returns from the same `CHECKPOINT_OPEN` once more, and tells the
//! re-run from the first run by the non-zero result (like `setjmp`, but with
//! the memory restored too, so nothing the failed attempt wrote survives).

use crate::events;
use crate::task::{Scope, State, Task};
use abi::checkpoint::{MAX_SCOPES, ScopeRecord};
use abi::event::Event;
use abi::syscall::Error;

pub fn open(task: &mut Task) -> Result<u64, Error> {
    if task.scopes.len() >= MAX_SCOPES {
        return Err(Error::BadArgument);
    }
    let space = task.space.as_mut().ok_or(Error::BadTask)?;
    let mut frame = task.save.frame;
    frame.rax = 0;
    space.open_scope();
    let _ = task.scopes.push(Scope { frame, attempt: 0 });
    Ok(0)
}

pub fn commit(task: &mut Task) -> Result<u64, Error> {
    let space = task.space.as_mut().ok_or(Error::BadTask)?;
    if task.scopes.pop().is_none() {
        return Err(Error::BadArgument);
    }
    space.commit_scope().map_err(|_| Error::BadArgument)?;
    Ok(0)
}

/// Rolls `task` back to scope `depth` (1 = outermost) and makes it
/// runnable there. Returns the number of pages restored.
pub fn rollback(task: &mut Task, depth: usize, fault_kind: u64, seq: u64) -> Result<usize, Error> {
    if depth == 0 || depth > task.scopes.len() {
        return Err(Error::BadArgument);
    }
    let fault_pc = task.save.frame.rip;
    let space = task.space.as_mut().ok_or(Error::BadTask)?;
    let pages = space.rollback_to(depth).map_err(|_| Error::BadArgument)?;
    task.scopes.truncate(depth);
    let scope = task.scopes.last_mut().expect("depth <= len");
    scope.attempt += 1;
    let attempt = scope.attempt;
    task.save.frame = scope.frame;
    task.save.frame.rax = attempt;
    task.state = State::Runnable;
    task.fault = None;
    task.ticks_since_syscall = 0;
    task.hang_rip = None;
    // Tell libtask why (its recovery page is private memory of the task:
    // written after the rollback, so the re-run sees it).
    if task.recovery != 0 {
        let record = ScopeRecord { attempt, fault_kind, fault_seq: seq, fault_pc };
        let offset = core::mem::offset_of!(abi::checkpoint::RecoveryPage, scopes)
            + (depth - 1) * core::mem::size_of::<ScopeRecord>();
        let words = [record.attempt, record.fault_kind, record.fault_seq, record.fault_pc];
        let mut bytes = [0u8; 32];
        for (i, w) in words.iter().enumerate() {
            bytes[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        if let Some(space) = task.space.as_mut() {
            let _ = space.write(task.recovery + offset as u64, &bytes);
        }
    }
    events::emit(&Event::RestartCheckpoint {
        task: task.id as u64,
        name: &task.name,
        seq,
        scope: depth as u64,
        attempt,
        pages: pages as u64,
    });
    Ok(pages)
}
