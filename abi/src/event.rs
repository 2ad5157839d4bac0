//! The event stream's schema: one typed [`Event`] per kind of
//! `docs/events.md`, and its wire format on COM2.
//!
//! # Wire format
//!
//! Every event is one [`Record`] — `{ tsc, by, event }` — encoded with
//! [postcard](https://docs.rs/postcard) (varint integers, length-prefixed
//! strings, enums tagged by variant index) and framed with COBS: the frame
//! holds no `0x00` byte and ends with one, so a reader that starts in the
//! middle of a stream (or loses bytes) resynchronises at the next `0x00`.
//! The guest never formats text for events: names of exceptions and fault
//! kinds are derived on the host from the numbers (`abi::trap`,
//! `abi::fault`), backtrace frames travel as pcs and the host names them
//! from the task's ELF, the register file is a fixed struct of 22 varints.
//! `cargo xtask` turns records back into the JSON lines of
//! `docs/events.md` (`xtask::events`).
//!
//! # Growing the schema
//!
//! Postcard tags enum variants by **index** and encodes struct fields by
//! **position**, without names. So:
//! - a new kind is a new variant **appended at the end** of [`Event`]
//!   (never inserted, never reordered, never removed: a retired kind keeps
//!   its slot);
//! - a new field of an existing kind changes its encoding: add a new
//!   variant instead (e.g. `FaultV2`) and keep decoding the old one, or
//!   version the whole stream. The same holds for the nested enums
//!   ([`Sym`], [`WalkStop`], [`Decision`]).
//!
//! A host decoder older than the guest reports records it cannot decode as
//! `decode_error` lines (with the bytes), never drops them.
//!
//! # Who may write what
//!
//! The kernel writes every kind. A supervisor (the fault server) writes
//! only the kinds of [`Event::is_supervisor_kind`] through the `EMIT`
//! system call: it passes a postcard-encoded [`Event`] (unframed, at most
//! [`MAX_EMIT`] bytes), and the kernel decodes it to check it, stamps
//! `tsc` and `by`, and frames it.

use crate::trap::Registers;
use serde::{Deserialize, Serialize};

/// The `heapless` of [`Event::Backtrace`]'s frame list, for writers.
pub use heapless;

/// Most frames in a [`Event::Backtrace`].
pub const MAX_FRAMES: usize = 32;
/// Largest postcard-encoded [`Event`] that `EMIT` accepts.
pub const MAX_EMIT: usize = 2200;
/// Largest `EMIT` body: a batch of `(at, event)` entries
/// ([`encode_emit_entry`]), each event at most [`MAX_EMIT`] bytes.
pub const MAX_EMIT_BATCH: usize = 8192;
/// Largest framed record (COBS adds one byte per 254 and the delimiter).
pub const MAX_FRAME: usize = 2400;
/// Largest unframed record: its frame fits [`MAX_FRAME`]. A kernel event
/// that does not fit is replaced by [`Event::TooLarge`].
pub const MAX_RECORD: usize = MAX_FRAME - MAX_FRAME / 254 - 2;

/// One event as written on COM2 (before COBS framing).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Record<'a> {
    /// Guest time stamp counter when the event happened: when the kernel
    /// wrote it, or for a supervisor's report made after the fact (`EMIT`
    /// with a time), when what it reports happened.
    pub tsc: u64,
    /// The supervisor task that `EMIT`ted it; `None` for the kernel's own.
    pub by: Option<u32>,
    #[serde(borrow)]
    pub event: Event<'a>,
    /// When the kernel wrote it, if later than `tsc` (a deferred report).
    pub emitted: Option<u64>,
}

/// The register file, encoded as 22 varints in the order of
/// [`Registers::named`] (serde's remote derive: `Registers` stays plain).
#[derive(Serialize, Deserialize)]
#[serde(remote = "Registers")]
struct RegistersDef {
    rax: u64,
    rbx: u64,
    rcx: u64,
    rdx: u64,
    rsi: u64,
    rdi: u64,
    rbp: u64,
    r8: u64,
    r9: u64,
    r10: u64,
    r11: u64,
    r12: u64,
    r13: u64,
    r14: u64,
    r15: u64,
    rip: u64,
    rsp: u64,
    rflags: u64,
    cs: u64,
    ss: u64,
    fs_base: u64,
    gs_base: u64,
}

/// A code location: a name the writer already has, or an address the host
/// names from the task's ELF symbol table (`?` when it has none).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sym<'a> {
    Name(&'a str),
    Addr(u64),
}

/// The frames of a backtrace (at most [`MAX_FRAMES`]).
pub type FrameList = heapless::Vec<Frame, MAX_FRAMES>;

/// One frame of a task backtrace.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Frame {
    /// The frame's pc (a return address for callers).
    pub pc: u64,
    /// `pc` is the exact instruction (frame 0, signal frames); otherwise it
    /// is a return address and the host names it at `pc - 1` (the call).
    pub exact: bool,
}

/// Why a backtrace walk ended (JSON `stop`).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkStop<'a> {
    /// `outermost`: reached `_start`, the whole stack.
    Outermost,
    /// `depth_limit`.
    DepthLimit,
    /// `no_fde at 0x…`: a pc without unwind info.
    NoFde(u64),
    /// `unreadable 0x…`: stack memory the walker could not read.
    Unreadable(u64),
    /// Anything else, as text.
    Other(&'a str),
}

/// The fault a `fault_report` is about (absent for a malformed message).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FaultSummary {
    /// `abi::fault::FaultKind` as a number (JSON: its name, `unknown` if none).
    pub kind: u64,
    pub rip: u64,
    /// Restarts of the task before this fault.
    pub restarts: u64,
    /// Exceptions only (JSON `vector`, `exception`, `error_code`; `cr2` for page faults).
    pub vector: u64,
    pub error_code: u64,
    pub cr2: u64,
}

