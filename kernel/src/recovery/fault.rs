//! Step 1 of the recovery path: a ring-3 trap becomes a fault, and the fault
//! becomes one message to the fault endpoint.
//!
//! [`user_exception`] is where every CPU exception from ring 3 lands (after
//! `trap::dispatch`): a write to a page a checkpoint scope tracks is not a
//! fault — the page is preserved (`versions.rs`) and the task goes on.
//! Anything else, and the watchdog ([`user_tick`]), goes to [`fault`]: if the
//! task has a fault endpoint, it is suspended (`FaultPending`) and its fault
//! message is delivered as soon as a task receives on that endpoint — at
//! once if the fault server is already waiting, else when it next calls
//! `recv` (nothing is lost). The message is composed by the kernel from the
//! task's saved registers, with the kernel's badge (`FAULT_BADGE`), so it
//! cannot be forged. Once delivered the task is `FaultHeld` until its
//! supervisor decides (`supervise.rs`).

use crate::arch::trap_entry::TrapFrame;
use crate::events;
use crate::ipc::message::{self, Outgoing, Payload};
use crate::sched::{SCHED, Scheduler};
use crate::task::{PendingFault, State};
use abi::event::Event;
use abi::fault::FaultKind;
use abi::fault::{FAULT_LABEL, FAULT_MESSAGE_SIZE, FaultMessage};
use abi::ipc::FAULT_BADGE;
use abi::trap::exception_name;

/// A CPU exception in ring 3. A write to a page a checkpoint scope tracks
/// is not a fault: the page is preserved and the task goes on. Anything
/// else is a fault (`ipc::fault::fault`): reported, delivered to the task's
/// fault endpoint; every other task keeps running.
pub fn user_exception(f: &TrapFrame) {
    let mut s = SCHED.lock();
    let Some(me) = s.current_index() else { return };
    if matches!(f.vector, 1 | 3) && crate::inject::on_debug_trap(&mut s, me, f.vector) {
        return;
    }
    const PRESENT_WRITE_USER: u64 = 0b111;
    if f.vector == 14
        && f.error_code & PRESENT_WRITE_USER == PRESENT_WRITE_USER
        && let Some(space) = s.tasks[me].space.as_mut()
        && space.preserve_on_write(f.cr2)
    {
        return;
    }
    let seq = s.next_fault_seq();
    let fault = PendingFault {
        kind: FaultKind::Exception as u64,
        vector: f.vector,
        error_code: f.error_code,
        // CR2 means something only for a page fault; otherwise it is left
        // over from an earlier one.
        cr2: if f.vector == 14 { f.cr2 } else { 0 },
        seq,
        ..PendingFault::default()
    };
    self::fault(&mut s, me, fault);
}

/// A timer tick while a task ran: charge it, and let the watchdog stop a
/// task that ran past its budget without a system call.
pub fn user_tick() {
    let mut s = SCHED.lock();
    s.tick(true);
    let Some(me) = s.current_index() else { return };
    crate::inject::on_tick(&mut s, Some(me));
    let t = &mut s.tasks[me];
    t.ticks_since_syscall += 1;
    let budget = t.spec.watchdog_ms as u64;
    if budget != 0 && t.state == State::Runnable && t.ticks_since_syscall > budget {
        t.ticks_since_syscall = 0;
        let seq = s.next_fault_seq();
        let fault = PendingFault { kind: FaultKind::Watchdog as u64, seq, ..PendingFault::default() };
        self::fault(&mut s, me, fault);
    }
}

