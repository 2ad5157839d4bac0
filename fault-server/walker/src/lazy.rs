//! Unwind rows compiled lazily, one FDE at a time, and kept per image.
//!
//! Design note: a memo miss used to run gimli for the one pc that missed
//! (FDE and CIE parsing, the CFI program up to the pc: ~2k instructions),
//! and the next miss in the same function ran it all again. Compiling every
//! FDE of an image up front ([`crate::RowTable`]) removes that but costs
//! time proportional to the whole image (~445k guest instructions for a
//! task image) before the first walk. [`LazyRows`] sits in between: the
//! first time a pc falls into an FDE not compiled yet, that FDE's CFI
//! program is run once to its end and each of its rows becomes a
//! [`FastRow`] at its start address (cost proportional to that FDE); later
//! misses anywhere in that function are two binary searches and a copy.
//! The [`crate::Walker`] keeps one, bound to its image like its other
//! caches, behind its memo.
//!
//! Storage is fixed (`F` compiled FDEs, `R` rows, no allocation), so the
//! kernel could use it too. When a new FDE does not fit, the whole cache is
//! emptied and refilled from that FDE on (the cheapest policy that is
//! bounded; with the server's sizes a task image's hot functions fit many
//! times over). An FDE with more rows than `R` keeps its first `R - 1`
//! rows; the rest of its range is left to gimli.
//!
//! What rows cannot express falls back to the gimli interpreter, per pc,
//! exactly as before: rows of another shape than a `FastRow`
//! (expressions, register rules, explicit rsp rules), pcs of the FDE no
//! row of gimli's contains, the pcs after a CFI error, and images whose
//! FDE lookup a cached range cannot mirror (no search table, or an
//! `.eh_frame_hdr` table that is not sorted: its binary search then gives
//! no stable ranges). A cached range is exactly the set of pcs for which
//! the image's lookup returns that FDE and the FDE contains them (see
//! [`Image::find_fde_range`]), and within it a pc gets the first of
//! gimli's rows that contains it — the same row `Walker` computes with
//! gimli — so a walk is the same with or without this cache (the
//! synthetic tests, `gdb_compare` and the fuzz target compare them).

use gimli::UnwindContext;

use crate::image::{Image, Index};
use crate::regs::NUM_REGS;
use crate::row::FastRow;
use crate::table::Reader;
use crate::walk::{CtxStore, Stop};

/// `FastRow::cfa_reg` of a row that gimli computes at walk time.
const GIMLI: u8 = crate::cache::NO_REG;

/// A row placeholder: compute with gimli.
const GIMLI_ROW: FastRow = FastRow {
    cfa_off: 0,
    keep: 0,
    saved: 0,
    saved_off: [0; crate::row::MAX_SAVED],
    ra_off: 0,
    cfa_reg: GIMLI,
    flags: 0,
};

/// A compiled FDE: the pcs `lo..hi`, its rows `rows[first..first + len]`.
#[derive(Clone, Copy, Debug, Default)]
struct Range {
    lo: u64,
    hi: u64,
    first: u32,
    len: u32,
}

/// A row from its start address on (until the next row of its FDE).
#[derive(Clone, Copy, Debug)]
struct LazyRow {
    start: u64,
    fast: FastRow,
}

/// What the cache says about a pc.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Found {
    /// The row.
    Fast(FastRow),
    /// Compute it with gimli (see the module note).
    Gimli,
}

/// Counters of a [`LazyRows`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LazyStats {
    /// FDEs compiled.
    pub compiled: u64,
    /// Times the cache was full and emptied.
    pub flushes: u64,
    /// FDEs cut short: more rows than the cache holds.
    pub truncated: u64,
}

/// Lazily compiled rows of up to `F` FDEs and `R` rows (see the module
/// note).
#[derive(Clone, Debug)]
pub(crate) struct LazyRows<const F: usize, const R: usize> {
    /// Compiled FDEs, sorted by `lo`, disjoint.
    ranges: [Range; F],
    nranges: usize,
    rows: [LazyRow; R],
    nrows: usize,
    /// Whether the bound image's lookup can be mirrored (`None`: not
    /// checked yet).
    mirrorable: Option<bool>,
    pub(crate) stats: LazyStats,
}

