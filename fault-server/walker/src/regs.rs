//! Register sets, numbered the DWARF way.
//!
//! Design note: CFI names registers by their DWARF number, so the walker keeps
//! the register file as a flat array indexed by that number instead of a struct
//! of named fields: a rule `reg 6 saved at cfa-16` becomes one array store, with
//! no translation table on the hot path. Every slot is an `Option` because a
//! walk *loses* registers as it goes up: caller-saved registers have no
//! recoverable value in a caller frame, and a rule that needs one must stop the
//! walk with a typed reason instead of computing garbage from a stale value.
//!
//! Only the 17 integer columns of the x86_64 psABI exist here (0..=16, where 16
//! is the return-address column, i.e. rip). Rules for vector registers are
//! ignored: the walker never needs them to find the next frame.

/// DWARF register numbers of the x86_64 psABI.
pub mod dwarf {
    /// `rax`
    pub const RAX: u16 = 0;
    /// `rdx`
    pub const RDX: u16 = 1;
    /// `rcx`
    pub const RCX: u16 = 2;
    /// `rbx`
    pub const RBX: u16 = 3;
    /// `rsi`
    pub const RSI: u16 = 4;
    /// `rdi`
    pub const RDI: u16 = 5;
    /// `rbp`
    pub const RBP: u16 = 6;
    /// `rsp`
    pub const RSP: u16 = 7;
    /// `r8`; `r9`..`r15` are 9..15.
    pub const R8: u16 = 8;
    /// `r12`
    pub const R12: u16 = 12;
    /// `r15`
    pub const R15: u16 = 15;
    /// The return-address column, i.e. `rip`.
    pub const RIP: u16 = 16;
}

/// Number of register columns the walker tracks (DWARF 0..=16).
pub const NUM_REGS: usize = 17;

/// Names of the tracked registers, indexed by DWARF number.
pub const REG_NAMES: [&str; NUM_REGS] = [
    "rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15", "rip",
];

/// Whether the psABI says a callee preserves this register (rbx, rbp, r12-r15;
/// rsp is recovered from the CFA). Unmentioned callee-saved registers keep their
/// value in the caller; unmentioned caller-saved ones become unknown.
pub const fn callee_saved(reg: u16) -> bool {
    matches!(reg, dwarf::RBX | dwarf::RBP | 12..=15)
}

/// A register file: `Some(value)` where known, `None` where not recoverable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    vals: [Option<u64>; NUM_REGS],
}

impl Regs {
    /// No register known.
    pub const fn new() -> Self {
        Regs {
            vals: [None; NUM_REGS],
        }
    }

    /// A complete register file from the 17 values in DWARF order
    /// (rax, rdx, rcx, rbx, rsi, rdi, rbp, rsp, r8..r15, rip).
    pub const fn from_dwarf_array(vals: [u64; NUM_REGS]) -> Self {
        let mut out = [None; NUM_REGS];
        let mut i = 0;
        while i < NUM_REGS {
            out[i] = Some(vals[i]);
            i += 1;
        }
        Regs { vals: out }
    }

    /// The value of DWARF register `reg`, if tracked and known.
    pub fn get(&self, reg: u16) -> Option<u64> {
        self.vals.get(usize::from(reg)).copied().flatten()
    }

    /// Set DWARF register `reg`; registers outside 0..=16 are ignored.
    pub fn set(&mut self, reg: u16, value: Option<u64>) {
        if let Some(slot) = self.vals.get_mut(usize::from(reg)) {
            *slot = value;
        }
    }

    /// The program counter (`rip`, column 16).
    pub fn pc(&self) -> Option<u64> {
        self.get(dwarf::RIP)
    }

    /// The stack pointer (`rsp`, column 7).
    pub fn sp(&self) -> Option<u64> {
        self.get(dwarf::RSP)
    }

    /// All slots, indexed by DWARF number.
    pub fn as_array(&self) -> &[Option<u64>; NUM_REGS] {
        &self.vals
    }
}
