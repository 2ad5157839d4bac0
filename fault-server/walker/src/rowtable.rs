//! Precompiled unwind rows for a whole image: ORC-style lookup, no gimli on
//! the walk.
//!
//! Design note: the walker's row cache makes a *warm* frame cheap, but a
//! cache is per walker, its misses run gimli (FDE and CIE parsing, the CFI
//! program, ~2k instructions and 3.3 KB of stack), and a cache that must be
//! filled per walk or per fault is a cost on every recovery. Linux's ORC
//! unwinder shows the alternative: compile the CFI once per image into a
//! sorted table of (pc → rule) and binary-search it. [`RowTable::build`]
//! does that from an [`Image`] (once, at image load; it needs the `alloc`
//! feature): it runs every FDE's CFI program to the end and records, for
//! every row, a 2-byte rule id at the row's start address (rows with the
//! same rule are merged). The rules themselves are deduplicated: nearly
//! every row of compiled code has the common shape of a [`FastRow`] (CFA =
//! register + offset, the return address and callee-saved registers at CFA
//! offsets), and a program has only a few hundred distinct ones; rows of
//! any other shape that a general [`Row`] can express (CFI expressions,
//! register rules) are kept as such. What neither can hold (unsupported
//! rules, CFI that gimli rejects, more rules than ids) is marked *fallback*:
//! a walk computes that row with gimli exactly as [`crate::Walker`] does.
//!
//! A lookup is O(1) for most pcs: the covered range is cut into blocks of
//! 2^`shift` bytes (16 normally), `blocks[b]` is the entry covering the
//! block's first byte and `blocks[b + 1]` the one covering the next
//! block's, so a block inside one row (a function body, where return
//! addresses are) needs no search at all, and otherwise a binary search
//! over the few entries of the block. The table is immutable, borrows
//! nothing (ids, offsets, rules) and can be kept across faults next to the
//! image's bytes; walking it allocates nothing and needs no `&mut`.
//!
//! Equivalence with the walker: the table mirrors the image's FDE lookup
//! (the `.eh_frame_hdr` binary search or the sorted FDE table: the FDE of
//! the last entry starting at or below the pc, which must also contain the
//! pc) and gimli's row search (the first row containing the pc), so a pc
//! gets the same row — or the same [`Stop`] — either way. Images whose
//! lookup the table cannot mirror (an unsorted, i.e. corrupt, search table;
//! a bounded linear scan without any index) or whose covered range exceeds
//! 4 GiB are refused with a [`TableError`]; walk those with a `Walker`.
//! The input is hostile: building is bounded by the section size (every row
//! consumes CFI bytes; the block index is at most a few times the number
//! of rows) and never panics.

use alloc::vec::Vec;

use gimli::{EhFrameOffset, UnwindContext, UnwindSection};

use crate::cache::{CieCache, RowRef};
use crate::image::{Image, ImageId, Index};
use crate::memory::Memory;
use crate::regs::{NUM_REGS, Regs};
use crate::row::{FastRow, Row};
use crate::walk::{Computed, CtxStore, Frame, RowSource, Start, Stop, compute_row, into_with, until_with, walk_with};

/// Rule id: no FDE covers the pc.
const NO_FDE: u16 = u16::MAX;
/// Rule id: compute the row with gimli at walk time.
const FALLBACK: u16 = u16::MAX - 1;
/// Rule id bit: a general row (`general[id & !GENERAL]`), else `fast[id]`.
const GENERAL: u16 = 0x8000;
/// Most distinct fast rules (ids 0..MAX_FAST).
const MAX_FAST: usize = GENERAL as usize;
/// Most general rows.
const MAX_GENERAL: usize = (FALLBACK & !GENERAL) as usize;
/// Smallest block: 16 bytes of code (a return address in a function body
/// then usually needs no search at all).
const MIN_SHIFT: u32 = 4;

/// Why a [`RowTable`] was not built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableError {
    /// The image has no search table (`Image::scan`): its lookup order
    /// cannot be mirrored.
    NoIndex,
    /// The image's search table is not sorted (corrupt): its binary search
    /// cannot be mirrored.
    Unsorted,
    /// The FDEs cover more than 4 GiB of addresses.
    TooLarge,
}

