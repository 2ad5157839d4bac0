//! An image: the unwind sections of one loaded program, and the FDE lookup.
//!
//! Design note: an [`Image`] borrows the bytes of `.eh_frame` (and of
//! `.eh_frame_hdr` when there is one) wherever they are — mapped in the kernel,
//! read from the task's ELF by the fault server, read from a file by the host
//! tool — plus the *runtime* address of each section (link address + load bias;
//! pc-relative pointers in CFI are resolved against it, so a biased image needs
//! nothing else). Construction validates what can be validated once; the lookup
//! strategy is chosen then: the `.eh_frame_hdr` binary search, a sorted FDE
//! table built once per image (static glibc programs have no hdr), or, with
//! neither, a bounded linear scan.

use gimli::{BaseAddresses, EhFrame, EhFrameOffset, FrameDescriptionEntry, LittleEndian};
use gimli::{CommonInformationEntry, UnwindSection};

use crate::hdr::HdrTable;
use crate::table::{self, FdeEntry, Reader};

/// Why an image could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// `.eh_frame_hdr` is malformed or uses an unsupported encoding.
    BadHdr,
    /// `.eh_frame_hdr` points at a different `.eh_frame` than the one given.
    HdrMismatch {
        /// Address the header points to.
        hdr_says: u64,
        /// Address given for `.eh_frame`.
        given: u64,
    },
    /// A caller-provided FDE table is not sorted by start address.
    UnsortedTable,
    /// Caller-provided storage for the FDE table is too small.
    TableFull,
}

impl core::fmt::Display for ImageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ImageError::BadHdr => f.write_str("malformed or unsupported .eh_frame_hdr"),
            ImageError::HdrMismatch { hdr_says, given } => {
                write!(f, ".eh_frame_hdr points to .eh_frame at {hdr_says:#x}, but it was given at {given:#x}")
            }
            ImageError::UnsortedTable => f.write_str("FDE table is not sorted"),
            ImageError::TableFull => f.write_str("FDE table storage is too small"),
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Index<'a> {
    Hdr(HdrTable<'a>),
    Table(&'a [FdeEntry]),
    #[cfg(feature = "alloc")]
    Owned(alloc::vec::Vec<FdeEntry>),
    Scan,
}

/// Identity of an image, so that caches notice when they are handed another.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ImageId {
    ptr: usize,
    pub(crate) len: usize,
    pub(crate) addr: u64,
}

/// The unwind information of one loaded program.
#[derive(Clone, Debug)]
pub struct Image<'a> {
    pub(crate) eh_frame: EhFrame<Reader<'a>>,
    pub(crate) bases: BaseAddresses,
    pub(crate) index: Index<'a>,
    pub(crate) id: ImageId,
}

impl<'a> Image<'a> {
    fn base(eh_frame: &'a [u8], eh_frame_addr: u64, index: Index<'a>) -> Self {
        let mut section = EhFrame::new(eh_frame, LittleEndian);
        section.set_address_size(8);
        Image {
            eh_frame: section,
            bases: BaseAddresses::default().set_eh_frame(eh_frame_addr),
            index,
            id: ImageId { ptr: eh_frame.as_ptr() as usize, len: eh_frame.len(), addr: eh_frame_addr },
        }
    }

    /// An image looked up through its `.eh_frame_hdr` search table (the usual
    /// case). Falls back to a linear scan if the header has no table.
    pub fn from_hdr(
        eh_frame_hdr: &'a [u8],
        eh_frame_hdr_addr: u64,
        eh_frame: &'a [u8],
        eh_frame_addr: u64,
    ) -> Result<Self, ImageError> {
        let index = match HdrTable::parse(eh_frame_hdr, eh_frame_hdr_addr)? {
            Some(t) if t.eh_frame_ptr != eh_frame_addr => {
                return Err(ImageError::HdrMismatch { hdr_says: t.eh_frame_ptr, given: eh_frame_addr });
            }
            Some(t) => Index::Hdr(t),
            None => Index::Scan,
        };
        let mut image = Self::base(eh_frame, eh_frame_addr, index);
        image.bases = image.bases.set_eh_frame_hdr(eh_frame_hdr_addr);
        Ok(image)
    }

    /// An image looked up through a sorted FDE table, e.g. one filled by
    /// [`crate::build_fde_table_in`].
    pub fn from_table(eh_frame: &'a [u8], eh_frame_addr: u64, table: &'a [FdeEntry]) -> Result<Self, ImageError> {
        if table.windows(2).any(|w| matches!(w, [a, b] if a.start > b.start)) {
            return Err(ImageError::UnsortedTable);
        }
        Ok(Self::base(eh_frame, eh_frame_addr, Index::Table(table)))
    }

    /// An image that owns a sorted FDE table built now (once per image).
    #[cfg(feature = "alloc")]
    pub fn with_built_table(eh_frame: &'a [u8], eh_frame_addr: u64) -> Self {
        let table = table::build_fde_table(eh_frame, eh_frame_addr);
        Self::base(eh_frame, eh_frame_addr, Index::Owned(table))
    }