/// The supervisor's decision in a `fault_report` (JSON `action` and its fields).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision<'a> {
    /// `restart` from the image after `delay_ms`.
    Restart { delay_ms: u64 },
    /// `resume` at `resume_rip`.
    Resume { resume_rip: u64 },
    /// `stop`, with the reason (`restart_storm`: also the window figures).
    Stop { reason: &'a str, restarts_in_window: Option<u64>, window_ms: Option<u64> },
    /// `rollback` to checkpoint scope `scope`, whose frame is `frame`.
    Rollback {
        scope: u64,
        #[serde(borrow)]
        frame: Sym<'a>,
        releases: u64,
        pages: u64,
    },
    /// Any other action, named.
    Other { action: &'a str },
}

/// What one recovery cost, from the fault server's time stamps (guest
/// instructions under icount; JSON `fault_tsc`, `stack_bytes`, `phases`,
/// `backlog`, `late`): `docs/events.md`, `fault_report`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecoveryCost {
    /// The TSC when the kernel took the fault.
    pub fault_tsc: u64,
    /// Bytes of the task's stack the fault message carried.
    pub stack_bytes: u64,
    /// Phases, in order: delivery (fault → server holding the message),
    /// decision, walk, plan, request (the `RECOVER` call built and
    /// entered), releases, rollback (or restart, stop).
    pub phases: [u64; 7],
    /// Reports waiting when this one was queued (itself included).
    pub backlog: u64,
    /// Reports so far emitted before a recovery because the backlog was full.
    pub late: u64,
}

/// The JSON names of [`RecoveryCost::phases`].
pub const PHASES: [&str; 7] = ["delivery", "decision", "walk", "plan", "request", "releases", "rollback"];

/// A register-check mismatch (`regs-match` check).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mismatch<'a> {
    /// The first field that differed (JSON `first`).
    pub field: &'a str,
    pub expected: u64,
    pub got: u64,
}

