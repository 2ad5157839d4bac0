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
use crate::events::Event;
use crate::platform::{self, SPURIOUS_VECTOR, TIMER_VECTOR};
use crate::sched::{self, SCHED};
use crate::task::{PendingFault, State};
use abi::fault::FaultKind;
use abi::exit::GuestExit;
use abi::trap::exception_name;

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
        return kernel_entry(f, frame);
    }
    match vector {
        SYSCALL_VECTOR => crate::syscall::handle(&mut SCHED.lock()),
        2 | 8 | 18 => crate::fatal::kernel_trap(f, GuestExit::FatalTrap),
        0..=31 => user_fault(f),
        v if v == TIMER_VECTOR as u64 => {
            SCHED.lock().tick(true);
            platform::eoi();
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
            SCHED.lock().tick(false);
            platform::eoi();
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

/// A CPU exception in ring 3: reported, then delivered to the task's fault
/// endpoint (the fault server decides); a task without one is stopped. Every
/// other task keeps running either way.
fn user_fault(f: &TrapFrame) {
    let mut s = SCHED.lock();
    let Some(me) = s.current_index() else { return };
    let seq = s.next_fault_seq();
    let task = &mut s.tasks[me];
    let vector = f.vector as u8;
    crate::kprintln!(
        "task {} ({}) faulted: {} at rip {:#x} (error code {:#x}, cr2 {:#x}), seq {seq}",
        task.id,
        task.name,
        exception_name(vector),
        f.rip,
        f.error_code,
        f.cr2
    );
    Event::new("fault")
        .u64("task", task.id as u64)
        .str("name", &task.name)
        .u64("seq", seq)
        .str("kind", "exception")
        .u64("vector", vector as u64)
        .str("exception", exception_name(vector))
        .hex("error_code", f.error_code)
        .hex("cr2", f.cr2)
        .hex("rip", f.rip)
        .hex_map("regs", &f.registers().named())
        .emit();
    let fault = PendingFault {
        kind: FaultKind::Exception as u64,
        vector: vector as u64,
        error_code: f.error_code,
        cr2: f.cr2,
        seq,
        ..PendingFault::default()
    };
    if !crate::ipc::fault::raise(&mut s, me, fault) {
        let task = &mut s.tasks[me];
        task.state = State::Faulted { vector };
        task.space = None;
        let id = task.id;
        crate::ipc::abandon(&mut s, id);
    }
}
