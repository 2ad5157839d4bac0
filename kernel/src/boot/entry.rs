//! PVH entry: from QEMU's 32-bit protected mode to Rust in the higher half.
//!
//! QEMU finds the `XEN_ELFNOTE_PHYS32_ENTRY` note, loads our segments at their
//! physical addresses and jumps to `pvh_entry32` with:
//!
//! * 32-bit protected mode, paging off, interrupts off, flat segments;
//! * EBX = physical address of the `hvm_start_info` structure.
//!
//! This code builds the boot page tables, enters long mode and jumps to
//! `kernel_entry64` in the higher half, which calls [`crate::kmain`] with the
//! start-info address in RDI. The boot tables map, with 2 MiB pages:
//!
//! * the first 4 GiB of physical memory at 0 (identity, so this code keeps
//!   running after paging is switched on; `kmain` removes it),
//! * the same 4 GiB at `PHYS_OFFSET` (the kernel's direct map, which also
//!   reaches the local APIC, I/O APIC and HPET below 4 GiB: the top 32 MiB
//!   are mapped uncached), and
//! * the first 1 GiB at `KERNEL_VMA` (where the kernel is linked).
//!
//! Register contract of `pvh_entry32`: EBX in (start info), everything else
//! clobbered; it never returns. `kernel_entry64` is marked with an undefined
//! return address in its CFI, so backtraces end cleanly there.

core::arch::global_asm!(
    r#"
    .section .note.pvh, "a", @note
    .p2align 2
    .long 4                 /* name size: "Xen\0" */
    .long 8                 /* descriptor size: one 64-bit address */
    .long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .p2align 2
    .quad pvh_entry32
    .p2align 2

    .section .boot.bss, "aw", @nobits
    .p2align 12
boot_pml4:      .skip 4096
boot_pdpt:      .skip 4096
boot_pdpt_high: .skip 4096
boot_pd:        .skip 4 * 4096

    .section .boot.rodata, "a"
    .p2align 4
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff    /* 0x08: 64-bit code, DPL 0 */
    .quad 0x00cf92000000ffff    /* 0x10: data, DPL 0 */
boot_gdt_end:
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt

    .section .boot.text, "ax"
    .code32
    .global pvh_entry32
pvh_entry32:
    cli
    cld
    /* No usable start info: report on COM1 and stop; nothing else can work. */
    cmpl $0x336ec578, (%ebx)
    jne 9f
    movl %ebx, %edi

    /* 4 PDs: 2048 x 2 MiB pages covering the first 4 GiB. */
    xorl %ecx, %ecx
1:  movl %ecx, %eax
    shll $21, %eax
    orl $0x83, %eax                       /* present | writable | huge */
    cmpl $2032, %ecx                      /* top 32 MiB: MMIO, uncached */
    jb 2f
    orl $0x18, %eax                       /* PWT | PCD */
2:  movl %eax, boot_pd(,%ecx,8)
    movl $0, boot_pd+4(,%ecx,8)
    incl %ecx
    cmpl $2048, %ecx
    jne 1b

    xorl %ecx, %ecx
3:  movl %ecx, %eax
    shll $12, %eax
    addl $boot_pd, %eax
    orl $0x3, %eax
    movl %eax, boot_pdpt(,%ecx,8)         /* PDPT[i] -> PD i */
    incl %ecx
    cmpl $4, %ecx
    jne 3b

    movl $boot_pd, %eax
    orl $0x3, %eax
    movl %eax, boot_pdpt_high + 510*8     /* PDPT_high[510] -> PD 0 (KERNEL_VMA) */
    movl $boot_pdpt, %eax
    orl $0x3, %eax
    movl %eax, boot_pml4                  /* PML4[0]: identity */
    movl %eax, boot_pml4 + 256*8          /* PML4[256]: direct map */
    movl $boot_pdpt_high, %eax
    orl $0x3, %eax
    movl %eax, boot_pml4 + 511*8          /* PML4[511]: kernel image */

    movl %cr4, %eax
    orl $(1 << 5), %eax                   /* PAE */
    movl %eax, %cr4
    movl $boot_pml4, %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx                /* EFER */
    rdmsr
    orl $((1 << 8) | (1 << 11)), %eax     /* LME | NXE */
    wrmsr
    movl %cr0, %eax
    orl $0x80010001, %eax                 /* PG | WP | PE */
    movl %eax, %cr0

    lgdt boot_gdt_ptr
    ljmp $0x08, $boot_entry64

9:  movw $0x3f8, %dx
    movb $'!', %al
    outb %al, %dx
8:  hlt
    jmp 8b

    .code64
boot_entry64:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movabsq $kernel_entry64, %rax
    jmp *%rax

    .section .text.kernel_entry64, "ax"
    .global kernel_entry64
    .type kernel_entry64, @function
kernel_entry64:
    .cfi_startproc
    .cfi_undefined rip
    leaq BOOT_STACK_TOP(%rip), %rsp
    xorl %ebp, %ebp
    movl %edi, %edi                       /* zero-extend the start-info address */
    call kmain
    ud2
    .cfi_endproc
    .size kernel_entry64, . - kernel_entry64
    "#,
    options(att_syntax)
);

/// Size of the boot stack: the kernel's stack until the scheduler exists.
pub const BOOT_STACK_SIZE: usize = 64 * 1024;

#[repr(C, align(16))]
pub struct Stack<const N: usize>(pub [u8; N]);

/// The boot stack. `kernel_entry64` points RSP at its top.
#[unsafe(no_mangle)]
static mut BOOT_STACK: Stack<BOOT_STACK_SIZE> = Stack([0; BOOT_STACK_SIZE]);

/// Top of the boot stack, which stays the kernel stack all trap handlers
/// run on once tasks exist.
pub fn boot_stack_top() -> u64 {
    (core::ptr::addr_of!(BOOT_STACK) as u64) + BOOT_STACK_SIZE as u64
}

core::arch::global_asm!(
    ".set BOOT_STACK_TOP, BOOT_STACK + {size}",
    size = const BOOT_STACK_SIZE,
);
