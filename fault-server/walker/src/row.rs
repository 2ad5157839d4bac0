//! A compact, self-contained unwind row.
//!
//! Design note: gimli produces an `UnwindTableRow` that lives inside the
//! `UnwindContext` it was computed in and is generic over that context's
//! storage. The walker converts it at once into this small `Copy` value: one
//! rule per tracked register (DWARF 0..=16), the CFA rule, the return-address
//! column and the signal-frame flag. Expressions are kept as (offset, length)
//! into `.eh_frame`, so a row borrows nothing and can sit in the row cache
//! across walks. Rules for untracked registers (vector registers) are dropped:
//! they never influence the next frame.
//!
//! A `Row` is general but large (about 300 bytes) and applying it means looking
//! at all 17 rules. Nearly every row of compiled code has the same shape: the
//! CFA is a register plus an offset, the return address and a few callee-saved
//! registers are saved at small offsets from the CFA, everything else is the
//! psABI default. [`FastRow::from_gimli`] turns such a row, once, when it is
//! cached, into a 20-byte [`FastRow`]: the CFA rule, the return-address offset,
//! the mask of registers that keep their value and a short list of saved
//! registers with their CFA offsets. Applying it costs a copy of the register
//! file, one `and` and one load per saved register. Rows of any other shape
//! (CFI expressions as in glibc's signal trampoline, register-to-register
//! rules, explicit rsp rules as in trap stubs, ...) become `Row`s and take the
//! general path; both paths give identical results (the fuzz target checks
//! it: its uncached walks use only the general path).

use gimli::{CfaRule, RegisterRule, UnwindTableRow};

use crate::regs::{NUM_REGS, callee_saved, dwarf};

/// A DWARF expression in `.eh_frame`: byte offset and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExprRef {
    /// Offset of the expression in `.eh_frame`.
    pub offset: u32,
    /// Length in bytes.
    pub len: u32,
}

/// How to compute the CFA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cfa {
    /// Register value plus offset.
    RegOffset(u16, i64),
    /// `DW_CFA_def_cfa_expression`.
    Expr(ExprRef),
}

/// How to recover one register of the caller.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Rule {
    /// No rule given: the psABI default applies (callee-saved registers keep
    /// their value, others are lost, rsp is the CFA).
    #[default]
    Unspecified,
    /// `DW_CFA_undefined`: no value (for the return address: outermost frame).
    Undefined,
    /// Unchanged.
    SameValue,
    /// Saved at CFA + n.
    Offset(i64),
    /// Is CFA + n.
    ValOffset(i64),
    /// In another register.
    Register(u16),
    /// Saved at the address the expression computes.
    Expr(ExprRef),
    /// Is the value the expression computes.
    ValExpr(ExprRef),
    /// A constant.
    Constant(u64),
    /// A rule the walker cannot evaluate (architectural, or a register
    /// outside the tracked set).
    Unsupported,
}

/// One row of the unwind table, ready to apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Row {
    /// First pc the row covers.
    pub start: u64,
    /// One past the last pc the row covers.
    pub end: u64,
    /// The CFA rule.
    pub cfa: Cfa,
    /// Rules for DWARF registers 0..=16.
    pub rules: [Rule; NUM_REGS],
    /// The return-address column (16 on x86_64; anything else is rejected).
    pub ra: u16,
    /// The FDE/CIE has the `S` augmentation: the caller's pc is not a return
    /// address.
    pub signal: bool,
}

impl Row {
    /// A placeholder row (empty cache slots).
    pub(crate) const EMPTY: Row = Row {
        start: 0,
        end: 0,
        cfa: Cfa::RegOffset(0, 0),
        rules: [Rule::Unspecified; NUM_REGS],
        ra: dwarf::RIP,
        signal: false,
    };

    /// A placeholder row with return-address column 0, so that arrays of it
    /// are all zero (never applied).
    pub(crate) const ZERO: Row = Row { ra: 0, ..Row::EMPTY };
}

