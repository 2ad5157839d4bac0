//! Restart from the image: the recovery path's last resort.
//!
//! When no checkpoint scope can take a fault (none open, or the policy
//! escalated past the outermost), the supervisor restarts the task from its
//! ELF image: fresh memory, fresh registers, regions mapped again. The same
//! path restarts a supervisor (the fault server) that faults, panics, runs
//! out of memory (its allocator panics) or is killed, handing the new
//! instance every fault the old one held.

use crate::ipc::{Gone, abandon};
use crate::sched::Scheduler;
use crate::task::State;
use abi::event::Event;

/// A supervisor restarted within this long of its previous restart counts
/// as a quick restart.
const QUICK_RESTART_MS: u64 = 1000;
/// Quick restarts that happen at once; later ones wait, doubling from
/// [`FIRST_BACKOFF_MS`] up to [`MAX_BACKOFF_MS`].
const FREE_QUICK_RESTARTS: u32 = 3;
const FIRST_BACKOFF_MS: u64 = 10;
const MAX_BACKOFF_MS: u64 = 1000;
/// Longest a task restarted by its supervisor waits for the supervisor's
/// next system call (several CPUs; see `restart_from_image`).
pub const HOLD_MAX_TICKS: u64 = 50;

/// How long a supervisor that faulted or panicked waits before its restart:
/// at once, unless it keeps failing right after restarts — then backing
/// off, so a supervisor that dies at every start (it runs at the most
/// urgent priority) cannot keep the CPU from every other task.
pub fn supervisor_delay(s: &mut Scheduler, idx: usize) -> u64 {
    let now = s.ticks;
    let t = &mut s.tasks[idx];
    let quick = t.restarts > 0 && now.saturating_sub(t.last_restart_tick) < QUICK_RESTART_MS;
    t.quick_restarts = if quick { t.quick_restarts.saturating_add(1) } else { 0 };
    t.last_restart_tick = now;
    match t.quick_restarts.checked_sub(FREE_QUICK_RESTARTS) {
        None | Some(0) => 0,
        Some(n) => FIRST_BACKOFF_MS.saturating_mul(1 << (n - 1).min(16)).min(MAX_BACKOFF_MS),
    }
}

/// Restarts task `idx` from its image after `delay_ms`: callers waiting on
/// it get an error, its memory is replaced by a fresh load, its regions
/// are mapped again. For a supervisor (`redeliver`: why it is restarted),
/// every fault it was holding is put back in line for the new instance. Emits
/// `restart` (or `escalate` if the image cannot be loaded). Returns whether
/// the task was restarted. `emit: false` (a batched `RECOVER`) leaves the
/// `restart` event to the supervisor's report; a failure is always emitted.
pub fn restart_from_image(
    s: &mut Scheduler,
    idx: usize,
    seq: u64,
    delay_ms: u64,
    redeliver: Option<&'static str>,
    emit: bool,
) -> bool {
    let id = s.tasks[idx].id;
    let now = s.ticks;
    let t = &mut s.tasks[idx];
    t.space = None;
    t.fault = None;
    if let Err(e) = t.reload() {
        s.tasks.set_state(idx, State::Stopped);
        abandon(s, id, Gone::Ended);
        let t = &s.tasks[idx];
        crate::events::emit(&Event::Escalate {
            task: id as u64,
            name: Some(&t.name),
            seq,
            action: "stop",
            reason_code: None,
            reason: Some(e.reason()),
            restarts: None,
            from_scope: None,
            retries_in_window: None,
            window_ms: None,
        });
        return false;
    }
    t.restarts += 1;
    // A fresh instance runs at its manifest priority, deferring nothing.
    s.tasks.restore_priority(idx);
    s.tasks.set_lowered_since(idx, None);
    // Its callers learn of the new generation (the one just counted).
    abandon(s, id, Gone::Restarted);
    let state = if delay_ms == 0 {
        State::Runnable
    } else {
        let until_tick = now.saturating_add(delay_ms);
        crate::sched::arm(until_tick);
        State::Sleeping { until_tick }
    };
    s.tasks.set_state(idx, state);
    // With several CPUs, another CPU would run it at once, before its
    // supervisor's next call: the restart count it writes into the task
    // right after (`REWIND_RESTARTS`, the fault server's README) would come
    // too late — one CPU gave the same order by priority. So the task
    // waits for the supervisor's next system call: a `TASK_CTL` on it
    // clears the hold (`Scheduler::stop_remote`), any other call releases
    // it (`syscall::dispatch`); [`HOLD_MAX_TICKS`] at most, should the
    // supervisor make none.
    if redeliver.is_none() && crate::sched::smp() {
        s.tasks.set_held_until(idx, now.saturating_add(HOLD_MAX_TICKS));
        if let Some(me) = s.current_index() {
            s.tasks[me].holds = Some(idx);
        }
    }
    s.forget_current(idx);
    s.map_regions(idx);
    let mut redelivered = 0;
    if redeliver.is_some() {
        for i in 0..s.tasks.len() {
            if s.tasks[i].state() == State::FaultHeld
                && let Some(ep) = s.tasks[i].fault_endpoint()
            {
                let since = s.next_order();
                s.tasks.set_state(i, State::FaultPending { ep, since });
                redelivered += 1;
            }
        }
    }
    if !emit {
        return true;
    }
    let t = &s.tasks[idx];
    crate::events::emit(&Event::RestartImageV2 {
        task: id as u64,
        name: &t.name,
        seq,
        delay_ms,
        restarts: t.restarts,
        reason: redeliver,
        redelivered: redeliver.map(|_| redelivered),
        cpu: crate::arch::percpu::cpu() as u64,
    });
    true
}