    /// An image without any index: every lookup scans `.eh_frame` linearly.
    pub fn scan(eh_frame: &'a [u8], eh_frame_addr: u64) -> Self {
        Self::base(eh_frame, eh_frame_addr, Index::Scan)
    }

    /// How lookups are done: `"eh_frame_hdr"`, `"table"` or `"scan"`.
    pub fn index_kind(&self) -> &'static str {
        match self.index {
            Index::Hdr(_) => "eh_frame_hdr",
            Index::Table(_) => "table",
            #[cfg(feature = "alloc")]
            Index::Owned(_) => "table",
            Index::Scan => "scan",
        }
    }

    /// The FDE covering `pc`, parsing its CIE through `get_cie`.
    pub(crate) fn find_fde<F>(&self, pc: u64, mut get_cie: F) -> Result<FrameDescriptionEntry<Reader<'a>>, gimli::Error>
    where
        F: FnMut(
            &EhFrame<Reader<'a>>,
            &BaseAddresses,
            EhFrameOffset,
        ) -> Result<CommonInformationEntry<Reader<'a>>, gimli::Error>,
    {
        let offset = match &self.index {
            Index::Hdr(t) => {
                let fde_addr = t.lookup(pc).ok_or(gimli::Error::NoUnwindInfoForAddress)?;
                fde_addr.checked_sub(self.id.addr).ok_or(gimli::Error::NoUnwindInfoForAddress)?
            }
            Index::Table(t) => lookup_offset(t, pc)?,
            #[cfg(feature = "alloc")]
            Index::Owned(t) => lookup_offset(t, pc)?,
            Index::Scan => return self.eh_frame.fde_for_address(&self.bases, pc, get_cie),
        };
        let offset = usize::try_from(offset).map_err(|_| gimli::Error::NoUnwindInfoForAddress)?;
        if offset >= self.id.len {
            return Err(gimli::Error::NoUnwindInfoForAddress);
        }
        let fde = self.eh_frame.fde_from_offset(&self.bases, EhFrameOffset(offset), &mut get_cie)?;
        if fde.contains(pc) { Ok(fde) } else { Err(gimli::Error::NoUnwindInfoForAddress) }
    }
}

impl<'a> Image<'a> {
    /// [`Self::find_fde`], and the pcs `lo..hi` around `pc` that find the
    /// same FDE and that it contains: for a sorted index, from the index
    /// entry's start (or the FDE's, if later) to the next entry's start (or
    /// the end of the entry or of the FDE, if sooner). Only for indexes
    /// that are sorted (`Hdr` checked by the caller, tables always); a scan
    /// has no such range (`NoUnwindInfoForAddress`: the caller must not ask).
    pub(crate) fn find_fde_range<F>(
        &self,
        pc: u64,
        mut get_cie: F,
    ) -> Result<(FrameDescriptionEntry<Reader<'a>>, u64, u64), gimli::Error>
    where
        F: FnMut(
            &EhFrame<Reader<'a>>,
            &BaseAddresses,
            EhFrameOffset,
        ) -> Result<CommonInformationEntry<Reader<'a>>, gimli::Error>,
    {
        let none = gimli::Error::NoUnwindInfoForAddress;
        let (offset, lo, hi) = match &self.index {
            Index::Hdr(t) => {
                let i = t.lookup_index(pc).ok_or(none)?;
                let (start, fde_addr) = t.row(i).ok_or(none)?;
                let next = t.row(i + 1).map_or(u64::MAX, |(s, _)| s);
                (fde_addr.checked_sub(self.id.addr).ok_or(none)?, start, next)
            }
            Index::Table(t) => table_range(t, pc)?,
            #[cfg(feature = "alloc")]
            Index::Owned(t) => table_range(t, pc)?,
            Index::Scan => return Err(none),
        };
        let offset = usize::try_from(offset).map_err(|_| none)?;
        if offset >= self.id.len {
            return Err(none);
        }
        let fde = self.eh_frame.fde_from_offset(&self.bases, EhFrameOffset(offset), &mut get_cie)?;
        if !fde.contains(pc) {
            return Err(none);
        }
        // `contains(pc)`: initial <= pc < end, so the range holds `pc`.
        let lo = lo.max(fde.initial_address());
        let hi = hi.min(fde.end_address());
        Ok((fde, lo, hi))
    }
}

/// The sorted table's entry for `pc`: (FDE offset, its start, the end of
/// the pcs that find it).
fn table_range(t: &[FdeEntry], pc: u64) -> Result<(u64, u64, u64), gimli::Error> {
    let idx = t.partition_point(|e| e.start <= pc);
    let e = t
        .get(idx.checked_sub(1).ok_or(gimli::Error::NoUnwindInfoForAddress)?)
        .ok_or(gimli::Error::NoUnwindInfoForAddress)?;
    if pc >= e.end {
        return Err(gimli::Error::NoUnwindInfoForAddress);
    }
    let next = t.get(idx).map_or(u64::MAX, |n| n.start);
    Ok((e.offset as u64, e.start, next.min(e.end)))
}

fn lookup_offset(t: &[FdeEntry], pc: u64) -> Result<u64, gimli::Error> {
    table::lookup(t, pc).map(|e| e.offset as u64).ok_or(gimli::Error::NoUnwindInfoForAddress)
}
