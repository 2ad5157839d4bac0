//! IPC: endpoints, notifications, futexes. (Fault delivery and supervision
//! are the recovery path's: `crate::recovery`.)
//!
//! The model and the register convention are in `abi::ipc`. The kernel is
//! not preemptible and runs with one lock over all task and IPC state
//! (`sched::SCHED`), so every operation here is a plain state change on
//! [`Scheduler`]: a rendezvous moves a message from one task's saved
//! registers (and buffer) to the other's, and sets their states. A blocked
//! sender's message stays in its own saved registers until a receiver
//! comes: nothing is queued, nothing is copied twice.
//!
//! | module       | job |
//! |--------------|-----|
//! | `message`    | reading a message out of a task, writing one into a task |
//! | `endpoint`   | send, recv, call, reply, reply_recv |
//! | `notify`     | signal, wait |
//! | `futex`      | waiting on a word in shared memory (the mutex slow path) |

pub mod endpoint;

pub mod futex;
pub mod message;
pub mod notify;

use crate::sched::Scheduler;
use crate::task::{State, TaskId};
use abi::syscall::Error;

pub type Name = heapless::String<{ abi::image::NAME_LEN }>;

fn name(text: &str) -> Name {
    let mut n = Name::new();
    let _ = n.push_str(text);
    n
}

/// An endpoint. Its queues are implicit: the tasks whose state names it.
pub struct Endpoint {
    pub name: Name,
}

impl Endpoint {
    pub fn new(n: &str) -> Endpoint {
        Endpoint { name: name(n) }
    }
}

/// A notification word.
pub struct Notification {
    pub name: Name,
    pub bits: u64,
}

impl Notification {
    pub fn new(n: &str) -> Notification {
        Notification { name: name(n), bits: 0 }
    }
}

/// Tick deadline for a timeout in ms (`rbx`): 0 = none.
pub fn deadline(now: u64, timeout_ms: u64) -> u64 {
    if timeout_ms == abi::ipc::WAIT_FOREVER { 0 } else { now.saturating_add(timeout_ms).max(1) }
}

/// Wakes tasks whose receive or wait timed out (called every tick).
pub fn expire_timeouts(s: &mut Scheduler) {
    let now = s.ticks;
    for t in s.tasks.iter_mut() {
        let expired = match t.state {
            State::RecvBlocked { deadline, .. }
            | State::WaitBlocked { deadline, .. }
            | State::FutexWait { deadline, .. } => deadline != 0 && deadline <= now,
            _ => false,
        };
        if expired {
            t.state = State::Runnable;
            t.save.frame.rax = Error::Timeout.to_raw();
        }
    }
}

/// Task `id` is gone or starting over: callers waiting for its reply get an
/// error, and reply rights that point at it are dropped.
pub fn abandon(s: &mut Scheduler, id: TaskId) {
    for t in s.tasks.iter_mut() {
        if t.state == (State::ReplyBlocked { server: id }) {
            t.state = State::Runnable;
            t.save.frame.rax = Error::BadTask.to_raw();
        }
        if t.reply_to == Some(id) {
            t.reply_to = None;
        }
    }
    if let Some(t) = s.tasks.iter_mut().find(|t| t.id == id) {
        t.reply_to = None;
    }
}
