//! Caches kept across walks of the same image.
//!
//! Design note: a walk of a warm stack should cost a hash probe per frame, not
//! an FDE search plus a CFI program run. Two caches live in the [`crate::Walker`],
//! in fixed-size arrays so nothing allocates (a third, the lazily compiled
//! rows of whole FDEs, is [`crate::lazy`]):
//! - a **row memo** keyed by lookup pc (the pc, or return address - 1): a
//!   hit yields, by reference, the ready-to-apply row, in the 20-byte
//!   [`FastRow`] form nearly always (32-byte slots), else a general [`Row`]
//!   from a few extra slots;
//! - a small round-robin **CIE cache** keyed by CIE offset, so FDEs of one CIE
//!   (nearly all of them) do not reparse it on a memo miss.
//!
//! Both are tagged with the identity of the image they were filled from and
//! emptied when a walk is handed another image, so a stale row can never be
//! applied to a different program.
//!
//! The memo is built for the hit: [`RowCache::fast`] is one multiply, one
//! shift, one compare of the home slot's key, and the walk then uses the
//! slot's `FastRow` in place. There is no generation or kind to compare: a
//! slot that must not be applied as a `FastRow` — empty, or standing for a
//! general row — carries a CFA register that does not exist
//! ([`NO_REG`], [`BIG_REG`]), and the walk checks the CFA register anyway,
//! so such a slot falls to the slow path, which probes properly
//! ([`RowCache::probe`]: the home slot, then its neighbour, where the home
//! slot's previous row moved when it was replaced — 2-way set-associative).
//! Emptying writes every slot (O(slots)); it happens only when the walker
//! is handed another image.

use gimli::{BaseAddresses, CommonInformationEntry, EhFrame, EhFrameOffset, UnwindSection};

use crate::image::ImageId;
use crate::row::{FastRow, Row};
use crate::table::Reader;

/// Number of parsed CIEs kept.
pub const CIE_SLOTS: usize = 8;

/// Number of general (non-[`FastRow`]) rows kept, round-robin.
pub(crate) const BIG_SLOTS: usize = 4;

/// `FastRow::cfa_reg` of an empty slot: no register, so never applied.
pub(crate) const NO_REG: u8 = 0xff;
/// `FastRow::cfa_reg` of a slot standing for a general row, whose index in
/// the big slots is `FastRow::ra_off`.
pub(crate) const BIG_REG: u8 = 0xfe;

/// A memo slot: 32 bytes.
#[derive(Clone, Copy, Debug)]
struct Slot {
    key: u64,
    fast: FastRow,
}

impl Slot {
    const EMPTY: Slot = Slot {
        key: 0,
        fast: FastRow {
            cfa_off: 0,
            keep: 0,
            saved: 0,
            saved_off: [0; crate::row::MAX_SAVED],
            ra_off: 0,
            cfa_reg: NO_REG,
            flags: 0,
        },
    };
}

/// A general row, kept for the few rows that are not [`FastRow`]s.
#[derive(Clone, Copy, Debug)]
struct BigSlot {
    key: u64,
    valid: bool,
    row: Row,
}

impl BigSlot {
    const EMPTY: BigSlot = BigSlot { key: 0, valid: false, row: Row::ZERO };
}

/// A cached row, by reference.
#[derive(Clone, Copy, Debug)]
pub(crate) enum RowRef<'r> {
    /// The common shape.
    Fast(&'r FastRow),
    /// Any other.
    Full(&'r Row),
}

/// Where a memo probe hit.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Hit {
    Fast(usize),
    Big(usize),
}

/// The row memo: `N` slots of [`FastRow`]s, 2-way set-associative (a pc
/// lives in its home slot or the home slot's neighbour `home ^ 1`), plus
/// [`BIG_SLOTS`] general rows.
///
/// `repr(C)`, slots first, and first in the [`crate::Walker`]: a slot's
/// address is the walker's plus 32 × its index, one addressing mode.
#[derive(Clone, Debug)]
#[repr(C)]
pub(crate) struct RowCache<const N: usize> {
    slots: [Slot; N],
    next_big: usize,
    big: [BigSlot; BIG_SLOTS],
}

