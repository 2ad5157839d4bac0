//! The tasks' x87/MMX/SSE state: saved and restored on a context switch,
//! so no task can read another's registers.
//!
//! Tasks are built soft-float, but nothing stops a task from executing x87
//! or SSE instructions in `asm!`, and those registers are per CPU, not per
//! task. The kernel itself never touches them (it is soft-float too), so
//! the state in the FPU always belongs to one task, the *owner*
//! ([`OWNER`]). A switch to another task (`sched::switch_to`, the IPC
//! fastpath's `enter_fast`) saves the owner's state into its task with
//! `fxsave64` and loads the next task's with `fxrstor64`: eagerly, two
//! instructions per switch between different tasks, none when the kernel
//! returns to the task it interrupted (a system call, a fault, a tick).
//! A fresh or restarted task starts from [`FpuState::INITIAL`] (the state
//! `fninit` and a reset MXCSR give).
//!
//! The state is not part of a checkpoint: a rollback restores the integer
//! registers and memory, not x87/SSE registers (no compiled task code uses
//! them).

use core::ptr::null_mut;

/// One task's x87/MMX/SSE registers in the `fxsave` layout (512 bytes,
/// 16-aligned).
#[repr(C, align(16))]
#[derive(Clone)]
pub struct FpuState([u8; 512]);

impl FpuState {
    /// What a task starts with: FCW 0x37F (all x87 exceptions masked,
    /// extended precision), empty tag word, MXCSR 0x1F80 (all SSE
    /// exceptions masked), every register 0.
    pub const INITIAL: FpuState = {
        let mut b = [0u8; 512];
        b[0] = 0x7f;
        b[1] = 0x03;
        b[24] = 0x80;
        b[25] = 0x1f;
        FpuState(b)
    };
}

/// The state the FPU holds belongs to the task whose `FpuState` this is
/// (null: nobody's yet). Only the scheduler's switch paths and
/// [`reset`] touch it, with the scheduler lock held and interrupts off.
static mut OWNER: *mut FpuState = null_mut();

/// Lets ring 3 use x87 and SSE (CR0.EM clear, CR0.MP set; CR4.OSFXSR and
/// OSXMMEXCPT set), so that `fxsave`/`fxrstor` cover the XMM registers.
pub fn init() {
    use x86_64::registers::control::{Cr0, Cr0Flags, Cr4, Cr4Flags};
    // SAFETY: enabling the FPU and SSE changes nothing the kernel relies
    // on (it uses neither); the task state they expose is switched below.
    unsafe {
        Cr0::update(|f| {
            f.remove(Cr0Flags::EMULATE_COPROCESSOR | Cr0Flags::TASK_SWITCHED);
            f.insert(Cr0Flags::MONITOR_COPROCESSOR);
        });
        Cr4::update(|f| f.insert(Cr4Flags::OSFXSR | Cr4Flags::OSXMMEXCPT_ENABLE));
    }
}

/// Makes `next` the FPU's state: saves the owner's into its own area and
/// loads `next`'s, unless `next` already owns the FPU.
///
/// # Safety
/// `next` is the `FpuState` of the task about to run, inside its boxed
/// `Task` (which never moves nor is freed); the scheduler lock is held.
#[inline(always)]
pub unsafe fn switch_to(next: *mut FpuState) {
    // SAFETY: per the contract, exclusive access to OWNER (lock held, one
    // CPU, interrupts off); OWNER is null or another live task's area.
    unsafe {
        let owner = OWNER;
        if owner == next {
            return;
        }
        if !owner.is_null() {
            // Register contract: reads the FPU/SSE registers, writes the
            // 512 bytes at `owner` (16-aligned); no flags, no other register.
            core::arch::asm!("fxsave64 [{0}]", in(reg) owner, options(nostack, preserves_flags));
        }
        // Reads the 512 bytes at `next`, loads the FPU/SSE registers. Its
        // MXCSR came from `INITIAL` or an earlier `fxsave` (valid bits only).
        core::arch::asm!("fxrstor64 [{0}]", in(reg) next, options(nostack, preserves_flags, readonly));
        OWNER = next;
    }
}

/// Gives a task the initial state (a restart from its image). If it owns
/// the FPU, the FPU is loaded with it now, so no later save brings the old
/// instance's registers back.
///
/// # Safety
/// As for [`switch_to`]: `state` is a live task's area, the lock is held.
pub unsafe fn reset(state: *mut FpuState) {
    // SAFETY: per the contract.
    unsafe {
        *state = FpuState::INITIAL;
        if OWNER == state {
            core::arch::asm!("fxrstor64 [{0}]", in(reg) state, options(nostack, preserves_flags, readonly));
        }
    }
}
