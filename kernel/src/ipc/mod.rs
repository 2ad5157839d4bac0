//! IPC: endpoints, notifications, fault delivery, task supervision.
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
//! | `fault`      | turning a fault into a message on the fault endpoint |
//! | `futex`      | waiting on a word in shared memory (the mutex slow path) |
//! | `supervise`  | `TASK_CTL`: what a supervisor (the fault server) may do |

pub mod endpoint;
pub mod fault;
pub mod futex;
pub mod message;
pub mod notify;
pub mod supervise;

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

/// Restarts task `idx` from its image after `delay_ms`: callers waiting on
/// it get an error, its memory is replaced by a fresh load, its regions
/// are mapped again. For the fault server itself (`redeliver`), every
/// fault it was holding is put back in line for the new instance. Emits
/// `restart` (or `escalate` if the image cannot be loaded). Returns whether
/// the task was restarted.
pub fn restart_from_image(s: &mut Scheduler, idx: usize, seq: u64, delay_ms: u64, redeliver: bool) -> bool {
    let id = s.tasks[idx].id;
    abandon(s, id);
    let now = s.ticks;
    let t = &mut s.tasks[idx];
    t.space = None;
    t.fault = None;
    if let Err(e) = t.reload() {
        t.state = State::Stopped;
        crate::events::Event::new("escalate")
            .u64("task", id as u64)
            .str("name", &t.name)
            .u64("seq", seq)
            .str("action", "stop")
            .str("reason", e.reason())
            .emit();
        return false;
    }
    t.restarts += 1;
    t.state =
        if delay_ms == 0 { State::Runnable } else { State::Sleeping { until_tick: now.saturating_add(delay_ms) } };
    s.forget_current(idx);
    s.map_regions(idx);
    let mut redelivered = 0;
    if redeliver {
        for i in 0..s.tasks.len() {
            if s.tasks[i].state == State::FaultHeld
                && let Some(ep) = s.tasks[i].fault_endpoint()
            {
                let since = s.next_order();
                s.tasks[i].state = State::FaultPending { ep, since };
                redelivered += 1;
            }
        }
    }
    let t = &s.tasks[idx];
    let mut ev = crate::events::Event::new("restart")
        .u64("task", id as u64)
        .str("name", &t.name)
        .u64("seq", seq)
        .str("from", "image")
        .u64("delay_ms", delay_ms)
        .u64("restarts", t.restarts);
    if redeliver {
        ev = ev.str("reason", "fault server faulted").u64("redelivered", redelivered);
    }
    ev.emit();
    true
}
