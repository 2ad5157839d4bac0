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

use gimli::{CfaRule, RegisterRule, UnwindTableRow};

use crate::regs::NUM_REGS;

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

fn expr(e: &gimli::UnwindExpression<usize>) -> Option<ExprRef> {
    Some(ExprRef {
        offset: u32::try_from(e.offset).ok()?,
        len: u32::try_from(e.length).ok()?,
    })
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
            CfaRule::RegisterAndOffset { register, offset } => {
                Cfa::RegOffset(reg(*register)?, *offset)
            }
            CfaRule::Expression(e) => Cfa::Expr(expr(e)?),
        };
        let mut rules = [Rule::Unspecified; NUM_REGS];
        for (r, rl) in row.registers() {
            if let Some(slot) = rules.get_mut(usize::from(r.0)) {
                *slot = rule(rl);
            }
        }
        Some(Row {
            start: row.start_address(),
            end: row.end_address(),
            cfa,
            rules,
            ra,
            signal,
        })
    }

    /// The rule for DWARF register `r`.
    pub fn rule(&self, r: u16) -> Rule {
        self.rules
            .get(usize::from(r))
            .copied()
            .unwrap_or(Rule::Unsupported)
    }
}