/// Every kind of event. **Append new variants at the end** (see the module
/// documentation); the JSON name of each is [`Event::name`]. Numbers that
/// are addresses or register values become `"0x…"` strings in JSON.
// The backtrace's fixed frame list makes it the largest variant (~530
// bytes): events are built on the stack, in the kernel too, where there is
// no allocation to box it.
#[allow(clippy::large_enum_variant)]
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Event<'a> {
    // --- kernel kinds -----------------------------------------------------
    Boot {
        version: &'a str,
        mem_bytes: u64,
        memmap_entries: u64,
        rsdp: u64,
        cmdline: &'a str,
        pvh_version: u64,
        free_frames: u64,
        ram_above_4g_ignored: u64,
        smep: bool,
        smap: bool,
    },
    Platform {
        acpi_revision: u64,
        cpus: u64,
        lapic: u64,
        apic_id: u64,
        ioapics: u64,
        ioapic: u64,
        ioapic_pins: u64,
        ref_timer: &'a str,
        ref_timer_addr: u64,
        ref_hz: u64,
        calibration_ref_ticks: u64,
        lapic_divide: u64,
        lapic_ticks_per_ms: u64,
        lapic_timer_hz: u64,
        tsc_hz: u64,
    },
    /// `reason` is derived from `code` on the host (`abi::exit::GuestExit`).
    Shutdown {
        code: u64,
    },
    BootError {
        error: &'a str,
    },
    /// `name` and `rip` are derived from `vector` and `regs`.
    KernelFault {
        vector: u64,
        error_code: u64,
        cr2: u64,
        #[serde(with = "RegistersDef")]
        regs: Registers,
    },
    KernelPanic {
        message: &'a str,
        file: &'a str,
        line: u64,
    },
    BacktraceFrame {
        index: u64,
        pc: u64,
        cfa: u64,
    },
    /// A kernel check (`task` absent) or a task's `REPORT` (`task`, `task_name`, `value`).
    Check {
        task: Option<u64>,
        task_name: Option<&'a str>,
        name: &'a str,
        ok: bool,
        value: Option<u64>,
        error: Option<&'a str>,
    },
    TaskStart {
        task: u64,
        name: &'a str,
        priority: u64,
        arg: u64,
        entry: u64,
        image_bytes: u64,
        fault_endpoint: Option<&'a str>,
    },
    TaskRejected {
        index: u64,
        name: &'a str,
        reason: &'a str,
    },
    ImageRejected {
        reason: &'a str,
        detail: &'a str,
    },
    TaskExit {
        task: u64,
        name: &'a str,
        code: i64,
    },
    TaskPanic {
        task: u64,
        name: &'a str,
        seq: u64,
        message: &'a str,
        file: &'a str,
        line: u64,
    },
    /// `kind`, `exception` and `rip` are derived on the host from
    /// `kind` (`abi::fault::FaultKind`), `vector` and `regs`. `fault_tsc`
    /// is the TSC when the kernel took the fault.
    Fault {
        task: u64,
        name: &'a str,
        seq: u64,
        kind: u64,
        vector: u64,
        error_code: u64,
        cr2: u64,
        #[serde(with = "RegistersDef")]
        regs: Registers,
        scopes: u64,
        fault_tsc: u64,
    },
    FaultPending {
        task: u64,
        name: &'a str,
        seq: u64,
        endpoint: &'a str,
    },
    Resume {
        task: u64,
        name: &'a str,
        seq: u64,
        rip: u64,
    },
    /// `restart` with `from: image`; `reason`/`redelivered` for the fault server.
    RestartImage {
        task: u64,
        name: &'a str,
        seq: u64,
        delay_ms: u64,
        restarts: u64,
        reason: Option<&'a str>,
        redelivered: Option<u64>,
    },
    /// `restart` with `from: checkpoint`.
    RestartCheckpoint {
        task: u64,
        name: &'a str,
        seq: u64,
        scope: u64,
        attempt: u64,
        pages: u64,
    },
    /// The kernel's (`name`, `reason_code`, `restarts`) and the supervisor's
    /// (`reason`, `from_scope`, `retries_in_window`, `window_ms`).
    Escalate {
        task: u64,
        name: Option<&'a str>,
        seq: u64,
        action: &'a str,
        reason_code: Option<u64>,
        reason: Option<&'a str>,
        restarts: Option<u64>,
        from_scope: Option<u64>,
        retries_in_window: Option<u64>,
        window_ms: Option<u64>,
    },
    /// `base` and `size` for regions.
    Object {
        kind: &'a str,
        index: u64,
        name: &'a str,
        base: Option<u64>,
        size: Option<u64>,
    },
    CapRejected {
        index: u64,
        reason: &'a str,
    },
    RegionRejected {
        index: u64,
        reason: &'a str,
    },
    RegionMapFailed {
        task: u64,
        region: &'a str,
    },
    AllTasksDone {
        exited: u64,
        faulted: u64,
        stopped: u64,
        blocked: u64,
        free_frames: u64,
    },
    InjectError {
        id: Option<u64>,
        line: Option<&'a str>,
        error: &'a str,
    },
    InjectArmed {
        id: u64,
        kind: &'a str,
    },
    TaskInfo {
        task: u64,
        name: &'a str,
        state: &'a str,
        scopes: u64,
        restarts: u64,
    },
    Stats {
        ticks: u64,
        tasks: u64,
        alive: u64,
        injected: u64,
        armed: u64,
        free_frames: u64,
    },
    InjectMissed {
        id: u64,
        reason: &'a str,
    },
    /// An injection fired; `detail` is what the kind did.
    Inject {
        id: u64,
        task: u64,
        name: &'a str,
        kind: &'a str,
        rip: u64,
        detail: InjectDetail<'a>,
        seq: Option<u64>,
    },

    // --- supervisor kinds (`EMIT`) -----------------------------------------
    /// `count` is the number of frames; each frame's `symbol` is filled
    /// in on the host.
    Backtrace {
        task: u64,
        seq: u64,
        #[serde(borrow)]
        stop: WalkStop<'a>,
        truncated: bool,
        pages_read: u64,
        frames: heapless::Vec<Frame, MAX_FRAMES>,
    },
    Release {
        task: u64,
        seq: u64,
        kind: &'a str,
        addr: u64,
        scope: u64,
        origin: &'a str,
        #[serde(borrow)]
        frame: Sym<'a>,
        outcome: &'a str,
        woken: Option<u64>,
        count: Option<u64>,
        error: Option<&'a str>,
        /// A mutex was poisoned by this release.
        poisoned: bool,
    },
    FaultReport {
        task: u64,
        seq: u64,
        fault: Option<FaultSummary>,
        message: Option<&'a str>,
        #[serde(borrow)]
        action: Decision<'a>,
        /// What the recovery cost (the fault server's own reports).
        cost: Option<RecoveryCost>,
    },
    /// The `check` named `regs-match` (`tasks/regcheck`).
    RegsCheck {
        task: u64,
        seq: u64,
        vector: u64,
        ok: bool,
        /// `(fields, mismatches)` when the block was compared.
        compared: Option<(u64, u64)>,
        #[serde(borrow)]
        first: Option<Mismatch<'a>>,
        error: Option<&'a str>,
    },

    // --- kernel kinds again ---------------------------------------------
    /// Retired (keeps its slot, see "Growing the schema"): the JSON text a
    /// supervisor once emitted; the kernel no longer writes it, the host
    /// still decodes it (the inside of a JSON object, spliced into the
    /// line).
    Legacy {
        kind: &'a str,
        json: &'a str,
    },
    /// A kernel event of kind `kind` did not fit [`MAX_FRAME`] and was dropped.
    TooLarge {
        kind: &'a str,
    },
}

/// What an injection did (JSON fields of `inject`).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectDetail<'a> {
    None,
    /// `cr2`
    PageFault {
        cr2: u64,
    },
    /// `reg`, `bit`, `before`, `after`
    RegFlip {
        reg: &'a str,
        bit: u64,
        before: u64,
        after: u64,
    },
    /// `addr`, `bit`
    MemFlip {
        addr: u64,
        bit: u64,
    },
    /// `missed`
    Missed {
        missed: &'a str,
    },
    /// `len`
    Skip {
        len: u64,
    },
}

