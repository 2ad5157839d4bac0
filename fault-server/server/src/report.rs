//! Fault reports: everything a person or a tool reads about a fault, made
//! *after* the faulted task runs again.
//!
//! The recovery path (`recover.rs`) keeps what it learnt in a [`Report`]
//! — the fault message as received (registers, the stack copy), the
//! releases with their outcomes, the decision and its time stamps — and the
//! server makes the report when no fault is waiting (`main.rs`: at a
//! lowered priority, so the task it just recovered runs first). A report is
//! the events of its fault, in this order, all with the fault's `seq`:
//!
//! `check` (register check, `regcheck` tasks only) → `fault` → `backtrace`
//! → `escalate` (each step outward) → `release` (one per release) →
//! `restart` (checkpoint or image) → `fault_report` (→ `escalate` for a
//! stop)
//!
//! and one console line with the decision. The events are typed
//! (`abi::event`, postcard on the wire): the server formats nothing — the
//! host names the frames from the task's ELF and writes the JSON. Each event
//! carries the time what it reports *happened* (`emit_event_at`: the fault,
//! the releases, the rollback), and the kernel adds when it was written.
//!
//! Nothing is lost: a report leaves the backlog only once emitted; when the
//! backlog is full, the oldest report is emitted *before* the next fault is
//! recovered (that fault waits: counted as `late` in the `fault_report`s).

use crate::backtrace;
use crate::image::Unwinder;
use crate::recover::{Done, Escalation, Recovered};
use crate::regcheck::Checked;
use libtask::abi::event::{self as ev, Decision, Event, FaultSummary, Frame, RecoveryCost, Sym, WalkStop};
use libtask::abi::fault::{FaultKind, FaultMessage, Parsed};
use libtask::abi::ipc::recover as r;
use libtask::abi::trap::exception_name;
use libtask::println;
use libtask::supervise::EventBatch;
use walker::Stop;

/// What the server decided, for the report.
pub enum Outcome {
    /// A fault recovered (rolled back, restarted or stopped).
    Recovered(Recovered),
    /// A resume request answered: resumed at `rip` (at TSC `at`).
    Resumed { rip: u64, at: u64 },
}

/// A fault waiting to be reported.
pub struct Report {
    /// The message bytes as received (its stack copy is what the
    /// backtrace walks).
    pub bytes: crate::MsgBuf,
    pub len: usize,
    pub outcome: Outcome,
    /// The register check, made before recovery changed the task's memory
    /// (`regcheck` tasks only).
    pub regcheck: Option<Checked>,
    /// Reports waiting, this one included, when it was queued.
    pub backlog: usize,
    /// How many reports so far were emitted before a recovery because the
    /// backlog was full.
    pub late: u64,
    /// The CPU the kernel did the recovery's restart or rollback on (the
    /// `RECOVER` answer's `cpu`).
    pub cpu: u64,
}

