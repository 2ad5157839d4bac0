//! The walk: from one register set to the next, frame by frame.
//!
//! Design note: one step takes the registers of frame N, finds the unwind row
//! for its pc, computes frame N's CFA, and recovers frame N+1's registers. The
//! rules that make this correct from *any* instruction:
//! - the first frame (and a frame interrupted by a signal or trap) is looked up
//!   at its pc as is, because that instruction has not executed; a caller
//!   frame's pc is a return address, the instruction *after* the call, so it
//!   is looked up at `pc - 1` (the call itself may be the function's last
//!   instruction, and `pc` then belongs to the next function);
//! - a row from an FDE with the `S` augmentation (signal trampoline, kernel trap
//!   stub with `.cfi_signal_frame`) makes the *next* pc an interrupted pc, not a
//!   return address;
//! - the caller's rsp is the CFA unless CFI gives rsp an explicit rule (trap
//!   stubs restore the interrupted rsp that way);
//! - unmentioned callee-saved registers keep their value, unmentioned
//!   caller-saved ones become unknown; using an unknown register stops the walk.
//!
//! Every way a walk ends is a [`Stop`] value. Termination is guaranteed by the
//! depth limit, and stacks are required to grow: a CFA that does not increase
//! ends the walk, except next to a signal frame, whose CFA may legitimately be
//! on another stack (sigaltstack, kernel stack) — the depth limit bounds that.

use gimli::{Register, RegisterRule, UnwindContext, UnwindContextStorage, UnwindTableRow};

use crate::cache::{CieCache, RowCache, Tag};
use crate::expr::{self, ExprError};
use crate::image::Image;
use crate::memory::Memory;
use crate::regs::{NUM_REGS, Regs, callee_saved, dwarf};
use crate::row::{Cfa, Row, Rule};

/// Default maximum number of frames in one walk.
pub const DEFAULT_MAX_DEPTH: usize = 256;

/// Why a walk ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The last frame's return address is undefined (`DW_CFA_undefined rip`,
    /// as `_start` and thread entry points say), or zero: the normal end.
    Outermost,
    /// No FDE covers this pc.
    NoFde {
        /// The frame's pc.
        pc: u64,
    },
    /// A read of the walked memory failed.
    Unreadable {
        /// The address read.
        addr: u64,
    },
    /// The CFA of a frame is not above its callee's: the stack is corrupt or
    /// cyclic.
    CfaNotIncreasing {
        /// This frame's CFA.
        cfa: u64,
        /// The callee frame's CFA.
        prev: u64,
    },
    /// The walk reached [`Walker::max_depth`] frames.
    DepthLimit,
    /// A rule the walker does not evaluate (architectural rule, a register
    /// outside rax..r15/rip, a return-address column other than 16).
    UnsupportedRule,
    /// A rule needs a register whose value is not known in this frame.
    UnknownRegister {
        /// DWARF register number.
        reg: u16,
    },
    /// A CFI expression could not be evaluated.
    Expression(ExprError),
    /// The CFI for this pc is malformed.
    BadCfi(gimli::Error),
    /// The visitor asked to stop.
    Visitor,
}

/// One frame of a walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The frame's pc: the faulting pc for frame 0 and frames interrupted by a
    /// signal/trap, otherwise the return address.
    pub pc: u64,
    /// The canonical frame address (the caller's rsp before the call).
    pub cfa: u64,
    /// The registers of this frame (unknown ones are `None`).
    pub regs: Regs,
    /// This frame's FDE is a signal frame (`S` augmentation).
    pub signal: bool,
    /// The pc was an interrupted pc looked up as is, not a return address.
    pub exact_pc: bool,
}

/// Storage for gimli's CFI interpreter: no allocation.
#[derive(Clone, Copy, Debug)]
pub struct CtxStore;

impl<T: gimli::ReaderOffset> UnwindContextStorage<T> for CtxStore {
    type Rules = [(Register, RegisterRule<T>); 24];
    type Stack = [UnwindTableRow<T, Self>; 4];
}

/// Where a walk is, between two steps.
#[derive(Clone, Debug)]
pub struct WalkState {
    regs: Regs,
    exact: bool,
    prev: Option<(u64, bool)>,
    depth: usize,
    done: Option<Stop>,
}

impl WalkState {
    /// A walk starting at `regs` (the registers at the fault: the pc is used as
    /// is).
    pub fn new(regs: Regs) -> Self {
        WalkState {
            regs,
            exact: true,
            prev: None,
            depth: 0,
            done: None,
        }
    }

    /// Frames produced so far.
    pub fn depth(&self) -> usize {
        self.depth
    }
}

/// Counters for benchmarks and tuning.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Row-cache hits.
    pub hits: u64,
    /// Row-cache misses (FDE lookup + CFI run).
    pub misses: u64,
}

