//! Trap entry stubs: the only way into the kernel from an exception.
//!
//! Each of the 32 exception vectors has a stub that makes the stack uniform
//! (pushes a 0 error code where the CPU pushes none, then the vector number)
//! and jumps to `trap_common`, which saves the complete integer register
//! file into a [`TrapFrame`] on the kernel stack and calls
//! [`crate::trap::dispatch`] with a pointer to it.
//!
//! Register contract: on entry, nothing but the hardware frame is assumed.
//! The first thing `trap_common` does is `clac` (when SMAP is on: see
//! `arch::REWIND_SMAP_ON`): an exception or interrupt does not clear
//! RFLAGS.AC, which ring 3 can set with `popf`, and the kernel must never
//! run with user access enabled. The interrupted RFLAGS, AC included, is in
//! the hardware frame and comes back with `iretq`.
//! `trap_common` saves all 15 GPRs, then FS base, GS base (the *interrupted*
//! context's: if the trap came from ring 3, after `swapgs` the user's value is
//! in `KERNEL_GS_BASE`) and CR2 (read before anything can fault again). On
//! return it restores the 15 GPRs from the frame, so a handler may change the
//! interrupted context by editing the frame, then `iretq`s.
//!
//! The stubs carry hand-written CFI marked as signal frames: the return
//! address rule points at the interrupted RIP and the RSP rule at the
//! interrupted RSP, so a stack walk goes *through* a trap into the code that
//! was interrupted.

use abi::trap::Registers;

/// The frame `trap_common` builds, lowest address first.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TrapFrame {
    pub cr2: u64,
    pub gs_base: u64,
    pub fs_base: u64,
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub vector: u64,
    pub error_code: u64,
    // Pushed by the CPU.
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

const _: () = assert!(core::mem::size_of::<TrapFrame>() == 25 * 8);

impl TrapFrame {
    /// The interrupted context's register file.
    pub fn registers(&self) -> Registers {
        Registers {
            rax: self.rax,
            rbx: self.rbx,
            rcx: self.rcx,
            rdx: self.rdx,
            rsi: self.rsi,
            rdi: self.rdi,
            rbp: self.rbp,
            r8: self.r8,
            r9: self.r9,
            r10: self.r10,
            r11: self.r11,
            r12: self.r12,
            r13: self.r13,
            r14: self.r14,
            r15: self.r15,
            rip: self.rip,
            rsp: self.rsp,
            rflags: self.rflags,
            cs: self.cs,
            ss: self.ss,
            fs_base: self.fs_base,
            gs_base: self.gs_base,
        }
    }

    /// Whether the trap interrupted ring 3.
    pub fn from_user(&self) -> bool {
        self.cs & 3 == 3
    }
}

unsafe extern "C" {
    /// Addresses of the 32 exception stubs, indexed by vector.
    pub static TRAP_STUBS: [u64; 32];
}

