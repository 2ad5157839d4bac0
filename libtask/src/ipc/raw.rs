//! The two ways into the kernel for an IPC call (why two: `super`'s note).
//!
//! Register contract of every IPC call (`abi::ipc`, `abi::syscall`): in,
//! `rax` = call number, `rdi` = capability, `rsi` = label, `rdx`, `r10`,
//! `r8`, `r9` = words, `r12`/`r13` = send buffer and length, `r14`/`r15` =
//! receive buffer and capacity, `rbx` = timeout. Out, `rax` = result,
//! `rdi` = badge, `rsi` = label, the four words, `r13` = bytes received;
//! `rcx` and `r11` are destroyed by `syscall`; the kernel preserves every
//! other register (`r12`, `r14`, `r15`, `rbx` come back unchanged).
//!
//! The kernel writes into the receive buffer and reads the send buffer, so
//! neither block claims `nomem`/`readonly`.

use super::IpcRegs;

/// One IPC call with no send buffer: `r.r13` must be 0 (`r.r12` is then
/// ignored by the kernel, and carries the timeout instead).
///
/// # Safety
/// `r.r14` must point to `r.r15` writable bytes that nothing else uses
/// during the call (or `r.r15` = 0).
#[inline(always)]
pub unsafe fn exchange_fast(r: &mut IpcRegs) {
    debug_assert_eq!(r.r13, 0);
    let [w0, w1, w2, w3] = r.words;
    let (rax, rdi, rsi, d0, d1, d2, d3, received);
    // SAFETY: rbx cannot be an operand, so the timeout travels in r12 (free:
    // the send length is 0) and is swapped into rbx for the `syscall` only;
    // the second `xchg` puts the caller's rbx back (the kernel preserves rbx
    // and r12). Every register the kernel writes is declared; the receive
    // buffer is the caller's responsibility (above). No stack use.
    unsafe {
        core::arch::asm!(
            "xchg r12, rbx",
            "syscall",
            "xchg r12, rbx",
            inlateout("rax") r.rax => rax,
            inlateout("rdi") r.rdi => rdi,
            inlateout("rsi") r.rsi => rsi,
            inlateout("rdx") w0 => d0,
            inlateout("r10") w1 => d1,
            inlateout("r8") w2 => d2,
            inlateout("r9") w3 => d3,
            inout("r12") r.rbx => _,
            inlateout("r13") 0u64 => received,
            in("r14") r.r14,
            in("r15") r.r15,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    r.rax = rax;
    r.rdi = rdi;
    r.rsi = rsi;
    r.words = [d0, d1, d2, d3];
    r.r13 = received;
}

/// One IPC call with every register set from `r`, and the outputs written
/// back into it.
///
/// # Safety
/// As [`exchange_fast`], and `r.r12` must point to `r.r13` readable bytes.
#[inline(always)]
pub unsafe fn exchange(r: &mut IpcRegs) {
    // SAFETY: `__rewind_ipc_exchange` follows the C ABI (below): it saves and
    // restores the callee-saved registers it uses, and clobbers only what
    // is declared here. The kernel accesses the buffers (caller's contract).
    unsafe {
        core::arch::asm!(
            "call {f}",
            f = sym __rewind_ipc_exchange,
            inout("rdi") r as *mut IpcRegs => _,
            out("rax") _, out("rcx") _, out("rdx") _, out("rsi") _,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
        );
    }
}

unsafe extern "C" {
    /// `void __rewind_ipc_exchange(IpcRegs *rdi)`.
    fn __rewind_ipc_exchange(regs: *mut IpcRegs);
}

// __rewind_ipc_exchange(rdi = *mut IpcRegs): a C-ABI function. Saves rbx
// and r12-r15 (callee-saved) and the block pointer on its stack, loads all
// twelve IPC inputs from the block (offsets = `IpcRegs` fields: rax 0,
// rdi 8, rsi 16, words 24..56, r12 56, r13 64, r14 72, r15 80, rbx 88),
// makes the call, stores rax, rdi, rsi, the words and r13 back, restores
// and returns. Clobbers rax, rcx, rdx, rsi, rdi, r8-r11 (caller-saved).
// Its CFI tracks every push, so a stack walk from inside the `syscall`
// (a task killed while blocked in IPC) finds its caller.
core::arch::global_asm!(
    ".section .text.__rewind_ipc_exchange, \"ax\", @progbits",
    ".global __rewind_ipc_exchange",
    ".type __rewind_ipc_exchange, @function",
    "__rewind_ipc_exchange:",
    ".cfi_startproc",
    "    push rbx",
    ".cfi_adjust_cfa_offset 8",
    ".cfi_rel_offset rbx, 0",
    "    push r12",
    ".cfi_adjust_cfa_offset 8",
    ".cfi_rel_offset r12, 0",
    "    push r13",
    ".cfi_adjust_cfa_offset 8",
    ".cfi_rel_offset r13, 0",
    "    push r14",
    ".cfi_adjust_cfa_offset 8",
    ".cfi_rel_offset r14, 0",
    "    push r15",
    ".cfi_adjust_cfa_offset 8",
    ".cfi_rel_offset r15, 0",
    "    push rdi",
    ".cfi_adjust_cfa_offset 8",
    "    mov rax, [rdi + 0]",
    "    mov rsi, [rdi + 16]",
    "    mov rdx, [rdi + 24]",
    "    mov r10, [rdi + 32]",
    "    mov r8,  [rdi + 40]",
    "    mov r9,  [rdi + 48]",
    "    mov r12, [rdi + 56]",
    "    mov r13, [rdi + 64]",
    "    mov r14, [rdi + 72]",
    "    mov r15, [rdi + 80]",
    "    mov rbx, [rdi + 88]",
    "    mov rdi, [rdi + 8]",
    "    syscall",
    "    mov rcx, [rsp]",
    "    mov [rcx + 0], rax",
    "    mov [rcx + 8], rdi",
    "    mov [rcx + 16], rsi",
    "    mov [rcx + 24], rdx",
    "    mov [rcx + 32], r10",
    "    mov [rcx + 40], r8",
    "    mov [rcx + 48], r9",
    "    mov [rcx + 64], r13",
    "    add rsp, 8",
    ".cfi_adjust_cfa_offset -8",
    "    pop r15",
    ".cfi_adjust_cfa_offset -8",
    ".cfi_restore r15",
    "    pop r14",
    ".cfi_adjust_cfa_offset -8",
    ".cfi_restore r14",
    "    pop r13",
    ".cfi_adjust_cfa_offset -8",
    ".cfi_restore r13",
    "    pop r12",
    ".cfi_adjust_cfa_offset -8",
    ".cfi_restore r12",
    "    pop rbx",
    ".cfi_adjust_cfa_offset -8",
    ".cfi_restore rbx",
    "    ret",
    ".cfi_endproc",
    ".size __rewind_ipc_exchange, . - __rewind_ipc_exchange",
);

const _: () = {
    assert!(core::mem::offset_of!(IpcRegs, rax) == 0);
    assert!(core::mem::offset_of!(IpcRegs, rdi) == 8);
    assert!(core::mem::offset_of!(IpcRegs, rsi) == 16);
    assert!(core::mem::offset_of!(IpcRegs, words) == 24);
    assert!(core::mem::offset_of!(IpcRegs, r12) == 56);
    assert!(core::mem::offset_of!(IpcRegs, r13) == 64);
    assert!(core::mem::offset_of!(IpcRegs, r14) == 72);
    assert!(core::mem::offset_of!(IpcRegs, r15) == 80);
    assert!(core::mem::offset_of!(IpcRegs, rbx) == 88);
};
