//! The machine-readable event stream on COM2: typed records, postcard +
//! COBS, one frame per event.
//!
//! Schema and wire format: `abi::event` (`docs/events.md` for the JSON the
//! host decodes them to). Every record carries `tsc`, the guest time stamp
//! counter when it was written (under `-icount shift=0` one tick is one
//! guest instruction, so the stream is reproducible), and `by`, the
//! supervisor that `EMIT`ted it (`None` for the kernel's own).
//!
//! Why not text: a JSON line cost ~10 guest instructions per byte plus its
//! formatting, and a `fault` event carries 25 numbers. A record is encoded
//! into a stack buffer (no allocation: the fatal paths emit too), with no
//! `core::fmt` anywhere on the way; names of exceptions, fault kinds and
//! backtrace symbols are derived on the host.
//!
//! The UART is driven by hand: the TX FIFO of a 16550A holds 16 bytes, so
//! one poll of the line status register (THRE: FIFO empty) lets 16 `out`s
//! through, where `uart_16550`'s per-byte path polls before every byte.
//!
//! Usage: `events::emit(&Event::Shutdown { code });`

use abi::event::{Event, MAX_RECORD};
use core::sync::atomic::{AtomicUsize, Ordering};
use spin::Mutex;
use x86_64::instructions::port::Port;

/// COM2's I/O base.
const COM2: u16 = 0x2f8;
/// Register offsets.
const DATA: u16 = 0;
const IER: u16 = 1;
const FCR: u16 = 2;
const IIR: u16 = 2;
const LCR: u16 = 3;
const MCR: u16 = 4;
const LSR: u16 = 5;
/// LSR bits.
const LSR_DATA_READY: u8 = 1 << 0;
const LSR_THR_EMPTY: u8 = 1 << 5;

/// The stream: whether COM2 is set up (events before `init` are dropped)
/// and the buffer records are encoded in. The lock keeps frames from
/// interleaving; the buffer is static so that an event costs no stack and
/// no zeroing.
struct Stream {
    ready: bool,
    buf: [u8; MAX_RECORD],
}

static STREAM: Mutex<Stream> = Mutex::new(Stream { ready: false, buf: [0; MAX_RECORD] });
/// Bytes that may be written per THRE poll: 16 with the FIFO, else 1.
static BURST: AtomicUsize = AtomicUsize::new(1);

fn outb(reg: u16, value: u8) {
    // SAFETY: COM2's registers on the PC platform QEMU emulates; this
    // module is their only user, and port writes touch no memory.
    unsafe { Port::<u8>::new(COM2 + reg).write(value) }
}

fn inb(reg: u16) -> u8 {
    // SAFETY: as in `outb`; reading LSR/IIR/RBR has no effect on memory.
    unsafe { Port::<u8>::new(COM2 + reg).read() }
}

/// Initialises COM2: 115200 8N1, FIFOs on, no interrupts.
pub fn init() {
    outb(IER, 0x00);
    outb(LCR, 0x80); // DLAB: the divisor follows
    outb(DATA, 0x01); // divisor 1: 115200 baud (QEMU ignores the rate)
    outb(IER, 0x00);
    outb(LCR, 0x03); // 8 bits, no parity, 1 stop bit
    outb(FCR, 0xc7); // FIFOs on and cleared, 14-byte receive threshold
    outb(MCR, 0x0b); // DTR, RTS, OUT2
    // IIR bits 6-7 read 11 when the FIFOs are really on (16550A).
    let burst = if inb(IIR) & 0xc0 == 0xc0 { 16 } else { 1 };
    BURST.store(burst, Ordering::Relaxed);
    STREAM.lock().ready = true;
}

/// A byte from the host on COM2's receive side (the control channel), if any.
pub fn try_read_byte() -> Option<u8> {
    let stream = STREAM.lock();
    if !stream.ready || inb(LSR) & LSR_DATA_READY == 0 {
        return None;
    }
    Some(inb(DATA))
}

/// Breaks the stream lock on fatal paths (see `console::write_fmt_fatal`).
pub fn unlock_for_fatal() {
    // SAFETY: only called on paths that end the machine.
    unsafe { STREAM.force_unlock() };
}

/// Writes a kernel event.
pub fn emit(event: &Event<'_>) {
    write_record(event);
}

/// Writes an event a supervisor encoded (`EMIT`, checked by
/// `abi::event::check_emit_batch`), spliced into its record as it is.
pub fn emit_encoded_by(by: u32, at: Option<u64>, event: &[u8]) {
    let mut stream = STREAM.lock();
    if !stream.ready {
        return;
    }
    // Stamped under the lock, so `emitted` (or `tsc`) grows along the stream.
    let now = crate::arch::rdtsc();
    let (tsc, emitted) = match at {
        Some(t) if t < now => (t, Some(now)),
        _ => (now, None),
    };
    if let Some(len) = abi::event::splice_record(tsc, Some(by), emitted, event, &mut stream.buf) {
        write_cobs(&stream.buf[..len]);
    }
}

/// A kernel event: written now, by nobody but the kernel.
fn write_record(event: &Event<'_>) {
    let mut stream = STREAM.lock();
    if !stream.ready {
        return;
    }
    // Stamped under the lock, so time stamps grow along the stream.
    let (tsc, by, emitted) = (crate::arch::rdtsc(), None, None);
    let len = match abi::event::encode_record_at(tsc, by, emitted, event, &mut stream.buf) {
        Ok(bytes) => bytes.len(),
        // Only a string longer than any the kernel bounds can get here.
        Err(_) => {
            let too_large = Event::TooLarge { kind: event.name() };
            match abi::event::encode_record_at(tsc, by, emitted, &too_large, &mut stream.buf) {
                Ok(bytes) => bytes.len(),
                Err(_) => return,
            }
        }
    };
    write_cobs(&stream.buf[..len]);
}

/// Writes `data` as one COBS frame, delimiter included, straight to the
/// UART (no second buffer).
fn write_cobs(data: &[u8]) {
    let mut uart = Uart { room: 0, burst: BURST.load(Ordering::Relaxed) };
    abi::event::cobs_encode_with(data, |b| uart.byte(b));
}

/// The transmit side, one LSR poll per FIFO's worth of bytes.
struct Uart {
    /// Bytes the FIFO still takes without polling.
    room: usize,
    burst: usize,
}

impl Uart {
    #[inline(always)]
    fn byte(&mut self, b: u8) {
        if self.room == 0 {
            while inb(LSR) & LSR_THR_EMPTY == 0 {
                core::hint::spin_loop();
            }
            self.room = self.burst;
        }
        self.room -= 1;
        outb(DATA, b);
    }
}

/// Cold paths (boot errors, panics, debug dumps) that describe something
/// with `core::fmt` format the text first, with this, and pass the `&str`:
/// the event path itself never formats.
pub fn text<const N: usize>(args: core::fmt::Arguments<'_>) -> heapless::String<N> {
    let mut s = heapless::String::new();
    let _ = core::fmt::write(&mut s, args);
    s
}
