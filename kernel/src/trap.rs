//! Trap dispatch: where every entry into the kernel lands after the stubs.
//!
//! `trap_common` calls [`dispatch`] with the saved frame and returns through
//! whatever frame `dispatch` returns. From ring 3 the frame is the current
//! task's save area; we handle the event (syscall, timer, fault) and let the
//! scheduler choose the task to resume. From ring 0 the only expected
//! entries are interrupts while the kernel idles; anything else is a kernel
//! bug and ends in the fatal report.

use crate::arch::syscall_entry::SYSCALL_VECTOR;
use crate::arch::trap_entry::TrapFrame;
use crate::platform::{self, SPURIOUS_VECTOR, TIMER_VECTOR};
use crate::sched::{self, SCHED};
use crate::task::{PendingFault, State};
use abi::exit::GuestExit;
use abi::fault::FaultKind;

/// Called by `trap_common` with the saved frame; returns the frame to resume.
///
/// # Safety
/// Only `trap_common` calls this, with a pointer to the frame it just built.
pub unsafe extern "C" fn dispatch(frame: *mut TrapFrame) -> *mut TrapFrame {
    // SAFETY: `trap_common` passes a valid, exclusive pointer to the frame
    // (a task's save area, or the kernel stack); it outlives this call.
    let f = unsafe { &mut *frame };
    let vector = f.vector;
    if !f.from_user() {
        sched::invalidate_summary();
        return kernel_entry(f, frame);
    }
    if vector == SYSCALL_VECTOR {
        // Not from the IDT: the syscall stub calls `syscall::full` itself.
        // SAFETY: the same contract (a complete frame of the current task).
        return unsafe { crate::syscall::full(frame) };
    }
    sched::invalidate_summary();
    match vector {
        2 | 8 | 18 => crate::fatal::kernel_trap(f, GuestExit::FatalTrap),
        0..=31 => user_exception(f),
        v if v == TIMER_VECTOR as u64 => {
            platform::eoi();
            user_tick();
        }
        v if v == SPURIOUS_VECTOR as u64 => {}
        _ => platform::eoi(),
    }
    sched::next()
}

/// A trap that interrupted the kernel itself.
fn kernel_entry(f: &mut TrapFrame, frame: *mut TrapFrame) -> *mut TrapFrame {
    match f.vector {
        v if v == TIMER_VECTOR as u64 => {
            platform::eoi();
            let mut s = SCHED.lock();
            s.tick(false);
            crate::inject::on_tick(&mut s, None);
        }
        v if v == SPURIOUS_VECTOR as u64 => {}
        // Legacy PIC lines (masked; a spurious IRQ 7/15 can still arrive).
        32..=47 => {}
        2 | 8 | 18 => crate::fatal::kernel_trap(f, GuestExit::FatalTrap),
        0..=31 => crate::fatal::kernel_trap(f, GuestExit::KernelFault),
        _ => platform::eoi(),
    }
    frame
}

/// A CPU exception in ring 3. A write to a page a checkpoint scope tracks
/// is not a fault: the page is preserved and the task goes on. Anything
/// else is a fault (`ipc::fault::fault`): reported, delivered to the task's
/// fault endpoint; every other task keeps running.
fn user_exception(f: &TrapFrame) {
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
    crate::ipc::fault::fault(&mut s, me, fault);
}

/// A timer tick while a task ran: charge it, and let the watchdog stop a
/// task that ran past its budget without a system call.
fn user_tick() {
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
        crate::ipc::fault::fault(&mut s, me, fault);
    }
}
