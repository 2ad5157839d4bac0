//! Caches kept across walks of the same image.
//!
//! Design note: a walk of a warm stack should cost a hash probe per frame, not
//! an FDE search plus a CFI program run. Two caches live in the [`crate::Walker`],
//! in fixed-size arrays so nothing allocates:
//! - a direct-mapped **row cache** keyed by lookup pc (the pc, or return
//!   address - 1): a hit yields the ready-to-apply [`Row`];
//! - a small round-robin **CIE cache** keyed by CIE offset, so FDEs of one CIE
//!   (nearly all of them) do not reparse it on a row-cache miss.
//!
//! Both are tagged with the identity of the image they were filled from and
//! emptied when a walk is handed another image, so a stale row can never be
//! applied to a different program.

use gimli::{BaseAddresses, CommonInformationEntry, EhFrame, EhFrameOffset, UnwindSection};

use crate::image::ImageId;
use crate::row::Row;
use crate::table::Reader;

/// Number of parsed CIEs kept.
pub const CIE_SLOTS: usize = 8;

/// The row cache: `N` direct-mapped slots.
#[derive(Clone, Debug)]
pub(crate) struct RowCache<const N: usize> {
    slots: [Option<(u64, Row)>; N],
}

impl<const N: usize> RowCache<N> {
    pub(crate) const fn new() -> Self {
        RowCache { slots: [None; N] }
    }

    fn slot(pc: u64) -> Option<usize> {
        let h = pc.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
        usize::try_from(h).ok()?.checked_rem(N)
    }

    pub(crate) fn get(&self, pc: u64) -> Option<&Row> {
        match self.slots.get(Self::slot(pc)?)? {
            Some((k, row)) if *k == pc => Some(row),
            _ => None,
        }
    }

    pub(crate) fn put(&mut self, pc: u64, row: Row) {
        if let Some(slot) = Self::slot(pc).and_then(|i| self.slots.get_mut(i)) {
            *slot = Some((pc, row));
        }
    }

    pub(crate) fn clear(&mut self) {
        self.slots = [None; N];
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
    pub(crate) fn new() -> Self {
        CieCache {
            slots: core::array::from_fn(|_| None),
            next: 0,
        }
    }

    pub(crate) fn clear(&mut self) {
        self.slots = core::array::from_fn(|_| None);
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