impl<const F: usize, const R: usize> LazyRows<F, R> {
    /// Whether the cache exists at all (both sizes non-zero).
    pub(crate) const ENABLED: bool = F > 0 && R > 1;

    pub(crate) const fn new() -> Self {
        LazyRows {
            ranges: [Range { lo: 0, hi: 0, first: 0, len: 0 }; F],
            nranges: 0,
            rows: [LazyRow { start: 0, fast: GIMLI_ROW }; R],
            nrows: 0,
            mirrorable: None,
            stats: LazyStats { compiled: 0, flushes: 0, truncated: 0 },
        }
    }

    /// Forgets every row (another image); O(1).
    pub(crate) fn clear(&mut self) {
        self.nranges = 0;
        self.nrows = 0;
        self.mirrorable = None;
    }

    /// The compiled row for `pc`, if its FDE is compiled.
    fn find(&self, pc: u64) -> Option<Found> {
        let ranges = self.ranges.get(..self.nranges)?;
        let i = ranges.partition_point(|r| r.lo <= pc).checked_sub(1)?;
        let r = ranges.get(i)?;
        if pc >= r.hi {
            return None;
        }
        let first = r.first as usize;
        let rows = self.rows.get(first..first + r.len as usize)?;
        let k = rows.partition_point(|row| row.start <= pc).checked_sub(1)?;
        let row = rows.get(k)?;
        Some(if row.fast.cfa_reg == GIMLI { Found::Gimli } else { Found::Fast(row.fast) })
    }

