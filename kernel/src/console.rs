//! The human console on COM1, and the `log` backend that writes to it.
//!
//! Console output is for people; tools read the event stream on COM2 (see
//! `events.rs`). Both go through `uart_16550`.

use core::fmt::{self, Write};
use spin::Mutex;
use uart_16550::backend::PioBackend;
use uart_16550::{Config, Uart16550Tty};

/// COM1's I/O base.
const COM1: u16 = 0x3f8;

static CONSOLE: Mutex<Option<Uart16550Tty<PioBackend>>> = Mutex::new(None);

/// Initialises COM1 and installs the logger. Call once, early.
pub fn init() {
    // SAFETY: 0x3f8 is COM1 on the PC platform QEMU emulates, and this module
    // is its only user.
    let uart = unsafe { Uart16550Tty::new_port(COM1, Config::default()) };
    *CONSOLE.lock() = uart.ok();
    // A second call would fail harmlessly; the first logger stays installed.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
}

/// Writes formatted text to the console (dropped if COM1 is absent).
pub fn write_fmt(args: fmt::Arguments) {
    if let Some(uart) = CONSOLE.lock().as_mut() {
        let _ = uart.write_fmt(args);
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
