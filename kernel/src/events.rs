//! The machine-readable event stream: one JSON object per line on COM2.
//!
//! Schema: `docs/events.md`. Every event has `"ev"` (its kind) and `"tsc"`
//! (the guest time stamp counter: under `-icount shift=0` one tick is one
//! guest instruction, so the stream is reproducible). Fields are written in
//! the order the code gives them, and the writer is allocation-free, so the
//! fatal paths can emit events too.
//!
//! Usage: `Event::new("boot").str("version", V).u64("mem_bytes", n).emit();`

use core::fmt::{self, Write};
use spin::{Mutex, MutexGuard};
use uart_16550::Uart16550;
use uart_16550::backend::PioBackend;

/// COM2's I/O base.
const COM2: u16 = 0x2f8;

struct Port(Uart16550<PioBackend>);

static STREAM: Mutex<Option<Port>> = Mutex::new(None);

/// Initialises COM2. Events emitted before this are dropped.
pub fn init() {
    // SAFETY: 0x2f8 is COM2 on the PC platform QEMU emulates; this module is
    // its only user.
    let Ok(mut uart) = (unsafe { Uart16550::new_port(COM2) }) else { return };
    // No CTS check per write: the host end is QEMU (or a cable without
    // flow control); each check would be two more port reads per chunk.
    let config = uart_16550::Config { check_cts_before_sending: false, ..uart_16550::Config::default() };
    if uart.init(config).is_ok() {
        *STREAM.lock() = Some(Port(uart));
    }
}

/// A byte from the host on COM2's receive side (the control channel), if any.
pub fn try_read_byte() -> Option<u8> {
    STREAM.lock().as_mut()?.0.try_receive_byte().ok()
}

/// Breaks the stream lock on fatal paths (see `console::write_fmt_fatal`).
pub fn unlock_for_fatal() {
    // SAFETY: only called on paths that end the machine.
    unsafe { STREAM.force_unlock() };
}

/// One event being written. Holds the stream lock so lines never interleave,
/// and collects the line in a buffer sent in few UART writes: each write
/// polls the line status register, and under `-icount` every poll is guest
/// instructions spent on every event.
pub struct Event {
    out: MutexGuard<'static, Option<Port>>,
    buf: heapless::Vec<u8, 1024>,
}

impl Event {
    pub fn new(kind: &str) -> Event {
        Self::new_at(kind, crate::arch::rdtsc())
    }

    /// An event that happened at `tsc` (a supervisor's report after the fact).
    pub fn new_at(kind: &str, tsc: u64) -> Event {
        let mut ev = Event { out: STREAM.lock(), buf: heapless::Vec::new() };
        ev.raw("{\"ev\":");
        ev.quoted(kind);
        ev.key("tsc");
        ev.decimal(tsc);
        ev
    }

    pub fn str(mut self, key: &str, value: &str) -> Self {
        self.key(key);
        self.quoted(value);
        self
    }

    pub fn u64(mut self, key: &str, value: u64) -> Self {
        self.key(key);
        self.decimal(value);
        self
    }

    pub fn i64(mut self, key: &str, value: i64) -> Self {
        self.key(key);
        self.fmt(format_args!("{value}"));
        self
    }

    pub fn bool(mut self, key: &str, value: bool) -> Self {
        self.key(key);
        self.raw(if value { "true" } else { "false" });
        self
    }

    /// A number printed as a `"0x…"` string (addresses, registers).
    pub fn hex(mut self, key: &str, value: u64) -> Self {
        self.key(key);
        self.hex_string(value);
        self
    }

    /// A string field whose value is formatted in place (escaped).
    pub fn display(mut self, key: &str, value: fmt::Arguments) -> Self {
        self.key(key);
        self.raw("\"");
        self.fmt_escaped(value);
        self.raw("\"");
        self
    }

    /// A nested object of hex strings, e.g. the register file.
    pub fn hex_map(mut self, key: &str, pairs: &[(&str, u64)]) -> Self {
        self.key(key);
        self.raw("{");
        for (i, (k, v)) in pairs.iter().enumerate() {
            if i > 0 {
                self.raw(",");
            }
            self.quoted(k);
            self.raw(":");
            self.hex_string(*v);
        }
        self.raw("}");
        self
    }

    /// Appends `body`, the inside of a JSON object (`"k":v,…`), as is. The
    /// caller checks it is one line of JSON (see `syscall::emit`).
    pub fn raw_fields(mut self, body: &str) -> Self {
        if !body.is_empty() {
            self.raw(",");
            self.raw(body);
        }
        self
    }

    pub fn emit(mut self) {
        self.raw("}\n");
        self.flush();
    }

    fn flush(&mut self) {
        if let Some(port) = self.out.as_mut() {
            port.0.send_bytes_exact(&self.buf);
        }
        self.buf.clear();
    }

    fn key(&mut self, key: &str) {
        self.raw(",");
        self.quoted(key);
        self.raw(":");
    }

    // Numbers are formatted by hand: `core::fmt` costs hundreds of guest
    // instructions per number, and a `fault` event carries 25 of them.

    fn decimal(&mut self, mut v: u64) {
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
        self.bytes(&digits[i..]);
    }

    /// `"0x…"` without leading zeros, like `{:#x}`.
    fn hex_string(&mut self, v: u64) {
        let mut out = [0u8; 20];
        let nibbles = if v == 0 { 1 } else { (67 - v.leading_zeros() as usize) / 4 };
        out[0] = b'"';
        out[1] = b'0';
        out[2] = b'x';
        for k in 0..nibbles {
            let n = ((v >> (4 * (nibbles - 1 - k))) & 0xf) as u8;
            out[3 + k] = if n < 10 { b'0' + n } else { b'a' + n - 10 };
        }
        out[3 + nibbles] = b'"';
        self.bytes(&out[..4 + nibbles]);
    }

    fn bytes(&mut self, b: &[u8]) {
        if self.out.is_none() {
            return;
        }
        if self.buf.len() + b.len() > self.buf.capacity() {
            self.flush();
        }
        let _ = self.buf.extend_from_slice(b);
    }

    fn raw(&mut self, s: &str) {
        if self.out.is_none() {
            return;
        }
        for chunk in s.as_bytes().chunks(256) {
            if self.buf.len() + chunk.len() > self.buf.capacity() {
                self.flush();
            }
            let _ = self.buf.extend_from_slice(chunk);
        }
    }

    fn fmt(&mut self, args: fmt::Arguments) {
        let _ = Buffered(self).write_fmt(args);
    }

    fn quoted(&mut self, s: &str) {
        self.raw("\"");
        // The common case (names, kinds) needs no escaping: copy it whole.
        if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
            self.raw(s);
        } else {
            let _ = Escaper(&mut Buffered(self)).write_str(s);
        }
        self.raw("\"");
    }

    fn fmt_escaped(&mut self, args: fmt::Arguments) {
        let _ = Escaper(&mut Buffered(self)).write_fmt(args);
    }
}

/// `fmt::Write` into the event's buffer.
struct Buffered<'a>(&'a mut Event);

impl Write for Buffered<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.raw(s);
        Ok(())
    }
}

/// Escapes text for a JSON string as it streams through.
struct Escaper<'a, W: Write>(&'a mut W);

impl<W: Write> Write for Escaper<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            match c {
                '"' => self.0.write_str("\\\"")?,
                '\\' => self.0.write_str("\\\\")?,
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                c if (c as u32) < 0x20 => write!(self.0, "\\u{:04x}", c as u32)?,
                c => self.0.write_char(c)?,
            }
        }
        Ok(())
    }
}