impl Event<'_> {
    /// The JSON `ev` name.
    pub fn name(&self) -> &str {
        match self {
            Event::Boot { .. } => "boot",
            Event::Platform { .. } => "platform",
            Event::Shutdown { .. } => "shutdown",
            Event::BootError { .. } => "boot_error",
            Event::KernelFault { .. } => "kernel_fault",
            Event::KernelPanic { .. } => "kernel_panic",
            Event::BacktraceFrame { .. } => "backtrace_frame",
            Event::Check { .. } | Event::RegsCheck { .. } => "check",
            Event::TaskStart { .. } => "task_start",
            Event::TaskRejected { .. } => "task_rejected",
            Event::ImageRejected { .. } => "image_rejected",
            Event::TaskExit { .. } => "task_exit",
            Event::TaskPanic { .. } => "task_panic",
            Event::Fault { .. } => "fault",
            Event::FaultPending { .. } => "fault_pending",
            Event::Resume { .. } => "resume",
            Event::RestartImage { .. } | Event::RestartCheckpoint { .. } => "restart",
            Event::Escalate { .. } => "escalate",
            Event::Object { .. } => "object",
            Event::CapRejected { .. } => "cap_rejected",
            Event::RegionRejected { .. } => "region_rejected",
            Event::RegionMapFailed { .. } => "region_map_failed",
            Event::AllTasksDone { .. } => "all_tasks_done",
            Event::InjectError { .. } => "inject_error",
            Event::InjectArmed { .. } => "inject_armed",
            Event::TaskInfo { .. } => "task_info",
            Event::Stats { .. } => "stats",
            Event::InjectMissed { .. } => "inject_missed",
            Event::Inject { .. } => "inject",
            Event::Backtrace { .. } => "backtrace",
            Event::Release { .. } => "release",
            Event::FaultReport { .. } => "fault_report",
            Event::Legacy { kind, .. } => kind,
            Event::TooLarge { .. } => "event_too_large",
        }
    }

    /// Whether a supervisor may write this event through `EMIT` (the kinds
    /// of `abi::syscall::EMIT_KINDS`). `Legacy` is the kernel's wrapping of
    /// the old text `EMIT`, never accepted in an encoded body.
    pub fn is_supervisor_kind(&self) -> bool {
        matches!(
            self,
            Event::Backtrace { .. }
                | Event::Release { .. }
                | Event::Escalate { .. }
                | Event::Check { .. }
                | Event::RegsCheck { .. }
                | Event::FaultReport { .. }
                // The server reports the faults it receives and the
                // restarts it makes through `RECOVER` itself.
                | Event::Fault { .. }
                | Event::RestartImage { .. }
                | Event::RestartCheckpoint { .. }
        )
    }
}

/// Why bytes are not an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// An empty frame (two delimiters in a row).
    Empty,
    /// The COBS framing is broken (a code byte points past the frame's end).
    BadCobs,
    /// The frame is larger than [`MAX_FRAME`].
    TooLong,
    /// The bytes are not a postcard record of this schema (with postcard's reason).
    Postcard(postcard::Error),
    /// A record decoded but bytes were left over.
    TrailingBytes(usize),
    /// An `EMIT` batch entry of a kind (or time) not allowed.
    NotAllowed,
    /// An `EMIT` batch with more entries than the checker takes.
    TooMany,
}

impl DecodeError {
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty frame",
            DecodeError::NotAllowed => "event kind or time not allowed",
            DecodeError::TooMany => "too many events in one batch",
            DecodeError::BadCobs => "broken COBS framing",
            DecodeError::TooLong => "frame longer than MAX_FRAME",
            DecodeError::Postcard(postcard::Error::DeserializeUnexpectedEnd) => "truncated record",
            DecodeError::Postcard(postcard::Error::DeserializeBadVarint) => "bad varint",
            DecodeError::Postcard(postcard::Error::DeserializeBadBool) => "bad bool",
            DecodeError::Postcard(postcard::Error::DeserializeBadUtf8) => "bad UTF-8 in a string",
            DecodeError::Postcard(postcard::Error::DeserializeBadOption) => "bad option tag",
            // Serde's derive reports an unknown variant index as a custom error.
            DecodeError::Postcard(postcard::Error::DeserializeBadEnum | postcard::Error::SerdeDeCustom) => {
                "bad enum tag (unknown kind?)"
            }
            DecodeError::Postcard(_) => "not a record of this schema",
            DecodeError::TrailingBytes(_) => "bytes left after the record",
        }
    }
}

impl From<postcard::Error> for DecodeError {
    fn from(e: postcard::Error) -> DecodeError {
        DecodeError::Postcard(e)
    }
}

/// Decodes exactly one postcard value of type `T` from `bytes` (nothing left over).
fn exact<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, DecodeError> {
    let (value, rest) = postcard::take_from_bytes::<T>(bytes)?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes(rest.len()));
    }
    Ok(value)
}

/// Decodes one postcard-encoded [`Event`], nothing after it.
pub fn decode_event(bytes: &[u8]) -> Result<Event<'_>, DecodeError> {
    exact(bytes)
}

/// Appends one `EMIT` batch entry to `buf` at `at_len`: `(at, event)`,
/// postcard-encoded — `at` is the guest TSC when what the event reports
/// happened (0: when written). Returns the new length, or an error if it
/// does not fit (the batch is unchanged then).
pub fn encode_emit_entry(at: u64, event: &Event<'_>, buf: &mut [u8], at_len: usize) -> Result<usize, postcard::Error> {
    let rest = buf.get_mut(at_len..).ok_or(postcard::Error::SerializeBufferFull)?;
    let n = postcard::to_slice(&(at, event), rest)?.len();
    Ok(at_len + n)
}

/// A record around an event that is already encoded (`event`: the postcard
/// bytes of an [`Event`], as checked by [`decode_emit_entry`]), into `buf`:
/// the same bytes [`encode_record_at`] makes, without re-encoding the
/// event. Returns the length, or `None` if `buf` is too small.
pub fn splice_record(tsc: u64, by: Option<u32>, emitted: Option<u64>, event: &[u8], buf: &mut [u8]) -> Option<usize> {
    let mut head = [0u8; 32];
    let n = postcard::to_slice(&(tsc, by), &mut head).ok()?.len();
    let mut tail = [0u8; 16];
    let m = postcard::to_slice(&emitted, &mut tail).ok()?.len();
    let total = n + event.len() + m;
    let out = buf.get_mut(..total)?;
    out[..n].copy_from_slice(&head[..n]);
    out[n..n + event.len()].copy_from_slice(event);
    out[n + event.len()..].copy_from_slice(&tail[..m]);
    Some(total)
}

