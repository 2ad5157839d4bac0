//! Trap dispatch: where every exception lands after the entry stubs.
//!
//! For now there are only kernel-mode traps, and each is a kernel bug: it
//! ends in a fatal report (`fatal.rs`). Ring-3 faults will be turned into
//! fault messages here once tasks exist.

use crate::arch::trap_entry::TrapFrame;
use abi::exit::GuestExit;

/// Called by `trap_common` with the saved frame.
///
/// # Safety
/// Only `trap_common` calls this, with a pointer to the frame it just built.
pub unsafe extern "C" fn dispatch(frame: *mut TrapFrame) {
    // SAFETY: `trap_common` passes a valid, exclusive pointer to the frame on
    // the current kernel stack; it outlives this call.
    let frame = unsafe { &mut *frame };
    let vector = frame.vector as u8;
    let code = match vector {
        2 | 8 | 18 => GuestExit::FatalTrap,
        _ => GuestExit::KernelFault,
    };
    crate::fatal::kernel_trap(frame, code)
}
