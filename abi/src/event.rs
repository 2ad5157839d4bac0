//! The event stream's schema: one typed [`Event`] per kind of
//! `docs/events.md`, and its wire format on COM2.
//!
//! # Wire format
//!
//! Every event is one [`Record`] — `{ tsc, by, emitted, event }`: the
//! writer's stamps first, the event last — encoded with
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
//! `decode_error` lines (with the bytes), never drops them. (The record's
//! own layout changed once, when `emitted` moved before the event: a
//! capture from before then decodes as `decode_error` lines.)
//!
//! # Who may write what, and what the kernel vouches for
//!
//! The kernel writes every kind. A supervisor (the fault server) writes
//! only the kinds of [`Event::is_supervisor_kind`] through the `EMIT`
//! system call: a batch of entries `at` (`u64`), `len` (`u16`, both little
//! endian), `len` bytes of one postcard-encoded [`Event`] (at most
//! [`MAX_EMIT`]; [`encode_emit_entry`]). The kernel does **not** decode the
//! events ([`check_emit_batch`]): it checks the batch's framing (every
//! entry complete, nothing left over), that each `at` is not in the future
//! and that each event's kind tag (its first varint, the variant index) is
//! a supervisor kind ([`is_supervisor_tag`]). Then it writes each event's
//! bytes as they are at the end of a record of its own making: its stamps
//! `tsc`, `by`, `emitted` ([`record_head`]) and then the event, each record
//! its own COBS frame.
//!
//! So what the kernel vouches for is the record's stamps — who wrote it
//! (`by`: a supervisor cannot pass for the kernel or another task), when
//! (`tsc` never later than the write, `emitted`) — and the kind; the
//! payload is the supervisor's word. The stamps come before the payload,
//! and a record must end where its event does, so no payload can change
//! them and still decode (`tests::a_payload_cannot_move_the_kernels_stamps`;
//! with `emitted` after the event, a payload could once end in `0x01`
//! and turn the kernel's `0x00` into `Some(0)`). A payload that does not
//! decode makes its record a `decode_error` line on the host, which still
//! names the record's `tsc`, `by` and `emitted` ([`decode_record_head`]);
//! the records around it are frames of their own and decode as usual.

use crate::trap::Registers;
use serde::{Deserialize, Serialize};

/// The `heapless` of [`Event::Backtrace`]'s frame list, for writers.
pub use heapless;

/// Most frames in a [`Event::Backtrace`].
pub const MAX_FRAMES: usize = 32;
/// Largest postcard-encoded [`Event`] that `EMIT` accepts.
pub const MAX_EMIT: usize = 2200;
/// Largest `EMIT` body: a batch of `(at, len, event)` entries
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
    /// When the kernel wrote it, if later than `tsc` (a deferred report).
    pub emitted: Option<u64>,
    /// Last: a supervisor's event bytes end the record, after every stamp
    /// the kernel puts on it (see "Who may write what").
    #[serde(borrow)]
    pub event: Event<'a>,
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

    // --- supervisor kinds again: task core files ------------------------
    /// A core file of fault `seq` of `task` begins: what its `NT_PRSTATUS`
    /// and identity notes hold. [`Event::CoreMemory`] chunks follow, then
    /// [`Event::CoreEnd`]; the host writes the ELF core file
    /// (`docs/events.md`, `core_begin`), the guest formats nothing.
    CoreBegin {
        task: u64,
        name: &'a str,
        seq: u64,
        /// The fault, as in [`Event::Fault`] (for the signal gdb shows).
        kind: u64,
        vector: u64,
        error_code: u64,
        cr2: u64,
        /// The registers at the fault.
        #[serde(with = "RegistersDef")]
        regs: Registers,
        /// The task ELF's entry point and GNU build id (empty: none), so
        /// tools check the executable they are given is this one.
        entry: u64,
        #[serde(borrow)]
        build_id: Bytes<'a>,
        /// Cores of this task the rate limit skipped since its last one.
        skipped: u64,
    },
    /// `len` bytes of the faulted task's memory at `addr`: `bytes`, or
    /// when `bytes` is empty, `len` zero bytes. `at_fault`: copied when the
    /// task faulted (exact); else read when the core was made, after the
    /// task was rolled back or restarted.
    CoreMemory {
        task: u64,
        seq: u64,
        addr: u64,
        len: u64,
        at_fault: bool,
        #[serde(borrow)]
        bytes: Bytes<'a>,
    },
    /// The core is complete: `chunks` [`Event::CoreMemory`] events were
    /// sent, holding `bytes` bytes of memory in all; `cut`: why some
    /// memory the core would hold was left out (a budget, an unreadable
    /// image), if any.
    CoreEnd {
        task: u64,
        seq: u64,
        chunks: u64,
        bytes: u64,
        cut: Option<&'a str>,
    },
    /// Application-processor bring-up is over: `cpus` enabled processors
    /// in the MADT, `cpus_online` of them running (the boot CPU included;
    /// all of them run tasks), the trampoline page (0 if none was needed).
    Smp {
        cpus: u64,
        cpus_online: u64,
        trampoline: u64,
    },
    /// A processor the MADT lists was left out (`reason`: `timeout`,
    /// `lapic`, `ipi_not_accepted`, `x2apic_id`, `max_cpus`, `no_memory`,
    /// `no_low_page`); `apic_id` is `u32::MAX` when not known.
    CpuFailed {
        apic_id: u64,
        reason: &'a str,
    },
    /// `fault` with the CPU the fault happened on (`cpu`, the kernel's CPU
    /// index: 0 = the boot CPU). Written instead of [`Event::Fault`] by
    /// the kernel and the fault server; the host writes both as `fault`.
    FaultV2 {
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
        cpu: u64,
    },
    /// `task_exit` with the CPU the task ran on when it exited.
    TaskExitV2 {
        task: u64,
        name: &'a str,
        code: i64,
        cpu: u64,
    },
    /// `task_start` with the CPU that runs the task first (`cpu`). With
    /// several CPUs it is written when that CPU first takes the task; with
    /// one, at load (the one CPU runs it). The host writes it as
    /// `task_start`.
    TaskStartV2 {
        task: u64,
        name: &'a str,
        priority: u64,
        arg: u64,
        entry: u64,
        image_bytes: u64,
        fault_endpoint: Option<&'a str>,
        cpu: u64,
    },
    /// `restart` with `from: image` and the CPU the kernel restarted the
    /// task on (`cpu`: the one that ran the `RECOVER` or the kernel's own
    /// restart; the task may then run on any CPU its affinity allows).
    RestartImageV2 {
        task: u64,
        name: &'a str,
        seq: u64,
        delay_ms: u64,
        restarts: u64,
        reason: Option<&'a str>,
        redelivered: Option<u64>,
        cpu: u64,
    },
    /// `restart` with `from: checkpoint` and the CPU that rolled the task
    /// back (`cpu`, as in [`Event::RestartImageV2`]).
    RestartCheckpointV2 {
        task: u64,
        name: &'a str,
        seq: u64,
        scope: u64,
        attempt: u64,
        pages: u64,
        cpu: u64,
    },
}

