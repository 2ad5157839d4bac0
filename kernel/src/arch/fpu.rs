//! The tasks' x87/MMX/SSE state: switched lazily, so no task can read
//! another's registers and a task that never uses them pays nothing.
//!
//! Tasks are built soft-float, but nothing stops a task from executing x87
//! or SSE instructions in `asm!`, and those registers are per CPU, not per
//! task. The kernel itself never touches them (it is soft-float too), so
//! the state in the FPU always belongs to one task, the *owner*
//! ([`owner()`]), or to nobody yet.
//!
//! A switch to a task that is not the owner sets CR0.TS (once: a flag
//! remembers it is set), so that task's first x87/SSE instruction raises
//! #NM; [`device_not_available`] then saves the owner's state into its task
//! (`fxsave64`), loads the current task's (`fxrstor64`), makes it the owner
//! and clears TS. A switch back to the owner clears TS again. While no
//! task has used the FPU (no owner, TS set) a switch costs one test — the
//! eager save/restore this replaces cost ten instructions per switch, a
//! fifth of the IPC round trip's target margin.
//! A fresh or restarted task starts from [`FpuState::INITIAL`] (the state
//! `fninit` and a reset MXCSR give).
//!
//! The state is not part of a checkpoint: a rollback restores the integer
//! registers and memory, not x87/SSE registers (no compiled task code uses
//! them).

use super::percpu;
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

// Per CPU (`percpu::PerCpu::fpu_owner`, `fpu_ts_set`, `gs`-relative):
// the state this CPU's FPU holds belongs to the task whose `FpuState` the
// owner is (null: nobody's yet), and whether CR0.TS is set on it (the
// running task is not the owner). Only this CPU's scheduler switch paths,
// its #NM handler and [`reset`] touch them, with the scheduler lock held
// and interrupts off. With several CPUs online a task's registers must be
// in its `FpuState` before another CPU can run it: [`release_this_cpu`]
// saves them when the task leaves this CPU (`sched`), so lazy loading
// stays per CPU and no CPU ever loads a state another still holds.
#[inline(always)]
fn owner() -> *mut FpuState {
    percpu::get::<{ percpu::FPU_OWNER }>() as *mut FpuState
}
#[inline(always)]
fn set_owner(p: *mut FpuState) {
    percpu::set::<{ percpu::FPU_OWNER }>(p as u64);
}
#[inline(always)]
fn ts_set() -> bool {
    percpu::get::<{ percpu::FPU_TS_SET }>() != 0
}
#[inline(always)]
fn set_ts_flag(v: bool) {
    percpu::set::<{ percpu::FPU_TS_SET }>(v as u64);
}

/// Lets ring 3 use x87 and SSE (CR0.EM clear, CR0.MP set; CR4.OSFXSR and
/// OSXMMEXCPT set), so that `fxsave`/`fxrstor` cover the XMM registers;
/// TS is set: the first task to use them takes #NM and becomes the owner.
pub fn init() {
    init_this_cpu();
}

/// The control bits of [`init`] on the calling CPU, TS set in its
/// per-CPU flag (after `percpu::init` on that CPU).
pub fn init_this_cpu() {
    use x86_64::registers::control::{Cr0, Cr0Flags, Cr4, Cr4Flags};
    // SAFETY: enabling the FPU and SSE changes nothing the kernel relies
    // on (it uses neither); the task state they expose is switched below.
    unsafe {
        Cr0::update(|f| {
            f.remove(Cr0Flags::EMULATE_COPROCESSOR);
            f.insert(Cr0Flags::MONITOR_COPROCESSOR | Cr0Flags::TASK_SWITCHED);
        });
        Cr4::update(|f| f.insert(Cr4Flags::OSFXSR | Cr4Flags::OSXMMEXCPT_ENABLE));
    }
    set_owner(null_mut());
    set_ts_flag(true);
}

/// Sets CR0.TS (the next x87/SSE instruction raises #NM).
///
/// # Safety
/// The scheduler lock is held, interrupts off.
#[inline(always)]
unsafe fn set_ts() {
    use x86_64::registers::control::{Cr0, Cr0Flags};
    // SAFETY: TS only makes x87/SSE instructions trap; the kernel uses none.
    unsafe {
        Cr0::update(|f| f.insert(Cr0Flags::TASK_SWITCHED));
        set_ts_flag(true);
    }
}

