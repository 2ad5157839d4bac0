//! Moving a message between tasks.
//!
//! A message is a label and four words, which travel register to register,
//! and an optional payload of at most `MAX_BUFFER` bytes. [`Outgoing`]
//! names the payload where it is — a range of the sender's memory, or bytes
//! the kernel composed (a fault message) — and [`deliver`] copies it
//! straight into the receiver's buffer in small chunks. Nothing is zeroed or
//! copied when there is no payload, which is the common case of a call.
//! Every access goes through the spaces' checked `read`/`write`: a bad
//! pointer never faults the kernel.

use crate::sched::Scheduler;
use crate::task::Task;
use abi::ipc::{MAX_BUFFER, MSG_WORDS};
use abi::syscall::Error;

/// Where a message's payload is.
#[derive(Clone, Copy)]
pub enum Payload {
    None,
    /// `len` bytes at `addr` in the sender's memory (checked readable).
    Task {
        addr: u64,
        len: usize,
    },
}

pub struct Outgoing {
    pub badge: u64,
    pub label: u64,
    pub words: [u64; MSG_WORDS],
    pub payload: Payload,
}

impl Outgoing {
    /// The message in `task`'s registers, sent with `badge`.
    pub fn from_task(task: &Task, badge: u64) -> Result<Outgoing, Error> {
        let mut msg = Self::registers_of(task, badge);
        let f = &task.save.frame;
        let len = f.r13 as usize;
        if len > MAX_BUFFER {
            return Err(Error::BadArgument);
        }
        if len > 0 {
            let space = task.space.as_ref().ok_or(Error::BadPointer)?;
            space.check_readable(f.r12, len as u64).map_err(|_| Error::BadPointer)?;
            msg.payload = Payload::Task { addr: f.r12, len };
        }
        Ok(msg)
    }

    /// The label and words in `task`'s registers, without a payload.
    pub fn registers_of(task: &Task, badge: u64) -> Outgoing {
        let f = &task.save.frame;
        Outgoing { badge, label: f.rsi, words: [f.rdx, f.r10, f.r8, f.r9], payload: Payload::None }
    }
}

/// Writes `msg` into task `to`'s registers and receive buffer (`r14`,
/// capacity `r15`); `r13` = bytes delivered, `rax` = 0. `from` is the
/// sending task, whose memory a `Payload::Task` refers to.
pub fn deliver(s: &mut Scheduler, msg: &Outgoing, from: Option<usize>, to: usize) {
    let (ptr, cap) = (s.tasks[to].save.frame.r14, s.tasks[to].save.frame.r15 as usize);
    let delivered = match msg.payload {
        Payload::None => 0,
        Payload::Task { addr, len } => from.map_or(0, |from| copy_between(s, from, addr, to, ptr, len.min(cap))),
    };
    let f = &mut s.tasks[to].save.frame;
    f.rax = 0;
    f.rdi = msg.badge;
    f.rsi = msg.label;
    f.rdx = msg.words[0];
    f.r10 = msg.words[1];
    f.r8 = msg.words[2];
    f.r9 = msg.words[3];
    f.r13 = delivered as u64;
}

/// Copies `len` bytes from task `from` at `src` to task `to` at `dst`, in
/// chunks; stops at the first unreadable or unwritable chunk. Returns the
/// bytes copied.
fn copy_between(s: &mut Scheduler, from: usize, src: u64, to: usize, dst: u64, len: usize) -> usize {
    // Not zeroed: `read_uninit` fills what is used.
    let mut chunk = [core::mem::MaybeUninit::<u8>::uninit(); 256];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(chunk.len());
        let Some(Ok(bytes)) = s.tasks[from].space.as_ref().map(|sp| sp.read_uninit(src + done as u64, &mut chunk[..n]))
        else {
            break;
        };
        let wrote = s.tasks[to].space.as_mut().map(|sp| sp.write(dst + done as u64, bytes));
        if !matches!(wrote, Some(Ok(()))) {
            break;
        }
        done += n;
    }
    done
}

/// Checks that a receive buffer is writable now, so `recv` can fail early.
pub fn check_receive_buffer(task: &Task) -> Result<(), Error> {
    let (ptr, cap) = (task.save.frame.r14, task.save.frame.r15);
    if cap == 0 {
        return Ok(());
    }
    let n = cap.min(MAX_BUFFER as u64);
    let space = task.space.as_ref().ok_or(Error::BadPointer)?;
    space.check_writable(ptr, n).map_err(|_| Error::BadPointer)
}
