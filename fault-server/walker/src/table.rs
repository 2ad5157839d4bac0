//! A sorted FDE table for images without `.eh_frame_hdr`.
//!
//! Design note: statically linked glibc programs are linked without
//! `--eh-frame-hdr`, so their `.eh_frame` has no search table and gimli's only
//! lookup is a linear scan of every CIE/FDE. The walker instead builds, once per
//! image, a table of `(start, end, FDE offset)` sorted by start, and looks pcs up
//! by binary search. In `no_std` the caller provides the storage
//! ([`build_fde_table_in`]); with the `alloc` feature [`build_fde_table`]
//! returns a `Vec`. Building is bounded by the section size (every entry
//! consumes bytes) and stops at the first malformed entry, keeping what came
//! before it.

use gimli::{BaseAddresses, EhFrame, EhFrameOffset, EndianSlice, LittleEndian, UnwindSection};

use crate::ImageError;

/// One FDE of the table: the pc range it covers and where it starts in
/// `.eh_frame`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FdeEntry {
    /// First pc covered.
    pub start: u64,
    /// One past the last pc covered.
    pub end: u64,
    /// Offset of the FDE in `.eh_frame`.
    pub offset: usize,
}

pub(crate) type Reader<'a> = EndianSlice<'a, LittleEndian>;

/// Calls `f` for each FDE of `eh_frame` (loaded at `addr`) with a non-empty
/// range, in section order. Returns the number of FDEs visited.
fn for_each_fde<'a>(eh_frame: &'a [u8], addr: u64, mut f: impl FnMut(FdeEntry) -> bool) -> usize {
    let mut section = EhFrame::new(eh_frame, LittleEndian);
    section.set_address_size(8);
    let bases = BaseAddresses::default().set_eh_frame(addr);
    let mut entries = section.entries(&bases);
    let mut n = 0;
    // Every entry consumes at least 4 bytes, so this loop is bounded by the
    // section length; a malformed entry ends it.
    while let Ok(Some(entry)) = entries.next() {
        if let gimli::CieOrFde::Fde(partial) = entry {
            let offset = partial.offset();
            let Ok(fde) = partial.parse(|s: &EhFrame<Reader<'a>>, b, o: EhFrameOffset| s.cie_from_offset(b, o)) else {
                continue;
            };
            let start = fde.initial_address();
            let end = start.saturating_add(fde.len());
            if end > start {
                n += 1;
                if !f(FdeEntry { start, end, offset }) {
                    break;
                }
            }
        }
    }
    n
}

/// Fills `storage` with the FDEs of `eh_frame` (loaded at `addr`), sorted by
/// start address, and returns how many it holds. Fails with
/// [`ImageError::TableFull`] if `storage` is too small.
pub fn build_fde_table_in(eh_frame: &[u8], addr: u64, storage: &mut [FdeEntry]) -> Result<usize, ImageError> {
    let mut len = 0usize;
    let mut full = false;
    for_each_fde(eh_frame, addr, |e| match storage.get_mut(len) {
        Some(slot) => {
            *slot = e;
            len += 1;
            true
        }
        None => {
            full = true;
            false
        }
    });
    if full {
        return Err(ImageError::TableFull);
    }
    let table = storage.get_mut(..len).unwrap_or(&mut []);
    table.sort_unstable_by_key(|e| e.start);
    Ok(len)
}

/// The sorted FDE table of `eh_frame` (loaded at `addr`).
#[cfg(feature = "alloc")]
pub fn build_fde_table(eh_frame: &[u8], addr: u64) -> alloc::vec::Vec<FdeEntry> {
    let mut v = alloc::vec::Vec::new();
    for_each_fde(eh_frame, addr, |e| {
        v.push(e);
        true
    });
    v.sort_unstable_by_key(|e| e.start);
    v
}

/// The entry covering `pc` in a table sorted by start, if any.
pub fn lookup(table: &[FdeEntry], pc: u64) -> Option<&FdeEntry> {
    let idx = table.partition_point(|e| e.start <= pc);
    let e = table.get(idx.checked_sub(1)?)?;
    (pc < e.end).then_some(e)
}
