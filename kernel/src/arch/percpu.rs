//! Per-CPU data, reached through GS in ring 0.
//!
//! While the kernel runs, `IA32_GS_BASE` points at [`PerCpu`]; while a task
//! runs, `swapgs` has exchanged it into `IA32_KERNEL_GS_BASE`. The entry
//! stubs read these fields at fixed offsets, so the layout is part of the
//! assembly contract (checked below).

use core::mem::offset_of;

#[repr(C)]
pub struct PerCpu {
    /// End of the current task's save area (its trap frame): where the
    /// syscall stub builds the frame (the CPU uses TSS.RSP0 for traps).
    pub save_top: u64,
    /// Scratch: the user RSP during syscall entry.
    pub user_rsp: u64,
    /// Top of the kernel stack the handlers run on.
    pub kernel_stack_top: u64,
}

pub const SAVE_TOP: usize = 0;
pub const USER_RSP: usize = 8;
pub const KERNEL_STACK_TOP: usize = 16;
const _: () = assert!(offset_of!(PerCpu, save_top) == SAVE_TOP);
const _: () = assert!(offset_of!(PerCpu, user_rsp) == USER_RSP);
const _: () = assert!(offset_of!(PerCpu, kernel_stack_top) == KERNEL_STACK_TOP);

static mut PERCPU: PerCpu = PerCpu { save_top: 0, user_rsp: 0, kernel_stack_top: 0 };

/// Points GS at the per-CPU block; `kernel_stack_top` is where handlers run.
pub fn init(kernel_stack_top: u64) {
    // SAFETY: boot, interrupts off, single CPU: no concurrent access. The
    // MSR writes make GS reach PERCPU in ring 0 and zero the user's GS.
    unsafe {
        let p = &mut *core::ptr::addr_of_mut!(PERCPU);
        p.kernel_stack_top = kernel_stack_top;
        x86_64::registers::model_specific::GsBase::write(x86_64::VirtAddr::new(p as *mut PerCpu as u64));
        x86_64::registers::model_specific::KernelGsBase::write(x86_64::VirtAddr::new(0));
    }
}

/// Records where the next task's save area ends.
pub fn set_save_top(top: u64) {
    // SAFETY: interrupts are disabled in the kernel; the stubs read this
    // field only on entry from ring 3, which cannot happen concurrently.
    unsafe { core::ptr::addr_of_mut!(PERCPU.save_top).write_volatile(top) };
}
