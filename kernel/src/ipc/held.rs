//! Requests held by checkpoint scopes: exactly-once request handling.
//!
//! A `call` that a server receives while it is inside a checkpoint scope
//! belongs to that scope until the outermost scope commits. Its reply,
//! made inside the scope, is kept here (not delivered) and goes to the
//! caller at that commit; a rollback of the scope *un-receives* the
//! request — the caller is queued on the endpoint again, ahead of every
//! other sender — and forgets a reply the rolled-back run made, so the
//! re-run scope's `recv` gets the same request from the same caller and
//! answers it once. The caller meanwhile stays `ReplyBlocked` (or, after a
//! rollback, `SendBlocked` again): it sees one call, answered once.
//!
//! Why here and not in the server: nothing a task keeps survives its own
//! rollback except what the kernel keeps, and a fault may strike between
//! any two instructions — after the reply and before the commit included.
//!
//! A held entry is valid while its caller still waits for this server with
//! the same `(faults, restarts)` as at the receipt: a caller that faulted,
//! was rolled back or restarted since is not waiting for that answer any
//! more (its next call is a new request), and the entry is dropped. At
//! most [`MAX_HELD`] per task: a `recv` inside a scope with the table full
//! is `NoMemory` and takes nothing (`check_room`). Replies held are
//! registers only (label and words): a reply with a buffer inside a scope
//! that holds its request is `BadArgument`, the reply right kept.

use super::message::{Outgoing, Payload, deliver};
use crate::sched::Scheduler;
use crate::task::{State, Task, TaskId};
use abi::ipc::{MAX_HELD, MSG_WORDS};
use abi::syscall::Error;

/// A request received inside a scope and not yet committed.
#[derive(Clone, Copy, Debug)]
pub struct Held {
    pub caller: TaskId,
    /// The caller's `(faults, restarts)` at the receipt.
    pub stamp: (u64, u64),
    /// Where it was received, and with which badge (to queue it again).
    pub ep: u16,
    pub badge: u64,
    /// The scope that holds it (1 = outermost); a commit hands it to the
    /// parent, the outermost commit releases it.
    pub depth: usize,
    /// The reply made inside the scope, not yet delivered.
    pub reply: Option<HeldReply>,
}

/// A reply waiting for the outermost commit.
#[derive(Clone, Copy, Debug)]
pub struct HeldReply {
    /// The scope it was made in (a rollback to it or an outer one forgets it).
    pub depth: usize,
    pub label: u64,
    pub words: [u64; MSG_WORDS],
}

fn stamp(t: &Task) -> (u64, u64) {
    (t.faults, t.restarts)
}

/// The table index of `h`'s caller if it still waits for `server`'s answer
/// to that very request.
fn waiting(s: &Scheduler, server: TaskId, h: &Held) -> Option<usize> {
    let i = super::endpoint::task_index(&s.tasks, h.caller)?;
    let c = &s.tasks[i];
    (c.state() == (State::ReplyBlocked { server }) && stamp(c) == h.stamp).then_some(i)
}

/// Whether `task` may receive now: inside a scope, only with room to hold
/// what it receives.
pub fn check_room(task: &Task) -> Result<(), Error> {
    if !task.scopes.is_empty() && task.held.is_full() { Err(Error::NoMemory) } else { Ok(()) }
}

/// `server` just received the `call` of `caller` on `ep` with `badge`:
/// inside a scope, the scope holds it.
pub fn on_receive(s: &mut Scheduler, server: usize, caller: usize, ep: u16, badge: u64) {
    let depth = s.tasks[server].scopes.len();
    if depth == 0 {
        return;
    }
    let h = Held { caller: s.tasks[caller].id, stamp: stamp(&s.tasks[caller]), ep, badge, depth, reply: None };
    // Room was checked when the receive began (`check_room`); a task
    // blocked in `recv` cannot change its table. Should it be full anyway,
    // the request is received the ordinary way (not held).
    let _ = s.tasks[server].held.push(h);
}

/// `reply` by task `me` to `caller`: `None` if no scope holds that request
/// (the ordinary reply applies); else the reply is kept for the commit and
/// this is the call's result (the reply right is used up unless it is an
/// error).
pub fn hold_reply(s: &mut Scheduler, me: usize, caller: TaskId) -> Option<Result<u64, Error>> {
    let depth = s.tasks[me].scopes.len();
    if depth == 0 {
        return None;
    }
    let pos = s.tasks[me].held.iter().position(|h| h.caller == caller && h.reply.is_none())?;
    let f = &s.tasks[me].save.frame;
    if f.r13 != 0 {
        return Some(Err(Error::BadArgument));
    }
    let reply = HeldReply { depth, label: f.rsi, words: [f.rdx, f.r10, f.r8, f.r9] };
    let h = s.tasks[me].held[pos];
    let server = s.tasks[me].id;
    s.tasks[me].reply_to = None;
    if waiting(s, server, &h).is_none() {
        s.tasks[me].held.remove(pos);
        return Some(Err(Error::NoCaller));
    }
    s.tasks[me].held[pos].reply = Some(reply);
    Some(Ok(0))
}

