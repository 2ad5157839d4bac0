//! The `syscall` entry stub and the MSRs that route `syscall` to it.
//!
//! `syscall` leaves the user RIP in RCX and RFLAGS in R11, does not switch
//! stacks and masks the RFLAGS bits in `IA32_FMASK` (we clear IF, TF, DF, NT
//! and AC: clearing AC there is the `clac` of this entry, done by the CPU, so
//! the kernel never runs a system call with user access enabled under
//! SMAP, whatever RFLAGS the task had). The stub builds, in the current task's save area, the same frame a
//! trap from ring 3 gets (SS, RSP, RFLAGS, CS, RIP pushed like the CPU does,
//! error code 0, the pseudo-vector [`SYSCALL_VECTOR`], the 15 GPRs), so there
//! is one frame format and one return path (`iretq`, which restores every
//! register and is immune to sysret's non-canonical-RCX problem).
//!
//! Two tiers, so that the cheapest calls pay for no more than they need:
//!
//! 1. **Light calls** (`crate::syscall::light`): the stub saves the hardware
//!    frame and the 15 GPRs, then, for a call number in
//!    [`crate::syscall::LIGHT_CALLS`], calls [`crate::syscall::light`] on
//!    the kernel stack. Calls that cannot block, wake, switch or end a task and
//!    that do not record the frame are handled there and return straight to
//!    the caller through `trap_return_regs`. The frame's CR2 / GS base / FS
//!    base slots are *not* refreshed on this tier: nothing can observe the
//!    save area between this entry and the return to the same task
//!    (interrupts stay off, one CPU, no other task runs), and those slots
//!    are refreshed by every other kind of entry before the task can be
//!    observed (blocked, faulted, preempted).
//! 2. **Everything else**: the stub completes the frame (FS base, the user's
//!    GS base, as `trap_common` saves them; CR2, which means something only
//!    for a page fault, is 0 in a syscall frame) and calls
//!    [`crate::syscall::full`], which tries the IPC fastpath
//!    (`ipc::endpoint::fastpath`) and otherwise runs the full handler and
//!    the scheduler; it returns the frame to resume (this task's or
//!    another's) and we leave through `trap_return`.
//!
//! Register contract. On entry: user RSP live, RCX = user RIP, R11 = user
//! RFLAGS, GS = the user's. The stub swaps GS once (`swapgs`) and stays on
//! the kernel's GS base; `trap_return` swaps back because the frame says
//! ring 3. From the first push on, every user register is in the frame and
//! leaves through it: on return all 15 GPRs, RIP, RSP and RFLAGS come from
//! the frame (RCX and R11 hold the user RIP and RFLAGS as `syscall` left
//! them; RAX holds the result), so every register the ABI preserves is
//! preserved. RBX holds the frame pointer across the Rust calls
//! (callee-saved), and the CFI names the frame through it.

use super::{gdt, percpu};
use x86_64::VirtAddr;
use x86_64::registers::model_specific::{Efer, EferFlags, LStar, SFMask, Star};
use x86_64::registers::rflags::RFlags;

/// The `vector` a syscall frame carries (outside the IDT's 0..256).
pub const SYSCALL_VECTOR: u64 = 0x100;

/// User selectors with RPL 3, as the stub pushes them.
pub const USER_CS: u64 = 0x23;
pub const USER_SS: u64 = 0x1b;

unsafe extern "C" {
    fn syscall_entry();
}