impl core::fmt::Display for TableError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            TableError::NoIndex => "the image has no FDE search table",
            TableError::Unsorted => "the image's FDE search table is not sorted",
            TableError::TooLarge => "the FDEs cover more than 4 GiB",
        })
    }
}

/// Counts of what a [`RowTable`] holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableStats {
    /// FDEs compiled.
    pub fdes: usize,
    /// Unwind rows seen (before merging equal neighbours).
    pub rows: usize,
    /// Entries of the table (merged rows, gaps, fallback ranges).
    pub entries: usize,
    /// Distinct fast rules.
    pub fast_rules: usize,
    /// General rows.
    pub general_rows: usize,
    /// Entries whose rows a walk computes with gimli.
    pub fallback_entries: usize,
}

/// The precompiled unwind rows of one image (see the module note).
#[derive(Clone, Debug)]
pub struct RowTable {
    id: ImageId,
    /// Address of entry 0.
    base: u64,
    /// Pcs `base..base + span` are covered by entries; others have no FDE.
    span: u64,
    /// Block size: `1 << shift` bytes.
    shift: u32,
    /// Entry start offsets from `base`, ascending; `starts[0] == 0`.
    starts: Vec<u32>,
    /// Entry rule ids.
    ids: Vec<u16>,
    /// `blocks[b]`: the entry covering offset `b << shift` (one more block
    /// than the span needs, so `blocks[b + 1]` always exists).
    blocks: Vec<u32>,
    fast: Vec<FastRow>,
    general: Vec<Row>,
    stats: TableStats,
}

/// An FDE range of the image's lookup: pcs `start..end` find the FDE at
/// `offset` (then it must contain them).
struct Region {
    start: u64,
    end: u64,
    offset: u64,
    /// Extra bound of the sorted FDE table (`pc < bound`).
    bound: u64,
}

/// A [`FastRow`] as an integer key (every field, losslessly): dedup by
/// integer comparisons instead of field by field.
fn key(f: &FastRow) -> (u128, u16) {
    let mut offs = 0u64;
    for (i, &o) in f.saved_off.iter().enumerate() {
        offs |= u64::from(o as u8) << (8 * i);
    }
    let hi = u128::from(f.cfa_off as u32)
        | u128::from(f.keep) << 32
        | u128::from(f.saved) << 48
        | u128::from(offs) << 64
        | u128::from(f.ra_off as u8) << 120;
    (hi, u16::from(f.cfa_reg) | u16::from(f.flags) << 8)
}