/// Bytes carried as postcard's byte string (a length, then the bytes),
/// borrowed when decoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bytes<'a>(pub &'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Bytes<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'a [u8]>::deserialize(d).map(Bytes)
    }
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
            Event::TaskStart { .. } | Event::TaskStartV2 { .. } => "task_start",
            Event::TaskRejected { .. } => "task_rejected",
            Event::ImageRejected { .. } => "image_rejected",
            Event::TaskExit { .. } | Event::TaskExitV2 { .. } => "task_exit",
            Event::TaskPanic { .. } => "task_panic",
            Event::Fault { .. } | Event::FaultV2 { .. } => "fault",
            Event::FaultPending { .. } => "fault_pending",
            Event::Resume { .. } => "resume",
            Event::RestartImage { .. }
            | Event::RestartCheckpoint { .. }
            | Event::RestartImageV2 { .. }
            | Event::RestartCheckpointV2 { .. } => "restart",
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
            Event::CoreBegin { .. } => "core_begin",
            Event::CoreMemory { .. } => "core_memory",
            Event::CoreEnd { .. } => "core_end",
            Event::Smp { .. } => "smp",
            Event::CpuFailed { .. } => "cpu_failed",
        }
    }

    /// Whether a supervisor may write this event through `EMIT` (the kernel
    /// checks the encoded tag: [`is_supervisor_tag`]). `Legacy` is the
    /// kernel's wrapping of the old text `EMIT`, never accepted.
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
                | Event::FaultV2 { .. }
                | Event::RestartImage { .. }
                | Event::RestartCheckpoint { .. }
                | Event::RestartImageV2 { .. }
                | Event::RestartCheckpointV2 { .. }
                // Core files of the faults it reports.
                | Event::CoreBegin { .. }
                | Event::CoreMemory { .. }
                | Event::CoreEnd { .. }
        )
    }
}

/// The variant indices (postcard's enum tags) of the kinds a supervisor may
/// `EMIT`, as a bit mask: `Check` 7, `Fault` 13, `RestartImage` 16,
/// `RestartCheckpoint` 17, `Escalate` 18, `Backtrace` 30, `Release` 31,
/// `FaultReport` 32, `RegsCheck` 33, `CoreBegin` 36, `CoreMemory` 37,
/// `CoreEnd` 38, `FaultV2` 41, `RestartImageV2` 44, `RestartCheckpointV2`
/// 45 — exactly [`Event::is_supervisor_kind`]
/// (`tests::only_supervisor_kinds_pass_the_emit_check`).
const SUPERVISOR_TAGS: u64 = 1 << 7
    | 1 << 13
    | 1 << 16
    | 1 << 17
    | 1 << 18
    | 1 << 30
    | 1 << 31
    | 1 << 32
    | 1 << 33
    | 1 << 36
    | 1 << 37
    | 1 << 38
    | 1 << 41
    | 1 << 44
    | 1 << 45;