/// A stack walker with its caches. `ROWS` is the number of row-cache slots.
///
/// Reuse one `Walker` for all walks of an image: that is what keeps rows and
/// CIEs warm. It is large (about 300 bytes per row slot plus gimli's context):
/// keep it in a static or a box, not on a small stack.
pub struct Walker<'a, const ROWS: usize = 256> {
    tag: Tag,
    rows: RowCache<ROWS>,
    cies: CieCache<'a>,
    ctx: UnwindContext<usize, CtxStore>,
    /// Maximum number of frames a walk produces.
    pub max_depth: usize,
    /// Whether to use the row cache (off: every step does the full lookup).
    pub use_row_cache: bool,
    /// Cache counters.
    pub stats: Stats,
}

impl<const ROWS: usize> Default for Walker<'_, ROWS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a, const ROWS: usize> Walker<'a, ROWS> {
    /// A walker with empty caches.
    pub fn new() -> Self {
        Walker {
            tag: Tag(None),
            rows: RowCache::new(),
            cies: CieCache::new(),
            ctx: UnwindContext::new_in(),
            max_depth: DEFAULT_MAX_DEPTH,
            use_row_cache: true,
            stats: Stats::default(),
        }
    }

    /// Empties the caches.
    pub fn clear(&mut self) {
        self.rows.clear();
        self.cies.clear();
        self.tag = Tag(None);
    }

