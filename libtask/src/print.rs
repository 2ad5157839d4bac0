//! `print!` and `println!` to the console (the `WRITE` system call).
//!
//! One `println!` should be one `WRITE`: the kernel may preempt a task
//! between two system calls, and a line written in pieces would come out
//! torn by another task's output. So the formatted text is collected in a
//! [`FixedBuf`] on the stack (no heap: printing works before the allocator
//! has memory, and from inside it) and written once at the end. Only text
//! longer than the buffer takes several calls, each of at most [`LINE`]
//! bytes cut at a character boundary: the kernel always receives valid
//! UTF-8, and never more than it takes in one call (it caps a `WRITE` and
//! returns how much it wrote; a short write is continued).

use crate::buf::FixedBuf;
use crate::syscall;
use core::fmt::{self, Write};

/// Bytes collected before a `WRITE`: a long console line.
const LINE: usize = 256;

/// Collects text and writes it in as few `WRITE`s as it can.
struct Console {
    buf: FixedBuf<LINE>,
}

impl Console {
    fn flush(&mut self) {
        write_bytes(self.buf.as_str().as_bytes());
        self.buf.clear();
    }
}

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if s.len() > self.buf.remaining() {
            self.flush();
        }
        if s.len() > LINE {
            write_long(s);
        } else {
            self.buf.push_str(s);
        }
        Ok(())
    }
}

/// Writes `s` in pieces of at most [`LINE`] bytes, cut at char boundaries.
fn write_long(mut s: &str) {
    while !s.is_empty() {
        let mut cut = s.len().min(LINE);
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        let (piece, rest) = s.split_at(cut);
        write_bytes(piece.as_bytes());
        s = rest;
    }
}

/// Writes all of `bytes`, continuing after short writes. Console output has
/// no one to report a failure to, so an error ends the attempt silently.
fn write_bytes(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        match syscall::write_raw(bytes.as_ptr() as u64, bytes.len() as u64) {
            Ok(n) if n > 0 => bytes = &bytes[(n as usize).min(bytes.len())..],
            _ => return,
        }
    }
}

/// Formats `args` and writes them to the console; used by [`print!`].
#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>) {
    let mut console = Console { buf: FixedBuf::new() };
    let _ = console.write_fmt(args);
    console.flush();
}

/// Prints to the console, like `std::print!`.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::print::_print(::core::format_args!($($arg)*))
    };
}

/// Prints a line to the console, like `std::println!`; one line is written
/// with one system call, so lines of different tasks never interleave.
#[macro_export]
macro_rules! println {
    () => {
        $crate::print::_print(::core::format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::print::_print(::core::format_args!("{}\n", ::core::format_args!($($arg)*)))
    };
}