/// Whether an event whose encoding starts with the varint `tag` is of a
/// kind a supervisor may `EMIT` (the kernel's check: it decodes no more).
#[inline]
pub fn is_supervisor_tag(tag: u64) -> bool {
    tag < 64 && SUPERVISOR_TAGS & (1 << tag) != 0
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

/// Bytes before each event of an `EMIT` batch: `at` and the length.
pub const EMIT_ENTRY_HEAD: usize = 10;

/// Appends one `EMIT` batch entry to `buf` at `at_len`: `at` (`u64`), the
/// event's length (`u16`, both little endian: fixed sizes, read and
/// written with one access each), the postcard-encoded event —
/// `at` is the guest TSC when what the event reports happened (0: when
/// written). Returns the new length, or an error if it does not fit or the
/// event is longer than [`MAX_EMIT`] (the batch is unchanged then).
pub fn encode_emit_entry(at: u64, event: &Event<'_>, buf: &mut [u8], at_len: usize) -> Result<usize, postcard::Error> {
    let start = at_len.checked_add(EMIT_ENTRY_HEAD).ok_or(postcard::Error::SerializeBufferFull)?;
    let end = buf.len().min(start.saturating_add(MAX_EMIT));
    let room = buf.get_mut(start..end).ok_or(postcard::Error::SerializeBufferFull)?;
    let n = crate::wire::encode(event, room)?;
    buf[at_len..at_len + 8].copy_from_slice(&at.to_le_bytes());
    buf[at_len + 8..start].copy_from_slice(&(n as u16).to_le_bytes());
    Ok(start + n)
}

/// The entries of an `EMIT` batch, in order: `(at, event bytes)`, or the
/// first framing error (then the iteration ends). Only the framing is
/// read: [`check_emit_batch`] adds the kernel's checks.
pub fn emit_entries(body: &[u8]) -> impl Iterator<Item = Result<(u64, &[u8]), DecodeError>> {
    let mut rest = body;
    core::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let entry = (|| {
            let truncated = DecodeError::Postcard(postcard::Error::DeserializeUnexpectedEnd);
            let head = rest.get(..EMIT_ENTRY_HEAD).ok_or(truncated.clone())?;
            let at = crate::bytes::word_at(head, 0);
            let len = u16::from_le_bytes([head[8], head[9]]) as usize;
            if len == 0 || len > MAX_EMIT {
                return Err(DecodeError::TooLong);
            }
            let event = rest.get(EMIT_ENTRY_HEAD..EMIT_ENTRY_HEAD + len).ok_or(truncated)?;
            Ok((at, event, EMIT_ENTRY_HEAD + len))
        })();
        match entry {
            Ok((at, event, used)) => {
                rest = &rest[used..];
                Some(Ok((at, event)))
            }
            Err(e) => {
                rest = &[];
                Some(Err(e))
            }
        }
    })
}

/// The kernel's check of an `EMIT` batch, made before anything is written:
/// every entry complete and nothing left over, at most `max` entries, each
/// dated no later than `now`, each of a supervisor kind by its tag
/// ([`is_supervisor_tag`]). The events are not decoded (see the module
/// documentation: the payload is the supervisor's word). Returns the
/// number of entries.
pub fn check_emit_batch(body: &[u8], now: u64, max: usize) -> Result<usize, DecodeError> {
    let mut count = 0;
    for entry in emit_entries(body) {
        let (at, event) = entry?;
        let tag = crate::wire::take_varint(event).map(|(tag, _)| tag);
        if at > now || !tag.is_some_and(is_supervisor_tag) {
            return Err(DecodeError::NotAllowed);
        }
        count += 1;
        if count > max {
            return Err(DecodeError::TooMany);
        }
    }
    Ok(count)
}

/// Longest record head ([`record_head`]): 10 + 1 + 5 + 1 + 10 bytes.
pub const MAX_HEAD: usize = 27;

