//! Endpoint operations: send, recv, call, reply, reply_recv.
//!
//! A rendezvous happens in whichever call comes second: `send` finds a task
//! blocked in `recv` on the endpoint, or `recv` finds the longest-waiting
//! sender (a task in `send`/`call`, or a faulted task whose fault message is
//! pending) — both from the endpoint's masks in the task table, not a scan. A received `call` leaves its caller `ReplyBlocked` and gives
//! the receiver a one-shot reply right (`reply_to`).
//!
//! [`fastpath`] is the seL4-style shortcut for the two calls of a
//! client/server exchange, `call` and `reply_recv`, when the partner is
//! already waiting and the message is registers only; everything else goes
//! the general way below, which the fastpath's result is identical to.

use super::message::{Outgoing, check_receive_buffer, deliver};
use super::{deadline, held};
use crate::arch::trap_entry::TrapFrame;
use crate::recovery::fault;
use crate::sched::table;
use crate::sched::{self, Scheduler};
use crate::task::{State, Task, TaskId};
use abi::ipc::{CapKind, POLL, Rights};
use abi::syscall::{Error, nr};
use alloc::boxed::Box;

type SysResult = Result<u64, Error>;

/// `send` (`call = false`) or `call`, by the current task.
pub fn send(s: &mut Scheduler, call: bool) -> SysResult {
    let me = s.current_index().ok_or(Error::BadTask)?;
    let task = &s.tasks[me];
    let cap = task.cap(task.save.frame.rdi, CapKind::Endpoint, Rights::SEND)?;
    let (ep, badge) = (cap.object as u16, cap.badge);
    if call {
        check_receive_buffer(task)?;
    }
    // Validate the message now, so the error goes to the sender.
    let msg = Outgoing::from_task(task, badge)?;

    // The first receiver in table order.
    let receivers = s.tasks.receivers(ep as usize);
    let receiver = (receivers != 0).then(|| receivers.trailing_zeros() as usize);
    match receiver {
        Some(r) => {
            deliver(s, &msg, Some(me), r);
            s.tasks.set_state(r, State::Runnable);
            if call {
                let my_id = s.tasks[me].id;
                s.tasks[r].reply_to = Some(my_id);
                let server = s.tasks[r].id;
                s.tasks.set_state_unqueued(me, State::ReplyBlocked { server });
                held::on_receive(s, r, me, ep, badge);
            }
        }
        None if !super::live_receiver(s, ep, None) => {
            // Nobody alive may ever receive here: fail now, never hang.
            s.tasks[me].save.frame.rdx = super::receivers_generation(s, ep);
            return Err(Error::Stopped);
        }
        None => {
            let since = s.next_order();
            s.tasks.set_state_unqueued(me, State::SendBlocked { ep, call, badge, since });
        }
    }
    Ok(0)
}

/// `recv` by the current task.
pub fn recv(s: &mut Scheduler) -> SysResult {
    let me = s.current_index().ok_or(Error::BadTask)?;
    let task = &s.tasks[me];
    let ep = task.cap(task.save.frame.rdi, CapKind::Endpoint, Rights::RECV)?.object as u16;
    check_receive_buffer(task)?;
    held::check_room(task)?;
    let timeout = task.save.frame.rbx;

    // The longest-waiting sender: normal messages and pending faults alike,
    // among those queued on the endpoint (`table::TaskTable::senders`).
    let sender = table::bits(s.tasks.senders(ep as usize))
        .filter_map(|i| match s.tasks[i].state() {
            State::SendBlocked { since, .. } | State::FaultPending { since, .. } => Some((since, i)),
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
            s.tasks.set_state_unqueued(me, State::RecvBlocked { ep, deadline });
            Ok(0)
        }
    }
}

/// Moves the message of blocked sender `from` to receiver `to`.
pub fn take_from(s: &mut Scheduler, from: usize, to: usize) {
    match s.tasks[from].state() {
        State::FaultPending { .. } => fault::deliver(s, from, to),
        State::SendBlocked { call, badge, ep, .. } => {
            // The sender's buffer may have gone bad while it waited: then
            // the registers go alone.
            let msg = Outgoing::from_task(&s.tasks[from], badge)
                .unwrap_or_else(|_| Outgoing::registers_of(&s.tasks[from], badge));
            deliver(s, &msg, Some(from), to);
            s.tasks.set_state(to, State::Runnable);
            if call {
                let (caller, server) = (s.tasks[from].id, s.tasks[to].id);
                s.tasks[to].reply_to = Some(caller);
                s.tasks.set_state(from, State::ReplyBlocked { server });
                held::on_receive(s, to, from, ep, badge);
            } else {
                s.tasks.set_state(from, State::Runnable);
                s.tasks[from].save.frame.rax = 0;
            }
        }
        _ => {}
    }
}

