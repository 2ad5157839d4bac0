//! A fixed-capacity text buffer that formatting writes into.
//!
//! The panic handler must not allocate (the allocator may be what
//! panicked, or its lock may be held), and `println!` should not need the
//! heap either, so both format into one of these on the stack. When the
//! text does not fit it is cut at a character boundary, never in the middle
//! of a UTF-8 sequence, so the result is always a valid `&str`.

use core::fmt;

/// Up to `N` bytes of UTF-8 text.
pub struct FixedBuf<const N: usize> {
    bytes: [u8; N],
    len: usize,
    truncated: bool,
}

impl<const N: usize> FixedBuf<N> {
    pub const fn new() -> Self {
        Self { bytes: [0; N], len: 0, truncated: false }
    }

    /// The text so far.
    pub fn as_str(&self) -> &str {
        // Only whole `&str`s and char-boundary prefixes of them are copied in.
        core::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }

    /// Bytes still free.
    pub fn remaining(&self) -> usize {
        N - self.len
    }

    /// Whether some text was cut off.
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    pub fn clear(&mut self) {
        self.len = 0;
        self.truncated = false;
    }

    /// Appends as much of `s` as fits, cut at a character boundary; returns
    /// the number of bytes taken.
    pub fn push_str(&mut self, s: &str) -> usize {
        let mut take = s.len().min(self.remaining());
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        self.bytes[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        if take < s.len() {
            self.truncated = true;
        }
        take
    }
}

impl<const N: usize> Default for FixedBuf<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Write for FixedBuf<N> {
    /// Never fails: text that does not fit is dropped (see [`FixedBuf::truncated`]).
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push_str(s);
        Ok(())
    }
}