/// Task `idx` faulted (exception, watchdog, kill; panics come through the
/// `PANIC` syscall): report it, then hand it to its fault endpoint. A task
/// without one is stopped — unless it is a supervisor (the fault server),
/// which the kernel restarts at once, handing it back the faults it held.
pub fn fault(s: &mut Scheduler, idx: usize, fault: PendingFault) {
    // A task an injection sent spinning is reported where it really was.
    if let Some(rip) = s.tasks[idx].hang_rip.take() {
        s.tasks[idx].save.frame.rip = rip;
    }
    let fault_tsc = crate::arch::rdtsc();
    let t = &s.tasks[idx];
    let f = &t.save.frame;
    let kind = FaultKind::from_u64(fault.kind).map_or("?", FaultKind::name);
    let exception = if fault.kind == FaultKind::Exception as u64 { exception_name(fault.vector as u8) } else { kind };
    crate::kprintln!("task {} ({}) fault {}: {} at {:#x}", t.id, t.name, fault.seq, exception, f.rip);
    events::emit(&Event::Fault {
        task: t.id as u64,
        name: &t.name,
        seq: fault.seq,
        kind: fault.kind,
        vector: fault.vector,
        error_code: fault.error_code,
        cr2: fault.cr2,
        regs: f.registers(),
        scopes: t.scopes.len() as u64,
        fault_tsc,
    });
    if raise(s, idx, fault) {
        return;
    }
    if s.tasks[idx].is_supervisor() {
        // The fault server itself: restart it at once, and hand the new
        // instance every fault the old one held.
        super::restart::restart_from_image(s, idx, fault.seq, 0, true);
        return;
    }
    let task = &mut s.tasks[idx];
    task.state = State::Faulted { vector: fault.vector as u8 };
    task.space = None;
    let id = task.id;
    crate::ipc::abandon(s, id);
}

/// Suspends task `idx` for `fault` and queues its message; returns false if
/// it has no fault endpoint (the caller then stops the task).
pub fn raise(s: &mut Scheduler, idx: usize, fault: PendingFault) -> bool {
    let Some(ep) = s.tasks[idx].fault_endpoint() else { return false };
    if ep as usize >= s.endpoints.len() {
        return false;
    }
    let since = s.next_order();
    let task = &mut s.tasks[idx];
    task.fault = Some(fault);
    task.state = State::FaultPending { ep, since };
    let receiver = s.tasks.iter().position(|t| matches!(t.state, State::RecvBlocked { ep: e, .. } if e == ep));
    match receiver {
        Some(r) => deliver(s, idx, r),
        None => {
            let t = &s.tasks[idx];
            events::emit(&Event::FaultPending {
                task: t.id as u64,
                name: &t.name,
                seq: fault.seq,
                endpoint: &s.endpoints[ep as usize].name,
            });
        }
    }
    true
}

/// Delivers the pending fault of task `from` to receiver `to`.
pub fn deliver(s: &mut Scheduler, from: usize, to: usize) {
    let t = &s.tasks[from];
    let Some(fault) = t.fault else { return };
    let body = FaultMessage {
        task: t.id as u64,
        kind: fault.kind,
        vector: fault.vector,
        error_code: fault.error_code,
        cr2: fault.cr2,
        seq: fault.seq,
        restarts: t.restarts,
        eh_frame_hdr: t.eh_frame_hdr,
        text_len: fault.text_len as u64,
        recovery: t.recovery,
        scopes: t.scopes.len() as u64,
        regs: t.save.frame.registers(),
    };
    let mut bytes = [0u8; FAULT_MESSAGE_SIZE + 256];
    bytes[..FAULT_MESSAGE_SIZE].copy_from_slice(&body.to_bytes());
    bytes[FAULT_MESSAGE_SIZE..FAULT_MESSAGE_SIZE + fault.text_len].copy_from_slice(&fault.text[..fault.text_len]);
    let msg = Outgoing {
        badge: FAULT_BADGE,
        label: FAULT_LABEL,
        words: [t.id as u64, fault.kind, fault.vector, fault.seq],
        payload: Payload::Kernel(&bytes[..FAULT_MESSAGE_SIZE + fault.text_len]),
    };
    message::deliver(s, &msg, None, to);
    s.tasks[to].state = State::Runnable;
    s.tasks[from].state = State::FaultHeld;
}