/// Task `me` committed its scope `n`: an inner commit hands what the scope
/// held to its parent; the outermost delivers the held replies and lets go
/// of the requests (an unanswered one stays the task's reply right if it
/// is; otherwise its caller gets `BadTask`: nobody can answer it any more).
pub fn on_commit(s: &mut Scheduler, me: usize, n: usize) {
    if s.tasks[me].held.is_empty() {
        return;
    }
    if n > 1 {
        for h in s.tasks[me].held.iter_mut() {
            if h.depth == n {
                h.depth = n - 1;
            }
            if let Some(r) = h.reply.as_mut()
                && r.depth == n
            {
                r.depth = n - 1;
            }
        }
        return;
    }
    let server = s.tasks[me].id;
    let reply_to = s.tasks[me].reply_to;
    let held = core::mem::take(&mut s.tasks[me].held);
    for h in held {
        let Some(c) = waiting(s, server, &h) else { continue };
        match h.reply {
            Some(r) => {
                let msg = Outgoing { badge: 0, label: r.label, words: r.words, payload: Payload::None };
                deliver(s, &msg, None, c);
                s.tasks.set_state_unqueued(c, State::Runnable);
            }
            None if reply_to == Some(h.caller) => {}
            None => {
                s.tasks.set_state_unqueued(c, State::Runnable);
                s.tasks[c].save.frame.rax = Error::BadTask.to_raw();
            }
        }
    }
}

/// Task `idx` was rolled back to its scope `depth` (its scopes are
/// truncated to `depth` already). Requests the rolled-back scopes received
/// are queued again on their endpoints, first in line, in the order they
/// were received; replies they made are forgotten; the reply right is what
/// it was at the scope's open if an outer scope still holds that request.
/// Callers whose request no scope holds (received outside any scope) get
/// `BadTask`; reply rights other tasks hold to answer this one (it may be
/// a client, rolled back mid-call) are dropped. One pass over the task
/// table when nothing is held, as before scopes held requests: this is on
/// the fault -> checkpoint path.
pub fn on_rollback(s: &mut Scheduler, idx: usize, depth: usize) {
    let id = s.tasks[idx].id;
    // The callers an outer scope still holds (not to be failed below).
    let mut kept_callers = [0 as TaskId; MAX_HELD];
    let mut kept_n = 0;
    if s.tasks[idx].held.is_empty() {
        s.tasks[idx].reply_to = None;
    } else {
        let at_open = s.tasks[idx].scopes.get(depth.wrapping_sub(1)).and_then(|sc| sc.reply_to);
        let held = core::mem::take(&mut s.tasks[idx].held);
        let mut kept = heapless::Vec::<Held, MAX_HELD>::new();
        let mut requeued = 0u64;
        for mut h in held {
            let Some(c) = waiting(s, id, &h) else { continue };
            if h.depth >= depth {
                // `since` below every real order (`Scheduler::order` starts
                // at `MAX_HELD`): first in line, in the order received.
                s.tasks.set_state(c, State::SendBlocked { ep: h.ep, call: true, badge: h.badge, since: requeued });
                requeued += 1;
            } else {
                if h.reply.is_some_and(|r| r.depth >= depth) {
                    h.reply = None;
                }
                kept_callers[kept_n] = h.caller;
                kept_n += 1;
                let _ = kept.push(h);
            }
        }
        let t = &mut s.tasks[idx];
        t.reply_to = at_open.filter(|c| kept.iter().any(|h| h.caller == *c && h.reply.is_none()));
        t.held = kept;
    }
    let kept_callers = &kept_callers[..kept_n];
    let mut lost = 0u64;
    for (i, t) in s.tasks.iter_mut().enumerate() {
        // Requests received outside any scope are lost with the rolled-back run.
        if t.state() == (State::ReplyBlocked { server: id }) && !kept_callers.contains(&t.id) {
            t.save.frame.rax = Error::BadTask.to_raw();
            lost |= 1 << i;
        }
        if t.reply_to == Some(id) {
            t.reply_to = None;
        }
    }
    for i in crate::sched::table::bits(lost) {
        s.tasks.set_state_unqueued(i, State::Runnable);
    }
}