/// The bytes of a [`Record`] before its event: `tsc`, `by`, `emitted`
/// (postcard). Returns their length.
#[inline]
pub fn record_head(tsc: u64, by: Option<u32>, emitted: Option<u64>, out: &mut [u8; MAX_HEAD]) -> usize {
    /// A varint at `n` (the kernel writes a head per record: no call, no
    /// check per byte — `n + 10 <= MAX_HEAD` at every use below).
    #[inline(always)]
    fn varint(out: &mut [u8; MAX_HEAD], n: usize, mut v: u64) -> usize {
        let mut k = n;
        while v >= 0x80 && k < n + 9 && k < MAX_HEAD - 1 {
            out[k] = v as u8 | 0x80;
            v >>= 7;
            k += 1;
        }
        out[k.min(MAX_HEAD - 1)] = v as u8;
        k + 1
    }
    let mut n = varint(out, 0, tsc);
    for value in [by.map(u64::from), emitted] {
        match value {
            None => {
                out[n] = 0;
                n += 1;
            }
            Some(v) => {
                out[n] = 1;
                n = varint(out, n + 1, v);
            }
        }
    }
    n
}

/// The stamps of a record whose event may not decode: `(tsc, by,
/// emitted)`, read from its head (the host's `decode_error` lines carry them).
pub fn decode_record_head(bytes: &[u8]) -> Option<(u64, Option<u32>, Option<u64>)> {
    let (tsc, mut n) = crate::wire::take_varint(bytes)?;
    let mut option = || -> Option<Option<u64>> {
        let tag = *bytes.get(n)?;
        n += 1;
        match tag {
            0 => Some(None),
            1 => {
                let (v, used) = crate::wire::take_varint(bytes.get(n..)?)?;
                n += used;
                Some(Some(v))
            }
            _ => None,
        }
    };
    let by = option()?.map(u32::try_from).transpose().ok()?;
    let emitted = option()?;
    Some((tsc, by, emitted))
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

/// Room a [`CobsWriter`] needs for `n` bytes of data: the frame (a code
/// byte per 254 bytes and one more, the delimiter) and 8 bytes of slack
/// for its word-at-a-time stores.
pub const fn cobs_room(n: usize) -> usize {
    n + n / 254 + 2 + 8
}

/// COBS-encodes data fed in pieces into one frame in a buffer, delimiter
/// included (the kernel frames a record's head, the supervisor's event
/// and the tail without joining them first).
///
/// Each block is the bytes up to the next zero (at most 254), preceded by
/// its length + 1; the zero is implied. Bytes are scanned 8 at a time
/// (each word is stored whole, then checked for a zero byte: under TCG a
/// byte loop costs ~8 guest instructions a byte, this ~1.5), the last few
/// of a piece as a word with filler; with less room than the worst case
/// needs (never in the kernel: [`cobs_room`]), a byte at a time.
pub struct CobsWriter<'b> {
    out: &'b mut [u8],
    /// Where the open block's code byte goes.
    code_at: usize,
    /// Where the next data byte goes.
    pos: usize,
    /// The output was too small: [`finish`](Self::finish) fails.
    full: bool,
}

