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
use crate::sched;
use abi::exit::GuestExit;
use core::sync::atomic::Ordering;

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
    if vector == SYSCALL_VECTOR {
        // Not from the IDT: the syscall stub calls `syscall::full` itself.
        // SAFETY: the same contract (a complete frame of the current task).
        return unsafe { crate::syscall::full(frame) };
    }
    if f.rflags & crate::arch::RFLAGS_AC != 0 && crate::selftest::SMAP_PROBE.load(Ordering::Relaxed) {
        crate::selftest::smap_probe(f);
    }
    // One critical section from the handler to the choice of the next
    // task (`sched::next_locked`).
    match vector {
        2 | 8 | 18 => crate::fatal::kernel_trap(f, GuestExit::FatalTrap),
        0..=31 => {
            let mut s = sched::lock();
            crate::recovery::fault::user_exception(f, &mut s);
            sched::next_locked(s)
        }
        v if v == TIMER_VECTOR as u64 => {
            platform::eoi();
            let mut s = sched::lock();
            crate::recovery::fault::user_tick(&mut s);
            sched::next_locked(s)
        }
        v if v == SPURIOUS_VECTOR as u64 => sched::next(),
        _ => {
            // The reschedule IPI (`sched::RESCHED_VECTOR`) among them.
            platform::eoi();
            sched::next()
        }
    }
}

/// A trap that interrupted the kernel itself.
fn kernel_entry(f: &mut TrapFrame, frame: *mut TrapFrame) -> *mut TrapFrame {
    // The SMAP probe's load, refused as it should be (`selftest`).
    if crate::selftest::smap_fixup(f) {
        return frame;
    }
    match f.vector {
        v if v == TIMER_VECTOR as u64 => {
            platform::eoi();
            let mut s = sched::lock();
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