/// Emits the events (one `EMIT` for all: `batch`) and the console line of
/// `rep`.
pub fn emit_report(rep: &Report, unwinder: Option<&Unwinder>, batch: &mut EventBatch) {
    let Some(p) = FaultMessage::parse(&rep.bytes[..rep.len]) else { return };
    let batch = core::cell::RefCell::new(batch);
    let emit = |event: &Event<'_>, at: u64| {
        if let Err(e) = batch.borrow_mut().push(event, at) {
            println!("fault-server: event {} refused ({})", event.name(), e.name());
        }
    };
    let msg = &p.msg;
    let (task, seq, name) = (msg.task, msg.seq, msg.name());
    let text = core::str::from_utf8(p.text).ok().filter(|t| !t.is_empty());
    let (received, decided, released, recovered) = match &rep.outcome {
        Outcome::Recovered(r) => (r.phases.received, r.phases.decided, r.phases.released, r.phases.recovered),
        Outcome::Resumed { at, .. } => (*at, *at, *at, *at),
    };
    if let Some(c) = &rep.regcheck {
        let first = c.first.map(|(field, expected, got)| ev::Mismatch { field, expected, got });
        let check =
            Event::RegsCheck { task, seq, vector: msg.vector, ok: c.ok, compared: c.compared, first, error: c.error };
        emit(&check, received);
    }
    let fault = Event::FaultV2 {
        cpu: msg.cpu,
        task,
        name,
        seq,
        kind: msg.kind,
        vector: msg.vector,
        error_code: msg.error_code,
        cr2: msg.cr2,
        regs: msg.regs,
        scopes: msg.scopes,
        fault_tsc: msg.fault_tsc,
    };
    emit(&fault, msg.fault_tsc);
    if let Some(unwinder) = unwinder {
        let walked = match &rep.outcome {
            Outcome::Recovered(r) => r.walked.as_deref(),
            Outcome::Resumed { .. } => None,
        };
        emit(&backtrace_event(unwinder, &p, walked), msg.fault_tsc);
    }
    let summary = Some(FaultSummary {
        kind: msg.kind,
        rip: msg.regs.rip,
        restarts: msg.restarts,
        vector: msg.vector,
        error_code: msg.error_code,
        cr2: msg.cr2,
    });
    let report = |action: Decision<'_>, message: Option<&str>, cost: Option<RecoveryCost>, at: u64| {
        emit(&Event::FaultReport { task, seq, fault: summary, message, action, cost }, at);
    };
    let what = what(msg);
    let cpu = rep.cpu;
    let rec = match &rep.outcome {
        Outcome::Resumed { rip, at } => {
            println!("fault-server: task {task} asked to be resumed: resumed at {rip:#x}");
            report(Decision::Resume { resume_rip: *rip }, text, None, *at);
            send(&mut batch.borrow_mut());
            return;
        }
        Outcome::Recovered(rec) => rec,
    };
    let escalate = |action: &str, reason: Option<&str>, policy: Option<(u64, u64, u64)>, at: u64| {
        let e = Event::Escalate {
            task,
            name: None,
            seq,
            action,
            reason_code: None,
            reason,
            restarts: None,
            from_scope: policy.map(|p| p.0),
            retries_in_window: policy.map(|p| p.1),
            window_ms: policy.map(|p| p.2),
        };
        emit(&e, at);
    };
    for e in &rec.escalations {
        match e {
            Escalation::Policy { from_scope, retries_in_window, window_ms } => {
                let action = if *from_scope > 1 { "outer_scope" } else { "fresh_start" };
                escalate(action, None, Some((*from_scope, *retries_in_window, *window_ms)), decided);
            }
            Escalation::FreshStart { why } => {
                println!("fault-server: task {task} fault {seq}: cannot roll back ({why}): fresh start");
                escalate("fresh_start", Some(*why), None, recovered);
            }
            Escalation::NothingReleased { why } => {
                println!("fault-server: task {task}: registry refused ({why}): nothing released");
                escalate("nothing_released", Some(why), None, recovered);
            }
        }
    }
    let frame = named_scope_frame(rec).map_or(Sym::Name("?"), Sym::Addr);
    for note in &rec.salvaged {
        match *note {
            recovery::Salvage::MutexCount { count } => {
                println!(
                    "fault-server: task {task} fault {seq}: mutex registry count {count} is corrupt: read every slot"
                );
                escalate("read_all_slots", Some(recovery::Invalid::TooManyMutexes { count }.reason()), None, released);
            }
            recovery::Salvage::Entry { origin, addr, scope, why } => {
                println!(
                    "fault-server: task {task} fault {seq}: registry entry {addr:#x} left out ({}): names no shared object",
                    why.reason()
                );
                emit(&ignored_event(task, seq, origin, addr, scope, why, frame), released);
            }
        }
    }
    if rec.salvaged_total > rec.salvaged.len() {
        println!(
            "fault-server: task {task} fault {seq}: {} more registry entries left out",
            rec.salvaged_total - rec.salvaged.len()
        );
    }
    for rel in &rec.releases {
        emit(&release_event(task, seq, rel, frame), released);
    }
    let cost = Some(cost(rep, rec, msg, p.stack.len()));
    match rec.done {
        Done::Rollback { depth, pages, attempt } => {
            let pc = named_scope_frame(rec);
            if let Some(why) = rec.unwalked {
                // Rolled back all the same (`recover.rs`, step 2).
                println!("fault-server: task {task} fault {seq}: the walk did not reach scope {depth}'s frame ({why})");
            }
            let mut line = crate::console::Line::new();
            line.s("fault-server: task ")
                .d(task)
                .s(" (")
                .s(name)
                .s(") fault ")
                .d(seq)
                .s(" (")
                .s(what)
                .s(" at ")
                .x(msg.regs.rip)
                .s("): rolled back to scope ")
                .d(depth)
                .s(" (frame ");
            match pc {
                Some(pc) => line.x(pc),
                None => line.s("?"),
            };
            line.s("), ").d(rec.releases.len() as u64).s(" released, ").d(pages).s(" pages").print();
            let restart = Event::RestartCheckpointV2 { task, name, seq, scope: depth, attempt, pages, cpu };
            emit(&restart, recovered);
            let releases = rec.releases.len() as u64;
            report(Decision::Rollback { scope: depth, frame, releases, pages }, None, cost, recovered);
        }
        Done::Restart { delay_ms, restarts } => {
            crate::console::Line::new()
                .s("fault-server: task ")
                .d(task)
                .s(" (")
                .s(name)
                .s(") fault ")
                .d(seq)
                .s(" (")
                .s(what)
                .s("): restarting it in ")
                .d(delay_ms)
                .s(" ms")
                .print();
            // Dated when the kernel began the restart (its releases done):
            // the delay counts from there, not from the end of the image
            // reload, which can take a while on a loaded host.
            let restart =
                Event::RestartImageV2 { task, name, seq, delay_ms, restarts, reason: None, redelivered: None, cpu };
            emit(&restart, released);
            report(Decision::Restart { delay_ms }, text, cost, recovered);
        }
        Done::Stop { restarts_in_window, restarts } => {
            let window = crate::policy::WINDOW_MS;
            println!(
                "fault-server: task {task} faulted after {restarts_in_window} restarts within {window} ms: stopping it"
            );
            let stop = Decision::Stop {
                reason: "restart_storm",
                restarts_in_window: Some(restarts_in_window),
                window_ms: Some(window),
            };
            report(stop, text, cost, recovered);
            let e = Event::Escalate {
                task,
                name: Some(name),
                seq,
                action: "stop",
                reason_code: Some(crate::recover::reason::RESTART_STORM),
                reason: None,
                restarts: Some(restarts),
                from_scope: None,
                retries_in_window: None,
                window_ms: None,
            };
            emit(&e, recovered);
        }
        Done::Refused { error } => {
            println!("fault-server: task {task} fault {seq}: the kernel refused the recovery: {error}");
            report(Decision::Other { action: "none" }, Some(error), cost, recovered);
        }
    }
    send(&mut batch.borrow_mut());
}