/// One checked `EMIT` batch entry: its time and where its event's bytes
/// are in the batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmitEntry {
    pub at: u64,
    pub event: core::ops::Range<usize>,
}

/// Checks an `EMIT` batch: every entry decodes, is of a kind `allowed`
/// accepts, and nothing is left over; returns the entries (at most
/// `N`; more is an error).
pub fn check_emit_batch<const N: usize>(
    body: &[u8],
    mut allowed: impl FnMut(u64, &Event<'_>) -> bool,
) -> Result<heapless::Vec<EmitEntry, N>, DecodeError> {
    let mut out = heapless::Vec::new();
    let mut at_off = 0;
    while at_off < body.len() {
        let rest = &body[at_off..];
        let (at, after_at) = postcard::take_from_bytes::<u64>(rest)?;
        let event_off = at_off + (rest.len() - after_at.len());
        let (event, after) = postcard::take_from_bytes::<Event<'_>>(after_at)?;
        let end = body.len() - after.len();
        if !allowed(at, &event) {
            return Err(DecodeError::NotAllowed);
        }
        out.push(EmitEntry { at, event: event_off..end }).map_err(|_| DecodeError::TooMany)?;
        at_off = end;
    }
    Ok(out)
}

/// The next entry of an `EMIT` batch and what follows it.
pub fn decode_emit_entry(bytes: &[u8]) -> Result<((u64, Event<'_>), &[u8]), DecodeError> {
    Ok(postcard::take_from_bytes::<(u64, Event<'_>)>(bytes)?)
}

/// Decodes an unframed record.
pub fn decode_record(bytes: &[u8]) -> Result<Record<'_>, DecodeError> {
    exact(bytes)
}

/// Undoes COBS: `frame` is one frame without its `0x00` delimiter; the
/// decoded bytes go to `out`. Returns their length.
pub fn cobs_decode(frame: &[u8], out: &mut [u8]) -> Result<usize, DecodeError> {
    if frame.is_empty() {
        return Err(DecodeError::Empty);
    }
    if frame.len() > MAX_FRAME {
        return Err(DecodeError::TooLong);
    }
    let (mut i, mut n) = (0, 0);
    while i < frame.len() {
        let code = frame[i] as usize;
        if code == 0 || i + code > frame.len() {
            return Err(DecodeError::BadCobs);
        }
        let block = &frame[i + 1..i + code];
        if block.contains(&0) {
            return Err(DecodeError::BadCobs);
        }
        out.get_mut(n..n + block.len()).ok_or(DecodeError::TooLong)?.copy_from_slice(block);
        n += block.len();
        i += code;
        if code < 0xff && i < frame.len() {
            *out.get_mut(n).ok_or(DecodeError::TooLong)? = 0;
            n += 1;
        }
    }
    Ok(n)
}

/// COBS-encodes `data` into `out`, one byte at a time, delimiter included
/// (the kernel passes the UART). Each block is the bytes up to the next
/// zero (at most 254), preceded by its length + 1; the zero is implied.
#[inline(always)]
pub fn cobs_encode_with(data: &[u8], mut out: impl FnMut(u8)) {
    let mut rest = data;
    loop {
        let max = rest.len().min(254);
        let n = rest[..max].iter().position(|&b| b == 0).unwrap_or(max);
        out(n as u8 + 1);
        for &b in &rest[..n] {
            out(b);
        }
        if n < max {
            rest = &rest[n + 1..]; // the zero ends the block
        } else if n == rest.len() {
            break;
        } else {
            rest = &rest[n..]; // a full block of 254 bytes, no zero
        }
    }
    out(0);
}

/// Decodes one COBS frame (without its delimiter) into a record that
/// borrows from `scratch`.
pub fn decode_frame<'a>(frame: &[u8], scratch: &'a mut [u8]) -> Result<Record<'a>, DecodeError> {
    let n = cobs_decode(frame, scratch)?;
    decode_record(&scratch[..n])
}

/// A [`Record`] by reference: the same encoding, without moving the event.
#[derive(Serialize)]
struct RecordRef<'r, 'a> {
    tsc: u64,
    by: Option<u32>,
    event: &'r Event<'a>,
    emitted: Option<u64>,
}

/// Encodes the record `{tsc, by, event}` as one COBS frame, delimiter
/// included, into `buf`.
pub fn encode_frame<'b>(
    tsc: u64,
    by: Option<u32>,
    event: &Event<'_>,
    buf: &'b mut [u8],
) -> Result<&'b mut [u8], postcard::Error> {
    postcard::to_slice_cobs(&RecordRef { tsc, by, event, emitted: None }, buf)
}

/// Encodes the record `{tsc, by, event}` unframed into `buf` (the kernel
/// COBS-frames it as it writes it out).
pub fn encode_record<'b>(
    tsc: u64,
    by: Option<u32>,
    event: &Event<'_>,
    buf: &'b mut [u8],
) -> Result<&'b mut [u8], postcard::Error> {
    encode_record_at(tsc, by, None, event, buf)
}

/// [`encode_record`] for an event that happened at `tsc` and is written at
/// `emitted` (a supervisor's deferred report).
pub fn encode_record_at<'b>(
    tsc: u64,
    by: Option<u32>,
    emitted: Option<u64>,
    event: &Event<'_>,
    buf: &'b mut [u8],
) -> Result<&'b mut [u8], postcard::Error> {
    postcard::to_slice(&RecordRef { tsc, by, event, emitted }, buf)
}

