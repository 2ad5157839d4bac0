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
//! The UART is driven in bursts (`uart.rs`): one poll of the line status
//! register per 16 bytes, each burst one `rep outsb` of a COBS frame
//! encoded whole into a static buffer first (`abi::event::cobs_encode`,
//! which scans 8 bytes at a time) from the record, whole in another.
//!
//! A supervisor's events (`EMIT`, [`emit_batch_by`]) are not re-encoded: the
//! kernel writes its own stamps (`tsc`, `by`, `emitted`) and frames them
//! with the supervisor's bytes as they are. It never decodes those (the
//! system call checked the batch's framing, times and kinds); what they
//! say is the supervisor's word, and a payload that does not decode is a
//! `decode_error` on the host, alone in its frame (`abi::event`, "Who may
//! write what").
//!
//! Usage: `events::emit(&Event::Shutdown { code });`

use crate::uart::{FIFO, Tx};
use abi::event::{Event, MAX_HEAD, MAX_RECORD, cobs_room};
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
/// The frame buffer: a whole record's frame and the encoder's slack.
const FRAME_ROOM: usize = cobs_room(MAX_RECORD);

/// The stream: whether COM2 is set up (events before `init` are dropped),
/// its transmitter, and the buffers records are encoded and framed in. The
/// lock keeps frames from interleaving; the buffers are static so that an
/// event costs no stack and no zeroing.
struct Stream {
    ready: bool,
    tx: Tx,
    buf: [u8; MAX_RECORD],
    frame: [u8; FRAME_ROOM],
}

static STREAM: Mutex<Stream> =
    Mutex::new(Stream { ready: false, tx: Tx::new(COM2, 1), buf: [0; MAX_RECORD], frame: [0; FRAME_ROOM] });

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
    let burst = if inb(IIR) & 0xc0 == 0xc0 { FIFO } else { 1 };
    let mut stream = STREAM.lock();
    stream.tx = Tx::new(COM2, burst);
    stream.ready = true;
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

/// Writes the events of a supervisor's `EMIT` batch, in order, each in a
/// record stamped `by` — the batch as checked by
/// `abi::event::check_emit_batch` (entries dated no later than now, of
/// supervisor kinds), its events' bytes as they are.
pub fn emit_batch_by(by: u32, body: &[u8]) {
    let mut stream = STREAM.lock();
    if !stream.ready {
        return;
    }
    let Stream { buf, frame, tx, .. } = &mut *stream;
    for (at, event) in abi::event::emit_entries(body).map_while(Result::ok) {
        // Stamped under the lock, so `emitted` (or `tsc`) grows along the stream.
        let now = crate::arch::rdtsc();
        let (tsc, emitted) = if at != 0 && at < now { (at, Some(now)) } else { (now, None) };
        // The record, whole in `buf`: the stamps, then the event's bytes.
        let Some(head) = buf.first_chunk_mut::<MAX_HEAD>() else { return };
        let h = abi::event::record_head(tsc, Some(by), emitted, head);
        let Some(record) = buf.get_mut(..h + event.len()) else { continue };
        record[h..].copy_from_slice(event);
        if let Some(n) = abi::event::cobs_encode(record, frame) {
            tx.write(&frame[..n]);
        }
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
    let Stream { buf, frame, tx, .. } = &mut *stream;
    if let Some(n) = abi::event::cobs_encode(&buf[..len], frame) {
        tx.write(&frame[..n]);
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
