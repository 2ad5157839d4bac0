//! Bounded evaluation of CFI expressions.
//!
//! Design note: `DW_CFA_def_cfa_expression`, `DW_CFA_expression` and
//! `DW_CFA_val_expression` are how signal trampolines (glibc's `__restore_rt`)
//! and stack-realigning prologues describe their frames, so rejecting them would
//! stop the walk exactly where it matters. They are evaluated with gimli's
//! `Evaluation` on fixed-size storage (no allocation), with a hard cap on the
//! number of operations (`DW_OP_skip`/`DW_OP_bra` can loop) and a small stack.
//! Registers come from the frame being unwound (unknown ones fail with a typed
//! error), memory through the fallible [`Memory`] reader. Anything else an
//! expression may ask for (TLS, entry values, DIE references) is unsupported in
//! CFI and ends the walk with a typed reason.

use gimli::{EhFrame, EvaluationResult, EvaluationStorage, Location, Piece, UnwindExpression, Value};

use crate::memory::Memory;
use crate::regs::Regs;
use crate::row::ExprRef;
use crate::table::Reader;

/// Maximum number of operations one expression may execute.
pub const MAX_EXPR_STEPS: u32 = 256;

/// Why an expression could not be evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExprError {
    /// It read memory that is not readable.
    Unreadable(u64),
    /// It needs a register whose value is not known in this frame.
    UnknownRegister(u16),
    /// It uses an operation that has no meaning in CFI.
    Unsupported,
    /// It ran for more than [`MAX_EXPR_STEPS`] operations or overflowed its stack.
    Limit,
    /// It is malformed.
    Malformed,
}

struct FixedStore;

impl<R: gimli::Reader> EvaluationStorage<R> for FixedStore {
    type Stack = [Value; 32];
    type ExpressionStack = [(R, R); 4];
    type Result = [Piece<R>; 2];
}

fn map_err(e: gimli::Error) -> ExprError {
    match e {
        gimli::Error::TooManyIterations | gimli::Error::StackFull => ExprError::Limit,
        _ => ExprError::Malformed,
    }
}

/// Evaluates the expression `e` of `eh_frame`. `initial` is pushed first
/// (the CFA, for register rules). `DW_OP_call_frame_cfa` is unsupported: CFI
/// expressions cannot refer to the CFA they define.
pub(crate) fn evaluate<M: Memory + ?Sized>(
    eh_frame: &EhFrame<Reader<'_>>,
    e: ExprRef,
    regs: &Regs,
    mem: &M,
    initial: Option<u64>,
) -> Result<u64, ExprError> {
    let ue = UnwindExpression { offset: e.offset as usize, length: e.len as usize };
    let bytecode = ue.get(eh_frame).map_err(|_| ExprError::Malformed)?;
    let encoding = gimli::Encoding { address_size: 8, format: gimli::Format::Dwarf32, version: 4 };
    let mut eval = gimli::Evaluation::<_, FixedStore>::new_in(bytecode.0, encoding);
    eval.set_max_iterations(MAX_EXPR_STEPS);
    if let Some(v) = initial {
        eval.set_initial_value(v);
    }
    let mut res = eval.evaluate().map_err(map_err)?;
    // Every resume executes at least one more operation, which the iteration
    // cap bounds; this counter is a second, independent bound.
    for _ in 0..=MAX_EXPR_STEPS {
        res = match res {
            EvaluationResult::Complete => return result(eval.as_result()),
            EvaluationResult::RequiresMemory { address, size, space: None, .. } => {
                let v = mem.read_sized(address, size).ok_or(ExprError::Unreadable(address))?;
                eval.resume_with_memory(Value::Generic(v)).map_err(map_err)?
            }
            EvaluationResult::RequiresRegister { register, base_type } if base_type.0 == 0 => {
                let v = regs.get(register.0).ok_or(ExprError::UnknownRegister(register.0))?;
                eval.resume_with_register(Value::Generic(v)).map_err(map_err)?
            }
            _ => return Err(ExprError::Unsupported),
        };
    }
    Err(ExprError::Limit)
}

fn result(pieces: &[Piece<Reader<'_>>]) -> Result<u64, ExprError> {
    match pieces {
        [Piece { location: Location::Address { address }, size_in_bits: None, .. }] => Ok(*address),
        [Piece { location: Location::Value { value }, size_in_bits: None, .. }] => {
            value.to_u64(u64::MAX).map_err(|_| ExprError::Unsupported)
        }
        _ => Err(ExprError::Unsupported),
    }
}