    /// Walks from `regs`, calling `visit` for each frame until it returns
    /// `false` or the walk ends. Returns why it ended.
    pub fn walk<M, F>(&mut self, image: &Image<'a>, regs: Regs, mem: &M, mut visit: F) -> Stop
    where
        M: Memory + ?Sized,
        F: FnMut(&Frame) -> bool,
    {
        let mut st = WalkState::new(regs);
        // Each step either increases the depth or ends the walk.
        loop {
            match self.step(image, &mut st, mem) {
                Ok(frame) => {
                    if !visit(&frame) {
                        return Stop::Visitor;
                    }
                }
                Err(stop) => return stop,
            }
        }
    }

    /// Walks into `out`; returns the number of frames written and why the walk
    /// ended (`DepthLimit` if `out` filled up first).
    pub fn walk_into<M>(
        &mut self,
        image: &Image<'a>,
        regs: Regs,
        mem: &M,
        out: &mut [Frame],
    ) -> (usize, Stop)
    where
        M: Memory + ?Sized,
    {
        let mut n = 0;
        let stop = self.walk(image, regs, mem, |f| match out.get_mut(n) {
            Some(slot) => {
                *slot = *f;
                n += 1;
                n < out.len()
            }
            None => false,
        });
        let stop = if stop == Stop::Visitor {
            Stop::DepthLimit
        } else {
            stop
        };
        (n, stop)
    }

    /// One step: the next frame, or why there is none. After an `Err`, every
    /// further call returns the same `Err`.
    pub fn step<M>(&mut self, image: &Image<'a>, st: &mut WalkState, mem: &M) -> Result<Frame, Stop>
    where
        M: Memory + ?Sized,
    {
        if let Some(stop) = st.done {
            return Err(stop);
        }
        let r = self.step_inner(image, st, mem);
        if let Err(stop) = r {
            st.done = Some(stop);
        }
        r
    }

    fn step_inner<M>(
        &mut self,
        image: &Image<'a>,
        st: &mut WalkState,
        mem: &M,
    ) -> Result<Frame, Stop>
    where
        M: Memory + ?Sized,
    {
        if st.depth >= self.max_depth {
            return Err(Stop::DepthLimit);
        }
        let pc = st.regs.pc().ok_or(Stop::Outermost)?;
        let lookup = if st.exact {
            pc
        } else {
            pc.checked_sub(1).ok_or(Stop::NoFde { pc })?
        };
        let row = self.row_for(image, lookup, pc)?;
        let cfa = cfa(image, &row, &st.regs, mem)?;
        if let Some((prev, prev_signal)) = st.prev
            && cfa <= prev
            && !prev_signal
            && !row.signal
        {
            return Err(Stop::CfaNotIncreasing { cfa, prev });
        }
        let frame = Frame {
            pc,
            cfa,
            regs: st.regs,
            signal: row.signal,
            exact_pc: st.exact,
        };
        match caller(image, &row, cfa, &st.regs, mem) {
            Ok(regs) => {
                st.regs = regs;
                st.exact = row.signal;
                st.prev = Some((cfa, row.signal));
            }
            Err(stop) => st.done = Some(stop),
        }
        st.depth += 1;
        Ok(frame)
    }

    /// The row for `lookup`, from the cache or computed and cached.
    fn row_for(&mut self, image: &Image<'a>, lookup: u64, pc: u64) -> Result<Row, Stop> {
        if self.tag.0 != Some(image.id) {
            self.clear();
            self.tag = Tag(Some(image.id));
        }
        if self.use_row_cache
            && let Some(row) = self.rows.get(lookup)
        {
            self.stats.hits = self.stats.hits.wrapping_add(1);
            return Ok(*row);
        }
        self.stats.misses = self.stats.misses.wrapping_add(1);
        let cies = &mut self.cies;
        let fde = image
            .find_fde(lookup, |s, b, o| cies.get(s, b, o))
            .map_err(|e| match e {
                gimli::Error::NoUnwindInfoForAddress => Stop::NoFde { pc },
                e => Stop::BadCfi(e),
            })?;
        let ra = fde.cie().return_address_register().0;
        if usize::from(ra) >= NUM_REGS {
            return Err(Stop::UnsupportedRule);
        }
        let signal = fde.is_signal_trampoline();
        let grow = fde
            .unwind_info_for_address(&image.eh_frame, &image.bases, &mut self.ctx, lookup)
            .map_err(|e| match e {
                gimli::Error::NoUnwindInfoForAddress => Stop::NoFde { pc },
                e => Stop::BadCfi(e),
            })?;
        let row = Row::from_gimli(grow, ra, signal).ok_or(Stop::UnsupportedRule)?;
        if self.use_row_cache {
            self.rows.put(lookup, row);
        }
        Ok(row)
    }
}

fn expr_stop(e: ExprError) -> Stop {
    match e {
        ExprError::Unreadable(addr) => Stop::Unreadable { addr },
        ExprError::UnknownRegister(reg) => Stop::UnknownRegister { reg },
        e => Stop::Expression(e),
    }
}

/// Frame N's CFA from its registers.
fn cfa<M: Memory + ?Sized>(
    image: &Image<'_>,
    row: &Row,
    regs: &Regs,
    mem: &M,
) -> Result<u64, Stop> {
    match row.cfa {
        Cfa::RegOffset(reg, off) => {
            let base = regs.get(reg).ok_or(Stop::UnknownRegister { reg })?;
            Ok(base.wrapping_add(off as u64))
        }
        Cfa::Expr(e) => expr::evaluate(&image.eh_frame, e, regs, mem, None).map_err(expr_stop),
    }
}

/// The value of register `r` in the caller, by `rule`.
fn recover<M: Memory + ?Sized>(
    image: &Image<'_>,
    r: u16,
    rule: Rule,
    cfa: u64,
    regs: &Regs,
    mem: &M,
) -> Result<Option<u64>, Stop> {
    let read = |addr: u64| mem.read_u64(addr).ok_or(Stop::Unreadable { addr });
    Ok(match rule {
        Rule::Unspecified if r == dwarf::RSP => Some(cfa),
        Rule::Unspecified if callee_saved(r) => regs.get(r),
        Rule::Unspecified | Rule::Undefined => None,
        Rule::SameValue => regs.get(r),
        Rule::Offset(n) => Some(read(cfa.wrapping_add(n as u64))?),
        Rule::ValOffset(n) => Some(cfa.wrapping_add(n as u64)),
        Rule::Register(x) => Some(regs.get(x).ok_or(Stop::UnknownRegister { reg: x })?),
        Rule::Expr(e) => {
            let addr =
                expr::evaluate(&image.eh_frame, e, regs, mem, Some(cfa)).map_err(expr_stop)?;
            Some(read(addr)?)
        }
        Rule::ValExpr(e) => {
            Some(expr::evaluate(&image.eh_frame, e, regs, mem, Some(cfa)).map_err(expr_stop)?)
        }
        Rule::Constant(c) => Some(c),
        Rule::Unsupported => return Err(Stop::UnsupportedRule),
    })
}

/// Frame N+1's registers. The return address and an explicit rsp rule must
/// succeed; any other register that cannot be recovered becomes unknown.
fn caller<M: Memory + ?Sized>(
    image: &Image<'_>,
    row: &Row,
    cfa: u64,
    regs: &Regs,
    mem: &M,
) -> Result<Regs, Stop> {
    let mut out = Regs::new();
    for r in 0..NUM_REGS as u16 {
        if r == row.ra || r == dwarf::RIP {
            continue;
        }
        let rule = row.rule(r);
        let v = match recover(image, r, rule, cfa, regs, mem) {
            Ok(v) => v,
            Err(stop) if r == dwarf::RSP && rule != Rule::Unspecified => return Err(stop),
            Err(_) => None,
        };
        out.set(r, v);
    }
    let ra = match row.rule(row.ra) {
        Rule::Unspecified | Rule::Undefined => return Err(Stop::Outermost),
        rule => recover(image, row.ra, rule, cfa, regs, mem)?,
    };
    match ra {
        None | Some(0) => Err(Stop::Outermost),
        Some(pc) => {
            out.set(dwarf::RIP, Some(pc));
            Ok(out)
        }
    }
}
