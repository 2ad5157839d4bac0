//! Caches kept across walks of the same image.
//!
//! Design note: a walk of a warm stack should cost a hash probe per frame, not
//! an FDE search plus a CFI program run. Two caches live in the [`crate::Walker`],
//! in fixed-size arrays so nothing allocates:
//! - a direct-mapped **row cache** keyed by lookup pc (the pc, or return
//!   address - 1): a hit yields, by reference, the ready-to-apply row, in the
//!   32-byte [`FastRow`] form nearly always (48-byte slots, so even 256 slots
//!   are cheap to build), else a general [`Row`] from a few extra slots;
//! - a small round-robin **CIE cache** keyed by CIE offset, so FDEs of one CIE
//!   (nearly all of them) do not reparse it on a row-cache miss.
//!
//! Both are tagged with the identity of the image they were filled from and
//! emptied when a walk is handed another image, so a stale row can never be
//! applied to a different program. The row cache is emptied in O(1): every
//! slot carries the generation it was filled in, and emptying starts a new
//! generation.

use gimli::{BaseAddresses, CommonInformationEntry, EhFrame, EhFrameOffset, UnwindSection};

use crate::image::ImageId;
use crate::row::{FastRow, Row};
use crate::table::Reader;

/// Number of parsed CIEs kept.
pub const CIE_SLOTS: usize = 8;

/// Number of general (non-[`FastRow`]) rows kept, round-robin.
pub(crate) const BIG_SLOTS: usize = 4;

/// `FastRow::flags` of a slot whose row is a general row: its index in the
/// big slots is `FastRow::cfa_reg`.
const F_BIG: u8 = 0x80;

/// A row-cache slot: 32 bytes, all zero when empty (generation 0 is never
/// current), so an empty cache is built by a `memset`.
#[derive(Clone, Copy, Debug)]
struct Slot {
    key: u64,
    generation: u32,
    fast: FastRow,
}

impl Slot {
    const EMPTY: Slot = Slot {
        key: 0,
        generation: 0,
        fast: FastRow {
            cfa_off: 0,
            keep: 0,
            saved: 0,
            saved_off: [0; crate::row::MAX_SAVED],
            ra_off: 0,
            cfa_reg: 0,
            flags: 0,
        },
    };
}

/// A general row, kept for the few rows that are not [`FastRow`]s.
#[derive(Clone, Copy, Debug)]
struct BigSlot {
    key: u64,
    generation: u32,
    row: Row,
}

impl BigSlot {
    const EMPTY: BigSlot = BigSlot { key: 0, generation: 0, row: Row::ZERO };
}

/// A cached row, by reference.
#[derive(Clone, Copy, Debug)]
pub(crate) enum RowRef<'r> {
    /// The common shape.
    Fast(&'r FastRow),
    /// Any other.
    Full(&'r Row),
}

/// Where a row-cache probe hit.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Hit {
    Fast(usize),
    Big(usize),
}

/// The row cache: `N` slots of [`FastRow`]s, 2-way set-associative (a pc
/// lives in its home slot or the home slot's neighbour `home ^ 1`), plus
/// [`BIG_SLOTS`] general rows. Emptied in O(1) by bumping the generation.
#[derive(Clone, Debug)]
pub(crate) struct RowCache<const N: usize> {
    generation: u32,
    next_big: usize,
    slots: [Slot; N],
    big: [BigSlot; BIG_SLOTS],
}

impl<const N: usize> RowCache<N> {
    pub(crate) const fn new() -> Self {
        RowCache { generation: 1, next_big: 0, slots: [Slot::EMPTY; N], big: [BigSlot::EMPTY; BIG_SLOTS] }
    }

    /// The home slot of `pc`.
    #[inline(always)]
    fn home(pc: u64) -> Option<usize> {
        // Fibonacci hashing: the top 32 bits of the product are the well-mixed
        // ones; scaling them by N maps them onto 0..N.
        let h = pc.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
        let i = usize::try_from((h * N as u64) >> 32).ok()?;
        (i < N).then_some(i)
    }

    /// The other slot `pc` may live in.
    #[inline(always)]
    fn other(home: usize) -> usize {
        if home ^ 1 < N { home ^ 1 } else { home }
    }

