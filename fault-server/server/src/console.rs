//! The console line of a fault report, written without `core::fmt`.
//!
//! A person watching `cargo xtask run` reads one line per fault on COM1:
//! who faulted, how, and what the server did. The report is made off the
//! recovery path, but its cost still counts (`fault_to_report`), and
//! `core::fmt`'s machinery costs several thousand guest instructions for a
//! line of ten fields: this builds the line by hand in a fixed buffer (cut
//! at its end, never longer) and writes it with one `WRITE`. The builder
//! works in place (`&mut self`): passed by value, its 200 bytes were
//! copied at every field.

/// A console line under construction.
pub struct Line {
    buf: [u8; 192],
    len: usize,
}

impl Line {
    pub fn new() -> Line {
        Line { buf: [0; 192], len: 0 }
    }

    pub fn s(&mut self, text: &str) -> &mut Line {
        self.bytes(text.as_bytes())
    }

    /// Appends `b` (cut at the end of the buffer).
    fn bytes(&mut self, b: &[u8]) -> &mut Line {
        let n = b.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&b[..n]);
        self.len += n;
        self
    }

    /// `v` in decimal.
    pub fn d(&mut self, mut v: u64) -> &mut Line {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.bytes(&digits[i..])
    }

    /// `v` as `0x…`, like `{:#x}`.
    pub fn x(&mut self, v: u64) -> &mut Line {
        let mut out = [0u8; 18];
        let nibbles = if v == 0 { 1 } else { (67 - v.leading_zeros() as usize) / 4 };
        out[0] = b'0';
        out[1] = b'x';
        for k in 0..nibbles {
            let n = ((v >> (4 * (nibbles - 1 - k))) & 0xf) as u8;
            out[2 + k] = if n < 10 { b'0' + n } else { b'a' + n - 10 };
        }
        self.bytes(&out[..2 + nibbles])
    }

    /// Writes the line and a newline to the console (as bytes: the
    /// console takes any, and a line cut at the end of the buffer may end
    /// inside a character).
    pub fn print(&mut self) {
        self.bytes(b"\n");
        let _ = libtask::syscall::write_raw(self.buf.as_ptr() as u64, self.len as u64);
    }
}
