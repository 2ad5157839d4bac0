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

use abi::event::{Event, MAX_FRAME};
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

/// Whether COM2 is set up (events before `init` are dropped). The lock
/// keeps frames from interleaving.
static STREAM: Mutex<bool> = Mutex::new(false);
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
    *STREAM.lock() = true;
}

/// A byte from the host on COM2's receive side (the control channel), if any.
pub fn try_read_byte() -> Option<u8> {
    let ready = STREAM.lock();
    if !*ready || inb(LSR) & LSR_DATA_READY == 0 {
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
    write_record(None, event);
}

/// Writes an event on behalf of supervisor task `by` (`EMIT`).
pub fn emit_by(by: u32, event: &Event<'_>) {
    write_record(Some(by), event);
}

fn write_record(by: Option<u32>, event: &Event<'_>) {
    let ready = STREAM.lock();
    if !*ready {
        return;
    }
    // Stamped under the lock, so time stamps grow along the stream.
    let tsc = crate::arch::rdtsc();
    let mut buf = [0u8; MAX_FRAME];
    match abi::event::encode_frame(tsc, by, event, &mut buf) {
        Ok(frame) => write_bytes(frame),
        Err(_) => {
            // Only a string longer than any the kernel bounds can get here.
            let mut small = [0u8; 512];
            let too_large = Event::TooLarge { kind: event.name() };
            if let Ok(frame) = abi::event::encode_frame(tsc, by, &too_large, &mut small) {
                write_bytes(frame);
            }
        }
    }
    drop(ready);
}

/// The tight loop: one LSR poll per FIFO's worth of bytes.
fn write_bytes(bytes: &[u8]) {
    let burst = BURST.load(Ordering::Relaxed);
    for chunk in bytes.chunks(burst) {
        while inb(LSR) & LSR_THR_EMPTY == 0 {
            core::hint::spin_loop();
        }
        for &b in chunk {
            outb(DATA, b);
        }
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