/// `reply` by the current task.
pub fn reply(s: &mut Scheduler) -> SysResult {
    let me = s.current_index().ok_or(Error::BadTask)?;
    let caller_id = s.tasks[me].reply_to.ok_or(Error::NoCaller)?;
    // Inside a scope that holds the request: kept until the commit.
    if let Some(result) = held::hold_reply(s, me, caller_id) {
        return result;
    }
    s.tasks[me].reply_to = None;
    let my_id = s.tasks[me].id;
    let caller = task_index(&s.tasks, caller_id)
        .filter(|&c| s.tasks[c].state() == (State::ReplyBlocked { server: my_id }))
        .ok_or(Error::NoCaller)?;
    let msg = Outgoing::from_task(&s.tasks[me], 0)?;
    deliver(s, &msg, Some(me), caller);
    s.tasks.set_state_unqueued(caller, State::Runnable);
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

/// The IPC fastpath: `call` and `reply_recv` of the current task, when they
/// end in a direct switch to the partner. Returns the partner's frame, with
/// every state change made exactly as the general path (`send`, `reply`,
/// `recv` and then `sched::next`) would make it; or `None`, having changed
/// nothing, and the general path runs.
///
/// Conditions, checked before anything changes (any one failing: `None`):
/// no send buffer (`r13 = 0`) and no receive buffer (`r15 = 0`); a valid
/// capability with the right; for `call`, a task already blocked in `recv`
/// on the endpoint; for `reply_recv`, a caller blocked on this task's reply
/// right, no sender or pending fault queued on the endpoint (the receive
/// would take it) and a blocking receive (not `POLL`); and the partner must
/// be strictly more urgent than every other runnable task, so that the
/// scheduler's `pick` (priorities, then round robin) would choose it too.
/// The partner's priority, the badge of the capability, the one-shot reply
/// right and the receive timeout are honoured as in the general path; a
/// server inside a checkpoint scope (it would hold the request or reply:
/// `held`) takes the general path; a
/// partner that was faulted, killed or restarted is no longer blocked in
/// IPC, so the fastpath does not see it.
///
/// Partners are found through the task table's masks (who waits on which
/// endpoint, the best priority queued: `sched::table`) and the reply
/// right's task id, not by scanning the task table. With several CPUs the
/// fastpath is off (`table::TaskTable::fast_best_ready` says "priority 0
/// is runnable", so no partner is urgent enough; no test of its own): the
/// general path does the per-CPU bookkeeping (`running_on`) the
/// fastpath's switch leaves out.
#[inline(always)]
pub fn fastpath(s: &mut Scheduler) -> Option<*mut TrapFrame> {
    let me = s.current_index()?;
    // SAFETY (here and in `fast_call`/`fast_reply_recv`): the current index
    // names a task — it is set only to indices of the table, which never
    // shrinks — so the bounds checks of the general path are skipped on
    // the hot path of IPC.
    let f = &unsafe { s.tasks.get_unchecked(me) }.save.frame;
    if f.r13 | f.r15 != 0 {
        return None;
    }
    match f.rax {
        nr::CALL => fast_call(s, me),
        nr::REPLY_RECV => fast_reply_recv(s, me),
        _ => None,
    }
}

/// `call` to an endpoint a receiver waits on: the message goes register to
/// register, the receiver gets the reply right and runs, the caller waits
/// for the reply.
#[inline(always)]
fn fast_call(s: &mut Scheduler, me: usize) -> Option<*mut TrapFrame> {
    // SAFETY: `me` is the current task's index (see `fastpath`).
    let caller = unsafe { s.tasks.get_unchecked(me) };
    let cap = caller.cap(caller.save.frame.rdi, CapKind::Endpoint, Rights::SEND).ok()?;
    let (ep, badge) = (cap.object as usize, cap.badge);
    // The first receiver in table order, the one `send` would choose.
    let receivers = s.tasks.receivers(ep);
    if receivers == 0 {
        return None;
    }
    let r = receivers.trailing_zeros() as usize;
    // The best priority runnable other than the caller: with one CPU the
    // queued tasks are every runnable task but the current one.
    let others_best = s.tasks.fast_best_ready();
    // `me` read again (one `gs` load) rather than kept in a register
    // across the checks above: the one-CPU fastpath then saves no more
    // registers than before per-CPU state (IPC round trip).
    let me = sched::current_again(me);
    // The masks hold table indices only, and the caller (current, so
    // runnable) is in no receiver mask: no bounds or aliasing check.
    debug_assert!(r < s.tasks.len() && r != me);
    // SAFETY: as just said.
    let receiver = unsafe { s.tasks.get_unchecked(r) };
    debug_assert!(matches!(receiver.state(), State::RecvBlocked { ep: e, .. } if e as usize == ep));
    // A receiver inside a checkpoint scope holds what it receives
    // (`held`): the general path.
    if receiver.space.is_none() || receiver.priority() as u16 >= others_best || !receiver.scopes.is_empty() {
        return None;
    }
    sched::debug_assert_not_running(receiver);

    // Committed: the same changes as `send(call = true)`. The states and
    // masks first, so that nothing of the checks stays live in registers
    // across the copy.
    // SAFETY: `me` and `r` are in the table (above), and `r` is in `ep`'s
    // receiver mask, so `ep` is an endpoint.
    unsafe { s.tasks.fast_call_switch(me, r, ep) };
    // SAFETY: as above; they differ.
    let [caller, receiver] = unsafe { s.tasks.disjoint_unchecked_mut(me, r) };
    let f = &caller.save.frame;
    deliver_registers(&mut receiver.save.frame, badge, f.rsi, [f.rdx, f.r10, f.r8, f.r9]);
    receiver.reply_to = Some(caller.id);
    caller.ticks_since_syscall = 0;
    caller.save.frame.rax = 0;
    let live = (caller.save.frame.fs_base, caller.save.frame.gs_base);
    let priority = receiver.priority();
    let frame = sched::enter_fast(receiver, live);
    Some(s.set_current(r, priority, frame))
}

/// `reply_recv` with a caller waiting for the reply: the reply goes register
/// to register, the caller runs, this task waits on the endpoint.
#[inline(always)]
fn fast_reply_recv(s: &mut Scheduler, me: usize) -> Option<*mut TrapFrame> {
    let now = s.ticks;
    // SAFETY: `me` is the current task's index (see `fastpath`).
    let server = unsafe { s.tasks.get_unchecked(me) };
    let f = &server.save.frame;
    let timeout = f.rbx;
    if timeout == POLL {
        return None;
    }
    let caller_id = server.reply_to?;
    let ep = server.cap(f.rdi, CapKind::Endpoint, Rights::RECV).ok()?.object as usize;
    let c = task_index(&s.tasks, caller_id)?;
    // A queued sender or pending fault: the receive would take it.
    if s.tasks.senders_on(ep)? != 0 {
        return None;
    }
    let others_best = s.tasks.fast_best_ready();
    let me = sched::current_again(me);
    // SAFETY: `me` is the current index, `c` was checked by `task_index`.
    let (server, caller) = unsafe { (s.tasks.get_unchecked(me), s.tasks.get_unchecked(c)) };
    // Blocked on this task's reply: so not this task (which runs).
    if !matches!(caller.state(), State::ReplyBlocked { server: id } if id == server.id) || caller.space.is_none() {
        return None;
    }
    // A server inside a scope holds its reply until the commit (`held`).
    if caller.priority() as u16 >= others_best || !server.scopes.is_empty() {
        return None;
    }
    sched::debug_assert_not_running(caller);

    // Committed: the same changes as `reply`, then `recv` finding no sender
    // (states and masks first, as in `fast_call`).
    // SAFETY: `me` and `c` are in the table (above); `ep` is an endpoint
    // (`senders_on` found it).
    unsafe { s.tasks.fast_reply_recv_switch(me, c, ep, deadline(now, timeout)) };
    // SAFETY: as above; they differ (`c` is blocked, `me` runs).
    let [server, caller] = unsafe { s.tasks.disjoint_unchecked_mut(me, c) };
    let f = &server.save.frame;
    deliver_registers(&mut caller.save.frame, 0, f.rsi, [f.rdx, f.r10, f.r8, f.r9]);
    server.reply_to = None;
    server.ticks_since_syscall = 0;
    server.save.frame.rax = 0;
    let live = (server.save.frame.fs_base, server.save.frame.gs_base);
    let priority = caller.priority();
    let frame = sched::enter_fast(caller, live);
    Some(s.set_current(c, priority, frame))
}

/// What `message::deliver` writes for a message without a payload.
#[inline(always)]
fn deliver_registers(f: &mut TrapFrame, badge: u64, label: u64, words: [u64; abi::ipc::MSG_WORDS]) {
    f.rax = 0;
    f.rdi = badge;
    f.rsi = label;
    f.rdx = words[0];
    f.r10 = words[1];
    f.r8 = words[2];
    f.r9 = words[3];
    f.r13 = 0;
}

/// The table index of task `id`, without a scan: tasks are never removed
/// and ids are handed out in table order from 1, so it is `id - 1`;
/// checked, and `None` (the general path searches) should that ever change.
pub(crate) fn task_index(tasks: &[Box<Task>], id: TaskId) -> Option<usize> {
    let i = (id as usize).checked_sub(1)?;
    tasks.get(i).filter(|t| t.id == id).map(|_| i)
}
