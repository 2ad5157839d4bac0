//! Byte scanning for the guest's hot paths, 8 bytes at a time.
//!
//! Under TCG every guest instruction counts, and a byte loop costs ~4 per
//! byte; these look at a whole `u64` in ~6 (the "has a zero byte" trick,
//! [`zero_flags`]). `no_std`, no `unsafe`: words are read from slices.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of every byte of `w` that may be zero: the **lowest** flag
/// is exactly the first zero byte (little endian: the lowest address);
/// flags above a zero byte may be false, flags below never are. 0: no zero
/// byte.
#[inline(always)]
pub const fn zero_flags(w: u64) -> u64 {
    w.wrapping_sub(ONES) & !w & HIGHS
}

/// The index of the first byte flagged by [`zero_flags`] (`flags != 0`).
#[inline(always)]
pub const fn first_flagged(flags: u64) -> usize {
    (flags.trailing_zeros() / 8) as usize
}

/// The 8 bytes of `bytes` at `i` as a little-endian word.
#[inline(always)]
pub fn word_at(bytes: &[u8], i: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&bytes[i..i + 8]);
    u64::from_le_bytes(w)
}

/// The index of the first `needle` in `bytes`.
#[inline]
pub fn find(bytes: &[u8], needle: u8) -> Option<usize> {
    let pattern = ONES * needle as u64;
    let mut i = 0;
    while i + 8 <= bytes.len() {
        // Bytes equal to `needle` become zeros.
        let flags = zero_flags(word_at(bytes, i) ^ pattern);
        if flags != 0 {
            return Some(i + first_flagged(flags));
        }
        i += 8;
    }
    bytes[i..].iter().position(|&b| b == needle).map(|k| i + k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_occurrence_anywhere() {
        for len in 0..40 {
            for needle in [0u8, b'\n', 0xff] {
                let filler = if needle == 0 { 1 } else { 0 };
                let none = alloc::vec![filler; len];
                assert_eq!(find(&none, needle), None);
                for at in 0..len {
                    let mut v = none.clone();
                    v[at] = needle;
                    assert_eq!(find(&v, needle), Some(at), "{len} {at} {needle}");
                    // A second one after it, and the byte before the needle
                    // one above it (a borrow that could flag falsely).
                    if at + 1 < len {
                        v[at + 1] = needle;
                    }
                    if at > 0 {
                        v[at - 1] = needle.wrapping_add(1);
                    }
                    assert_eq!(find(&v, needle), Some(at), "{len} {at} {needle}");
                }
            }
        }
    }

    #[test]
    fn the_lowest_flag_is_the_first_zero() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Bytes 0 and 1 often, to get zeros.
            let w = u64::from_le_bytes(x.to_le_bytes().map(|b| if b < 0x60 { b & 1 } else { b }));
            let first = w.to_le_bytes().iter().position(|&b| b == 0);
            let flags = zero_flags(w);
            assert_eq!(first.is_some(), flags != 0, "{w:#x}");
            if let Some(i) = first {
                assert_eq!(first_flagged(flags), i, "{w:#x}");
            }
        }
    }
}