fn hash((hi, lo): (u128, u16)) -> usize {
    let h = (hi as u64) ^ ((hi >> 64) as u64).rotate_left(17) ^ u64::from(lo).rotate_left(41);
    (h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize
}

/// Accumulates entries in ascending pc order.
struct Builder {
    /// (start pc, id), ascending starts, no two neighbours with one id.
    entries: Vec<(u64, u16)>,
    /// Open-addressing hash set of the fast rules: `fast` indices + 1 (0:
    /// empty), a power-of-two length at least twice `fast.len()`.
    fast_ids: Vec<u16>,
    fast: Vec<FastRow>,
    general: Vec<Row>,
    stats: TableStats,
}

impl Builder {
    /// Pcs from `start` on get `id` (until the next `put`).
    fn put(&mut self, start: u64, id: u16) {
        if let Some(last) = self.entries.last_mut() {
            if last.0 == start {
                // An empty range before: replaced.
                last.1 = id;
                self.merge_last();
                return;
            }
            if last.1 == id {
                return;
            }
        }
        self.entries.push((start, id));
    }

    fn merge_last(&mut self) {
        let n = self.entries.len();
        if n >= 2 && self.entries[n - 2].1 == self.entries[n - 1].1 {
            self.entries.pop();
        }
    }

    fn fast_id(&mut self, f: FastRow) -> u16 {
        let k = key(&f);
        let mask = self.fast_ids.len().wrapping_sub(1);
        let mut i = hash(k) & mask;
        // Terminates: the set is at most half full.
        while let Some(&slot) = self.fast_ids.get(i) {
            if slot == 0 {
                break;
            }
            if let Some(g) = self.fast.get(usize::from(slot - 1))
                && key(g) == k
            {
                return slot - 1;
            }
            i = (i + 1) & mask;
        }
        if self.fast.len() >= MAX_FAST {
            return FALLBACK;
        }
        let id = self.fast.len() as u16;
        self.fast.push(f);
        if self.fast.len() * 2 > self.fast_ids.len() {
            self.rehash(self.fast_ids.len().max(64) * 2);
        } else if let Some(slot) = self.fast_ids.get_mut(i) {
            *slot = id + 1;
        }
        id
    }

    /// Rebuilds the hash set with `n` (a power of two) slots.
    fn rehash(&mut self, n: usize) {
        self.fast_ids.clear();
        self.fast_ids.resize(n, 0);
        let mask = n - 1;
        for (id, f) in self.fast.iter().enumerate() {
            let mut i = hash(key(f)) & mask;
            while self.fast_ids.get(i).is_some_and(|&s| s != 0) {
                i = (i + 1) & mask;
            }
            if let Some(slot) = self.fast_ids.get_mut(i) {
                *slot = id as u16 + 1;
            }
        }
    }

    fn general_id(&mut self, r: Row) -> u16 {
        if self.general.len() >= MAX_GENERAL {
            return FALLBACK;
        }
        let id = GENERAL | self.general.len() as u16;
        self.general.push(r);
        id
    }

    /// Compiles the FDE of `region` (pcs `lo..hi` of the region are the
    /// ones the lookup gives it): its rows where they lie in `lo..hi`,
    /// `NO_FDE` for the rest of the region, `FALLBACK` for what cannot be
    /// compiled.
    fn region<'a>(
        &mut self,
        image: &Image<'a>,
        r: &Region,
        ctx: &mut UnwindContext<usize, CtxStore>,
        cies: &mut CieCache<'a>,
    ) {
        self.put(r.start, NO_FDE);
        let Ok(offset) = usize::try_from(r.offset) else { return };
        if offset >= image.id.len {
            return; // the lookup says NoFde
        }
        let fde = match image.eh_frame.fde_from_offset(&image.bases, EhFrameOffset(offset), |s, b, o| cies.get(s, b, o))
        {
            Ok(fde) => fde,
            Err(_) => {
                // The lookup fails the same way at walk time.
                self.put(r.start, FALLBACK);
                return;
            }
        };
        self.stats.fdes += 1;
        // Pcs of the region the FDE contains.
        let lo = r.start.max(fde.initial_address());
        let hi = r.end.min(r.bound).min(fde.end_address());
        if fde.end_address() < fde.initial_address() {
            // Wrapping range: `contains` is false everywhere.
            return;
        }
        if lo >= hi {
            return;
        }
        let ra = fde.cie().return_address_register().0;
        let signal = fde.is_signal_trampoline();
        if usize::from(ra) >= NUM_REGS {
            self.put(lo, FALLBACK);
            self.put(hi, NO_FDE);
            return;
        }
        let mut cursor = lo;
        if let Ok(mut table) = fde.rows(&image.eh_frame, &image.bases, ctx) {
            // The end, or an error, ends the loop: gimli gives the rest of
            // the FDE (no row found, or the error) at walk time.
            while let Ok(Some(row)) = table.next_row() {
                self.stats.rows += 1;
                // gimli takes the first row containing the pc.
                let s = row.start_address().max(cursor);
                let e = row.end_address().min(hi);
                if s < e {
                    if s > cursor {
                        // No row of gimli's contains these pcs.
                        self.put(cursor, FALLBACK);
                    }
                    let id = match FastRow::from_gimli(row, ra, signal) {
                        Some(f) => self.fast_id(f),
                        None => match Row::from_gimli(row, ra, signal) {
                            Some(g) => self.general_id(g),
                            None => FALLBACK,
                        },
                    };
                    self.put(s, id);
                    cursor = e;
                }
                if cursor >= hi {
                    break;
                }
            }
        }
        if cursor < hi {
            self.put(cursor, FALLBACK);
        }
        self.put(hi, NO_FDE);
    }
}

