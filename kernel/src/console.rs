//! The human console on COM1, and the `log` backend that writes to it.
//!
//! Console output is for people; tools read the event stream on COM2 (see
//! `events.rs`). `uart_16550` sets COM1 up; both ports are written in
//! bursts through `uart.rs`.

use crate::uart::{FIFO, Tx};
use core::fmt::{self, Write};
use spin::Mutex;
use uart_16550::backend::PioBackend;
use uart_16550::{Config, Uart16550};

/// COM1's I/O base.
const COM1: u16 = 0x3f8;

/// COM1: the crate set it up (FIFOs on); lines are written in bursts
/// (`uart.rs`: one status poll per 16 bytes, one `rep outsb` each), with
/// `\n` turned into `\r\n` here. The crate's TTY layer sends byte by byte,
/// polling the UART each time, which under `-icount` made every console
/// line cost thousands of instructions.
static CONSOLE: Mutex<Option<Console>> = Mutex::new(None);

struct Console {
    /// Kept for what it owns (the port); the writes go through `tx`.
    _uart: Uart16550<PioBackend>,
    tx: Tx,
}

impl Console {
    /// Sends `bytes` as they are, with terminal newlines: the runs between
    /// `\n`s go out whole.
    fn send(&mut self, mut bytes: &[u8]) {
        while let Some(i) = abi::bytes::find(bytes, b'\n') {
            self.tx.write(&bytes[..i]);
            self.tx.write(b"\r\n");
            bytes = &bytes[i + 1..];
        }
        self.tx.write(bytes);
    }
}

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.send(s.as_bytes());
        Ok(())
    }
}

/// Initialises COM1 and installs the logger. Call once, early.
pub fn init() {
    // SAFETY: 0x3f8 is COM1 on the PC platform QEMU emulates, and this module
    // is its only user.
    let config = Config { check_cts_before_sending: false, ..Config::default() };
    let uart = unsafe { Uart16550::new_port(COM1) }.ok().and_then(|mut u| u.init(config).ok().map(|()| u));
    *CONSOLE.lock() = uart.map(|u| Console { _uart: u, tx: Tx::new(COM1, FIFO) });
    // A second call would fail harmlessly; the first logger stays installed.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
}

/// Writes formatted text to the console (dropped if COM1 is absent).
pub fn write_fmt(args: fmt::Arguments) {
    // Format first, then write once: fewer UART status polls per line.
    let mut line = heapless::String::<512>::new();
    let fits = line.write_fmt(args).is_ok();
    if let Some(console) = CONSOLE.lock().as_mut() {
        if fits {
            console.send(line.as_bytes());
        } else {
            let _ = console.write_fmt(args);
        }
    }
}

/// Writes raw bytes to the console, without formatting (a task's `write`:
/// the console is a byte stream; invalid UTF-8 goes out as it is and the
/// reader decodes it lossily). `each` is handed a writer that may be
/// called several times under one lock (a task's text, piece by piece).
pub fn write_pieces(each: impl FnOnce(&mut dyn FnMut(&[u8]))) {
    if let Some(console) = CONSOLE.lock().as_mut() {
        each(&mut |bytes: &[u8]| console.send(bytes));
    }
}

/// For the fatal paths (panic, kernel fault): takes the console even if the
/// code that faulted was holding its lock. Never returns the lock.
pub fn write_fmt_fatal(args: fmt::Arguments) {
    // SAFETY: only called on paths that end the machine; whatever held the
    // lock will never run again, so breaking it cannot race.
    unsafe { CONSOLE.force_unlock() };
    write_fmt(args);
}

/// `print!` to the console.
#[macro_export]
macro_rules! kprint {
    ($($arg:tt)*) => { $crate::console::write_fmt(format_args!($($arg)*)) };
}

/// `println!` to the console.
#[macro_export]
macro_rules! kprintln {
    () => { $crate::kprint!("\n") };
    ($($arg:tt)*) => { $crate::console::write_fmt(format_args!("{}\n", format_args!($($arg)*))) };
}

struct ConsoleLogger;
static LOGGER: ConsoleLogger = ConsoleLogger;

impl log::Log for ConsoleLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if self.enabled(record.metadata()) {
            write_fmt(format_args!("[{:5}] {}\n", record.level(), record.args()));
        }
    }

    fn flush(&self) {}
}
