//! Endpoint operations: send, recv, call, reply, reply_recv.
//!
//! A rendezvous happens in whichever call comes second: `send` finds a task
//! blocked in `recv` on the endpoint, or `recv` finds the longest-waiting
//! sender (a task in `send`/`call`, or a faulted task whose fault message is
//! pending). A received `call` leaves its caller `ReplyBlocked` and gives
//! the receiver a one-shot reply right (`reply_to`).

use super::deadline;
use super::message::{Outgoing, check_receive_buffer, deliver};
use crate::recovery::fault;
use crate::sched::Scheduler;
use crate::task::State;
use abi::ipc::{CapKind, POLL, rights};
use abi::syscall::Error;

type SysResult = Result<u64, Error>;

/// `send` (`call = false`) or `call`, by the current task.
pub fn send(s: &mut Scheduler, call: bool) -> SysResult {
    let me = s.current_index().ok_or(Error::BadTask)?;
    let task = &s.tasks[me];
    let cap = task.cap(task.save.frame.rdi, CapKind::Endpoint, rights::SEND)?;
    let (ep, badge) = (cap.object as u16, cap.badge);
    if call {
        check_receive_buffer(task)?;
    }
    // Validate the message now, so the error goes to the sender.
    let msg = Outgoing::from_task(task, badge)?;

    let receiver = s.tasks.iter().position(|t| matches!(t.state, State::RecvBlocked { ep: e, .. } if e == ep));
    match receiver {
        Some(r) => {
            deliver(s, &msg, Some(me), r);
            s.tasks[r].state = State::Runnable;
            if call {
                let my_id = s.tasks[me].id;
                s.tasks[r].reply_to = Some(my_id);
                let server = s.tasks[r].id;
                s.tasks[me].state = State::ReplyBlocked { server };
            }
        }
        None => {
            let since = s.next_order();
            s.tasks[me].state = State::SendBlocked { ep, call, badge, since };
        }
    }
    Ok(0)
}

/// `recv` by the current task.
pub fn recv(s: &mut Scheduler) -> SysResult {
    let me = s.current_index().ok_or(Error::BadTask)?;
    let task = &s.tasks[me];
    let ep = task.cap(task.save.frame.rdi, CapKind::Endpoint, rights::RECV)?.object as u16;
    check_receive_buffer(task)?;
    let timeout = task.save.frame.rbx;

    // The longest-waiting sender: normal messages and pending faults alike.
    let sender = s
        .tasks
        .iter()
        .enumerate()
        .filter_map(|(i, t)| match t.state {
            State::SendBlocked { ep: e, since, .. } | State::FaultPending { ep: e, since } if e == ep => {
                Some((since, i))
            }
            _ => None,
        })
        .min()
        .map(|(_, i)| i);
    match sender {
        Some(from) => {
            take_from(s, from, me);
            Ok(0)
        }
        None if timeout == POLL => Err(Error::Timeout),
        None => {
            let deadline = deadline(s.ticks, timeout);
            s.tasks[me].state = State::RecvBlocked { ep, deadline };
            Ok(0)
        }
    }
}

/// Moves the message of blocked sender `from` to receiver `to`.
pub fn take_from(s: &mut Scheduler, from: usize, to: usize) {
    match s.tasks[from].state {
        State::FaultPending { .. } => fault::deliver(s, from, to),
        State::SendBlocked { call, badge, .. } => {
            // The sender's buffer may have gone bad while it waited: then
            // the registers go alone.
            let msg = Outgoing::from_task(&s.tasks[from], badge)
                .unwrap_or_else(|_| Outgoing::registers_of(&s.tasks[from], badge));
            deliver(s, &msg, Some(from), to);
            s.tasks[to].state = State::Runnable;
            if call {
                let (caller, server) = (s.tasks[from].id, s.tasks[to].id);
                s.tasks[to].reply_to = Some(caller);
                s.tasks[from].state = State::ReplyBlocked { server };
            } else {
                s.tasks[from].state = State::Runnable;
                s.tasks[from].save.frame.rax = 0;
            }
        }
        _ => {}
    }
}

/// `reply` by the current task.
pub fn reply(s: &mut Scheduler) -> SysResult {
    let me = s.current_index().ok_or(Error::BadTask)?;
    let caller_id = s.tasks[me].reply_to.take().ok_or(Error::NoCaller)?;
    let my_id = s.tasks[me].id;
    let caller = s
        .tasks
        .iter()
        .position(|t| t.id == caller_id && t.state == (State::ReplyBlocked { server: my_id }))
        .ok_or(Error::NoCaller)?;
    let msg = Outgoing::from_task(&s.tasks[me], 0)?;
    deliver(s, &msg, Some(me), caller);
    s.tasks[caller].state = State::Runnable;
    Ok(0)
}

/// `reply_recv`: answers the pending caller (if any), then receives.
pub fn reply_recv(s: &mut Scheduler) -> SysResult {
    let me = s.current_index().ok_or(Error::BadTask)?;
    if s.tasks[me].reply_to.is_some() {
        match reply(s) {
            Ok(_) | Err(Error::NoCaller) => {}
            Err(e) => return Err(e),
        }
    }
    recv(s)
}