fn send(batch: &mut EventBatch) {
    if let Err(e) = batch.send() {
        println!("fault-server: report refused ({})", e.name());
    }
}

/// The recovery's costs, for the benchmark and the curious.
fn cost(rep: &Report, rec: &Recovered, msg: &FaultMessage, stack: usize) -> RecoveryCost {
    let p = &rec.phases;
    let d = |a: u64, b: u64| b.saturating_sub(a);
    RecoveryCost {
        fault_tsc: msg.fault_tsc,
        stack_bytes: stack as u64,
        phases: [
            d(msg.fault_tsc, p.received),
            d(p.received, p.decided),
            d(p.decided, p.walked),
            d(p.walked, p.planned),
            d(p.planned, p.entered),
            d(p.entered, p.released),
            d(p.released, p.recovered),
        ],
        backlog: rep.backlog as u64,
        late: rep.late,
    }
}

fn origin_name(origin: recovery::Origin) -> &'static str {
    match origin {
        recovery::Origin::Intent => "intent",
        recovery::Origin::Mutex(_) => "mutex_registry",
        recovery::Origin::Arc(_) => "arc_registry",
    }
}

/// The `release` event of a registry entry the plan left out
/// (`recovery::Salvage::Entry`): outcome `ignored`, `error` says why. Its
/// `kind` is the registry's (an intent's: `intent`), since the entry names
/// no object of that kind.
fn ignored_event<'a>(
    task: u64,
    seq: u64,
    origin: recovery::Origin,
    addr: u64,
    scope: u64,
    why: recovery::Invalid,
    frame: Sym<'a>,
) -> Event<'a> {
    let kind = match origin {
        recovery::Origin::Intent => "intent",
        recovery::Origin::Mutex(_) => "mutex",
        recovery::Origin::Arc(_) => "arc",
    };
    Event::Release {
        task,
        seq,
        kind,
        addr,
        scope,
        origin: origin_name(origin),
        frame,
        outcome: "ignored",
        woken: None,
        count: None,
        error: Some(why.reason()),
        poisoned: false,
    }
}

