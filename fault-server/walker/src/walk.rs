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

use crate::cache::{CieCache, RowCache, RowRef, Tag};
use crate::expr::{self, ExprError};
use crate::image::Image;
use crate::lazy::{Found, LazyRows, LazyStats};
use crate::memory::Memory;
use crate::regs::{NUM_REGS, Regs, callee_saved, dwarf};
use crate::row::{Cfa, F_OUTERMOST, F_RSP_CFA, F_SIGNAL, FastRow, Row, Rule};

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

/// Where a walk is, between two steps — or where one may resume.
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
        WalkState { regs, exact: true, prev: None, depth: 0, done: None }
    }

    /// A walk resuming at `frame`, a frame a visitor was shown: walking
    /// from here shows `frame` again, then its callers, exactly as the walk
    /// that showed it would have gone on (see [`Walker::walk_from`]). The
    /// check of `frame`'s CFA against its callee's is not repeated: it
    /// passed when `frame` was shown.
    pub fn at(frame: &Frame) -> Self {
        WalkState { regs: frame.regs, exact: frame.exact_pc, prev: None, depth: 0, done: None }
    }

    /// The registers of the frame the walk is at (for a state made by
    /// [`WalkState::at`]: that frame's, its `rsp` the stack pointer it had
    /// at its call — its callee's CFA).
    pub fn regs(&self) -> &Regs {
        &self.regs
    }

    /// Frames produced so far.
    pub fn depth(&self) -> usize {
        self.depth
    }
}

/// Counters for benchmarks and tuning.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Steps served by the row memo (counted as the steps that did not
    /// take the slow path, so a step that ended before any lookup — no pc
    /// — counts too).
    pub hits: u64,
    /// Row-memo misses (the lazily compiled rows, else an FDE lookup and a
    /// CFI run).
    pub misses: u64,
    /// The lazily compiled rows (`FDES` > 0): FDEs compiled, flushes.
    pub lazy: LazyStats,
}

/// A stack walker with its caches. `ROWS` is the number of row-memo slots
/// (a power of two is fastest); `FDES` and `FDE_ROWS` size the lazily
/// compiled rows behind the memo ([`crate::lazy`]: up to `FDES` FDEs and
/// `FDE_ROWS` rows in all; 0 for none: a memo miss then runs gimli for
/// the pc).
///
/// Reuse one `Walker` for all walks of an image: that is what keeps rows and
/// CIEs warm. Its size is 32 bytes per memo slot, 24 per FDE and 32 per
/// compiled row, plus about 2.5 KB (parsed CIEs, a few general rows);
/// building one is a `memcpy` of its empty state (`new` is a `const fn`).
/// A miss that runs gimli also needs about 3.3 KB of stack for gimli's CFI
/// context.
#[repr(C)]
pub struct Walker<'a, const ROWS: usize = 256, const FDES: usize = 0, const FDE_ROWS: usize = 0> {
    /// First (`repr(C)`): the hot path addresses its slots from the
    /// walker's address.
    rows: RowCache<ROWS>,
    tag: Tag,
    cies: CieCache<'a>,
    lazy: LazyRows<FDES, FDE_ROWS>,
    /// The memo holds rows (emptied before a walk without it).
    memo_used: bool,
    /// Steps that took the slow path (the others were memo hits).
    slow: u64,
    /// Maximum number of frames a walk produces.
    pub max_depth: usize,
    /// Whether to use the row memo and the compiled rows (off: every step
    /// does the full lookup and applies the general row, never a
    /// precompiled one).
    pub use_row_cache: bool,
    /// Cache counters.
    pub stats: Stats,
}