/// Clears CR0.TS (`clts`).
///
/// # Safety
/// As [`set_ts`]; the running task must own the FPU state.
#[inline(always)]
unsafe fn clear_ts() {
    // SAFETY: `clts` only clears CR0.TS (no register, memory or flag
    // operand); per the contract the FPU holds the running task's state.
    unsafe {
        core::arch::asm!("clts", options(nomem, nostack, preserves_flags));
        set_ts_flag(false);
    }
}

/// The switch to the task whose state is `next`: TS cleared if it owns the
/// FPU, set otherwise (each only if not so already). No state moves here.
///
/// # Safety
/// `next` is the `FpuState` of the task about to run, inside its boxed
/// `Task` (which never moves nor is freed); the scheduler lock is held.
#[inline(always)]
pub unsafe fn switch_to(next: *mut FpuState) {
    // SAFETY: per the contract, exclusive access to owner() and ts_set().
    unsafe {
        // Nobody has used the FPU: TS is set (`init`, `reset`) and stays.
        if owner().is_null() {
            return;
        }
        if owner() == next {
            if ts_set() {
                clear_ts();
            }
        } else if !ts_set() {
            set_ts();
        }
    }
}

/// #NM from ring 3: the running task (state `current`) used x87/SSE while
/// not the owner. Saves the owner's state, loads `current`'s, makes it the
/// owner; the instruction then runs again. Returns false if TS was not set
/// by this module (an #NM nobody asked for: a fault of the task).
///
/// # Safety
/// As for [`switch_to`], with `current` the running task's area.
pub unsafe fn device_not_available(current: *mut FpuState) -> bool {
    // SAFETY: per the contract; owner() is null or another live task's area.
    unsafe {
        if !ts_set() || owner() == current {
            return false;
        }
        clear_ts();
        let owner = owner();
        if !owner.is_null() {
            // Register contract: reads the FPU/SSE registers, writes the
            // 512 bytes at `owner` (16-aligned); no flags, no other register.
            core::arch::asm!("fxsave64 [{0}]", in(reg) owner, options(nostack, preserves_flags));
        }
        // Reads the 512 bytes at `current`, loads the FPU/SSE registers.
        // Its MXCSR came from `INITIAL` or an earlier `fxsave` (valid bits
        // only).
        core::arch::asm!("fxrstor64 [{0}]", in(reg) current, options(nostack, preserves_flags, readonly));
        set_owner(current);
        true
    }
}

/// Gives a task the initial state (a restart from its image). If it owned
/// the FPU, nobody does now (the old instance's registers are never saved
/// over the fresh state) and TS is set, so its next use loads the initial
/// state.
///
/// # Safety
/// As for [`switch_to`]: `state` is a live task's area, the lock is held.
pub unsafe fn reset(state: *mut FpuState) {
    // SAFETY: per the contract.
    unsafe {
        *state = FpuState::INITIAL;
        if owner() == state {
            set_owner(null_mut());
            if !ts_set() {
                set_ts();
            }
        }
    }
}

/// A task leaves this CPU and may next run on another (several CPUs
/// online): if this CPU's FPU holds its state, save it into its area and
/// make nobody the owner (TS set), so whichever CPU runs it next loads it
/// from there. `leaving` is the task's area.
///
/// # Safety
/// As for [`switch_to`]: `leaving` is the area of the task this CPU ran
/// last, the lock is held.
pub unsafe fn release_this_cpu(leaving: *mut FpuState) {
    if owner() != leaving || leaving.is_null() {
        return;
    }
    // SAFETY: per the contract; clearing TS first lets `fxsave64` run.
    unsafe {
        if ts_set() {
            clear_ts();
        }
        // Register contract: reads the FPU/SSE registers, writes the 512
        // bytes at `leaving` (16-aligned); no flags, no other register.
        core::arch::asm!("fxsave64 [{0}]", in(reg) leaving, options(nostack, preserves_flags));
        set_owner(null_mut());
        set_ts();
    }
}
