//! The two Arc count changes, as asm blocks the fault server can locate.
//!
//! An Arc count has no owner field, so unlike a mutex word it cannot tell
//! the fault server whether a task that faulted mid-operation already
//! changed it. The pc can: each change is one `lock xadd` that ends an asm
//! block delimited by global symbols (`abi::checkpoint::ARC_*_SYMBOL`),
//! whose addresses libtask records in its recovery page when it registers
//! it ([`blocks`] → `RecoveryPage::arc_blocks`): the fault server reads
//! them there, so it needs no symbol table (a stripped task recovers too).
//!
//! ```text
//! __rewind_arc_inc_start:               __rewind_arc_dec_start:
//!     intent.addr  = addr                   intent.addr  = addr
//!     intent.scope = scope                  intent.scope = scope
//!     intent.op    = ARC_CLONE              intent.op    = ARC_DROP
//!     eax = 1                               entry.addr   = 0   (unregister)
//!     lock xadd [count], eax                eax = -1
//! __rewind_arc_inc_commit:                  lock xadd [count], eax
//!     ret                               __rewind_arc_dec_commit:
//!                                           ret
//! ```
//!
//! The intent is written *inside* the block, so "intent set and pc outside
//! `[start, commit)`" can only mean "after the `xadd`"; a fault before the
//! block finds the intent clear. A fault *on* the `xadd` (a bad count
//! address) reports the `xadd`'s own pc, inside: not done — right, since a
//! faulting instruction does not complete. The drop block also removes the
//! registry entry before its `xadd`, so at every instruction exactly one of
//! "entry present", "intent inside the block" or "intent after the block"
//! describes the reference: the table in `recovery::plan`.
//!
//! Register contract (System V, called from Rust as `extern "C"`): `rdi` =
//! the count word, `rsi` = the intent slot, `rdx` = the object's address,
//! `rcx` = the scope depth, and for drop `r8` = the registry entry's `addr`
//! word; returns the count before the change in `eax`. Clobbers only `rax`
//! and flags; no stack use, so the CFI is the default of a leaf function
//! (CFA = rsp + 8), correct at every instruction.

use abi::checkpoint::{
    ARC_DEC_COMMIT_SYMBOL, ARC_DEC_START_SYMBOL, ARC_INC_COMMIT_SYMBOL, ARC_INC_START_SYMBOL, ArcBlocks, Intent, intent,
};
use core::mem::offset_of;

// The symbol names in the asm below must be the ABI's.
const _: () = {
    const fn eq(a: &str, b: &str) -> bool {
        let (a, b) = (a.as_bytes(), b.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        let mut i = 0;
        while i < a.len() {
            if a[i] != b[i] {
                return false;
            }
            i += 1;
        }
        true
    }
    assert!(eq(ARC_INC_START_SYMBOL, "__rewind_arc_inc_start"));
    assert!(eq(ARC_INC_COMMIT_SYMBOL, "__rewind_arc_inc_commit"));
    assert!(eq(ARC_DEC_START_SYMBOL, "__rewind_arc_dec_start"));
    assert!(eq(ARC_DEC_COMMIT_SYMBOL, "__rewind_arc_dec_commit"));
};

core::arch::global_asm!(
    ".section .text.__rewind_arc, \"ax\", @progbits",
    ".global __rewind_arc_inc",
    ".type __rewind_arc_inc, @function",
    "__rewind_arc_inc:",
    ".cfi_startproc",
    ".global __rewind_arc_inc_start",
    "__rewind_arc_inc_start:",
    "    mov qword ptr [rsi + {addr}], rdx",
    "    mov qword ptr [rsi + {scope}], rcx",
    "    mov qword ptr [rsi + {op}], {clone}",
    "    mov eax, 1",
    "    lock xadd dword ptr [rdi], eax",
    ".global __rewind_arc_inc_commit",
    "__rewind_arc_inc_commit:",
    "    ret",
    ".cfi_endproc",
    ".size __rewind_arc_inc, . - __rewind_arc_inc",
    "",
    ".global __rewind_arc_dec",
    ".type __rewind_arc_dec, @function",
    "__rewind_arc_dec:",
    ".cfi_startproc",
    ".global __rewind_arc_dec_start",
    "__rewind_arc_dec_start:",
    "    mov qword ptr [rsi + {addr}], rdx",
    "    mov qword ptr [rsi + {scope}], rcx",
    "    mov qword ptr [rsi + {op}], {drop}",
    "    mov qword ptr [r8], 0",
    "    mov eax, -1",
    "    lock xadd dword ptr [rdi], eax",
    ".global __rewind_arc_dec_commit",
    "__rewind_arc_dec_commit:",
    "    ret",
    ".cfi_endproc",
    ".size __rewind_arc_dec, . - __rewind_arc_dec",
    ".text",
    addr = const offset_of!(Intent, addr),
    scope = const offset_of!(Intent, scope),
    op = const offset_of!(Intent, op),
    clone = const intent::ARC_CLONE,
    drop = const intent::ARC_DROP,
);

unsafe extern "C" {
    fn __rewind_arc_inc(count: *mut u32, intent: *mut Intent, addr: u64, scope: u64) -> u32;
    fn __rewind_arc_dec(count: *mut u32, intent: *mut Intent, addr: u64, scope: u64, entry: *mut u64) -> u32;
    // Labels in the asm above, never read: only their addresses are used.
    static __rewind_arc_inc_start: u8;
    static __rewind_arc_inc_commit: u8;
    static __rewind_arc_dec_start: u8;
    static __rewind_arc_dec_commit: u8;
}

/// Where the two blocks are in this image, for the recovery page.
pub(crate) fn blocks() -> ArcBlocks {
    ArcBlocks {
        inc_start: &raw const __rewind_arc_inc_start as u64,
        inc_commit: &raw const __rewind_arc_inc_commit as u64,
        dec_start: &raw const __rewind_arc_dec_start as u64,
        dec_commit: &raw const __rewind_arc_dec_commit as u64,
    }
}

/// Sets the intent `ARC_CLONE` on `addr` and adds 1 to `count`; returns
/// the count before.
///
/// # Safety
/// `count` must be the count word of the Arc slot at `addr` (shared,
/// mapped), `intent` this task's intent slot.
pub(crate) unsafe fn inc(count: *mut u32, intent: *mut Intent, addr: u64, scope: u64) -> u32 {
    // SAFETY: the asm writes the intent (caller: valid) and the count
    // (caller: valid, atomically); it follows the C ABI stated above.
    unsafe { __rewind_arc_inc(count, intent, addr, scope) }
}

/// Sets the intent `ARC_DROP` on `addr`, zeroes `*entry` (unregistering
/// the reference) and subtracts 1 from `count`; returns the count before.
///
/// # Safety
/// As [`inc`]; `entry` must be the `addr` word of this task's registry
/// entry for the reference.
pub(crate) unsafe fn dec(count: *mut u32, intent: *mut Intent, addr: u64, scope: u64, entry: *mut u64) -> u32 {
    // SAFETY: as for `inc`, and `entry` is a registry word (caller).
    unsafe { __rewind_arc_dec(count, intent, addr, scope, entry) }
}