impl<const ROWS: usize, const FDES: usize, const FDE_ROWS: usize> Default for Walker<'_, ROWS, FDES, FDE_ROWS> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a, const ROWS: usize, const FDES: usize, const FDE_ROWS: usize> Walker<'a, ROWS, FDES, FDE_ROWS> {
    /// A walker with empty caches.
    pub const fn new() -> Self {
        Walker {
            rows: RowCache::new(),
            tag: Tag(None),
            cies: CieCache::new(),
            lazy: LazyRows::new(),
            memo_used: false,
            slow: 0,
            max_depth: DEFAULT_MAX_DEPTH,
            use_row_cache: true,
            stats: Stats { hits: 0, misses: 0, lazy: LazyStats { compiled: 0, flushes: 0, truncated: 0 } },
        }
    }

    /// Empties the caches.
    pub fn clear(&mut self) {
        self.rows.clear();
        self.cies.clear();
        self.lazy.clear();
        self.memo_used = false;
        self.tag = Tag(None);
    }

    /// Walks from `regs`, calling `visit` for each frame until it returns
    /// `false` or the walk ends. Returns why it ended.
    ///
    /// The visitor sees frame N before frame N+1 is computed: the walk keeps
    /// one [`Frame`] and turns it into its caller in place.
    pub fn walk<M, F>(&mut self, image: &Image<'a>, regs: Regs, mem: &M, visit: F) -> Stop
    where
        M: Memory + ?Sized,
        F: FnMut(&Frame) -> bool,
    {
        self.bind(image);
        let max = self.max_depth;
        walk_with(self, image, Start::new(regs), max, mem, visit)
    }

    /// Walks from `from` ([`WalkState::at`]: a frame an earlier walk
    /// showed), calling `visit` for that frame and each of its callers, at
    /// most [`Self::max_depth`] frames; returns why it ended. The frames and
    /// the end are those the earlier walk would have shown and ended with
    /// had it gone on (the depth limit counts from `from`).
    pub fn walk_from<M, F>(&mut self, image: &Image<'a>, from: &WalkState, mem: &M, visit: F) -> Stop
    where
        M: Memory + ?Sized,
        F: FnMut(&Frame) -> bool,
    {
        self.bind(image);
        let max = self.max_depth;
        let start = Start { regs: from.regs, exact: from.exact, prev: from.prev.unwrap_or((0, true)) };
        walk_with(self, image, start, max, mem, visit)
    }

    /// Walks from `regs` to the first frame whose CFA is at least
    /// `at_least` (a checkpoint scope's saved stack pointer: that frame is
    /// the scope's), writing `(pc, exact_pc)` of the frames before it into
    /// `record` (as many as fit). Returns that frame's index, pc, exact
    /// flag and CFA and where a walk may resume at it
    /// ([`Self::walk_from`]), or why the walk ended first. The same walk as
    /// [`Self::walk_until`] with `|f| f.cfa >= at_least`, made for the
    /// fault server's recovery path: no visitor state outside the loop.
    pub fn walk_to_cfa<M>(
        &mut self,
        image: &Image<'a>,
        regs: Regs,
        mem: &M,
        at_least: u64,
        record: &mut [(u64, bool)],
    ) -> Result<(usize, u64, bool, u64, WalkState), Stop>
    where
        M: Memory + ?Sized,
    {
        self.bind(image);
        // The first frame has no callee: nothing to compare its CFA with.
        let mut cur = Frame { pc: 0, cfa: 0, regs, signal: true, exact_pc: true };
        let slow = self.slow;
        let mut n = 0usize;
        let mut stop = Stop::DepthLimit;
        let mut visit = |f: &Frame| f.cfa < at_least;
        // Frame `n` is the walk's `n`-th step; a step that succeeded leaves
        // the frame's pc in `cur.pc` (it turned only the registers into
        // the caller's).
        while n < self.max_depth {
            let exact = cur.exact_pc;
            if let Err(s) = step_in_place(self, image, &mut cur, mem, &mut visit) {
                stop = s;
                break;
            }
            if let Some(slot) = record.get_mut(n) {
                *slot = (cur.pc, exact);
            }
            n += 1;
        }
        // Steps: `n` that went on, and the one that ended the walk.
        let steps = n as u64 + u64::from(stop != Stop::DepthLimit);
        self.stats.hits = self.stats.hits.wrapping_add(steps.wrapping_sub(self.slow.wrapping_sub(slow)));
        if stop != Stop::Visitor {
            return Err(stop);
        }
        // The visitor refused `cur`: it is the frame, not yet unwound.
        let resume = WalkState::at(&cur);
        Ok((n, cur.pc, cur.exact_pc, cur.cfa, resume))
    }

    /// Walks until `until` holds for a frame, and returns that frame and
    /// its index (0 = the first frame), or why the walk ended first.
    pub fn walk_until<M, F>(&mut self, image: &Image<'a>, regs: Regs, mem: &M, until: F) -> Result<(usize, Frame), Stop>
    where
        M: Memory + ?Sized,
        F: FnMut(&Frame) -> bool,
    {
        self.bind(image);
        let max = self.max_depth;
        until_with(self, image, regs, max, mem, until)
    }

    /// Walks into `out`; returns the number of frames written and why the walk
    /// ended (`DepthLimit` if `out` filled up first).
    pub fn walk_into<M>(&mut self, image: &Image<'a>, regs: Regs, mem: &M, out: &mut [Frame]) -> (usize, Stop)
    where
        M: Memory + ?Sized,
    {
        self.bind(image);
        let max = self.max_depth;
        into_with(self, image, regs, max, mem, out)
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
        if st.depth >= self.max_depth {
            st.done = Some(Stop::DepthLimit);
            return Err(Stop::DepthLimit);
        }
        self.bind(image);
        let (cfa, signal) = st.prev.unwrap_or((0, true));
        let mut cur = Frame { pc: 0, cfa, regs: st.regs, signal, exact_pc: st.exact };
        let mut seen = None;
        let slow = self.slow;
        let res = step_in_place(self, image, &mut cur, mem, &mut |f: &Frame| {
            seen = Some(*f);
            true
        });
        self.stats.hits = self.stats.hits.wrapping_add(u64::from(self.slow == slow));
        let Some(frame) = seen else {
            let stop = res.err().unwrap_or(Stop::UnsupportedRule);
            st.done = Some(stop);
            return Err(stop);
        };
        match res {
            Ok(()) => {
                st.regs = cur.regs;
                st.exact = cur.exact_pc;
                st.prev = Some((cur.cfa, cur.signal));
            }
            Err(stop) => st.done = Some(stop),
        }
        st.depth += 1;
        Ok(frame)
    }

    /// Empties the caches if they were filled from another image (and the
    /// memo if this walk does without it).
    #[inline]
    fn bind(&mut self, image: &Image<'a>) {
        if self.tag.0 != Some(image.id) {
            self.clear();
            self.tag = Tag(Some(image.id));
        }
        if !self.use_row_cache && self.memo_used {
            self.rows.clear();
            self.memo_used = false;
        }
    }

    /// The row for `lookup` when the memo's home slot did not give a
    /// usable one: the memo's other slot or a general row, else a miss.
    /// The caches must be bound to `image`.
    #[inline(always)]
    fn row_for(&mut self, image: &Image<'a>, lookup: u64, pc: u64) -> Result<RowRef<'_>, Stop> {
        if self.use_row_cache
            && let Some(hit) = self.rows.probe(lookup)
        {
            self.stats.hits = self.stats.hits.wrapping_add(1);
            // `fetch` cannot fail after a hit.
            return self.rows.fetch(hit).ok_or(Stop::UnsupportedRule);
        }
        self.miss(image, lookup, pc)
    }

    /// A memo miss: the lazily compiled rows, else an FDE lookup and a CFI
    /// run; the row is memoized.
    #[inline(never)]
    fn miss(&mut self, image: &Image<'a>, lookup: u64, pc: u64) -> Result<RowRef<'_>, Stop> {
        self.stats.misses = self.stats.misses.wrapping_add(1);
        let cies = &mut self.cies;
        let use_fast = self.use_row_cache && ROWS > 0;
        if use_fast && LazyRows::<FDES, FDE_ROWS>::ENABLED {
            let found = self.lazy.get(image, lookup, pc, &mut |s, b, o| cies.get(s, b, o));
            self.stats.lazy = self.lazy.stats;
            if let Found::Fast(fast) = found? {
                self.memo_used = true;
                if let Some(hit) = self.rows.put_fast(lookup, fast) {
                    return self.rows.fetch(hit).ok_or(Stop::UnsupportedRule);
                }
                return Err(Stop::UnsupportedRule);
            }
        }
        let found = compute_row(image, lookup, pc, use_fast, |s, b, o| cies.get(s, b, o))?;
        // The common shape goes straight into the memo as a `FastRow`;
        // anything else (or no memo) becomes a general `Row`.
        let row = match found {
            Computed::Fast(fast) => {
                self.memo_used = true;
                if let Some(hit) = self.rows.put_fast(lookup, fast) {
                    return self.rows.fetch(hit).ok_or(Stop::UnsupportedRule);
                }
                return Err(Stop::UnsupportedRule);
            }
            Computed::Full(row) => row,
        };
        if use_fast {
            self.memo_used = true;
            let hit = self.rows.put_big(lookup, &row);
            if hit.is_some() {
                return hit.and_then(|h| self.rows.fetch(h)).ok_or(Stop::UnsupportedRule);
            }
        }
        Ok(RowRef::Full(self.rows.put_uncached(&row)))
    }
}

impl<'a, const ROWS: usize, const FDES: usize, const FDE_ROWS: usize> RowSource<'a>
    for Walker<'a, ROWS, FDES, FDE_ROWS>
{
    #[inline(always)]
    fn fast(&self, lookup: u64) -> Option<&FastRow> {
        self.rows.fast(lookup)
    }

    #[inline(always)]
    fn slow_steps(&self) -> u64 {
        self.slow
    }

    #[inline(always)]
    fn hits(&mut self, n: u64) {
        self.stats.hits = self.stats.hits.wrapping_add(n);
    }

    #[inline(always)]
    fn row(&mut self, image: &Image<'a>, lookup: u64, pc: u64) -> Result<RowRef<'_>, Stop> {
        self.slow = self.slow.wrapping_add(1);
        self.row_for(image, lookup, pc)
    }
}

/// A row computed from the CFI by gimli.
#[allow(clippy::large_enum_variant)] // returned once per miss, never stored
pub(crate) enum Computed {
    /// The common shape.
    Fast(FastRow),
    /// Any other.
    Full(Row),
}

/// The unwind row for `lookup` (frame pc `pc`), computed by gimli: FDE
/// lookup (CIEs through `get_cie`), CFI run, conversion to a [`FastRow`]
/// when `fast` and the row has the common shape, else to a general [`Row`].
pub(crate) fn compute_row<'a, C>(
    image: &Image<'a>,
    lookup: u64,
    pc: u64,
    fast: bool,
    get_cie: C,
) -> Result<Computed, Stop>
where
    C: FnMut(
        &gimli::EhFrame<crate::table::Reader<'a>>,
        &gimli::BaseAddresses,
        gimli::EhFrameOffset,
    ) -> Result<gimli::CommonInformationEntry<crate::table::Reader<'a>>, gimli::Error>,
{
    let fde = image.find_fde(lookup, get_cie).map_err(|e| match e {
        gimli::Error::NoUnwindInfoForAddress => Stop::NoFde { pc },
        e => Stop::BadCfi(e),
    })?;
    let ra = fde.cie().return_address_register().0;
    if usize::from(ra) >= NUM_REGS {
        return Err(Stop::UnsupportedRule);
    }
    let signal = fde.is_signal_trampoline();
    // gimli's CFI context keeps nothing between lookups (it is reset for
    // every FDE), so it lives on the stack only while needed.
    let mut ctx = UnwindContext::<usize, CtxStore>::new_in();
    let grow = fde.unwind_info_for_address(&image.eh_frame, &image.bases, &mut ctx, lookup).map_err(|e| match e {
        gimli::Error::NoUnwindInfoForAddress => Stop::NoFde { pc },
        e => Stop::BadCfi(e),
    })?;
    if fast && let Some(f) = FastRow::from_gimli(grow, ra, signal) {
        return Ok(Computed::Fast(f));
    }
    Row::from_gimli(grow, ra, signal).map(Computed::Full).ok_or(Stop::UnsupportedRule)
}

/// Where a walk gets the unwind row of a pc: the [`Walker`]'s caches or a
/// precompiled [`crate::RowTable`].
pub(crate) trait RowSource<'a> {
    /// The hot path: a `FastRow` for `lookup` if one is at hand without any
    /// work. It may be a placeholder whose CFA register is not a register
    /// (the walk then takes [`Self::row`]).
    fn fast(&self, lookup: u64) -> Option<&FastRow>;
    /// Steps that took [`Self::row`] so far (a counter).
    fn slow_steps(&self) -> u64;
    /// Counts `n` uses of what [`Self::fast`] gave.
    fn hits(&mut self, n: u64);
    /// The row for `lookup` (the frame's pc is `pc`), by any means.
    fn row(&mut self, image: &Image<'a>, lookup: u64, pc: u64) -> Result<RowRef<'_>, Stop>;
}

/// Where a walk starts: registers, whether the pc is exact, and the
/// callee's (CFA, signal) — `(0, true)` for a first frame.
#[derive(Clone, Copy)]
pub(crate) struct Start {
    pub(crate) regs: Regs,
    pub(crate) exact: bool,
    pub(crate) prev: (u64, bool),
}

impl Start {
    /// A walk from the registers at a fault.
    pub(crate) fn new(regs: Regs) -> Start {
        // The first frame has no callee: nothing to compare its CFA with.
        Start { regs, exact: true, prev: (0, true) }
    }
}

/// One frame: fills in `cur`'s pc, CFA and signal flag from its registers,
/// hands it to `visit`, then turns `cur` into its caller in place (unless
/// the walk ends there). On entry `cur.cfa` and `cur.signal` are the
/// callee's — `(0, true)` for the first frame: nothing to compare with —
/// and they become `cur`'s own before `visit` sees it.
///
/// The hot path — a memoized `FastRow` whose CFA register is known — is
/// inline; everything else is [`step_slow`], out of line (and counted by
/// the source: the walk loops count the hot path's hits as the steps
/// that did not take it).
#[inline(always)]
pub(crate) fn step_in_place<'a, S, M, F>(
    src: &mut S,
    image: &Image<'a>,
    cur: &mut Frame,
    mem: &M,
    visit: &mut F,
) -> Result<(), Stop>
where
    S: RowSource<'a> + ?Sized,
    M: Memory + ?Sized,
    F: FnMut(&Frame) -> bool,
{
    if cur.regs.known & (1 << dwarf::RIP) == 0 {
        return Err(Stop::Outermost);
    }
    let pc = cur.regs.vals[usize::from(dwarf::RIP)];
    let lookup = if cur.exact_pc { pc } else { pc.checked_sub(1).ok_or(Stop::NoFde { pc })? };
    cur.pc = pc;
    if let Some(row) = src.fast(lookup) {
        let reg = usize::from(row.cfa_reg);
        if let Some(&base) = cur.regs.vals.get(reg)
            && cur.regs.known & (1 << reg) != 0
        {
            return fast_step(row, base, cur, mem, visit);
        }
    }
    step_slow(src, image, cur, mem, visit, lookup, pc)
}

/// [`step_in_place`] by a `FastRow` whose CFA register holds `base`.
#[inline(always)]
fn fast_step<M, F>(row: &FastRow, base: u64, cur: &mut Frame, mem: &M, visit: &mut F) -> Result<(), Stop>
where
    M: Memory + ?Sized,
    F: FnMut(&Frame) -> bool,
{
    let cfa = base.wrapping_add(i64::from(row.cfa_off) as u64);
    let signal = row.flags & F_SIGNAL != 0;
    increasing((cur.cfa, cur.signal), cfa, signal)?;
    cur.cfa = cfa;
    cur.signal = signal;
    if !visit(cur) {
        return Err(Stop::Visitor);
    }
    apply_fast(row, cfa, &mut cur.regs, mem)?;
    cur.exact_pc = signal;
    Ok(())
}

/// [`step_in_place`] through the row source's slow path.
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn step_slow<'a, S, M, F>(
    src: &mut S,
    image: &Image<'a>,
    cur: &mut Frame,
    mem: &M,
    visit: &mut F,
    lookup: u64,
    pc: u64,
) -> Result<(), Stop>
where
    S: RowSource<'a> + ?Sized,
    M: Memory + ?Sized,
    F: FnMut(&Frame) -> bool,
{
    match src.row(image, lookup, pc)? {
        RowRef::Fast(row) => {
            let reg = usize::from(row.cfa_reg);
            let base = match cur.regs.vals.get(reg) {
                Some(v) if cur.regs.known & (1 << reg) != 0 => *v,
                _ => return Err(Stop::UnknownRegister { reg: u16::from(row.cfa_reg) }),
            };
            let row = *row;
            fast_step(&row, base, cur, mem, visit)
        }
        RowRef::Full(row) => {
            let cfa = cfa(image, row, &cur.regs, mem)?;
            increasing((cur.cfa, cur.signal), cfa, row.signal)?;
            cur.cfa = cfa;
            cur.signal = row.signal;
            if !visit(cur) {
                return Err(Stop::Visitor);
            }
            let callee = cur.regs;
            caller(image, row, cfa, &callee, &mut cur.regs, mem)?;
            cur.exact_pc = row.signal;
            Ok(())
        }
    }
}

/// The walk loop shared by [`Walker::walk`] and [`crate::RowTable::walk`].
#[inline(always)]
pub(crate) fn walk_with<'a, S, M, F>(
    src: &mut S,
    image: &Image<'a>,
    start: Start,
    max_depth: usize,
    mem: &M,
    mut visit: F,
) -> Stop
where
    S: RowSource<'a> + ?Sized,
    M: Memory + ?Sized,
    F: FnMut(&Frame) -> bool,
{
    let (cfa, signal) = start.prev;
    let mut cur = Frame { pc: 0, cfa, regs: start.regs, signal, exact_pc: start.exact };
    let slow = src.slow_steps();
    let mut steps = 0u64;
    let mut stop = Stop::DepthLimit;
    // Each iteration either produces a frame or ends the walk.
    while steps < max_depth as u64 {
        steps += 1;
        if let Err(s) = step_in_place(src, image, &mut cur, mem, &mut visit) {
            stop = s;
            break;
        }
    }
    let hits = steps.wrapping_sub(src.slow_steps().wrapping_sub(slow));
    src.hits(hits);
    stop
}

/// [`Walker::walk_until`] for any row source.
#[inline(always)]
pub(crate) fn until_with<'a, S, M, F>(
    src: &mut S,
    image: &Image<'a>,
    regs: Regs,
    max_depth: usize,
    mem: &M,
    mut until: F,
) -> Result<(usize, Frame), Stop>
where
    S: RowSource<'a> + ?Sized,
    M: Memory + ?Sized,
    F: FnMut(&Frame) -> bool,
{
    let mut n = 0usize;
    let mut found: Option<Frame> = None;
    let stop = walk_with(src, image, Start::new(regs), max_depth, mem, |f| {
        if until(f) {
            found = Some(*f);
            return false;
        }
        n += 1;
        true
    });
    match found {
        Some(f) => Ok((n, f)),
        None => Err(stop),
    }
}

/// [`Walker::walk_into`] for any row source.
#[inline(always)]
pub(crate) fn into_with<'a, S, M>(
    src: &mut S,
    image: &Image<'a>,
    regs: Regs,
    max_depth: usize,
    mem: &M,
    out: &mut [Frame],
) -> (usize, Stop)
where
    S: RowSource<'a> + ?Sized,
    M: Memory + ?Sized,
{
    let mut n = 0;
    let stop = walk_with(src, image, Start::new(regs), max_depth, mem, |f| match out.get_mut(n) {
        Some(slot) => {
            *slot = *f;
            n += 1;
            n < out.len()
        }
        None => false,
    });
    let stop = if stop == Stop::Visitor { Stop::DepthLimit } else { stop };
    (n, stop)
}

/// Stacks grow: a CFA not above the previous one ends the walk, except next
/// to a signal frame.
#[inline]
fn increasing(prev: (u64, bool), cfa: u64, signal: bool) -> Result<(), Stop> {
    let (prev, prev_signal) = prev;
    if cfa <= prev && !prev_signal && !signal {
        return Err(Stop::CfaNotIncreasing { cfa, prev });
    }
    Ok(())
}

fn expr_stop(e: ExprError) -> Stop {
    match e {
        ExprError::Unreadable(addr) => Stop::Unreadable { addr },
        ExprError::UnknownRegister(reg) => Stop::UnknownRegister { reg },
        e => Stop::Expression(e),
    }
}

/// Frame N+1's registers by a [`FastRow`], in place over frame N's:
/// exactly what [`caller`] computes for the general `Row` of the same gimli
/// row. Unmentioned callee-saved registers (and same-value ones) are kept,
/// rsp is the CFA, the saved registers are loaded (an unreadable one becomes
/// unknown), the return address must be readable and not 0. Nothing is
/// changed when it fails. Only memory is read after the CFA is known, so
/// updating in place is safe.
#[inline(always)]
fn apply_fast<M: Memory + ?Sized>(row: &FastRow, cfa: u64, regs: &mut Regs, mem: &M) -> Result<(), Stop> {
    if row.flags & F_OUTERMOST != 0 {
        return Err(Stop::Outermost);
    }
    let addr = cfa.wrapping_add((i64::from(row.ra_off) * 8) as u64);
    let ra = match mem.read_u64_fast(addr) {
        Some(v) => v,
        None => mem.read_u64(addr).ok_or(Stop::Unreadable { addr })?,
    };
    if ra == 0 {
        return Err(Stop::Outermost);
    }
    let mut known = regs.known & u32::from(row.keep);
    if row.flags & F_RSP_CFA != 0 {
        regs.vals[usize::from(dwarf::RSP)] = cfa;
        known |= 1 << dwarf::RSP;
    }
    let mut saved = row.saved;
    for &off in &row.saved_off {
        if saved == 0 {
            break;
        }
        // Registers 0..=15 only.
        let r = saved.trailing_zeros() as usize & 15;
        saved &= saved - 1;
        let addr = cfa.wrapping_add((i64::from(off) * 8) as u64);
        // The fast read, else the full one (written out twice so the hot
        // path tests one `Option`, not a merge of two).
        match mem.read_u64_fast(addr) {
            Some(v) => {
                regs.vals[r] = v;
                known |= 1 << r;
            }
            None => {
                if let Some(v) = mem.read_u64(addr) {
                    regs.vals[r] = v;
                    known |= 1 << r;
                }
            }
        }
    }
    regs.vals[usize::from(dwarf::RIP)] = ra;
    regs.known = known | 1 << dwarf::RIP;
    Ok(())
}

/// Frame N's CFA from its registers.
fn cfa<M: Memory + ?Sized>(image: &Image<'_>, row: &Row, regs: &Regs, mem: &M) -> Result<u64, Stop> {
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
            let addr = expr::evaluate(&image.eh_frame, e, regs, mem, Some(cfa)).map_err(expr_stop)?;
            Some(read(addr)?)
        }
        Rule::ValExpr(e) => Some(expr::evaluate(&image.eh_frame, e, regs, mem, Some(cfa)).map_err(expr_stop)?),
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
    out: &mut Regs,
    mem: &M,
) -> Result<(), Stop> {
    *out = Regs::new();
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
            Ok(())
        }
    }
}