core::arch::global_asm!(
    r#"
    .macro TRAP_STUB vec, err
    .section .text.trap_stubs, "ax"
    .p2align 4
    .type trap_stub_\vec, @function
trap_stub_\vec:
    .cfi_startproc simple
    .cfi_signal_frame
    .if \err
    /* CPU pushed: error code, RIP, CS, RFLAGS, RSP, SS */
    .cfi_def_cfa rsp, 48
    .else
    .cfi_def_cfa rsp, 40
    push 0
    .cfi_adjust_cfa_offset 8
    .endif
    .cfi_offset rip, -40
    .cfi_offset rsp, -16
    push \vec
    .cfi_adjust_cfa_offset 8
    jmp trap_common
    .cfi_endproc
    .size trap_stub_\vec, . - trap_stub_\vec
    .section .rodata.trap_stubs, "a"
    .quad trap_stub_\vec
    .endm

    .section .rodata.trap_stubs, "a"
    .p2align 3
    .global TRAP_STUBS
TRAP_STUBS:
    TRAP_STUB 0, 0
    TRAP_STUB 1, 0
    TRAP_STUB 2, 0
    TRAP_STUB 3, 0
    TRAP_STUB 4, 0
    TRAP_STUB 5, 0
    TRAP_STUB 6, 0
    TRAP_STUB 7, 0
    TRAP_STUB 8, 1
    TRAP_STUB 9, 0
    TRAP_STUB 10, 1
    TRAP_STUB 11, 1
    TRAP_STUB 12, 1
    TRAP_STUB 13, 1
    TRAP_STUB 14, 1
    TRAP_STUB 15, 0
    TRAP_STUB 16, 0
    TRAP_STUB 17, 1
    TRAP_STUB 18, 0
    TRAP_STUB 19, 0
    TRAP_STUB 20, 0
    TRAP_STUB 21, 1
    TRAP_STUB 22, 0
    TRAP_STUB 23, 0
    TRAP_STUB 24, 0
    TRAP_STUB 25, 0
    TRAP_STUB 26, 0
    TRAP_STUB 27, 0
    TRAP_STUB 28, 0
    TRAP_STUB 29, 1
    TRAP_STUB 30, 1
    TRAP_STUB 31, 0

    /* Stack on entry: vector, error code, RIP, CS, RFLAGS, RSP, SS. */
    .section .text.trap_common, "ax"
    .p2align 4
    .global trap_common
    .type trap_common, @function
trap_common:
    .cfi_startproc simple
    .cfi_signal_frame
    .cfi_def_cfa rsp, 56
    .cfi_offset rip, -40
    .cfi_offset rsp, -16
    /* User access off before anything else (flags are in the hardware
       frame already; `cmp` may clobber them). */
    cmp byte ptr [rip + {smap_on}], 0
    je 7f
    clac
7:  push r15
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset r15, 0
    push r14
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset r14, 0
    push r13
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset r13, 0
    push r12
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset r12, 0
    push r11
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset r11, 0
    push r10
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset r10, 0
    push r9
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset r9, 0
    push r8
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset r8, 0
    push rbp
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset rbp, 0
    push rdi
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset rdi, 0
    push rsi
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset rsi, 0
    push rdx
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset rdx, 0
    push rcx
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset rcx, 0
    push rbx
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset rbx, 0
    push rax
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset rax, 0

    mov ecx, 0xc0000100             /* IA32_FS_BASE */
    rdmsr
    shl rdx, 32
    or rax, rdx
    push rax
    .cfi_adjust_cfa_offset 8

    mov ecx, 0xc0000101             /* IA32_GS_BASE */
    test byte ptr [rsp + 16*8 + 24], 3   /* saved CS: from ring 3? */
    jz 1f
    swapgs
    mov ecx, 0xc0000102             /* IA32_KERNEL_GS_BASE: now the user's */
1:  rdmsr
    shl rdx, 32
    or rax, rdx
    push rax
    .cfi_adjust_cfa_offset 8

    mov rax, cr2
    push rax
    .cfi_adjust_cfa_offset 8

    /* RBX = the frame; CFA = RBX + 200 from here on, so a walk through a
       handler finds the frame even after RSP moves. */
    mov rbx, rsp
    .cfi_def_cfa_register rbx
    mov rdi, rsp
    test byte ptr [rbx + {cs_offset}], 3
    jz 1f
    mov rsp, gs:[{kernel_stack_top}]   /* from ring 3: onto the kernel stack */
    jmp 2f
1:  and rsp, -16                       /* from ring 0: stay, realign */
2:  cld
    call {dispatch}

    /* RAX = the frame to resume: this one, or another task's. */
    mov rsp, rax
    .cfi_def_cfa rsp, 200
    .global trap_return
trap_return:
    add rsp, 24                     /* CR2, GS base, FS base: set by the scheduler */
    .cfi_adjust_cfa_offset -24
    /* Entered here (RSP = the frame's RAX slot) by the syscall stub's
       fast return, which never wrote the three slots below. */
    .global trap_return_regs
trap_return_regs:
    pop rax
    .cfi_adjust_cfa_offset -8
    pop rbx
    .cfi_adjust_cfa_offset -8
    pop rcx
    .cfi_adjust_cfa_offset -8
    pop rdx
    .cfi_adjust_cfa_offset -8
    pop rsi
    .cfi_adjust_cfa_offset -8
    pop rdi
    .cfi_adjust_cfa_offset -8
    pop rbp
    .cfi_adjust_cfa_offset -8
    pop r8
    .cfi_adjust_cfa_offset -8
    pop r9
    .cfi_adjust_cfa_offset -8
    pop r10
    .cfi_adjust_cfa_offset -8
    pop r11
    .cfi_adjust_cfa_offset -8
    pop r12
    .cfi_adjust_cfa_offset -8
    pop r13
    .cfi_adjust_cfa_offset -8
    pop r14
    .cfi_adjust_cfa_offset -8
    pop r15
    .cfi_adjust_cfa_offset -8

    test byte ptr [rsp + 24], 3     /* returning to ring 3? */
    jz 3f
    swapgs
3:  add rsp, 16                     /* vector, error code */
    .cfi_adjust_cfa_offset -16
    iretq
    .cfi_endproc
    .size trap_common, . - trap_common
    "#,
    dispatch = sym crate::trap::dispatch,
    smap_on = sym super::REWIND_SMAP_ON,
    cs_offset = const core::mem::offset_of!(TrapFrame, cs),
    kernel_stack_top = const super::percpu::KERNEL_STACK_TOP,
);

/// Distance between two interrupt stubs (vectors 32..256).
pub const IRQ_STUB_STRIDE: u64 = 16;

unsafe extern "C" {
    /// The stub of vector 32; vector v's is at `+ (v - 32) * IRQ_STUB_STRIDE`.
    pub static IRQ_STUBS: u8;
    fn trap_return();
}

// Interrupt stubs for vectors 32..256: no error code, so each pushes 0 and
// its vector. Fixed 16-byte stride, so the IDT computes their addresses.
core::arch::global_asm!(
    r#"
    .section .text.irq_stubs, "ax"
    .p2align 4
    .global IRQ_STUBS
IRQ_STUBS:
    .set irq_vector, 32
    .rept 224
    .p2align 4
    push 0
    push irq_vector
    jmp trap_common
    .set irq_vector, irq_vector + 1
    .endr
    "#
);

/// Leaves the kernel into the context saved in `frame` (a task's save area).
///
/// # Safety
/// `frame` must be a complete trap frame that the scheduler has made
/// current (TSS.RSP0, per-CPU save area, CR3, FS/GS bases all set for it).
pub unsafe fn resume(frame: *mut TrapFrame) -> ! {
    // SAFETY: per the contract; `trap_return` restores the frame's registers
    // and `iretq`s, never returning here.
    unsafe { core::arch::asm!("mov rsp, {0}", "jmp {1}", in(reg) frame, sym trap_return, options(noreturn)) }
}
