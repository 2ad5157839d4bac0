//! The human console on COM1, and the `log` backend that writes to it.
//!
//! Console output is for people; tools read the event stream on COM2 (see
//! `events.rs`). Both go through `uart_16550`.

use core::fmt::{self, Write};
use spin::Mutex;
use uart_16550::backend::PioBackend;
use uart_16550::{Config, Uart16550};

/// COM1's I/O base.
const COM1: u16 = 0x3f8;

/// COM1, written a line at a time with `\n` turned into `\r\n` here (the
/// crate's TTY layer sends byte by byte, polling the UART each time, which
/// under `-icount` made every console line cost thousands of instructions).
static CONSOLE: Mutex<Option<Uart16550<PioBackend>>> = Mutex::new(None);

/// Sends `text` with terminal newlines, in FIFO-sized runs.
fn send(uart: &mut Uart16550<PioBackend>, text: &str) {
    send_bytes(uart, text.as_bytes());
}

/// Sends `bytes` as they are, with terminal newlines: the line status is
/// polled once per FIFO's worth of bytes (16; `init` turned the FIFOs on),
/// not per byte — under `-icount` a console line costs what its bytes do.
fn send_bytes(_uart: &mut Uart16550<PioBackend>, bytes: &[u8]) {
    use x86_64::instructions::port::Port;
    const LSR_THR_EMPTY: u8 = 1 << 5;
    const FIFO: usize = 16;
    let mut room = 0;
    let mut put = |b: u8| {
        if room == 0 {
            // SAFETY: COM1's line status register; reading it touches no memory.
            while unsafe { Port::<u8>::new(COM1 + 5).read() } & LSR_THR_EMPTY == 0 {
                core::hint::spin_loop();
            }
            room = FIFO;
        }
        room -= 1;
        // SAFETY: COM1's transmit register (the caller holds the console
        // lock, `_uart`); a port write touches no memory.
        unsafe { Port::<u8>::new(COM1).write(b) };
    };
    for &b in bytes {
        if b == b'\n' {
            put(b'\r');
        }
        put(b);
    }
}

struct Sink<'a>(&'a mut Uart16550<PioBackend>);

impl Write for Sink<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        send(self.0, s);
        Ok(())
    }
}

/// Initialises COM1 and installs the logger. Call once, early.
pub fn init() {
    // SAFETY: 0x3f8 is COM1 on the PC platform QEMU emulates, and this module
    // is its only user.
    let config = Config { check_cts_before_sending: false, ..Config::default() };
    let uart = unsafe { Uart16550::new_port(COM1) }.ok().and_then(|mut u| u.init(config).ok().map(|()| u));
    *CONSOLE.lock() = uart;
    // A second call would fail harmlessly; the first logger stays installed.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
}

/// Writes formatted text to the console (dropped if COM1 is absent).
pub fn write_fmt(args: fmt::Arguments) {
    // Format first, then write once: fewer UART status polls per line.
    let mut line = heapless::String::<512>::new();
    let fits = line.write_fmt(args).is_ok();
    if let Some(uart) = CONSOLE.lock().as_mut() {
        if fits {
            send(uart, &line);
        } else {
            let _ = Sink(uart).write_fmt(args);
        }
    }
}

/// Writes raw bytes to the console, without formatting (a task's `write`:
/// the console is a byte stream; invalid UTF-8 goes out as it is and the
/// reader decodes it lossily). `each` is handed a writer that may be
/// called several times under one lock (a task's text, piece by piece).
pub fn write_pieces(each: impl FnOnce(&mut dyn FnMut(&[u8]))) {
    if let Some(uart) = CONSOLE.lock().as_mut() {
        each(&mut |bytes: &[u8]| send_bytes(uart, bytes));
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
