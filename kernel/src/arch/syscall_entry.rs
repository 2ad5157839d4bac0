//! The `syscall` entry stub and the MSRs that route `syscall` to it.
//!
//! `syscall` leaves the user RIP in RCX and RFLAGS in R11, does not switch
//! stacks and masks the RFLAGS bits in `IA32_FMASK` (we clear IF, TF, DF and
//! AC). The stub makes the entry look exactly like a trap from ring 3: it
//! switches to the current task's save area, pushes a hardware-style frame
//! (SS, RSP, RFLAGS, CS, RIP), error code 0 and the pseudo-vector
//! [`SYSCALL_VECTOR`], then joins `trap_common`. One frame format, one
//! save path, one return path (`iretq`, which restores every register and
//! is immune to sysret's non-canonical-RCX problem).
//!
//! Register contract on entry: user RSP live, RCX = user RIP, R11 = user
//! RFLAGS, GS = the user's (hence the `swapgs` pair around the pushes:
//! `trap_common` swaps again because the frame says ring 3).

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
    .cfi_undefined rip
    swapgs
    mov gs:[{user_rsp}], rsp
    mov rsp, gs:[{save_top}]
    push {user_ss}
    push qword ptr gs:[{user_rsp}]
    push r11
    push {user_cs}
    push rcx
    push 0
    push {vector}
    swapgs
    jmp trap_common
    .cfi_endproc
    .size syscall_entry, . - syscall_entry
    "#,
    user_rsp = const percpu::USER_RSP,
    save_top = const percpu::SAVE_TOP,
    user_ss = const USER_SS,
    user_cs = const USER_CS,
    vector = const SYSCALL_VECTOR,
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
        SFMask::write(RFlags::INTERRUPT_FLAG | RFlags::TRAP_FLAG | RFlags::DIRECTION_FLAG | RFlags::ALIGNMENT_CHECK);
    }
}