impl RowTable {
    /// Compiles every FDE of `image` (see the module note). Walk the table
    /// with the same `image` (the same bytes at the same addresses).
    pub fn build(image: &Image<'_>) -> Result<RowTable, TableError> {
        let mut regions: Vec<Region> = Vec::new();
        match &image.index {
            Index::Hdr(t) => {
                let n = t.len();
                regions.reserve(n);
                for i in 0..n {
                    let Some((start, fde_addr)) = t.row(i) else { break };
                    let offset = fde_addr.wrapping_sub(image.id.addr);
                    // `find_fde`: an FDE address below `.eh_frame` finds nothing.
                    let offset = if fde_addr < image.id.addr { u64::MAX } else { offset };
                    regions.push(Region { start, end: u64::MAX, offset, bound: u64::MAX });
                }
            }
            Index::Table(t) => regions.extend(t.iter().map(region_of)),
            #[cfg(feature = "alloc")]
            Index::Owned(t) => regions.extend(t.iter().map(region_of)),
            Index::Scan => return Err(TableError::NoIndex),
        }
        if regions.windows(2).any(|w| w[0].start > w[1].start) {
            return Err(TableError::Unsorted);
        }
        for i in 1..regions.len() {
            regions[i - 1].end = regions[i].start;
        }
        let mut b = Builder {
            entries: Vec::new(),
            fast_ids: Vec::new(),
            fast: Vec::new(),
            general: Vec::new(),
            stats: TableStats::default(),
        };
        // One CFI context for all FDEs (gimli resets it for each), on the
        // heap: it is 3 KB.
        let mut ctx = alloc::boxed::Box::new(UnwindContext::<usize, CtxStore>::new_in());
        let mut cies = CieCache::new();
        b.entries.reserve(regions.len().saturating_mul(8));
        for r in &regions {
            if r.start < r.end {
                b.region(image, r, &mut ctx, &mut cies);
            }
        }
        // Leading and trailing NO_FDE entries: outside the span.
        let mut entries = b.entries;
        if entries.first().is_some_and(|e| e.1 == NO_FDE) {
            entries.remove(0);
        }
        let end = match entries.last() {
            Some(&(start, NO_FDE)) => {
                entries.pop();
                start
            }
            _ => u64::MAX,
        };
        let (base, span) = match entries.first() {
            Some(first) => (first.0, end.wrapping_sub(first.0)),
            None => (0, 0),
        };
        if span > u64::from(u32::MAX) {
            return Err(TableError::TooLarge);
        }
        let starts: Vec<u32> = entries.iter().map(|e| e.0.wrapping_sub(base) as u32).collect();
        let ids: Vec<u16> = entries.iter().map(|e| e.1).collect();
        // Blocks: at most a few per entry (bounded by the input), at least
        // 64 bytes each.
        let mut shift = MIN_SHIFT;
        let limit = (ids.len() as u64).saturating_mul(4).max(1024);
        while shift < 40 && (span >> shift) > limit {
            shift += 1;
        }
        let nblocks = (span >> shift) as usize + 2;
        let mut blocks = Vec::with_capacity(nblocks);
        let mut i = 0usize;
        for blk in 0..nblocks as u64 {
            let point = blk << shift;
            while starts.get(i + 1).is_some_and(|&s| u64::from(s) <= point) {
                i += 1;
            }
            blocks.push(i as u32);
        }
        let mut stats = b.stats;
        stats.entries = ids.len();
        stats.fast_rules = b.fast.len();
        stats.general_rows = b.general.len();
        stats.fallback_entries = ids.iter().filter(|&&id| id == FALLBACK).count();
        Ok(RowTable { id: image.id, base, span, shift, starts, ids, blocks, fast: b.fast, general: b.general, stats })
    }

    /// What the table holds.
    pub fn stats(&self) -> TableStats {
        self.stats
    }

    /// Whether the table was built from `image` (the same bytes at the same
    /// addresses). A walk with another image ignores the table: every row is
    /// computed with gimli.
    pub fn matches(&self, image: &Image<'_>) -> bool {
        self.id == image.id
    }

    /// Bytes of heap the table uses.
    pub fn heap_bytes(&self) -> usize {
        self.starts.len() * 4
            + self.ids.len() * 2
            + self.blocks.len() * 4
            + self.fast.len() * core::mem::size_of::<FastRow>()
            + self.general.len() * core::mem::size_of::<Row>()
    }

    /// The rule id for `lookup`.
    #[inline(always)]
    fn find(&self, lookup: u64) -> u16 {
        let off = lookup.wrapping_sub(self.base);
        if off >= self.span {
            return NO_FDE;
        }
        let off = off as u32;
        let b = (off >> self.shift) as usize;
        let (Some(&lo), Some(&hi)) = (self.blocks.get(b), self.blocks.get(b + 1)) else {
            return FALLBACK;
        };
        let mut lo = lo as usize;
        // The last entry in lo..=hi starting at or below `off` (`lo`'s does).
        let mut len = (hi as usize).saturating_sub(lo) + 1;
        while len > 1 {
            let half = len / 2;
            if self.starts.get(lo + half).is_some_and(|&s| s <= off) {
                lo += half;
            }
            len -= half;
        }
        self.ids.get(lo).copied().unwrap_or(FALLBACK)
    }

