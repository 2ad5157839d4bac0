//! Register sets, numbered the DWARF way.
//!
//! Design note: CFI names registers by their DWARF number, so the walker keeps
//! the register file as a flat array indexed by that number instead of a struct
//! of named fields: a rule `reg 6 saved at cfa-16` becomes one array store, with
//! no translation table on the hot path. A walk *loses* registers as it goes
//! up: caller-saved registers have no recoverable value in a caller frame, and a
//! rule that needs one must stop the walk with a typed reason instead of
//! computing garbage from a stale value. So every register has a *known* bit
//! next to its value: the file is 17 plain `u64`s plus a 17-bit mask (144
//! bytes), not 17 `Option<u64>`s (272 bytes). One step of a walk copies the
//! values wholesale and computes the caller's mask with one `and` (the
//! registers a row keeps); the value of an unknown register is unspecified and
//! never observable through this API.
//!
//! Only the 17 integer columns of the x86_64 psABI exist here (0..=16, where 16
//! is the return-address column, i.e. rip). Rules for vector registers are
//! ignored: the walker never needs them to find the next frame.

use core::fmt;

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

/// Mask of all tracked registers.
const ALL: u32 = (1 << NUM_REGS) - 1;

/// Names of the tracked registers, indexed by DWARF number.
pub const REG_NAMES: [&str; NUM_REGS] = [
    "rax", "rdx", "rcx", "rbx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip",
];

/// Whether the psABI says a callee preserves this register (rbx, rbp, r12-r15;
/// rsp is recovered from the CFA). Unmentioned callee-saved registers keep their
/// value in the caller; unmentioned caller-saved ones become unknown.
pub const fn callee_saved(reg: u16) -> bool {
    matches!(reg, dwarf::RBX | dwarf::RBP | 12..=15)
}

/// A register file: a value where known, nothing where not recoverable.
#[derive(Clone, Copy)]
pub struct Regs {
    /// Values by DWARF number; meaningful only where `known` has the bit.
    pub(crate) vals: [u64; NUM_REGS],
    /// Bit `r` set: register `r` is known.
    pub(crate) known: u32,
}

impl Regs {
    /// No register known.
    pub const fn new() -> Self {
        Regs { vals: [0; NUM_REGS], known: 0 }
    }

    /// A complete register file from the 17 values in DWARF order
    /// (rax, rdx, rcx, rbx, rsi, rdi, rbp, rsp, r8..r15, rip).
    pub const fn from_dwarf_array(vals: [u64; NUM_REGS]) -> Self {
        Regs { vals, known: ALL }
    }

    /// The value of DWARF register `reg`, if tracked and known.
    #[inline]
    pub fn get(&self, reg: u16) -> Option<u64> {
        let i = usize::from(reg);
        match self.vals.get(i) {
            Some(v) if self.known & (1 << i) != 0 => Some(*v),
            _ => None,
        }
    }

    /// Set DWARF register `reg`; registers outside 0..=16 are ignored.
    #[inline]
    pub fn set(&mut self, reg: u16, value: Option<u64>) {
        let i = usize::from(reg);
        if let Some(slot) = self.vals.get_mut(i) {
            match value {
                Some(v) => {
                    *slot = v;
                    self.known |= 1 << i;
                }
                None => {
                    *slot = 0;
                    self.known &= !(1 << i);
                }
            }
        }
    }

    /// The program counter (`rip`, column 16).
    #[inline]
    pub fn pc(&self) -> Option<u64> {
        self.get(dwarf::RIP)
    }

    /// The stack pointer (`rsp`, column 7).
    #[inline]
    pub fn sp(&self) -> Option<u64> {
        self.get(dwarf::RSP)
    }

    /// Bit `r` set: DWARF register `r` is known.
    pub fn known_mask(&self) -> u32 {
        self.known
    }

    /// All slots, indexed by DWARF number.
    pub fn as_array(&self) -> [Option<u64>; NUM_REGS] {
        core::array::from_fn(|i| (self.known & (1 << i) != 0).then_some(self.vals[i]))
    }
}

impl Default for Regs {
    fn default() -> Self {
        Self::new()
    }
}

/// Two register files are equal when the same registers are known with the
/// same values (the unspecified values of unknown registers do not count).
impl PartialEq for Regs {
    fn eq(&self, other: &Self) -> bool {
        self.known == other.known
            && self.vals.iter().zip(&other.vals).enumerate().all(|(i, (a, b))| self.known & (1 << i) == 0 || a == b)
    }
}

impl Eq for Regs {}

impl fmt::Debug for Regs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Regs").field("vals", &self.as_array()).finish()
    }
}
