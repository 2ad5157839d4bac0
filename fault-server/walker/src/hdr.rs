//! The `.eh_frame_hdr` binary-search table.
//!
//! Design note: gimli can parse this header too, but its lookup trusts the
//! header's `fde_count` (a hostile count overflows an offset computation) and
//! decodes every probe through the generic pointer-encoding machinery. This is
//! the hottest lookup of a walk and it reads untrusted bytes, so it is written
//! out here: the header is validated once when the image is built (version,
//! encodings, the count clamped to what the section can actually hold), and a
//! lookup is a plain binary search over fixed-size rows, O(log n) probes, each
//! bounds-checked. Unsorted (corrupt) tables still terminate; the FDE found is
//! then checked to really cover the pc by the caller.

use crate::ImageError;

/// A validated `.eh_frame_hdr` search table.
#[derive(Clone, Copy, Debug)]
pub struct HdrTable<'a> {
    /// The table rows (exactly `count * 2 * width` bytes).
    rows: &'a [u8],
    /// Number of rows usable.
    count: usize,
    /// Bytes per field: 4 or 8.
    width: usize,
    /// Fields are signed.
    signed: bool,
    /// Value added to every field (the header address for `datarel`, else 0).
    base: u64,
    /// The address of `.eh_frame` the header points to.
    pub eh_frame_ptr: u64,
}

const DW_EH_PE_OMIT: u8 = 0xff;

/// Reads one encoded pointer at `*pos` of `data` (a section at `addr`).
fn read_encoded(data: &[u8], pos: &mut usize, enc: u8, addr: u64) -> Result<u64, ImageError> {
    let (width, signed) = format_of(enc)?;
    let start = *pos;
    let bytes = data.get(start..start.checked_add(width).ok_or(ImageError::BadHdr)?).ok_or(ImageError::BadHdr)?;
    *pos = start + width;
    let raw = fixed(bytes, signed);
    let field_addr = addr.wrapping_add(start as u64);
    match enc & 0x70 {
        0x00 => Ok(raw),
        0x10 => Ok(field_addr.wrapping_add(raw)),
        0x30 => Ok(addr.wrapping_add(raw)),
        _ => Err(ImageError::BadHdr),
    }
}

/// Width and signedness of a fixed-size `DW_EH_PE_*` format.
fn format_of(enc: u8) -> Result<(usize, bool), ImageError> {
    if enc & 0x80 != 0 {
        return Err(ImageError::BadHdr); // indirect
    }
    match enc & 0x0f {
        0x00 | 0x04 => Ok((8, false)),
        0x02 => Ok((2, false)),
        0x03 => Ok((4, false)),
        0x0a => Ok((2, true)),
        0x0b => Ok((4, true)),
        0x0c => Ok((8, true)),
        _ => Err(ImageError::BadHdr),
    }
}

/// A little-endian field of 2, 4 or 8 bytes, sign- or zero-extended.
fn fixed(bytes: &[u8], signed: bool) -> u64 {
    let mut buf = [0u8; 8];
    for (d, s) in buf.iter_mut().zip(bytes) {
        *d = *s;
    }
    let v = u64::from_le_bytes(buf);
    let bits = (bytes.len().min(8) * 8) as u32;
    if signed && bits > 0 && bits < 64 {
        let shift = 64 - bits;
        (((v << shift) as i64) >> shift) as u64
    } else {
        v
    }
}

impl<'a> HdrTable<'a> {
    /// Validates a `.eh_frame_hdr` loaded at `addr`. `Ok(None)` means the
    /// header is well-formed but carries no search table.
    pub fn parse(data: &'a [u8], addr: u64) -> Result<Option<Self>, ImageError> {
        let Some(&[version, ptr_enc, count_enc, table_enc]) = data.get(..4) else {
            return Err(ImageError::BadHdr);
        };
        if version != 1 || ptr_enc == DW_EH_PE_OMIT {
            return Err(ImageError::BadHdr);
        }
        let mut pos = 4;
        let eh_frame_ptr = read_encoded(data, &mut pos, ptr_enc, addr)?;
        if count_enc == DW_EH_PE_OMIT || table_enc == DW_EH_PE_OMIT {
            return Ok(None);
        }
        let count = read_encoded(data, &mut pos, count_enc, addr)?;
        let (width, signed) = format_of(table_enc)?;
        if width < 4 {
            return Err(ImageError::BadHdr);
        }
        let base = match table_enc & 0x70 {
            0x00 => 0,
            0x30 => addr,
            _ => return Err(ImageError::BadHdr),
        };
        let rest = data.get(pos..).unwrap_or(&[]);
        let fit = rest.len() / (2 * width);
        let count = usize::try_from(count).unwrap_or(usize::MAX).min(fit);
        if count == 0 {
            return Ok(None);
        }
        let rows = rest.get(..count * 2 * width).ok_or(ImageError::BadHdr)?;
        Ok(Some(HdrTable { rows, count, width, signed, base, eh_frame_ptr }))
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the table is empty (never true for a parsed table).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Row `i` as (initial location, FDE address).
    pub(crate) fn row(&self, i: usize) -> Option<(u64, u64)> {
        let w = self.width;
        let at = i.checked_mul(2 * w)?;
        let a = self.rows.get(at..at + w)?;
        let b = self.rows.get(at + w..at + 2 * w)?;
        Some((self.base.wrapping_add(fixed(a, self.signed)), self.base.wrapping_add(fixed(b, self.signed))))
    }

    /// The FDE address of the last row whose initial location is `<= pc`.
    pub fn lookup(&self, pc: u64) -> Option<u64> {
        self.row(self.lookup_index(pc)?).map(|(_, fde)| fde)
    }

    /// The index of the last row whose initial location is `<= pc` (the
    /// row [`Self::lookup`] uses).
    #[inline]
    pub(crate) fn lookup_index(&self, pc: u64) -> Option<usize> {
        if self.width == 4 && self.signed {
            return self.lookup_i32(pc);
        }
        self.lookup_generic(pc)
    }

    /// Whether the rows are sorted by initial location (then every pc
    /// from one row's start to the next row's start finds that row).
    pub(crate) fn is_sorted(&self) -> bool {
        let mut prev = None;
        for i in 0..self.count {
            let Some((start, _)) = self.row(i) else { return false };
            if prev.is_some_and(|p| p > start) {
                return false;
            }
            prev = Some(start);
        }
        true
    }

    /// `lookup` for the encoding every linker writes (`DW_EH_PE_datarel |
    /// DW_EH_PE_sdata4`): 8-byte rows of two signed 32-bit fields.
    fn lookup_i32(&self, pc: u64) -> Option<usize> {
        let (rows, _) = self.rows.as_chunks::<8>();
        let rows = rows.get(..self.count)?;
        // (initial location, FDE address) of a row.
        let row = |i: usize| -> Option<(u64, u64)> {
            let v = u64::from_le_bytes(*rows.get(i)?);
            let field = |x: u64| self.base.wrapping_add(i64::from(x as u32 as i32) as u64);
            Some((field(v), field(v >> 32)))
        };
        // The same search as `lookup_generic`.
        let (mut lo, mut hi) = (0usize, rows.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (start, _) = row(mid)?;
            if start <= pc {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1)
    }

    fn lookup_generic(&self, pc: u64) -> Option<usize> {
        let (mut lo, mut hi) = (0usize, self.count);
        // Invariant: rows before `lo` start <= pc, rows from `hi` start > pc.
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (start, _) = self.row(mid)?;
            if start <= pc {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo.checked_sub(1)
    }
}