/// Maximum number of saved-register loads of a [`FastRow`].
pub(crate) const MAX_SAVED: usize = 7;

/// [`FastRow::flags`]: the row is a signal frame.
pub(crate) const F_SIGNAL: u8 = 1;
/// [`FastRow::flags`]: the caller's rsp is the CFA.
pub(crate) const F_RSP_CFA: u8 = 2;
/// [`FastRow::flags`]: the return address is undefined: the walk ends here.
pub(crate) const F_OUTERMOST: u8 = 4;

/// A [`Row`] of the common shape, precompiled for the hot path (see the
/// module note): 20 bytes, saved-register offsets in units of 8 bytes.
/// Equivalent to the `Row` of the same gimli row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct FastRow {
    /// CFA = register `cfa_reg` + `cfa_off`.
    pub(crate) cfa_off: i32,
    /// Registers 0..=15 that keep their value in the caller (unmentioned
    /// callee-saved registers and `DW_CFA_same_value`).
    pub(crate) keep: u16,
    /// Registers 0..=15 saved in the frame: the `k`-th lowest set bit is at
    /// CFA + 8 * `saved_off[k]`.
    pub(crate) saved: u16,
    /// Offsets of the saved registers from the CFA, in 8-byte units.
    pub(crate) saved_off: [i8; MAX_SAVED],
    /// The return address is at CFA + 8 * `ra_off` (unless `F_OUTERMOST`).
    pub(crate) ra_off: i8,
    /// The CFA's base register (0..=16).
    pub(crate) cfa_reg: u8,
    /// `F_*` bits.
    pub(crate) flags: u8,
}

/// `n` (a CFA offset) in 8-byte units, if a multiple of 8 that fits an `i8`.
fn units(n: i64) -> Option<i8> {
    if n % 8 != 0 {
        return None;
    }
    i8::try_from(n / 8).ok()
}

/// Callee-saved registers (rbx, rbp, r12-r15) as a mask.
const CALLEE_SAVED: u16 = {
    let mut m = 0u16;
    let mut r = 0;
    while r < 16 {
        if callee_saved(r) {
            m |= 1 << r;
        }
        r += 1;
    }
    m
};

impl FastRow {
    /// The gimli row as a [`FastRow`], if it has the common shape; `None`
    /// otherwise (then [`Row::from_gimli`] gives the general row, or the
    /// reason the row cannot be used). The common shape: return-address
    /// column 16, CFA = register + 32-bit offset, return address saved at a
    /// CFA offset or undefined, rsp unspecified (= CFA), same-value or
    /// undefined, and every other register unspecified, undefined,
    /// same-value, unsupported (which the general path turns into "unknown"
    /// too) or saved at a CFA offset (at most [`MAX_SAVED`] of them). Saved
    /// offsets must be multiples of 8 within ±1 KiB of the CFA.
    ///
    /// Equivalent to `Row::from_gimli` followed by the general rules of
    /// `walk::caller`, rule by rule (see there for what each rule means).
    pub(crate) fn from_gimli<S: gimli::UnwindContextStorage<usize>>(
        row: &UnwindTableRow<usize, S>,
        ra: u16,
        signal: bool,
    ) -> Option<FastRow> {
        if ra != dwarf::RIP {
            return None;
        }
        let CfaRule::RegisterAndOffset { register, offset } = row.cfa() else {
            return None;
        };
        let mut f = FastRow {
            cfa_off: i32::try_from(*offset).ok()?,
            cfa_reg: u8::try_from(reg(*register)?).ok()?,
            // Unmentioned registers: callee-saved ones kept, rsp = CFA, the
            // return address undefined.
            keep: CALLEE_SAVED,
            flags: F_RSP_CFA | F_OUTERMOST,
            ..FastRow::default()
        };
        if signal {
            f.flags |= F_SIGNAL;
        }
        let mut offs = [0i8; 16];
        for (r, rl) in row.registers() {
            let r = r.0;
            if r == dwarf::RIP {
                f.flags &= !F_OUTERMOST;
                match rule(rl) {
                    Rule::Undefined => f.flags |= F_OUTERMOST,
                    Rule::Offset(n) => f.ra_off = units(n)?,
                    _ => return None,
                }
                continue;
            }
            let Some(slot) = offs.get_mut(usize::from(r)) else {
                continue; // not tracked
            };
            let bit = 1u16 << r;
            f.keep &= !bit;
            f.saved &= !bit;
            if r == dwarf::RSP {
                f.flags &= !F_RSP_CFA;
            }
            match (r, rule(rl)) {
                (dwarf::RSP, Rule::SameValue) => f.keep |= bit,
                (dwarf::RSP, Rule::Undefined) => {}
                // Any other explicit rsp rule can fail the step: general path.
                (dwarf::RSP, _) => return None,
                (_, Rule::Undefined | Rule::Unsupported) => {}
                (_, Rule::SameValue) => f.keep |= bit,
                (_, Rule::Offset(n)) => {
                    *slot = units(n)?;
                    f.saved |= bit;
                }
                _ => return None,
            }
        }
        if f.saved.count_ones() as usize > MAX_SAVED {
            return None;
        }
        let mut saved = f.saved;
        for off in &mut f.saved_off {
            if saved == 0 {
                break;
            }
            let r = saved.trailing_zeros() as usize;
            saved &= saved - 1;
            *off = *offs.get(r)?;
        }
        Some(f)
    }
}

