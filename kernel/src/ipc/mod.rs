//! IPC: endpoints, notifications, futexes. (Fault delivery and supervision
//! are the recovery path's: `crate::recovery`.)
//!
//! The model and the register convention are in `abi::ipc`. The kernel is
//! not preemptible and runs with one lock over all task and IPC state
//! (`sched::SCHED`), so every operation here is a plain state change on
//! [`Scheduler`]: a rendezvous moves a message from one task's saved
//! registers (and buffer) to the other's, and sets their states (through
//! the task table, which keeps its waiter masks exact: `sched::table`). A blocked
//! sender's message stays in its own saved registers until a receiver
//! comes: nothing is queued, nothing is copied twice.
//!
//! | module       | job |
//! |--------------|-----|
//! | `message`    | reading a message out of a task, writing one into a task |
//! | `endpoint`   | send, recv, call, reply, reply_recv |
//! | `held`       | requests received inside checkpoint scopes, replied at commit |
//! | `notify`     | signal, wait |
//! | `futex`      | waiting on a word in shared memory (the mutex slow path) |

pub mod endpoint;

pub mod futex;
pub mod held;
pub mod message;
pub mod notify;

use crate::sched::Scheduler;
use crate::sched::table::TaskTable;
use crate::task::{State, TaskId};
use abi::syscall::Error;

pub type Name = heapless::String<{ abi::image::NAME_LEN }>;

fn name(text: &str) -> Name {
    let mut n = Name::new();
    let _ = n.push_str(text);
    n
}

/// An endpoint. Its queues are implicit: the tasks whose state names it,
/// found through the task table's receiver and sender masks.
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

/// The tick deadline of a timeout of `timeout_ms` (`rbx`) from `now` (0: none, for
/// [`abi::ipc::WAIT_FOREVER`]); one that is set is armed in the clock
/// (`sched::arm`).
pub fn deadline(now: u64, timeout_ms: u64) -> u64 {
    if timeout_ms == abi::ipc::WAIT_FOREVER {
        0
    } else {
        let d = now.saturating_add(timeout_ms).max(1);
        crate::sched::arm(d);
        d
    }
}

/// Wakes task `i` if its receive or wait timed out at tick `now` (from
/// `sched::Scheduler::tick`).
pub fn expire_timeout(tasks: &mut TaskTable, i: usize, now: u64) {
    let expired = match tasks[i].state() {
        State::RecvBlocked { deadline, .. }
        | State::WaitBlocked { deadline, .. }
        | State::FutexWait { deadline, .. } => deadline != 0 && deadline <= now,
        _ => false,
    };
    if expired {
        tasks.set_state(i, State::Runnable);
        tasks[i].save.frame.rax = Error::Timeout.to_raw();
    }
}

/// How a server's instance ended, for its callers (`docs/ipc.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gone {
    /// Restarted from its image: in-flight callers get `Restarted`.
    Restarted,
    /// Stopped, faulted with no supervisor, or exited: in-flight callers,
    /// and callers queued on an endpoint nobody alive can receive on any
    /// more, get `Stopped`.
    Ended,
}

/// Task `id`'s instance is gone (a rollback is `held::on_rollback`'s):
/// callers waiting for its reply — held by a scope or not — get
/// `Restarted` or `Stopped` with its generation in `rdx` (restarts from
/// its image: the new instance's, or the ended one's), reply rights that
/// point at it are dropped, and so are its own and what its scopes held.
/// When it ended for good, callers queued on an endpoint that no live task
/// may receive on get `Stopped` too: nobody would ever take their message.
pub fn abandon(s: &mut Scheduler, id: TaskId, gone: Gone) {
    let Some(idx) = endpoint::task_index(&s.tasks, id).or_else(|| s.tasks.iter().position(|t| t.id == id)) else {
        return;
    };
    let (error, generation) = match gone {
        Gone::Restarted => (Error::Restarted, s.tasks[idx].restarts),
        Gone::Ended => (Error::Stopped, s.tasks[idx].restarts),
    };
    for i in 0..s.tasks.len() {
        if s.tasks[i].state() == (State::ReplyBlocked { server: id }) {
            s.tasks.set_state_unqueued(i, State::Runnable);
            let f = &mut s.tasks[i].save.frame;
            f.rax = error.to_raw();
            f.rdx = generation;
        }
    }
    drop_rights_to(s, id);
    let t = &mut s.tasks[idx];
    t.reply_to = None;
    t.held.clear();
    if gone == Gone::Ended {
        fail_orphaned_senders(s, idx, generation);
    }
}

/// Task `id` is starting over or gone: reply rights other tasks hold to
/// answer it are dropped. (Their scopes' held requests of it need no
/// sweep: a held entry names its caller with the caller's fault and
/// restart counts, which every way of leaving a call but a reply or
/// an end for good changes, and an ended caller never waits again.)
fn drop_rights_to(s: &mut Scheduler, id: TaskId) {
    for t in s.tasks.iter_mut() {
        if t.reply_to == Some(id) {
            t.reply_to = None;
        }
    }
}

/// Task `idx` ended for good: senders queued on an endpoint it may receive
/// on get `Stopped` (generation in `rdx`) if no other live task may
/// receive there.
fn fail_orphaned_senders(s: &mut Scheduler, idx: usize, generation: u64) {
    let id = s.tasks[idx].id;
    for i in 0..s.tasks.len() {
        let State::SendBlocked { ep, .. } = s.tasks[i].state() else { continue };
        if !s.tasks[idx].receives_on(ep) || live_receiver(s, ep, Some(id)) {
            continue;
        }
        s.tasks.set_state(i, State::Runnable);
        s.tasks[i].save.frame.rax = Error::Stopped.to_raw();
        s.tasks[i].save.frame.rdx = generation;
    }
}

/// Whether a live task other than `except` may receive on endpoint `ep`.
pub fn live_receiver(s: &Scheduler, ep: u16, except: Option<TaskId>) -> bool {
    s.tasks.iter().any(|t| Some(t.id) != except && t.state().is_alive() && t.receives_on(ep))
}

/// The generation to report for endpoint `ep` when no live task may
/// receive on it: the most restarts among the tasks that may (0: none).
pub fn receivers_generation(s: &Scheduler, ep: u16) -> u64 {
    s.tasks.iter().filter(|t| t.receives_on(ep)).map(|t| t.restarts).max().unwrap_or(0)
}