    #[inline(always)]
    fn check(&self, i: usize, pc: u64) -> Option<Hit> {
        let s = self.slots.get(i)?;
        if s.key != pc || s.generation != self.generation {
            return None;
        }
        if s.fast.flags & F_BIG == 0 {
            return Some(Hit::Fast(i));
        }
        let j = usize::from(s.fast.cfa_reg);
        let b = self.big.get(j)?;
        (b.key == pc && b.generation == self.generation).then_some(Hit::Big(j))
    }

    /// Where `pc`'s row is, if cached.
    #[inline(always)]
    pub(crate) fn probe(&self, pc: u64) -> Option<Hit> {
        let i = Self::home(pc)?;
        match self.check(i, pc) {
            Some(hit) => Some(hit),
            None => self.check(Self::other(i), pc),
        }
    }

    /// The row a successful [`Self::probe`] found.
    #[inline(always)]
    pub(crate) fn fetch(&self, hit: Hit) -> Option<RowRef<'_>> {
        match hit {
            Hit::Fast(i) => self.slots.get(i).map(|s| RowRef::Fast(&s.fast)),
            Hit::Big(j) => self.big.get(j).map(|b| RowRef::Full(&b.row)),
        }
    }

    /// Puts `fast` for `pc` in its home slot; what was there moves to the
    /// other slot (the least recently inserted of the two is dropped).
    fn insert(&mut self, pc: u64, fast: FastRow) -> Option<usize> {
        let i = Self::home(pc)?;
        let j = Self::other(i);
        let old = *self.slots.get(i)?;
        if j != i && old.key != pc && old.generation == self.generation {
            *self.slots.get_mut(j)? = old;
        }
        *self.slots.get_mut(i)? = Slot { key: pc, generation: self.generation, fast };
        Some(i)
    }

    /// Caches a fast row for `pc`.
    pub(crate) fn put_fast(&mut self, pc: u64, fast: FastRow) -> Option<Hit> {
        self.insert(pc, fast).map(Hit::Fast)
    }

    /// Caches a general row for `pc`.
    pub(crate) fn put_big(&mut self, pc: u64, row: &Row) -> Option<Hit> {
        let j = self.next_big % BIG_SLOTS;
        self.next_big = j.wrapping_add(1);
        let b = self.big.get_mut(j)?;
        b.key = pc;
        b.generation = self.generation;
        b.row = *row;
        let fast = FastRow { flags: F_BIG, cfa_reg: u8::try_from(j).ok()?, ..FastRow::default() };
        self.insert(pc, fast)?;
        Some(Hit::Big(j))
    }

    /// Keeps `row` without caching it (for walks without the row cache): in
    /// a big slot that no probe matches.
    pub(crate) fn put_uncached(&mut self, row: &Row) -> &Row {
        let b = &mut self.big[0];
        b.key = 0;
        b.generation = 0;
        b.row = *row;
        &b.row
    }

    /// Forgets every row.
    pub(crate) fn clear(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            // After 2^32 clears: really empty the slots once.
            self.slots = [Slot::EMPTY; N];
            self.big = [BigSlot::EMPTY; BIG_SLOTS];
            self.generation = 1;
        }
    }
}

type Cie<'a> = CommonInformationEntry<Reader<'a>>;

/// The CIE cache.
#[derive(Clone, Debug)]
pub(crate) struct CieCache<'a> {
    slots: [Option<(usize, Cie<'a>)>; CIE_SLOTS],
    next: usize,
}

impl<'a> CieCache<'a> {
    pub(crate) const fn new() -> Self {
        CieCache { slots: [const { None }; CIE_SLOTS], next: 0 }
    }

    pub(crate) fn clear(&mut self) {
        for s in &mut self.slots {
            *s = None;
        }
        self.next = 0;
    }

    /// The CIE at `offset`, parsed at most once while it stays cached.
    pub(crate) fn get(
        &mut self,
        section: &EhFrame<Reader<'a>>,
        bases: &BaseAddresses,
        offset: EhFrameOffset,
    ) -> gimli::Result<Cie<'a>> {
        for (k, cie) in self.slots.iter().flatten() {
            if *k == offset.0 {
                return Ok(cie.clone());
            }
        }
        let cie = section.cie_from_offset(bases, offset)?;
        if let Some(slot) = self.slots.get_mut(self.next % CIE_SLOTS) {
            *slot = Some((offset.0, cie.clone()));
        }
        self.next = self.next.wrapping_add(1);
        Ok(cie)
    }
}

/// Which image the caches were filled from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tag(pub(crate) Option<ImageId>);