fn release_event<'a>(task: u64, seq: u64, rel: &crate::recover::Released, frame: Sym<'a>) -> Event<'a> {
    let (release, op) = (&rel.release, &rel.op);
    let origin = origin_name(release.origin);
    let (mut outcome, mut woken, mut count, mut error, mut poisoned) = ("not_done", None, None, None, false);
    match recovery::Outcome::from_words(op.outcome, op.value, op.extra) {
        Some(o) => {
            outcome = o.name();
            poisoned = o.poisoned();
            match o {
                recovery::Outcome::MutexReleased { woken: w, .. }
                | recovery::Outcome::MutexNotHeld { woken: w, .. } => woken = Some(w),
                recovery::Outcome::ArcDecremented { count: c, .. } => count = Some(c as u64),
                // Reads given back (of the task's `held`).
                recovery::Outcome::ReadsReleased { released, .. } => count = Some(released as u64),
                _ => {}
            }
        }
        None if op.outcome == r::FAILED => {
            outcome = "failed";
            error = Some(libtask::Error::decode(op.value).err().map_or("unknown", |e| e.name()));
        }
        None => {}
    }
    Event::Release {
        task,
        seq,
        kind: release.action.name(),
        addr: release.action.addr(),
        scope: release.scope,
        origin,
        frame,
        outcome,
        woken,
        count,
        error,
        poisoned,
    }
}

/// The `backtrace` event: the frames the recovery walked (`walked`) and
/// the rest, walked now (`backtrace.rs`).
fn backtrace_event(unwinder: &Unwinder, p: &Parsed<'_>, walked: Option<&crate::recover::ScopeWalk>) -> Event<'static> {
    let bt = backtrace::walk(unwinder, p, walked);
    let mut frames: ev::FrameList = Default::default();
    for &(pc, exact) in &bt.frames {
        let _ = frames.push(Frame { pc, exact });
    }
    let stop = match bt.stop {
        Ok(Stop::Outermost) => WalkStop::Outermost,
        Ok(Stop::DepthLimit) => WalkStop::DepthLimit,
        Ok(Stop::NoFde { pc }) => WalkStop::NoFde(pc),
        Ok(Stop::Unreadable { addr }) => WalkStop::Unreadable(addr),
        Ok(_) => WalkStop::Other("walk stopped"),
        Err(why) => WalkStop::Other(why),
    };
    Event::Backtrace { task: p.msg.task, seq: p.msg.seq, stop, truncated: false, pages_read: bt.pages_read, frames }
}

/// A few words on the fault, for the console.
pub fn what(msg: &FaultMessage) -> &'static str {
    match FaultKind::from_u64(msg.kind) {
        Some(FaultKind::Exception) => exception_name(msg.vector.min(255) as u8),
        Some(kind) => kind.name(),
        None => "unknown kind",
    }
}

/// Emits `event`, which happened at guest TSC `at`, on its own.
pub fn emit(event: &Event<'_>, at: u64) {
    if let Err(e) = libtask::supervise::emit_event_at(event, at) {
        println!("fault-server: event {} refused ({})", event.name(), e.name());
    }
}

/// The pc a rollback's report names as the scope's frame: the frame the
/// walk stopped at — the scope's body, `libtask::checkpoint::scope_body::<R,
/// F>`, whose name carries the user's closure, or libtask's asm scope
/// function for a fault in it (a seal check at the commit). `None` when the
/// walk did not reach the scope's frame.
fn named_scope_frame(rec: &Recovered) -> Option<u64> {
    rec.scope_frame.map(|(_, pc)| pc)
}
