//! `emitter`: a supervisor (manifest capability `supervisor`) that writes
//! one typed event of each supervisor kind with
//! `libtask::supervise::emit_event`, naming code locations by address so
//! the host must fill in the symbol names from this task's ELF, and then
//! tries bodies the kernel must refuse: bytes that are no batch, a kernel
//! kind, an empty and an oversized body, an entry with bytes after it, an
//! unknown kind, an entry dated in the future.
//!
//! Last, a batch whose middle event has a supervisor kind's tag and
//! garbage after it, between two good `check`s: the kernel checks framing,
//! times and kinds, not payloads, so it takes the batch; the host must
//! turn the garbage into a `decode_error` stamped with our id and decode
//! both neighbours (`emitter:before-garbage`, `emitter:after-garbage`).
//!
//! Checks: `emit-typed` (ok: every good event was accepted; value: a bit
//! per refusal), `emit-refused` (ok: every bad body got `BadArgument`;
//! value: a bit per acceptance), `emit-garbage` (ok: the batch with garbage
//! was accepted). `marker` is the function whose address the events carry
//! (`qemu-tests/tests/events.rs`).
#![no_std]
#![no_main]

use libtask::abi::event::{Decision, Event, FaultSummary, Frame, MAX_EMIT_BATCH, Sym, WalkStop, heapless};
use libtask::abi::syscall::{Error, nr};
use libtask::supervise::emit_event;
use libtask::syscall::raw;
use libtask::{Start, report};

libtask::entry!(main);

/// The code location the events name.
#[inline(never)]
#[unsafe(no_mangle)]
pub extern "C" fn emitter_marker() -> u64 {
    core::hint::black_box(7)
}

fn raw_emit(body: &[u8]) -> Result<(), Error> {
    // SAFETY: EMIT only reads `body`, which lives for the call.
    Error::decode(unsafe { raw::syscall2(nr::EMIT, body.as_ptr() as u64, body.len() as u64) }).map(drop)
}

fn main(start: Start) {
    let me = start.id;
    let marker = emitter_marker as *const () as u64;
    emitter_marker();

    let mut frames = heapless::Vec::new();
    let _ = frames.push(Frame { pc: marker, exact: true });
    // A return address just past the marker's first byte: named at pc - 1.
    let _ = frames.push(Frame { pc: marker + 1, exact: false });
    let good = [
        Event::Backtrace { task: me, seq: 0, stop: WalkStop::NoFde(0x10), truncated: false, pages_read: 1, frames },
        Event::Release {
            task: me,
            seq: 0,
            kind: "mutex",
            addr: 0x2000_0000_0000,
            scope: 1,
            origin: "mutex_registry",
            frame: Sym::Addr(marker),
            outcome: "released",
            woken: Some(0),
            count: None,
            error: None,
            poisoned: true,
        },
        Event::FaultReport {
            task: me,
            seq: 0,
            fault: Some(FaultSummary { kind: 1, rip: marker, restarts: 0, vector: 14, error_code: 6, cr2: 0x10 }),
            message: None,
            action: Decision::Rollback { scope: 1, frame: Sym::Addr(marker), releases: 1, pages: 2 },
            cost: None,
        },
        Event::Escalate {
            task: me,
            name: None,
            seq: 0,
            action: "fresh_start",
            reason_code: None,
            reason: Some("emitter test"),
            restarts: None,
            from_scope: None,
            retries_in_window: None,
            window_ms: None,
        },
        Event::Check { task: None, task_name: None, name: "emitter:typed-check", ok: true, value: None, error: None },
    ];
    let mut refused = 0u64;
    for (i, e) in good.iter().enumerate() {
        if emit_event(e).is_err() {
            refused |= 1 << i;
        }
    }
    report("emit-typed", refused == 0, refused);

    let mut buf = [0u8; 64];
    use libtask::abi::event::encode_emit_entry;
    let kernel_kind = encode_emit_entry(0, &Event::Shutdown { code: 0 }, &mut buf, 0).unwrap_or(0);
    let mut trailing = [0u8; 128];
    let check = Event::Check { task: None, task_name: None, name: "x", ok: true, value: None, error: None };
    let n = encode_emit_entry(0, &check, &mut trailing, 0).unwrap_or(0);
    let mut future = [0u8; 128];
    let f = encode_emit_entry(u64::MAX, &check, &mut future, 0).unwrap_or(0);
    let oversized = [1u8; MAX_EMIT_BATCH + 1];
    let bad: [&[u8]; 7] = [
        &[0xff, 0xff, 0xff],                     // no event
        &buf[..kernel_kind],                     // a kernel kind
        &[],                                     // empty
        &oversized,                              // too large
        &trailing[..n + 1],                      // an event and a byte more (a second, broken entry)
        &[3, 0, 0, 0, 0, 0, 0, 0, 2, 0, 200, 1], // at 3, 2 bytes: an unknown event tag (200)
        &future[..f],                            // an event dated in the future
    ];
    let mut accepted = 0u64;
    for (i, body) in bad.iter().enumerate() {
        if raw_emit(body) != Err(Error::BadArgument) {
            accepted |= 1 << i;
        }
    }
    report("emit-refused", accepted == 0, accepted);

    // Garbage with a supervisor kind's tag (`Release`, 31), between two
    // good events of one batch.
    let mut batch = [0u8; 256];
    let before = Event::Check {
        task: None,
        task_name: None,
        name: "emitter:before-garbage",
        ok: true,
        value: None,
        error: None,
    };
    let after =
        Event::Check { task: None, task_name: None, name: "emitter:after-garbage", ok: true, value: None, error: None };
    let mut n = encode_emit_entry(0, &before, &mut batch, 0).unwrap_or(0);
    let garbage = [31u8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
    // The entry: `at` 0 (now, 8 bytes), the length (2 bytes), the bytes.
    batch[n..n + 8].fill(0);
    batch[n + 8..n + 10].copy_from_slice(&(garbage.len() as u16).to_le_bytes());
    batch[n + 10..n + 10 + garbage.len()].copy_from_slice(&garbage);
    n += 10 + garbage.len();
    n = encode_emit_entry(0, &after, &mut batch, n).unwrap_or(0);
    let taken = n > 0 && raw_emit(&batch[..n]).is_ok();
    report("emit-garbage", taken, 0);
}
