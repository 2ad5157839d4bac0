//! Kernel backtraces from the kernel's own `.eh_frame`.
//!
//! Interim: the CFI walker library (fault-server/walker) is being written;
//! until it is linked here, walks report that no walker is present.

use abi::trap::Registers;

/// One frame of a walk, symbolized.
pub struct Frame {
    pub index: usize,
    pub pc: u64,
    pub cfa: u64,
    pub symbol: &'static str,
    pub offset: u64,
}

/// The registers of the caller, at the point of the call (for panics).
#[inline(always)]
pub fn current_registers() -> Registers {
    let (rip, rsp, rbp): (u64, u64, u64);
    // SAFETY: reads RIP (via LEA), RSP and RBP into general registers; no
    // memory is touched and the stack is not changed.
    unsafe {
        core::arch::asm!("lea {0}, [rip]", "mov {1}, rsp", "mov {2}, rbp", out(reg) rip, out(reg) rsp, out(reg) rbp, options(nomem, nostack, preserves_flags));
    }
    Registers { rip, rsp, rbp, ..Registers::default() }
}

/// Walks the kernel stack from `regs`, calling `visit` per frame; returns
/// why the walk stopped.
pub fn walk(_regs: &Registers, _visit: impl FnMut(&Frame)) -> &'static str {
    "no walker linked yet"
}
