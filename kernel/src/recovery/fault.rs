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

use super::window::{Dest, Source};
use crate::arch::trap_entry::TrapFrame;
use crate::events;
use crate::ipc::message::{self, Outgoing, Payload};
use crate::sched::{Scheduler, table};
use crate::task::{PendingFault, State};
use abi::event::Event;
use abi::fault::FaultKind;
use abi::fault::{FAULT_LABEL, FaultMessage};
use abi::ipc::FAULT_BADGE;
use abi::trap::exception_name;

/// A CPU exception in ring 3. A write to a page a checkpoint scope tracks
/// is not a fault: the page is preserved and the task goes on. Anything
/// else is a fault (`ipc::fault::fault`): reported, delivered to the task's
/// fault endpoint; every other task keeps running.
pub fn user_exception(f: &TrapFrame, s: &mut Scheduler) {
    let Some(me) = s.current_index() else { return };
    if matches!(f.vector, 1 | 3) && crate::inject::on_debug_trap(s, me, f.vector) {
        return;
    }
    // x87/SSE used by a task that does not own the FPU state: switched
    // lazily (`arch::fpu`), not a fault.
    if f.vector == 7 {
        let task = &mut s.tasks[me];
        // SAFETY: the running task's own area in its box; the lock is held.
        if unsafe { crate::arch::fpu::device_not_available(&mut task.fpu) } {
            task.resumed_at = f.rip;
            return;
        }
    }
    const PRESENT_WRITE_USER: u64 = 0b111;
    if f.vector == 14
        && f.error_code & PRESENT_WRITE_USER == PRESENT_WRITE_USER
        && let Some(space) = s.tasks[me].space.as_mut()
        && space.preserve_on_write(f.cr2)
    {
        s.tasks[me].resumed_at = f.rip;
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
    self::fault(s, me, fault);
}

/// A timer tick while a task ran: charge it, and let the watchdog stop a
/// task that ran past its budget without a system call.
pub fn user_tick(s: &mut Scheduler) {
    s.tick(true);
    let Some(me) = s.current_index() else { return };
    crate::inject::on_tick(s, Some(me));
    let t = &mut s.tasks[me];
    // The next tick finds it past the exception it was resumed from.
    t.resumed_at = 0;
    t.ticks_since_syscall += 1;
    let budget = t.spec.watchdog_ms as u64;
    if budget != 0 && t.state() == State::Runnable && t.ticks_since_syscall > budget {
        t.ticks_since_syscall = 0;
        let seq = s.next_fault_seq();
        let fault = PendingFault { kind: FaultKind::Watchdog as u64, seq, ..PendingFault::default() };
        self::fault(s, me, fault);
    }
}

/// Task `idx` faulted (exception, watchdog, kill; panics come through the
/// `PANIC` syscall): hand it to its fault endpoint, whose supervisor reports
/// the fault (`fault` event, backtrace, releases, decision) once the task
/// runs again. Nothing is printed or emitted here on that path: it is the
/// recovery path. A task without a fault endpoint is reported here and
/// stopped — unless it is a supervisor (the fault server), which the kernel
/// reports and restarts at once, handing it back the faults it held.
pub fn fault(s: &mut Scheduler, idx: usize, mut fault: PendingFault) {
    fault.tsc = crate::arch::rdtsc();
    fault.cpu = crate::arch::percpu::cpu() as u64;
    s.tasks[idx].faults += 1;
    // A task an injection sent spinning is reported where it really was.
    if let Some(rip) = s.tasks[idx].hang_rip.take() {
        s.tasks[idx].save.frame.rip = rip;
    }
    if raise(s, idx, fault) {
        return;
    }
    report(s, idx, &fault);
    if s.tasks[idx].is_supervisor() {
        let delay = super::restart::supervisor_delay(s, idx);
        super::restart::restart_from_image(s, idx, fault.seq, delay, Some("fault server faulted"), true);
        return;
    }
    s.tasks.set_state(idx, State::Faulted { vector: fault.vector as u8 });
    let task = &mut s.tasks[idx];
    task.space = None;
    let id = task.id;
    crate::ipc::abandon(s, id, crate::ipc::Gone::Ended);
}

/// The kernel's own report of a fault nobody supervises: a console line and
/// the `fault` event.
fn report(s: &Scheduler, idx: usize, fault: &PendingFault) {
    let t = &s.tasks[idx];
    let f = &t.save.frame;
    let kind = FaultKind::from_u64(fault.kind).map_or("?", FaultKind::name);
    let exception = if fault.kind == FaultKind::Exception as u64 { exception_name(fault.vector as u8) } else { kind };
    crate::kprintln!("task {} ({}) fault {}: {} at {:#x}", t.id, t.name, fault.seq, exception, f.rip);
    events::emit(&Event::FaultV2 {
        cpu: fault.cpu,
        task: t.id as u64,
        name: &t.name,
        seq: fault.seq,
        kind: fault.kind,
        vector: fault.vector,
        error_code: fault.error_code,
        cr2: fault.cr2,
        regs: f.registers(),
        scopes: t.scopes.len() as u64,
        fault_tsc: fault.tsc,
    });
}

/// Suspends task `idx` for `fault` and queues its message; returns false if
/// it has no fault endpoint (the caller then stops the task). A receiver
/// that lowered its priority to defer work (`SET_PRIORITY`) gets its own
/// priority back, so the fault is taken at once.
pub fn raise(s: &mut Scheduler, idx: usize, mut fault: PendingFault) -> bool {
    let Some(ep) = s.tasks[idx].fault_endpoint() else { return false };
    if ep as usize >= s.endpoints.len() {
        return false;
    }
    if fault.tsc == 0 {
        fault.tsc = crate::arch::rdtsc();
        fault.cpu = crate::arch::percpu::cpu() as u64;
    }
    let since = s.next_order();
    s.tasks[idx].fault = Some(fault);
    // The first receiver in table order takes it at once: the task goes
    // straight to `FaultHeld` (`deliver`), never queued.
    let receivers = s.tasks.receivers(ep as usize);
    if receivers != 0 {
        deliver(s, idx, receivers.trailing_zeros() as usize);
        return true;
    }
    s.tasks.set_state(idx, State::FaultPending { ep, since });
    {
        {
            // A receiver deferring work at a lower priority takes it at once:
            // no need to say the fault waits. (Only the tasks running below
            // their priority are looked at.)
            let mut boosted = false;
            for i in table::bits(s.tasks.below()) {
                if s.tasks[i].receives_on(ep) {
                    s.tasks.restore_priority(i);
                    boosted = true;
                }
            }
            if boosted {
                return true;
            }
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

/// Delivers the pending fault of task `from` to receiver `to`: the
/// [`FaultMessage`] with what the server needs to decide and recover — the
/// registers, the open scopes' stack pointers, the manifest policy, the
/// shared regions, a copy of the recovery page and the stack from `rsp` up
/// (at most `STACK_WINDOW` bytes) — written straight into the receiver's
/// buffer (`r14`, capacity `r15`; a smaller buffer gets the first bytes).
pub fn deliver(s: &mut Scheduler, from: usize, to: usize) {
    use abi::checkpoint::{RECOVERY_PAGE_SIZE, RecoveryPage};
    use abi::fault::{FAULT_MESSAGE_SIZE, STACK_WINDOW, section_offsets};
    let Some(fault) = s.tasks[from].fault else { return };
    let t = &s.tasks[from];
    let msg = Outgoing {
        badge: FAULT_BADGE,
        label: FAULT_LABEL,
        words: [t.id as u64, fault.kind, fault.vector, fault.seq],
        payload: Payload::None,
    };
    message::deliver(s, &msg, None, to);
    let (buf, cap) = (s.tasks[to].save.frame.r14, s.tasks[to].save.frame.r15);
    // The receiver: blocked in `recv`, or this CPU's current task taking
    // the fault in its own `recv` (already runnable, in no queue).
    if !s.tasks.is_current(to) {
        s.tasks.set_state(to, State::Runnable);
    }
    if s.tasks.is_current(from) {
        // The faulted task itself (a fault it took, not a kill).
        s.tasks.set_state_unqueued(from, State::FaultHeld);
    } else {
        s.tasks.set_state(from, State::FaultHeld);
    }
    let ticks = s.ticks;
    let Scheduler { tasks, regions, .. } = s;
    let (t, receiver) = tasks.read_write(from, to);
    let (Some(src), Some(dst)) = (t.space.as_ref(), receiver.space.as_mut()) else {
        // Nothing to copy from or into: an empty message (the server
        // refuses it as malformed and stops the task).
        receiver.save.frame.r13 = 0;
        return;
    };
    let rsp = t.save.frame.rsp;
    let stack_want =
        if rsp < abi::layout::USER_END { (abi::layout::USER_END - rsp).min(STACK_WINDOW as u64) } else { 0 };
    let recovery_len = if t.recovery != 0 && src.check_readable(t.recovery, RECOVERY_PAGE_SIZE as u64).is_ok() {
        RECOVERY_PAGE_SIZE
    } else {
        0
    };
    let (mut src, mut dst) = (Source::new(src), Dest::new(dst, buf, cap as usize));
    // The struct is filled in place in the receiver's buffer when it lies
    // in one writable page, 8-aligned (the fault server's does): no copy
    // of it. The sections after it are other bytes of the buffer.
    let mut local;
    let (m, in_place) = match dst.in_place(0, FAULT_MESSAGE_SIZE).and_then(|b| bytemuck::try_from_bytes_mut(b).ok()) {
        Some(m) => (m, true),
        None => {
            local = FaultMessage::default();
            (&mut local, false)
        }
    };
    fill(m, t, &fault, ticks, regions);
    m.recovery_len = recovery_len as u64;
    let (text_at, recovery_at, stack_at) = section_offsets(fault.text_len, recovery_len);
    dst.put(text_at, &fault.text[..fault.text_len]);
    if recovery_len != 0 {
        // The page up to its last live Arc entry, in one copy (readers look
        // at `count` entries only; the rest of the section keeps what the
        // buffer held before). The count is the task's: clamped, it can
        // only make the copy longer, never past the page.
        let arcs = src.u64_at(t.recovery + core::mem::offset_of!(RecoveryPage, arc_count) as u64);
        src.copy_to(t.recovery, RecoveryPage::live_len(arcs), &mut dst, recovery_at);
    }
    m.stack_len = src.copy_to(rsp, stack_want as usize, &mut dst, stack_at) as u64;
    let total = if m.stack_len > 0 { stack_at + m.stack_len as usize } else { recovery_at + recovery_len };
    if !in_place {
        dst.put(0, m.as_bytes());
    }
    receiver.save.frame.r13 = total.min(cap as usize) as u64;
}

/// Writes every field of `m` (it may be the receiver's buffer, holding an
/// earlier message) but the section lengths, for task `t`'s `fault`.
fn fill(
    m: &mut FaultMessage,
    t: &crate::task::Task,
    fault: &PendingFault,
    ticks: u64,
    regions: &[crate::mem::region::Region],
) {
    use abi::checkpoint::RegionInfo;
    use abi::fault::MAX_FAULT_REGIONS;
    m.task = t.id as u64;
    m.kind = fault.kind;
    m.vector = fault.vector;
    m.error_code = fault.error_code;
    m.cr2 = fault.cr2;
    m.seq = fault.seq;
    m.restarts = t.restarts;
    m.eh_frame_hdr = t.eh_frame_hdr;
    m.text_len = fault.text_len as u64;
    m.recovery = t.recovery;
    m.scopes = t.scopes.len() as u64;
    m.regs = t.save.frame.registers();
    m.fault_tsc = fault.tsc;
    m.fault_ticks = ticks;
    m.cpu = fault.cpu;
    m.name = [0; abi::image::NAME_LEN];
    let n = t.name.len().min(m.name.len());
    m.name[..n].copy_from_slice(&t.name.as_bytes()[..n]);
    m.max_restarts = t.spec.max_restarts as u64;
    m.restart_window_ms = t.spec.restart_window_ms as u64;
    m.scope_rsp = [0; abi::checkpoint::MAX_SCOPES];
    for (slot, scope) in m.scope_rsp.iter_mut().zip(t.scopes.iter()) {
        *slot = scope.frame.rsp;
    }
    m.region_count = 0;
    m.regions = [RegionInfo::default(); MAX_FAULT_REGIONS];
    for cap in t.caps.iter().filter(|c| c.kind == abi::ipc::CapKind::Region) {
        if let Some(r) = regions.get(cap.object as usize) {
            if (m.region_count as usize) < MAX_FAULT_REGIONS {
                m.regions[m.region_count as usize] = RegionInfo { base: r.base, size: r.size() };
            }
            m.region_count += 1;
        }
    }
    m.stack_base = t.save.frame.rsp;
    m.recovery_len = 0;
    m.stack_len = 0;
}