fn expr(e: &gimli::UnwindExpression<usize>) -> Option<ExprRef> {
    Some(ExprRef { offset: u32::try_from(e.offset).ok()?, len: u32::try_from(e.length).ok()? })
}

fn reg(r: gimli::Register) -> Option<u16> {
    (usize::from(r.0) < NUM_REGS).then_some(r.0)
}

fn rule(r: &RegisterRule<usize>) -> Rule {
    let r = match r {
        RegisterRule::Undefined => Some(Rule::Undefined),
        RegisterRule::SameValue => Some(Rule::SameValue),
        RegisterRule::Offset(n) => Some(Rule::Offset(*n)),
        RegisterRule::ValOffset(n) => Some(Rule::ValOffset(*n)),
        RegisterRule::Register(r) => reg(*r).map(Rule::Register),
        RegisterRule::Expression(e) => expr(e).map(Rule::Expr),
        RegisterRule::ValExpression(e) => expr(e).map(Rule::ValExpr),
        RegisterRule::Constant(c) => Some(Rule::Constant(*c)),
        RegisterRule::Architectural => None,
    };
    r.unwrap_or(Rule::Unsupported)
}

impl Row {
    /// Converts a gimli row. `None` if the CFA rule cannot be represented
    /// (a register outside 0..=16, or an expression beyond 4 GiB).
    pub(crate) fn from_gimli<S: gimli::UnwindContextStorage<usize>>(
        row: &UnwindTableRow<usize, S>,
        ra: u16,
        signal: bool,
    ) -> Option<Row> {
        let cfa = match row.cfa() {
            CfaRule::RegisterAndOffset { register, offset } => Cfa::RegOffset(reg(*register)?, *offset),
            CfaRule::Expression(e) => Cfa::Expr(expr(e)?),
        };
        let mut rules = [Rule::Unspecified; NUM_REGS];
        for (r, rl) in row.registers() {
            if let Some(slot) = rules.get_mut(usize::from(r.0)) {
                *slot = rule(rl);
            }
        }
        Some(Row { start: row.start_address(), end: row.end_address(), cfa, rules, ra, signal })
    }

    /// The rule for DWARF register `r`.
    pub fn rule(&self, r: u16) -> Rule {
        self.rules.get(usize::from(r)).copied().unwrap_or(Rule::Unsupported)
    }
}