impl<const N: usize> RowCache<N> {
    pub(crate) const fn new() -> Self {
        RowCache { slots: [Slot::EMPTY; N], next_big: 0, big: [BigSlot::EMPTY; BIG_SLOTS] }
    }

    /// The home slot of `pc` (`N` > 0).
    #[inline(always)]
    fn home(pc: u64) -> usize {
        // Fibonacci hashing: the top bits of the product are the well-mixed
        // ones. A power-of-two `N` takes them with one shift.
        let h = pc.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        if N.is_power_of_two() {
            if N == 1 {
                return 0;
            }
            (h >> (64 - N.trailing_zeros())) as usize
        } else {
            (((h >> 32) * N as u64) >> 32) as usize
        }
    }

    /// The other slot `pc` may live in.
    #[inline(always)]
    fn other(home: usize) -> usize {
        if home ^ 1 < N { home ^ 1 } else { home }
    }

    /// The hot path: the row in `pc`'s home slot if its key is `pc`. The
    /// row may be a placeholder (empty slot, general row): its CFA
    /// register is then not a register, which the caller checks anyway
    /// before applying it (see the module note).
    #[inline(always)]
    pub(crate) fn fast(&self, pc: u64) -> Option<&FastRow> {
        if N == 0 {
            return None;
        }
        let s = self.slots.get(Self::home(pc))?;
        (s.key == pc).then_some(&s.fast)
    }

    #[inline(always)]
    fn check(&self, i: usize, pc: u64) -> Option<Hit> {
        let s = self.slots.get(i)?;
        if s.key != pc {
            return None;
        }
        match s.fast.cfa_reg {
            NO_REG => None,
            BIG_REG => {
                let j = usize::from(s.fast.ra_off as u8);
                let b = self.big.get(j)?;
                (b.valid && b.key == pc).then_some(Hit::Big(j))
            }
            _ => Some(Hit::Fast(i)),
        }
    }

    /// Where `pc`'s row is, if cached: its home slot or the neighbour (a
    /// row found there moves home, the home slot's row to the neighbour).
    #[inline]
    pub(crate) fn probe(&mut self, pc: u64) -> Option<Hit> {
        if N == 0 {
            return None;
        }
        let i = Self::home(pc);
        if let Some(hit) = self.check(i, pc) {
            return Some(hit);
        }
        let j = Self::other(i);
        match self.check(j, pc)? {
            Hit::Fast(_) => {
                self.slots.swap(i, j);
                Some(Hit::Fast(i))
            }
            big => Some(big),
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
        if N == 0 {
            return None;
        }
        let i = Self::home(pc);
        let j = Self::other(i);
        let old = *self.slots.get(i)?;
        if j != i && old.key != pc && old.fast.cfa_reg != NO_REG {
            *self.slots.get_mut(j)? = old;
        }
        *self.slots.get_mut(i)? = Slot { key: pc, fast };
        Some(i)
    }

    /// Caches a fast row for `pc`.
    pub(crate) fn put_fast(&mut self, pc: u64, fast: FastRow) -> Option<Hit> {
        self.insert(pc, fast).map(Hit::Fast)
    }

    /// Caches a general row for `pc`.
    pub(crate) fn put_big(&mut self, pc: u64, row: &Row) -> Option<Hit> {
        if N == 0 {
            return None;
        }
        let j = self.next_big % BIG_SLOTS;
        self.next_big = j.wrapping_add(1);
        let b = self.big.get_mut(j)?;
        b.key = pc;
        b.valid = true;
        b.row = *row;
        let fast = FastRow { cfa_reg: BIG_REG, ra_off: j as i8, ..FastRow::default() };
        self.insert(pc, fast)?;
        Some(Hit::Big(j))
    }

    /// Keeps `row` without caching it (for walks without the memo): in a
    /// big slot that no probe matches.
    pub(crate) fn put_uncached(&mut self, row: &Row) -> &Row {
        let b = &mut self.big[0];
        b.key = 0;
        b.valid = false;
        b.row = *row;
        &b.row
    }

    /// Forgets every row.
    pub(crate) fn clear(&mut self) {
        self.slots = [Slot::EMPTY; N];
        self.big = [BigSlot::EMPTY; BIG_SLOTS];
        self.next_big = 0;
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
