//! The console line of a fault report, written without `core::fmt`.
//!
//! A person watching `cargo xtask run` reads one line per fault on COM1:
//! who faulted, how, and what the server did. The report is made off the
//! recovery path, but its cost still counts (`fault_to_report`), and
//! `core::fmt`'s machinery costs several thousand guest instructions for a
//! line of ten fields: this builds the line by hand in a fixed buffer (cut
//! at its end, never longer) and writes it with one `WRITE`.

/// A console line under construction.
pub struct Line {
    buf: [u8; 192],
    len: usize,
}

impl Line {
    pub fn new() -> Line {
        Line { buf: [0; 192], len: 0 }
    }

    pub fn s(mut self, text: &str) -> Line {
        for &b in text.as_bytes() {
            if self.len < self.buf.len() {
                self.buf[self.len] = b;
                self.len += 1;
            }
        }
        self
    }

    /// `v` in decimal.
    pub fn d(self, mut v: u64) -> Line {
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
        self.s(core::str::from_utf8(&digits[i..]).unwrap_or("?"))
    }

    /// `v` as `0x…`, like `{:#x}`.
    pub fn x(self, v: u64) -> Line {
        let mut out = [0u8; 18];
        let nibbles = if v == 0 { 1 } else { (67 - v.leading_zeros() as usize) / 4 };
        out[0] = b'0';
        out[1] = b'x';
        for k in 0..nibbles {
            let n = ((v >> (4 * (nibbles - 1 - k))) & 0xf) as u8;
            out[2 + k] = if n < 10 { b'0' + n } else { b'a' + n - 10 };
        }
        self.s(core::str::from_utf8(&out[..2 + nibbles]).unwrap_or("?"))
    }

    /// Writes the line and a newline to the console.
    pub fn print(self) {
        let line = self.s("\n");
        let _ = libtask::syscall::write(core::str::from_utf8(&line.buf[..line.len]).unwrap_or("?\n"));
    }
}