/// Encodes `event` unframed (an `EMIT` body) into `buf`.
pub fn encode_event<'b>(event: &Event<'_>, buf: &'b mut [u8]) -> Result<&'b mut [u8], postcard::Error> {
    postcard::to_slice(event, buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate alloc;
    use alloc::vec::Vec;

    fn regs() -> Registers {
        Registers {
            rax: 1,
            rip: 0x40_0b32,
            rsp: 0x7fff_ffff_e000,
            rflags: 0x202,
            cs: 0x2b,
            ss: 0x23,
            ..Default::default()
        }
    }

    /// One event of every kind (and every nested variant).
    fn samples() -> Vec<Event<'static>> {
        let mut frames = heapless::Vec::new();
        frames.push(Frame { pc: 0x40_0b32, exact: true }).unwrap();
        frames.push(Frame { pc: 0x40_1000, exact: false }).unwrap();
        let s = "name \"quoted\" \\ \n ünïcode";
        alloc::vec![
            Event::Boot {
                version: "0.1.0",
                mem_bytes: 1 << 28,
                memmap_entries: 7,
                rsdp: 0xf59d0,
                cmdline: s,
                pvh_version: 1,
                free_frames: 57153,
                ram_above_4g_ignored: 0,
                smep: true,
                smap: false,
            },
            Event::Platform {
                acpi_revision: 2,
                cpus: 1,
                lapic: 0xfee0_0000,
                apic_id: 0,
                ioapics: 1,
                ioapic: 0xfec0_0000,
                ioapic_pins: 24,
                ref_timer: "pm_timer",
                ref_timer_addr: 0x608,
                ref_hz: 3_579_545,
                calibration_ref_ticks: 35796,
                lapic_divide: 16,
                lapic_ticks_per_ms: 62500,
                lapic_timer_hz: 62_500_039,
                tsc_hz: u64::MAX,
            },
            Event::Shutdown { code: 0 },
            Event::BootError { error: s },
            Event::KernelFault { vector: 14, error_code: 2, cr2: 0xdead_0000, regs: regs() },
            Event::KernelPanic { message: s, file: "kernel/src/main.rs", line: 42 },
            Event::BacktraceFrame { index: 0, pc: u64::MAX, cfa: 0 },
            Event::Check { task: None, task_name: None, name: "selftest", ok: false, value: None, error: Some(s) },
            Event::Check {
                task: Some(3),
                task_name: Some("bank"),
                name: "sum",
                ok: true,
                value: Some(8000),
                error: None
            },
            Event::TaskStart {
                task: 1,
                name: "fault-server",
                priority: 0,
                arg: 0,
                entry: 0x40_0000,
                image_bytes: 9_413_576,
                fault_endpoint: Some("faults"),
            },
            Event::TaskRejected { index: 2, name: "?", reason: "segments overlap" },
            Event::ImageRejected { reason: "bad magic", detail: "BadMagic" },
            Event::TaskExit { task: 2, name: "hello", code: -101 },
            Event::TaskPanic { task: 2, name: "hello", seq: 3, message: s, file: "src/main.rs", line: 9 },
            Event::Fault {
                task: 5,
                name: "crasher",
                seq: 1,
                kind: 1,
                vector: 14,
                error_code: 4,
                cr2: 0,
                regs: regs(),
                scopes: 2,
                fault_tsc: 123_456_789,
            },
            Event::FaultPending { task: 5, name: "crasher", seq: 1, endpoint: "faults" },
            Event::Resume { task: 5, name: "crasher", seq: 1, rip: 0x40_0b34 },
            Event::RestartImage {
                task: 1,
                name: "fault-server",
                seq: 4,
                delay_ms: 0,
                restarts: 1,
                reason: Some("fault server faulted"),
                redelivered: Some(2),
            },
            Event::RestartCheckpoint { task: 6, name: "teller", seq: 2, scope: 1, attempt: 1, pages: 8 },
            Event::Escalate {
                task: 6,
                name: Some("teller"),
                seq: 2,
                action: "stop",
                reason_code: Some(1),
                reason: None,
                restarts: Some(5),
                from_scope: None,
                retries_in_window: None,
                window_ms: None,
            },
            Event::Object { kind: "region", index: 0, name: "bank", base: Some(0x2000_0000_0000), size: Some(8192) },
            Event::CapRejected { index: 1, reason: "malformed capability" },
            Event::RegionRejected { index: 1, reason: "too large" },
            Event::RegionMapFailed { task: 3, region: "bank" },
            Event::AllTasksDone { exited: 1, faulted: 2, stopped: 3, blocked: 4, free_frames: 5 },
            Event::InjectError { id: Some(1), line: Some("inject x"), error: "bad" },
            Event::InjectArmed { id: 1, kind: "ud" },
            Event::TaskInfo { task: 1, name: "a", state: "Runnable", scopes: 0, restarts: 0 },
            Event::Stats { ticks: 1, tasks: 2, alive: 3, injected: 4, armed: 5, free_frames: 6 },
            Event::InjectMissed { id: 0, reason: "no such task" },
            Event::Inject {
                id: 1,
                task: 3,
                name: "a",
                kind: "pagefault",
                rip: 1,
                detail: InjectDetail::PageFault { cr2: 8 },
                seq: Some(4),
            },
            Event::Inject {
                id: 2,
                task: 3,
                name: "a",
                kind: "regflip",
                rip: 1,
                detail: InjectDetail::RegFlip { reg: "rax", bit: 3, before: 0, after: 8 },
                seq: None,
            },
            Event::Inject {
                id: 3,
                task: 3,
                name: "a",
                kind: "memflip",
                rip: 1,
                detail: InjectDetail::MemFlip { addr: 9, bit: 1 },
                seq: None
            },
            Event::Inject {
                id: 4,
                task: 3,
                name: "a",
                kind: "memflip",
                rip: 1,
                detail: InjectDetail::Missed { missed: "x" },
                seq: None
            },
            Event::Inject {
                id: 5,
                task: 3,
                name: "a",
                kind: "skip",
                rip: 1,
                detail: InjectDetail::Skip { len: 2 },
                seq: None
            },
            Event::Inject { id: 6, task: 3, name: "a", kind: "hang", rip: 1, detail: InjectDetail::None, seq: None },
            Event::Backtrace {
                task: 6,
                seq: 2,
                stop: WalkStop::Outermost,
                truncated: false,
                pages_read: 2,
                frames: frames.clone()
            },
            Event::Backtrace {
                task: 6,
                seq: 2,
                stop: WalkStop::NoFde(0x10),
                truncated: true,
                pages_read: 1,
                frames: heapless::Vec::new()
            },
            Event::Backtrace {
                task: 6,
                seq: 2,
                stop: WalkStop::Unreadable(0x20),
                truncated: false,
                pages_read: 0,
                frames: frames.clone()
            },
            Event::Backtrace {
                task: 6,
                seq: 2,
                stop: WalkStop::DepthLimit,
                truncated: false,
                pages_read: 0,
                frames: frames.clone()
            },
            Event::Backtrace {
                task: 6,
                seq: 2,
                stop: WalkStop::Other("Cycle"),
                truncated: false,
                pages_read: 0,
                frames
            },
            Event::Release {
                task: 6,
                seq: 2,
                kind: "mutex",
                addr: 0x2000_0000_0040,
                scope: 1,
                origin: "mutex_registry",
                frame: Sym::Addr(0x40_0900),
                outcome: "released",
                woken: Some(1),
                count: None,
                error: None,
                poisoned: true,
            },
            Event::Release {
                task: 6,
                seq: 2,
                kind: "arc",
                addr: 0x2000_0000_0080,
                scope: 1,
                origin: "arc_registry",
                frame: Sym::Name("bank::transfer"),
                outcome: "failed",
                woken: None,
                count: Some(1),
                error: Some("bad address"),
                poisoned: false,
            },
            Event::FaultReport {
                task: 6,
                seq: 2,
                fault: Some(FaultSummary { kind: 1, rip: 0x40_0b32, restarts: 0, vector: 14, error_code: 6, cr2: 0 }),
                message: None,
                action: Decision::Rollback { scope: 1, frame: Sym::Addr(0x40_0900), releases: 3, pages: 8 },
                cost: None
            },
            Event::FaultReport {
                task: 6,
                seq: 3,
                fault: None,
                message: Some(s),
                action: Decision::Restart { delay_ms: 10 },
                cost: None
            },
            Event::FaultReport {
                task: 6,
                seq: 4,
                fault: None,
                message: None,
                action: Decision::Resume { resume_rip: 0x40_0b34 },
                cost: None
            },
            Event::FaultReport {
                task: 6,
                seq: 5,
                fault: None,
                message: None,
                action: Decision::Stop { reason: "restart_storm", restarts_in_window: Some(5), window_ms: Some(2000) },
                cost: None
            },
            Event::FaultReport {
                task: 6,
                seq: 6,
                fault: None,
                message: None,
                action: Decision::Other { action: "fresh_start" },
                cost: None
            },
            Event::RegsCheck {
                task: 7,
                seq: 8,
                vector: 14,
                ok: false,
                compared: Some((21, 1)),
                first: Some(Mismatch { field: "rbx", expected: 1, got: 2 }),
                error: None,
            },
            Event::Legacy { kind: "fault_report", json: "\"task\":1,\"seq\":2" },
            Event::TooLarge { kind: "boot" },
        ]
    }

    #[test]
    fn every_kind_round_trips_framed() {
        for (i, event) in samples().into_iter().enumerate() {
            let mut buf = [0u8; MAX_FRAME];
            let tsc = 1u64 << (i % 64);
            let by = (i % 2 == 0).then_some(i as u32);
            let frame = encode_frame(tsc, by, &event, &mut buf).unwrap();
            assert_eq!(frame.last(), Some(&0), "{}: ends with the delimiter", event.name());
            assert!(!frame[..frame.len() - 1].contains(&0), "{}: no zero inside a frame", event.name());
            let body = &frame[..frame.len() - 1];
            let mut scratch = [0u8; MAX_FRAME];
            let record = decode_frame(body, &mut scratch).unwrap();
            assert_eq!(record, Record { tsc, by, event: event.clone(), emitted: None }, "{}", event.name());
        }
    }

    #[test]
    fn every_kind_round_trips_as_an_emit_body() {
        for event in samples() {
            let mut buf = [0u8; MAX_EMIT];
            let bytes = encode_event(&event, &mut buf).unwrap();
            assert_eq!(decode_event(bytes).unwrap(), event);
        }
    }

    #[test]
    fn only_supervisor_kinds_pass_the_emit_check() {
        let all = samples();
        let mut allowed: Vec<&str> = all.iter().filter(|e| e.is_supervisor_kind()).map(|e| e.name()).collect();
        allowed.sort_unstable();
        allowed.dedup();
        let supervisor = ["backtrace", "check", "escalate", "fault", "fault_report", "release", "restart"];
        assert_eq!(allowed, supervisor);
        assert!(!Event::Legacy { kind: "check", json: "" }.is_supervisor_kind());
        assert!(!Event::Shutdown { code: 0 }.is_supervisor_kind());
    }

    #[test]
    fn a_fault_event_is_compact() {
        let fault = &samples()[14];
        assert_eq!(fault.name(), "fault");
        let mut buf = [0u8; MAX_FRAME];
        let n = encode_frame(u32::MAX as u64, None, fault, &mut buf).unwrap().len();
        // The JSON line was ~700 bytes.
        assert!(n < 80, "{n} bytes");
    }

    #[test]
    fn hostile_bytes_give_errors_not_panics() {
        let mut scratch = [0u8; MAX_FRAME];
        assert_eq!(decode_frame(&[], &mut scratch), Err(DecodeError::Empty));
        // A code byte pointing past the end of the frame.
        assert_eq!(decode_frame(&[0x05, 1, 2], &mut scratch), Err(DecodeError::BadCobs));
        // A zero inside a frame.
        assert_eq!(decode_frame(&[0x03, 0, 2], &mut scratch), Err(DecodeError::BadCobs));
        assert_eq!(decode_frame(&[0x00], &mut scratch), Err(DecodeError::BadCobs));
        assert_eq!(decode_frame(&[1u8; MAX_FRAME + 1], &mut scratch), Err(DecodeError::TooLong));

        // Every truncation of every sample is an error (or, never, a different event).
        for event in samples() {
            let mut buf = [0u8; MAX_FRAME];
            let frame = encode_frame(7, Some(1), &event, &mut buf).unwrap().to_vec();
            let mut raw = [0u8; MAX_FRAME];
            let n = cobs_decode(&frame[..frame.len() - 1], &mut raw).unwrap();
            for cut in 0..n {
                assert!(decode_record(&raw[..cut]).is_err(), "{} cut at {cut}", event.name());
            }
            // Extra bytes after a record.
            let mut longer = raw[..n].to_vec();
            longer.push(0x01);
            assert_eq!(decode_record(&longer), Err(DecodeError::TrailingBytes(1)));
            // Every single-byte corruption decodes or fails, never panics.
            for i in 0..n {
                for flip in [0x01u8, 0x80, 0xff] {
                    let mut bad = raw[..n].to_vec();
                    bad[i] ^= flip;
                    let _ = decode_record(&bad);
                }
            }
        }

        // An unknown kind (a tag past the last variant).
        let unknown = [0x07, 0x00, 0x7f];
        assert_eq!(decode_record(&unknown).map_err(|e| e.reason()), Err("bad enum tag (unknown kind?)"));
        // A string length far past the end.
        let mut long = Vec::from([0x07u8, 0x00, 3]); // tsc 7, by None, BootError
        long.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        long.extend_from_slice(b"abc");
        assert!(decode_record(&long).is_err());
        // More frames than a backtrace holds.
        let mut many = Vec::from([0x07u8, 0x00, 30, 6, 2, 0, 0, 1]); // Backtrace, task 6, seq 2, Outermost, false, 1
        many.push(MAX_FRAMES as u8 + 1);
        for _ in 0..=MAX_FRAMES {
            many.extend_from_slice(&[0x10, 0x00]);
        }
        assert!(decode_record(&many).is_err());
        // Invalid UTF-8 in a string.
        let bad_utf8 = [0x07u8, 0x00, 3, 2, 0xc3, 0x28];
        assert_eq!(decode_record(&bad_utf8), Err(DecodeError::Postcard(postcard::Error::DeserializeBadUtf8)));
    }

    #[test]
    fn the_kernel_cobs_writer_agrees_with_the_decoder() {
        let mut cases: Vec<Vec<u8>> = alloc::vec![
            Vec::new(),
            alloc::vec![0],
            alloc::vec![0, 0],
            alloc::vec![1],
            alloc::vec![1, 0],
            alloc::vec![0, 1],
        ];
        for len in [253, 254, 255, 508, 509, MAX_RECORD] {
            cases.push((0..len).map(|i| (i % 255 + 1) as u8).collect());
            let mut with_zeros: Vec<u8> = (0..len).map(|i| (i % 7) as u8).collect();
            cases.push(with_zeros.clone());
            with_zeros.push(0);
            cases.push(with_zeros);
        }
        for data in cases {
            let mut framed = Vec::new();
            cobs_encode_with(&data, |b| framed.push(b));
            assert_eq!(framed.last(), Some(&0));
            assert!(!framed[..framed.len() - 1].contains(&0));
            assert!(framed.len() <= data.len() + data.len() / 254 + 2);
            if data.is_empty() {
                assert_eq!(framed, [1, 0]);
                continue;
            }
            let mut out = alloc::vec![0u8; MAX_FRAME];
            let n = cobs_decode(&framed[..framed.len() - 1], &mut out).unwrap();
            assert_eq!(&out[..n], &data[..], "{} bytes", data.len());
        }
        // And a whole record: what the kernel writes is what postcard's framing gives.
        let event = Event::BootError { error: "x\0y" };
        let mut buf = [0u8; MAX_RECORD];
        let raw = encode_record(5, Some(2), &event, &mut buf).unwrap().to_vec();
        let mut framed = Vec::new();
        cobs_encode_with(&raw, |b| framed.push(b));
        let mut scratch = [0u8; MAX_FRAME];
        assert_eq!(decode_frame(&framed[..framed.len() - 1], &mut scratch).unwrap().event, event);
    }

    #[test]
    fn a_record_too_large_for_a_frame_is_refused_when_encoding() {
        let text = "x".repeat(MAX_FRAME);
        let event = Event::BootError { error: &text };
        let mut buf = [0u8; MAX_FRAME];
        assert!(encode_frame(1, None, &event, &mut buf).is_err());
    }
}