    /// Walks from `regs` through at most `max_depth` frames, calling `visit`
    /// for each until it returns `false` or the walk ends; returns why it
    /// ended. The same walk as [`crate::Walker::walk`], without caches.
    pub fn walk<'a, M, F>(&self, image: &Image<'a>, regs: Regs, mem: &M, max_depth: usize, visit: F) -> Stop
    where
        M: Memory + ?Sized,
        F: FnMut(&Frame) -> bool,
    {
        walk_with(&mut self.source(image), image, Start::new(regs), max_depth, mem, visit)
    }

    /// Walks until `until` holds for a frame, and returns that frame and its
    /// index (0 = the first frame), or why the walk ended first (after at
    /// most `max_depth` frames).
    pub fn walk_until<'a, M, F>(
        &self,
        image: &Image<'a>,
        regs: Regs,
        mem: &M,
        max_depth: usize,
        until: F,
    ) -> Result<(usize, Frame), Stop>
    where
        M: Memory + ?Sized,
        F: FnMut(&Frame) -> bool,
    {
        until_with(&mut self.source(image), image, regs, max_depth, mem, until)
    }

    /// Walks into `out`; returns the number of frames written and why the
    /// walk ended (`DepthLimit` if `out` filled up first).
    pub fn walk_into<'a, M>(&self, image: &Image<'a>, regs: Regs, mem: &M, out: &mut [Frame]) -> (usize, Stop)
    where
        M: Memory + ?Sized,
    {
        let max = out.len();
        into_with(&mut self.source(image), image, regs, max, mem, out)
    }

    fn source(&self, image: &Image<'_>) -> Source<'_> {
        Source { table: self, matches: self.matches(image), fast: FastRow::default(), row: Row::ZERO }
    }
}

fn region_of(e: &crate::table::FdeEntry) -> Region {
    Region { start: e.start, end: u64::MAX, offset: e.offset as u64, bound: e.end }
}

/// A walk's view of a table: rows from the table, fallback rows from gimli
/// (kept here while they are applied).
struct Source<'t> {
    table: &'t RowTable,
    matches: bool,
    fast: FastRow,
    row: Row,
}

impl<'a> RowSource<'a> for Source<'_> {
    #[inline(always)]
    fn fast(&self, lookup: u64) -> Option<&FastRow> {
        let t = self.table;
        if !self.matches {
            return None;
        }
        // `NO_FDE`, `FALLBACK` and general ids have the `GENERAL` bit: no
        // fast row.
        t.fast.get(usize::from(t.find(lookup)))
    }

    #[inline(always)]
    fn slow_steps(&self) -> u64 {
        0
    }

    #[inline(always)]
    fn hits(&mut self, _n: u64) {}

    #[inline(always)]
    fn row(&mut self, image: &Image<'a>, lookup: u64, pc: u64) -> Result<RowRef<'_>, Stop> {
        let t = self.table;
        let id = if self.matches { t.find(lookup) } else { FALLBACK };
        if id & GENERAL == 0 {
            return t.fast.get(usize::from(id)).map(RowRef::Fast).ok_or(Stop::UnsupportedRule);
        }
        if id == NO_FDE {
            return Err(Stop::NoFde { pc });
        }
        if id != FALLBACK {
            return t.general.get(usize::from(id & !GENERAL)).map(RowRef::Full).ok_or(Stop::UnsupportedRule);
        }
        self.fallback(image, lookup, pc)
    }
}

impl Source<'_> {
    #[inline(never)]
    fn fallback<'a>(&mut self, image: &Image<'a>, lookup: u64, pc: u64) -> Result<RowRef<'_>, Stop> {
        match compute_row(image, lookup, pc, true, |s, b, o| s.cie_from_offset(b, o))? {
            Computed::Fast(f) => {
                self.fast = f;
                Ok(RowRef::Fast(&self.fast))
            }
            Computed::Full(r) => {
                self.row = r;
                Ok(RowRef::Full(&self.row))
            }
        }
    }
}
