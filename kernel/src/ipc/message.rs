//! Moving a message between tasks.
//!
//! [`Outgoing::from_task`] reads label, words and buffer from a sender's
//! saved registers (`abi::ipc` convention) and memory; [`Outgoing::deliver`]
//! writes them into a receiver's saved registers and receive buffer. The
//! buffer goes through a kernel copy of at most `MAX_BUFFER` bytes, and
//! through each space's checked `read`/`write`: a bad pointer never faults
//! the kernel.

use crate::task::Task;
use abi::ipc::{MAX_BUFFER, MSG_WORDS};
use abi::syscall::Error;

pub struct Outgoing {
    pub badge: u64,
    pub label: u64,
    pub words: [u64; MSG_WORDS],
    pub buf: [u8; MAX_BUFFER],
    pub len: usize,
}

impl Outgoing {
    pub fn new(badge: u64, label: u64, words: [u64; MSG_WORDS]) -> Outgoing {
        Outgoing { badge, label, words, buf: [0; MAX_BUFFER], len: 0 }
    }

    /// The message in `task`'s registers, sent with `badge`.
    pub fn from_task(task: &Task, badge: u64) -> Result<Outgoing, Error> {
        let f = &task.save.frame;
        let mut out = Outgoing::new(badge, f.rsi, [f.rdx, f.r10, f.r8, f.r9]);
        let len = f.r13 as usize;
        if len > MAX_BUFFER {
            return Err(Error::BadArgument);
        }
        if len > 0 {
            let space = task.space.as_ref().ok_or(Error::BadPointer)?;
            space.read(f.r12, &mut out.buf[..len]).map_err(|_| Error::BadPointer)?;
        }
        out.len = len;
        Ok(out)
    }

    /// Writes the message into `task`'s registers and receive buffer
    /// (`r14`, capacity `r15`); `r13` = bytes delivered, `rax` = 0.
    pub fn deliver(&self, task: &mut Task) {
        let (ptr, cap) = (task.save.frame.r14, task.save.frame.r15);
        let n = self.len.min(cap as usize);
        let delivered = match task.space.as_mut() {
            Some(space) if n > 0 => space.write(ptr, &self.buf[..n]).map(|_| n).unwrap_or(0),
            _ => 0,
        };
        let f = &mut task.save.frame;
        f.rax = 0;
        f.rdi = self.badge;
        f.rsi = self.label;
        f.rdx = self.words[0];
        f.r10 = self.words[1];
        f.r8 = self.words[2];
        f.r9 = self.words[3];
        f.r13 = delivered as u64;
    }
}

/// Checks that a receive buffer is writable now, so `recv` can fail early.
pub fn check_receive_buffer(task: &Task) -> Result<(), Error> {
    let (ptr, cap) = (task.save.frame.r14, task.save.frame.r15);
    if cap == 0 {
        return Ok(());
    }
    let n = (cap as usize).min(MAX_BUFFER);
    let space = task.space.as_ref().ok_or(Error::BadPointer)?;
    let mut probe = [0u8; MAX_BUFFER];
    // Reading proves mapped + user; `write` later re-checks writability.
    space.read(ptr, &mut probe[..n]).map_err(|_| Error::BadPointer)
}