    /// The row for `lookup` (frame pc `pc`): from the cache, or its FDE
    /// compiled now. `Err` is what gimli says for the pc (no FDE, bad CFI),
    /// exactly as an uncached lookup would.
    pub(crate) fn get<'a, C>(&mut self, image: &Image<'a>, lookup: u64, pc: u64, get_cie: &mut C) -> Result<Found, Stop>
    where
        C: FnMut(
            &gimli::EhFrame<Reader<'a>>,
            &gimli::BaseAddresses,
            gimli::EhFrameOffset,
        ) -> Result<gimli::CommonInformationEntry<Reader<'a>>, gimli::Error>,
    {
        if !Self::ENABLED {
            return Ok(Found::Gimli);
        }
        if let Some(found) = self.find(lookup) {
            return Ok(found);
        }
        let mirrorable = *self.mirrorable.get_or_insert_with(|| match &image.index {
            Index::Hdr(t) => t.is_sorted(),
            Index::Table(_) => true,
            #[cfg(feature = "alloc")]
            Index::Owned(_) => true,
            Index::Scan => false,
        });
        if !mirrorable {
            return Ok(Found::Gimli);
        }
        let (fde, lo, hi) = image.find_fde_range(lookup, get_cie).map_err(|e| match e {
            gimli::Error::NoUnwindInfoForAddress => Stop::NoFde { pc },
            e => Stop::BadCfi(e),
        })?;
        if self.nranges >= F {
            self.flush();
        }
        if !self.compile(image, &fde, lo, hi, false) {
            // Full: empty the cache and compile this FDE alone (cut short
            // if even the empty cache cannot hold it).
            if self.nrows > 0 {
                self.flush();
            }
            self.compile(image, &fde, lo, hi, true);
        }
        Ok(self.find(lookup).unwrap_or(Found::Gimli))
    }

    fn flush(&mut self) {
        self.nranges = 0;
        self.nrows = 0;
        self.stats.flushes = self.stats.flushes.wrapping_add(1);
    }

    /// Appends the rows of `fde` for the pcs `lo..hi` (`lo < hi`, inside
    /// the FDE) and inserts its range. Returns `false` (and changes
    /// nothing) if its rows do not fit, unless `truncate`: then the rows
    /// that fit are kept and the rest of the range is left to gimli.
    fn compile(
        &mut self,
        image: &Image<'_>,
        fde: &gimli::FrameDescriptionEntry<Reader<'_>>,
        lo: u64,
        hi: u64,
        truncate: bool,
    ) -> bool {
        if self.nranges >= F {
            return false;
        }
        let first = self.nrows;
        // Room for the rows: all but one slot, kept for a final gimli row
        // when the FDE is cut short.
        let room = R.saturating_sub(first).saturating_sub(1);
        let mut sink = Sink { rows: self.rows.get_mut(first..).unwrap_or(&mut []), n: 0, room, cut: None };
        sink.put(lo, GIMLI_ROW);
        let ra = fde.cie().return_address_register().0;
        let signal = fde.is_signal_trampoline();
        if usize::from(ra) < NUM_REGS {
            // gimli's CFI context keeps nothing between FDEs: on the stack
            // only while compiling (3 KB).
            let mut ctx = UnwindContext::<usize, CtxStore>::new_in();
            let mut cursor = lo;
            if let Ok(mut table) = fde.rows(&image.eh_frame, &image.bases, &mut ctx) {
                // The end, or an error, ends the loop: gimli gives the rest
                // of the FDE (no row found, or the error) at walk time.
                // Every row consumes CFI bytes: bounded by the FDE's size.
                while let Ok(Some(row)) = table.next_row() {
                    // gimli takes the first row containing the pc.
                    let s = row.start_address().max(cursor);
                    let e = row.end_address().min(hi);
                    if s < e {
                        if s > cursor {
                            // No row of gimli's contains these pcs.
                            sink.put(cursor, GIMLI_ROW);
                        }
                        sink.put(s, FastRow::from_gimli(row, ra, signal).unwrap_or(GIMLI_ROW));
                        cursor = e;
                    }
                    if cursor >= hi || sink.cut.is_some() {
                        break;
                    }
                }
            }
            if cursor < hi {
                sink.put(cursor, GIMLI_ROW);
            }
        }
        let (mut n, cut) = (sink.n, sink.cut);
        if let Some(start) = cut {
            if !truncate || n == 0 {
                return false;
            }
            // The pcs from the row that did not fit on go to gimli, in the
            // slot kept for that.
            self.stats.truncated = self.stats.truncated.wrapping_add(1);
            let Some(slot) = self.rows.get_mut(first + n) else { return false };
            *slot = LazyRow { start, fast: GIMLI_ROW };
            n += 1;
        }
        self.nrows = first + n;
        // Insert the range, sorted by `lo` (ranges are disjoint).
        let at = self.ranges.get(..self.nranges).map_or(0, |r| r.partition_point(|r| r.lo < lo));
        self.ranges.copy_within(at..self.nranges, at + 1);
        if let Some(r) = self.ranges.get_mut(at) {
            *r = Range { lo, hi, first: first as u32, len: n as u32 };
        }
        self.nranges += 1;
        self.stats.compiled = self.stats.compiled.wrapping_add(1);
        true
    }
}

/// Where [`LazyRows::compile`] puts the rows of one FDE.
struct Sink<'r> {
    rows: &'r mut [LazyRow],
    /// Rows put.
    n: usize,
    /// Most rows that may be put.
    room: usize,
    /// The start of the first row that did not fit.
    cut: Option<u64>,
}

impl Sink<'_> {
    /// Pcs from `start` on get `fast` (until the next put). Starts come in
    /// ascending order; equal neighbours are merged.
    fn put(&mut self, start: u64, fast: FastRow) {
        if self.cut.is_some() {
            return;
        }
        if let Some(i) = self.n.checked_sub(1)
            && let Some(last) = self.rows.get(i).copied()
        {
            if last.start == start {
                // An empty range before: replaced (then maybe merged).
                if let Some(l) = self.rows.get_mut(i) {
                    l.fast = fast;
                }
                if i > 0 && self.rows.get(i - 1).is_some_and(|p| p.fast == fast) {
                    self.n -= 1;
                }
                return;
            }
            if last.fast == fast {
                return;
            }
        }
        match self.rows.get_mut(self.n) {
            Some(slot) if self.n < self.room => {
                *slot = LazyRow { start, fast };
                self.n += 1;
            }
            _ => self.cut = Some(start),
        }
    }
}