impl<'b> CobsWriter<'b> {
    /// A frame in `out` ([`cobs_room`] of the data's length is always enough).
    #[inline]
    pub fn new(out: &'b mut [u8]) -> CobsWriter<'b> {
        let full = out.is_empty();
        CobsWriter { out, code_at: 0, pos: 1, full }
    }

    /// Adds `data`.
    pub fn push(&mut self, data: &[u8]) {
        if self.full {
            return;
        }
        // Room for the worst case: every byte, a code byte per 254 and one
        // more (the open block may be nearly full), and the 8 bytes a word
        // store may write past the last.
        let n = data.len();
        if self.out.len() >= self.pos + n + n / 254 + 9 {
            self.push_words(data);
        } else {
            self.push_bytes(data);
        }
    }

    /// [`push`](Self::push) 8 bytes at a time, for an output with room for
    /// the worst case (checked by the caller).
    #[inline(always)]
    fn push_words(&mut self, data: &[u8]) {
        use crate::bytes::{first_flagged, zero_flags};
        /// Non-zero filler for the bytes of a word past the data.
        const ONES: u64 = 0x0101_0101_0101_0101;
        let (src, n) = (data.as_ptr(), data.len());
        let out = self.out.as_mut_ptr();
        let (mut code_at, mut pos, mut i) = (self.code_at, self.pos, 0);
        // Invariants: `i <= n`; `code_at < pos`; `pos - code_at <= 255`;
        // and `pos + (n - i) + (n - i) / 254 + 9 <= out.len()` — each step
        // below writes output for input it consumes, plus a code byte
        // per 254 bytes (at most one more than the bound, which the `+ 9`
        // has, with the 8 bytes of a word store).
        loop {
            // Whole words while they fit the data and the open block (at
            // most 254 bytes: `pos + 8 - code_at - 1 <= 254`): each is
            // stored, then checked for a zero byte.
            let mut last_word = code_at + 247;
            while i + 8 <= n && pos <= last_word {
                // SAFETY: `i + 8 <= n`: in `data`; `pos + 8 <= out.len()`
                // (invariants); unaligned accesses.
                let w = unsafe { core::ptr::read_unaligned(src.add(i) as *const u64) };
                unsafe { core::ptr::write_unaligned(out.add(pos) as *mut u64, w) };
                let flags = zero_flags(u64::from_le(w));
                if flags == 0 {
                    i += 8;
                    pos += 8;
                    continue;
                }
                // The first zero ends the block; its slot becomes the
                // next block's code byte.
                let k = first_flagged(flags);
                pos += k;
                i += k + 1;
                // SAFETY: `code_at < pos < out.len()` (invariants).
                unsafe { *out.add(code_at) = (pos - code_at) as u8 };
                code_at = pos;
                pos += 1;
                last_word = code_at + 247;
            }
            if i == n {
                break;
            }
            if pos - code_at == 255 {
                // A full block: the next byte, zero or not, opens another.
                // SAFETY: `code_at < pos < out.len()` (invariants).
                unsafe { *out.add(code_at) = 0xff };
                code_at = pos;
                pos += 1;
                continue;
            }
            // Fewer than 8 bytes to the end of the data or the block: `r`
            // of them, in one word with filler above them.
            let r = (n - i).min(255 - (pos - code_at));
            let w = if n - i >= 8 {
                // SAFETY: `i + 8 <= n`.
                u64::from_le(unsafe { core::ptr::read_unaligned(src.add(i) as *const u64) })
            } else if n >= 8 {
                // The last 8 bytes of the data, shifted down to `i`.
                // SAFETY: `n - 8 >= 0`: in `data`.
                let last = u64::from_le(unsafe { core::ptr::read_unaligned(src.add(n - 8) as *const u64) });
                last >> (8 * (8 - (n - i)))
            } else {
                data[i..].iter().rev().fold(0, |w, &b| w << 8 | b as u64)
            };
            let w = w | ONES << (8 * r);
            // SAFETY: `pos + 8 <= out.len()` (invariants).
            unsafe { core::ptr::write_unaligned(out.add(pos) as *mut u64, w.to_le()) };
            let flags = zero_flags(w);
            if flags == 0 {
                i += r;
                pos += r;
                continue;
            }
            let k = first_flagged(flags);
            pos += k;
            i += k + 1;
            // SAFETY: as above.
            unsafe { *out.add(code_at) = (pos - code_at) as u8 };
            code_at = pos;
            pos += 1;
        }
        self.code_at = code_at;
        self.pos = pos;
    }

    /// [`push`](Self::push) a byte at a time, every write checked.
    fn push_bytes(&mut self, data: &[u8]) {
        for &b in data {
            if self.pos - self.code_at == 255 && !self.close() {
                return;
            }
            if b == 0 {
                if !self.close() {
                    return;
                }
            } else if let Some(slot) = self.out.get_mut(self.pos) {
                *slot = b;
                self.pos += 1;
            } else {
                self.full = true;
                return;
            }
        }
    }

    /// Ends the open block at `pos`: its code byte, and the next block's
    /// slot. `false` (and `full`) if there is no room for that slot.
    fn close(&mut self) -> bool {
        if self.pos >= self.out.len() {
            self.full = true;
            return false;
        }
        self.out[self.code_at] = (self.pos - self.code_at) as u8;
        self.code_at = self.pos;
        self.pos += 1;
        true
    }

    /// Closes the frame (last code byte and the `0x00` delimiter); returns
    /// its length, or `None` if the output was too small.
    pub fn finish(mut self) -> Option<usize> {
        if self.full || self.pos >= self.out.len() {
            return None;
        }
        let code = (self.pos - self.code_at) as u8;
        self.out[self.code_at] = code;
        self.out[self.pos] = 0;
        self.pos += 1;
        Some(self.pos)
    }
}

/// COBS-encodes `data` as one frame, delimiter included, into `out`;
/// returns its length (`None`: `out` is smaller than [`cobs_room`] needs).
pub fn cobs_encode(data: &[u8], out: &mut [u8]) -> Option<usize> {
    let mut w = CobsWriter::new(out);
    w.push(data);
    w.finish()
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
    emitted: Option<u64>,
    event: &'r Event<'a>,
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
    crate::wire::to_slice(&RecordRef { tsc, by, event, emitted }, buf)
}

/// Encodes `event` unframed into `buf` (postcard's bytes, written by
/// [`crate::wire`]).
pub fn encode_event<'b>(event: &Event<'_>, buf: &'b mut [u8]) -> Result<&'b mut [u8], postcard::Error> {
    crate::wire::to_slice(event, buf)
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
            Event::CoreBegin {
                task: 6,
                name: "bank",
                seq: 3,
                kind: 1,
                vector: 6,
                error_code: 0,
                cr2: 0,
                regs: regs(),
                entry: 0x40_1000,
                build_id: Bytes(&[0xab; 20]),
                skipped: 0,
            },
            Event::CoreMemory {
                task: 6,
                seq: 3,
                addr: 0x7fff_fefe_f000,
                len: 3,
                at_fault: true,
                bytes: Bytes(&[0, 1, 2])
            },
            Event::CoreMemory { task: 6, seq: 3, addr: 0x40_8000, len: 4096, at_fault: false, bytes: Bytes(&[]) },
            Event::CoreEnd { task: 6, seq: 3, chunks: 2, bytes: 4099, cut: Some("budget") },
            Event::Smp { cpus: 4, cpus_online: 3, trampoline: 0x8000 },
            Event::CpuFailed { apic_id: 3, reason: "timeout" },
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
            assert_eq!(record, Record { tsc, by, emitted: None, event: event.clone() }, "{}", event.name());
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
        let supervisor = [
            "backtrace",
            "check",
            "core_begin",
            "core_end",
            "core_memory",
            "escalate",
            "fault",
            "fault_report",
            "release",
            "restart",
        ];
        assert_eq!(allowed, supervisor);
        assert!(!Event::Legacy { kind: "check", json: "" }.is_supervisor_kind());
        assert!(!Event::Shutdown { code: 0 }.is_supervisor_kind());
        // The kernel's check reads the tag only: it agrees with the kinds.
        for e in &all {
            let mut buf = [0u8; MAX_RECORD];
            let bytes = encode_event(e, &mut buf).unwrap();
            let (tag, _) = crate::wire::take_varint(bytes).unwrap();
            assert_eq!(is_supervisor_tag(tag), e.is_supervisor_kind(), "{} (tag {tag})", e.name());
        }
        assert!(!is_supervisor_tag(64) && !is_supervisor_tag(u64::MAX));
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
        let unknown = [0x07, 0x00, 0x00, 0x7f];
        assert_eq!(decode_record(&unknown).map_err(|e| e.reason()), Err("bad enum tag (unknown kind?)"));
        // A string length far past the end.
        let mut long = Vec::from([0x07u8, 0x00, 0x00, 3]); // tsc 7, by None, emitted None, BootError
        long.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        long.extend_from_slice(b"abc");
        assert!(decode_record(&long).is_err());
        // More frames than a backtrace holds.
        let mut many = Vec::from([0x07u8, 0x00, 0x00, 30, 6, 2, 0, 0, 1]); // Backtrace, task 6, seq 2, Outermost, false, 1
        many.push(MAX_FRAMES as u8 + 1);
        for _ in 0..=MAX_FRAMES {
            many.extend_from_slice(&[0x10, 0x00]);
        }
        assert!(decode_record(&many).is_err());
        // Invalid UTF-8 in a string.
        let bad_utf8 = [0x07u8, 0x00, 0x00, 3, 2, 0xc3, 0x28];
        assert_eq!(decode_record(&bad_utf8), Err(DecodeError::Postcard(postcard::Error::DeserializeBadUtf8)));
    }