core::arch::global_asm!(
    r#"
    .section .text.syscall_entry, "ax"
    .p2align 4
    .global syscall_entry
    .type syscall_entry, @function
syscall_entry:
    .cfi_startproc simple
    .cfi_signal_frame
    .cfi_undefined rip
    swapgs
    mov gs:[{user_rsp}], rsp
    mov rsp, gs:[{save_top}]
    /* CFA = the end of the save area, like a trap's. */
    .cfi_def_cfa rsp, 0
    push {user_ss}
    .cfi_adjust_cfa_offset 8
    push qword ptr gs:[{user_rsp}]
    .cfi_adjust_cfa_offset 8
    .cfi_offset rsp, -16
    push r11
    .cfi_adjust_cfa_offset 8
    push {user_cs}
    .cfi_adjust_cfa_offset 8
    push rcx
    .cfi_adjust_cfa_offset 8
    .cfi_offset rip, -40
    push 0
    .cfi_adjust_cfa_offset 8
    push {vector}
    .cfi_adjust_cfa_offset 8
    push r15
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

    /* RBX = the frame's RAX slot; CFA = RBX + 176 across the calls. */
    mov rbx, rsp
    .cfi_def_cfa_register rbx
    /* Light calls (a bit in LIGHT_CALLS) to tier 1, the others (among
       them the IPC fastpath's) straight to tier 2. RCX is saved: scratch. */
    cmp rax, {call}                   /* the IPC fastpath's calls first */
    je 2f
    cmp rax, {reply_recv}
    je 2f
    cmp rax, 63
    ja 2f
    mov rcx, {light_calls}
    bt rcx, rax
    jnc 2f
    lea rdi, [rsp - 24]                /* the frame (its first 3 slots unwritten) */
    mov rsp, gs:[{kernel_stack_top}]
    call {light}
    mov rsp, rbx
    .cfi_def_cfa rsp, 176
    test al, al
    jz 2f
    /* Tier 1 handled it: back to the caller, its GPRs from the frame. */
    jmp trap_return_regs

    /* Tier 2: complete the frame as trap_common does (RSP = the RAX slot).
       GS is the kernel's now, so the user's GS base is in KERNEL_GS_BASE. */
2:  mov ecx, 0xc0000100               /* IA32_FS_BASE */
    rdmsr
    shl rdx, 32
    or rax, rdx
    push rax
    .cfi_adjust_cfa_offset 8
    mov ecx, 0xc0000102               /* IA32_KERNEL_GS_BASE: the user's */
    rdmsr
    shl rdx, 32
    or rax, rdx
    push rax
    .cfi_adjust_cfa_offset 8
    push 0                            /* CR2: meaningless for a syscall */
    .cfi_adjust_cfa_offset 8
    mov rbx, rsp
    .cfi_def_cfa_register rbx
    mov rdi, rsp
    mov rsp, gs:[{kernel_stack_top}]
    call {full}
    /* RAX = the frame to resume: this one, or another task's — a task's
       frame always returns to ring 3, so this is trap_return without its
       ring test (and without the jump there). */
    mov rsp, rax
    .cfi_def_cfa rsp, 200
    add rsp, 24                       /* CR2, GS base, FS base: set by the scheduler */
    .cfi_adjust_cfa_offset -24
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
    swapgs
    add rsp, 16                       /* vector, error code */
    .cfi_adjust_cfa_offset -16
    iretq
    .cfi_endproc
    .size syscall_entry, . - syscall_entry
    "#,
    user_rsp = const percpu::USER_RSP,
    save_top = const percpu::SAVE_TOP,
    kernel_stack_top = const percpu::KERNEL_STACK_TOP,
    user_ss = const USER_SS,
    user_cs = const USER_CS,
    vector = const SYSCALL_VECTOR,
    light_calls = const crate::syscall::LIGHT_CALLS,
    call = const abi::syscall::nr::CALL,
    reply_recv = const abi::syscall::nr::REPLY_RECV,
    light = sym crate::syscall::light,
    full = sym crate::syscall::full,
);

pub fn init() {
    let sel = gdt::selectors();
    assert_eq!(sel.user_code.0 as u64, USER_CS, "GDT order does not match the syscall stub");
    assert_eq!(sel.user_data.0 as u64, USER_SS, "GDT order does not match the syscall stub");
    // SAFETY: enabling `syscall` and pointing it at our stub; the selectors
    // were just checked against the GDT, and the stub is a valid entry.
    unsafe {
        Efer::update(|f| f.insert(EferFlags::SYSTEM_CALL_EXTENSIONS));
        Star::write(sel.user_code, sel.user_data, sel.kernel_code, sel.kernel_data)
            .expect("STAR selectors in sysret order");
        LStar::write(VirtAddr::new(syscall_entry as *const () as u64));
        // NT too: a task's RFLAGS.NT (a flipped bit, `faults/bank-storm.toml`
        // seed 13) would otherwise reach the kernel, whose next `iretq`
        // then raises #GP in ring 0 (IRET with NT set is a task switch,
        // which long mode does not have). Exceptions and interrupts clear
        // NT themselves on entry; `syscall` clears what FMASK says.
        SFMask::write(
            RFlags::INTERRUPT_FLAG
                | RFlags::TRAP_FLAG
                | RFlags::DIRECTION_FLAG
                | RFlags::ALIGNMENT_CHECK
                | RFlags::NESTED_TASK,
        );
    }
}