    /// COBS as the `cobs` crate (postcard's framing) writes it: the
    /// reference the kernel's word-at-a-time writer must match.
    fn reference_cobs(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = data;
        loop {
            let max = rest.len().min(254);
            let n = rest[..max].iter().position(|&b| b == 0).unwrap_or(max);
            out.push(n as u8 + 1);
            out.extend_from_slice(&rest[..n]);
            if n < max {
                rest = &rest[n + 1..];
            } else if n == rest.len() {
                break;
            } else {
                rest = &rest[n..];
            }
        }
        out.push(0);
        out
    }

    /// A small deterministic generator for the tests below.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn the_kernel_cobs_writer_agrees_with_the_reference_and_the_decoder() {
        let mut cases: Vec<Vec<u8>> = alloc::vec![
            Vec::new(),
            alloc::vec![0],
            alloc::vec![0, 0],
            alloc::vec![1],
            alloc::vec![1, 0],
            alloc::vec![0, 1],
            alloc::vec![0; 20],
        ];
        for len in [7, 8, 9, 15, 16, 17, 246, 247, 253, 254, 255, 256, 262, 508, 509, 510, MAX_RECORD] {
            // Runs of non-zero bytes (blocks of 254 exactly, across words).
            cases.push((0..len).map(|i| (i % 255 + 1) as u8).collect());
            let mut edges: Vec<u8> = (0..len).map(|i| (i % 251 + 1) as u8).collect();
            edges[0] = 0;
            *edges.last_mut().unwrap() = 0;
            cases.push(edges);
            let mut with_zeros: Vec<u8> = (0..len).map(|i| (i % 7) as u8).collect();
            cases.push(with_zeros.clone());
            with_zeros.push(0);
            cases.push(with_zeros);
            // A zero just before, at and after a block's end.
            for at in [252, 253, 254, 255] {
                if at < len {
                    let mut v: Vec<u8> = alloc::vec![0x55; len];
                    v[at] = 0;
                    cases.push(v);
                }
            }
        }
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2000 {
            let len = (rng.next() % 700) as usize;
            // Sparse and dense zeros.
            let density = 1 + rng.next() % 40;
            cases.push((0..len).map(|_| if rng.next() % density == 0 { 0 } else { rng.next() as u8 | 1 }).collect());
        }
        for data in cases {
            let expected = reference_cobs(&data);
            let mut out = alloc::vec![0u8; cobs_room(data.len())];
            let n = cobs_encode(&data, &mut out).unwrap();
            assert_eq!(&out[..n], &expected[..], "{} bytes: {data:?}", data.len());
            // The same frame when fed in pieces of any size.
            for piece in [1, 3, 8, 11] {
                let mut out2 = alloc::vec![0u8; cobs_room(data.len())];
                let mut w = CobsWriter::new(&mut out2);
                for chunk in data.chunks(piece) {
                    w.push(chunk);
                }
                let m = w.finish().unwrap();
                assert_eq!(&out2[..m], &expected[..], "pieces of {piece}");
            }
            // Too little room is refused, never a panic or a short frame.
            for room in [0, n / 2, n - 1] {
                let mut small = alloc::vec![0u8; room];
                assert_eq!(cobs_encode(&data, &mut small), None, "{room} bytes of room for {n}");
            }
            let mut decoded = alloc::vec![0u8; MAX_FRAME.max(data.len())];
            if data.is_empty() {
                continue;
            }
            if n - 1 <= MAX_FRAME {
                let m = cobs_decode(&out[..n - 1], &mut decoded).unwrap();
                assert_eq!(&decoded[..m], &data[..]);
            }
        }
        // And a whole record: what the kernel writes is what postcard's framing gives.
        let event = Event::BootError { error: "x\0y" };
        let mut buf = [0u8; MAX_RECORD];
        let raw = encode_record(5, Some(2), &event, &mut buf).unwrap().to_vec();
        let mut framed = [0u8; cobs_room(MAX_RECORD)];
        let n = cobs_encode(&raw, &mut framed).unwrap();
        let mut reference = [0u8; MAX_FRAME];
        assert_eq!(&framed[..n], encode_frame(5, Some(2), &event, &mut reference).unwrap());
    }

    #[test]
    fn the_guest_writer_encodes_what_postcard_does() {
        for (i, event) in samples().into_iter().enumerate() {
            let (mut a, mut b) = ([0u8; MAX_RECORD], [0u8; MAX_RECORD]);
            let ours = encode_event(&event, &mut a).unwrap().to_vec();
            assert_eq!(ours, postcard::to_slice(&event, &mut b).unwrap(), "{}", event.name());
            let tsc = u64::MAX >> (i % 64);
            let by = (i % 3 != 0).then_some(u32::MAX >> (i % 32));
            let emitted = (i % 2 == 0).then_some(tsc / 3);
            let record = RecordRef { tsc, by, event: &event, emitted };
            let ours = encode_record_at(tsc, by, emitted, &event, &mut a).unwrap().to_vec();
            assert_eq!(ours, postcard::to_slice(&record, &mut b).unwrap(), "{}", event.name());
            // A record is its head and the event's bytes.
            let mut head = [0u8; MAX_HEAD];
            let h = record_head(tsc, by, emitted, &mut head);
            let mut spliced = head[..h].to_vec();
            spliced.extend_from_slice(encode_event(&event, &mut b).unwrap());
            assert_eq!(spliced, ours, "{}", event.name());
            assert_eq!(decode_record_head(&ours), Some((tsc, by, emitted)));
        }
    }

    #[test]
    fn emit_batches_are_framed_and_checked_without_decoding() {
        let all = samples();
        let supervisor: Vec<&Event<'_>> = all.iter().filter(|e| e.is_supervisor_kind()).collect();
        let mut body = [0u8; MAX_EMIT_BATCH];
        let mut len = 0;
        for (i, e) in supervisor.iter().enumerate() {
            len = encode_emit_entry(i as u64 * 10, e, &mut body, len).unwrap();
        }
        let body = &body[..len];
        assert_eq!(check_emit_batch(body, u64::MAX, 64), Ok(supervisor.len()));
        let entries: Vec<(u64, &[u8])> = emit_entries(body).map(Result::unwrap).collect();
        for (i, (at, bytes)) in entries.iter().enumerate() {
            assert_eq!(*at, i as u64 * 10);
            assert_eq!(&decode_event(bytes).unwrap(), supervisor[i]);
        }
        // Dated in the future, too many, cut anywhere, a byte more.
        let last = (supervisor.len() as u64 - 1) * 10;
        assert_eq!(check_emit_batch(body, last - 1, 64), Err(DecodeError::NotAllowed));
        assert_eq!(check_emit_batch(body, last, supervisor.len()), Ok(supervisor.len()));
        assert_eq!(check_emit_batch(body, last, supervisor.len() - 1), Err(DecodeError::TooMany));
        let ends: Vec<usize> = {
            let mut at = 0;
            entries
                .iter()
                .map(|(_, e)| {
                    at = e.as_ptr() as usize - body.as_ptr() as usize + e.len();
                    at
                })
                .collect()
        };
        for cut in 1..body.len() {
            let result = check_emit_batch(&body[..cut], u64::MAX, 64);
            match ends.iter().position(|&e| e == cut) {
                Some(i) => assert_eq!(result, Ok(i + 1)),
                None => assert!(result.is_err(), "cut at {cut}"),
            }
        }
        let mut longer = body.to_vec();
        longer.push(0);
        assert!(check_emit_batch(&longer, u64::MAX, 64).is_err());
        // Every kernel kind is refused by its tag alone.
        for e in all.iter().filter(|e| !e.is_supervisor_kind()) {
            let mut one = [0u8; MAX_EMIT + 16];
            let n = encode_emit_entry(0, e, &mut one, 0).unwrap();
            assert_eq!(check_emit_batch(&one[..n], 0, 64), Err(DecodeError::NotAllowed), "{}", e.name());
        }
        // An entry of length 0, or longer than MAX_EMIT.
        assert_eq!(check_emit_batch(&[0; EMIT_ENTRY_HEAD + 1], 0, 64), Err(DecodeError::TooLong));
        let mut long = [0u8; EMIT_ENTRY_HEAD + 1];
        long[8..10].copy_from_slice(&(MAX_EMIT as u16 + 1).to_le_bytes());
        assert_eq!(check_emit_batch(&long, 0, 64), Err(DecodeError::TooLong));
        // An event too large for `EMIT` is refused when encoding.
        let text = "x".repeat(MAX_EMIT);
        let big = Event::Check { task: None, task_name: None, name: &text, ok: true, value: None, error: None };
        let mut buf = [0u8; MAX_EMIT_BATCH];
        assert!(encode_emit_entry(0, &big, &mut buf, 0).is_err());
    }

    #[test]
    fn a_payload_cannot_move_the_kernels_stamps() {
        // Whatever bytes a supervisor sends after a supervisor kind's tag,
        // the record the kernel makes of them either fails to decode or
        // carries the kernel's `tsc`, `by` and `emitted`.
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        let samples = samples();
        let good: Vec<Vec<u8>> = samples
            .iter()
            .filter(|e| e.is_supervisor_kind())
            .map(|e| {
                let mut b = [0u8; MAX_EMIT];
                encode_event(e, &mut b).unwrap().to_vec()
            })
            .collect();
        let (mut decoded, mut refused) = (0, 0);
        for round in 0..20_000 {
            // A good event cut, extended or with bytes changed, or noise.
            let mut payload = good[round % good.len()].clone();
            match rng.next() % 4 {
                0 => payload.truncate((rng.next() as usize) % (payload.len() + 1)),
                1 => (0..1 + rng.next() % 12).for_each(|_| payload.push(rng.next() as u8)),
                2 => {
                    for _ in 0..1 + rng.next() % 3 {
                        let i = (rng.next() as usize) % payload.len();
                        payload[i] = rng.next() as u8;
                    }
                }
                _ => payload = (0..rng.next() % 40).map(|_| rng.next() as u8).collect(),
            }
            let tsc = rng.next() >> (rng.next() % 64);
            let by = Some(rng.next() as u32 >> (rng.next() % 32));
            let emitted = (rng.next() % 2 == 0).then(|| tsc.saturating_add(1 + (rng.next() >> (rng.next() % 64))));
            let mut head = [0u8; MAX_HEAD];
            let h = record_head(tsc, by, emitted, &mut head);
            let mut raw = head[..h].to_vec();
            raw.extend_from_slice(&payload);
            match decode_record(&raw) {
                Ok(r) => {
                    assert_eq!((r.tsc, r.by, r.emitted), (tsc, by, emitted), "{payload:02x?}");
                    decoded += 1;
                }
                Err(_) => refused += 1,
            }
            assert_eq!(decode_record_head(&raw), Some((tsc, by, emitted)));
        }
        assert!(decoded > 1000 && refused > 1000, "{decoded} decoded, {refused} refused");
    }

    #[test]
    fn a_record_too_large_for_a_frame_is_refused_when_encoding() {
        let text = "x".repeat(MAX_FRAME);
        let event = Event::BootError { error: &text };
        let mut buf = [0u8; MAX_FRAME];
        assert!(encode_frame(1, None, &event, &mut buf).is_err());
    }
}
