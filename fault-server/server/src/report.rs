//! Fault reports: everything a person or a tool reads about a fault, made
//! *after* the faulted task runs again.
//!
//! The recovery path (`recover.rs`) keeps what it learnt in a [`Report`]
//! — the fault message as received (registers, the stack copy, the
//! recovery page copy), the releases with their outcomes, the decision and
//! its time stamps — and the server formats it when no fault is waiting
//! (`main.rs`: at a lowered priority, so the task it just recovered runs
//! first). A report is the events of its fault, in this order, all with the
//! fault's `seq`:
//!
//! `check` (register check, `regcheck` tasks only) → `fault` → `backtrace`
//! → `escalate` (each step outward) → `release` (one per release) →
//! `restart` (checkpoint or image) or `escalate` (stop) → `fault_report`
//!
//! and one console line with the decision. Nothing is lost: a report is
//! only dropped from the backlog once emitted; when the backlog is full,
//! the oldest report is emitted *before* the next fault is recovered (that
//! fault waits: counted as `late` in its `fault_report`).

use crate::backtrace;
use crate::body::{Body, MAX_BODY, escape};
use crate::image::TaskImage;
use crate::recover::{Done, Escalation, Recovered};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use libtask::abi::fault::{FaultKind, FaultMessage, Parsed};
use libtask::abi::ipc::recover as r;
use libtask::abi::trap::exception_name;
use libtask::println;
use walker::Walker;

/// `#PF`.
const PAGE_FAULT: u64 = 14;
/// Longest symbol name listed.
const MAX_SYMBOL: usize = 80;

/// What the server decided, for the report.
pub enum Outcome {
    /// A fault recovered (rolled back, restarted or stopped).
    Recovered(Recovered),
    /// A resume request answered: resumed at `rip`, or failed and then
    /// recovered as a fault.
    Resumed { rip: u64, at: u64 },
}

/// A fault waiting to be reported.
pub struct Report {
    /// The message bytes as received (its stack copy is what the
    /// backtrace walks).
    pub bytes: alloc::boxed::Box<[u8]>,
    pub len: usize,
    pub outcome: Outcome,
    /// The register check's event body, made before recovery changed the
    /// task's memory (`regcheck` tasks only).
    pub regcheck: Option<Body>,
    /// Reports waiting, this one included, when it was queued.
    pub backlog: usize,
    /// How many reports so far were emitted before a fault was recovered
    /// because the backlog was full.
    pub late: u64,
}

/// Emits the events and the console line of `rep`.
pub fn emit_report<'a>(rep: &Report, image: Option<&'a TaskImage>, walker: Option<&mut Walker<'a, 32>>) {
    let Some(p) = FaultMessage::parse(&rep.bytes[..rep.len]) else { return };
    let msg = &p.msg;
    let text = core::str::from_utf8(p.text).unwrap_or("<invalid UTF-8>");
    let (received, decided, released, recovered) = match &rep.outcome {
        Outcome::Recovered(r) => (r.phases.received, r.phases.decided, r.phases.released, r.phases.recovered),
        Outcome::Resumed { at, .. } => (*at, *at, *at, *at),
    };
    if let Some(check) = &rep.regcheck {
        emit("check", &Body::at(received).then(check));
    }
    emit("fault", &fault_event(msg));
    let frame_name = |pc: u64| image.and_then(|i| i.name_of(pc)).unwrap_or_else(|| "?".into());
    if let (Some(image), Some(walker)) = (image, walker) {
        emit("backtrace", &backtrace_event(image, walker, &p));
    }
    let base = |at: u64| Body::at(at).u64("task", msg.task).u64("seq", msg.seq);
    let what = what(msg);
    match &rep.outcome {
        Outcome::Resumed { rip, at } => {
            println!("fault-server: task {} asked to be resumed: resumed at {rip:#x}", msg.task);
            emit("fault_report", &describe(*at, msg, text).str("action", "resume").hex("resume_rip", *rip));
        }
        Outcome::Recovered(rec) => {
            for e in &rec.escalations {
                let body = match e {
                    Escalation::Policy { from_scope, retries_in_window, window_ms } => base(decided)
                        .str("action", if *from_scope > 1 { "outer_scope" } else { "fresh_start" })
                        .u64("from_scope", *from_scope)
                        .u64("retries_in_window", *retries_in_window)
                        .u64("window_ms", *window_ms),
                    Escalation::FreshStart { why } => {
                        println!(
                            "fault-server: task {} fault {}: cannot roll back ({why}): fresh start",
                            msg.task, msg.seq
                        );
                        base(recovered).str("action", "fresh_start").str("reason", why)
                    }
                    Escalation::NothingReleased { why } => {
                        println!("fault-server: task {}: registry refused ({why}): nothing released", msg.task);
                        base(recovered).str("action", "fresh_start").str("reason", why)
                    }
                };
                emit("escalate", &body);
            }
            let frame = rec.scope_frame.map(|(_, pc)| frame_name(pc)).unwrap_or_default();
            for rel in &rec.releases {
                emit("release", &release_event(released, msg, rel, &frame));
            }
            let name = msg.name();
            match rec.done {
                Done::Rollback { depth, pages, attempt } => {
                    println!(
                        "fault-server: task {} fault {} ({what}): rolled back to scope {depth} in {frame}, {} released",
                        msg.task,
                        msg.seq,
                        rec.releases.len()
                    );
                    emit(
                        "restart",
                        &base(recovered)
                            .str("name", name)
                            .str("from", "checkpoint")
                            .u64("scope", depth)
                            .u64("attempt", attempt)
                            .u64("pages", pages),
                    );
                    let report = describe(recovered, msg, "")
                        .str("action", "rollback")
                        .u64("scope", depth)
                        .str("frame", &frame)
                        .u64("releases", rec.releases.len() as u64)
                        .u64("pages", pages);
                    emit("fault_report", &with_costs(report, rep, rec));
                }
                Done::Restart { delay_ms, restarts } => {
                    println!(
                        "fault-server: task {} fault {} ({what}): restarting it in {delay_ms} ms",
                        msg.task, msg.seq
                    );
                    emit(
                        "restart",
                        &base(recovered)
                            .str("name", name)
                            .str("from", "image")
                            .u64("delay_ms", delay_ms)
                            .u64("restarts", restarts),
                    );
                    let report = describe(recovered, msg, text).str("action", "restart").u64("delay_ms", delay_ms);
                    emit("fault_report", &with_costs(report, rep, rec));
                }
                Done::Stop { restarts_in_window, restarts } => {
                    println!(
                        "fault-server: task {} faulted after {restarts_in_window} restarts within {} ms: stopping it",
                        msg.task,
                        crate::policy::WINDOW_MS
                    );
                    let report = describe(recovered, msg, text)
                        .str("action", "stop")
                        .str("reason", "restart_storm")
                        .u64("restarts_in_window", restarts_in_window)
                        .u64("window_ms", crate::policy::WINDOW_MS);
                    emit("fault_report", &with_costs(report, rep, rec));
                    emit(
                        "escalate",
                        &base(recovered)
                            .str("name", name)
                            .str("action", "stop")
                            .u64("reason_code", crate::recover::reason::RESTART_STORM)
                            .u64("restarts", restarts),
                    );
                }
                Done::Refused { error } => {
                    println!(
                        "fault-server: task {} fault {}: the kernel refused the recovery: {error}",
                        msg.task, msg.seq
                    );
                    emit("fault_report", &describe(recovered, msg, text).str("action", "none").str("error", error));
                }
            }
        }
    }
}

/// The recovery's costs, for the benchmark and the curious: each phase in
/// guest instructions (`docs/events.md`), and the backlog.
fn with_costs(body: Body, rep: &Report, rec: &Recovered) -> Body {
    let p = &rec.phases;
    let fault_tsc = FaultMessage::parse(&rep.bytes[..rep.len]).map_or(0, |p| p.msg.fault_tsc);
    let d = |a: u64, b: u64| b.saturating_sub(a);
    let phases = format!(
        "{{\"delivery\":{},\"decision\":{},\"walk\":{},\"plan\":{},\"request\":{},\"releases\":{},\"rollback\":{}}}",
        d(fault_tsc, p.received),
        d(p.received, p.decided),
        d(p.decided, p.walked),
        d(p.walked, p.planned),
        d(p.planned, p.entered),
        d(p.entered, p.released),
        d(p.released, p.recovered),
    );
    let stack_bytes = FaultMessage::parse(&rep.bytes[..rep.len]).map_or(0, |p| p.stack.len() as u64);
    body.u64("fault_tsc", fault_tsc)
        .u64("stack_bytes", stack_bytes)
        .u64("recovered_tsc", p.recovered)
        .raw("phases", &phases)
        .u64("backlog", rep.backlog as u64)
        .u64("late", rep.late)
}

fn release_event(at: u64, msg: &FaultMessage, rel: &crate::recover::Released, frame: &str) -> Body {
    let r = &rel.release;
    let op = &rel.op;
    let origin = match r.origin {
        recovery::Origin::Intent => "intent",
        recovery::Origin::Mutex(_) => "mutex_registry",
        recovery::Origin::Arc(_) => "arc_registry",
    };
    let body = Body::at(at)
        .u64("task", msg.task)
        .u64("seq", msg.seq)
        .str("kind", r.action.name())
        .hex("addr", r.action.addr())
        .u64("scope", r.scope)
        .str("origin", origin)
        .str("frame", frame);
    match recovery::Outcome::from_words(op.outcome, op.value, op.extra) {
        Some(o) => {
            let b = body.str("outcome", o.name()).bool("poisoned", o.poisoned());
            match o {
                recovery::Outcome::MutexReleased { woken, .. } | recovery::Outcome::MutexNotHeld { woken, .. } => {
                    b.u64("woken", woken)
                }
                recovery::Outcome::ArcDecremented { count, .. } => b.u64("count", count as u64),
                _ => b,
            }
        }
        None if op.outcome == r::FAILED => body
            .str("outcome", "failed")
            .bool("poisoned", false)
            .str("error", libtask::Error::decode(op.value).err().map_or("unknown", |e| e.name())),
        None => body.str("outcome", "not_done").bool("poisoned", false),
    }
}

fn fault_event(msg: &FaultMessage) -> Body {
    let kind = FaultKind::from_u64(msg.kind);
    let kind_name = kind.map_or("?", FaultKind::name);
    let exception =
        if kind == Some(FaultKind::Exception) { exception_name(msg.vector.min(255) as u8) } else { kind_name };
    let mut regs = String::from("{");
    for (i, (k, v)) in msg.regs.named().iter().enumerate() {
        if i > 0 {
            regs.push(',');
        }
        regs.push_str(&format!("\"{k}\":\"{v:#x}\""));
    }
    regs.push('}');
    Body::at(msg.fault_tsc)
        .u64("task", msg.task)
        .str("name", msg.name())
        .u64("seq", msg.seq)
        .str("kind", kind_name)
        .u64("vector", msg.vector)
        .str("exception", exception)
        .hex("error_code", msg.error_code)
        .hex("cr2", msg.cr2)
        .hex("rip", msg.regs.rip)
        .raw("regs", &regs)
        .u64("scopes", msg.scopes)
        .u64("fault_tsc", msg.fault_tsc)
}

fn backtrace_event<'a>(image: &'a TaskImage, walker: &mut Walker<'a, 32>, p: &Parsed<'_>) -> Body {
    let bt = backtrace::walk(image, walker, p);
    let listed: Vec<String> = bt
        .frames
        .iter()
        .map(|&(pc, lookup)| {
            let name = image.name_of(lookup);
            let mut entry = format!("{{\"pc\":\"{pc:#x}\",\"symbol\":\"");
            match &name {
                Some(name) => escape(&mut entry, name, MAX_SYMBOL),
                None => entry.push('?'),
            }
            entry.push_str("\"}");
            entry
        })
        .collect();
    let mut n = listed.len();
    loop {
        let json = format!("[{}]", listed[..n].join(","));
        let body = Body::at(p.msg.fault_tsc)
            .u64("task", p.msg.task)
            .u64("seq", p.msg.seq)
            .u64("count", n as u64)
            .str("stop", &bt.stop)
            .bool("truncated", n < listed.len())
            .u64("pages_read", bt.pages_read)
            .raw("frames", &json);
        if body.len() <= MAX_BODY || n == 0 {
            return body;
        }
        n -= 1;
    }
}

/// A few words on the fault, for the console.
pub fn what(msg: &FaultMessage) -> &'static str {
    match FaultKind::from_u64(msg.kind) {
        Some(FaultKind::Exception) => exception_name(msg.vector.min(255) as u8),
        Some(kind) => kind.name(),
        None => "unknown kind",
    }
}

/// The common fields of a `fault_report`.
pub fn describe(at: u64, msg: &FaultMessage, text: &str) -> Body {
    let kind = FaultKind::from_u64(msg.kind);
    let mut body = Body::at(at)
        .u64("task", msg.task)
        .u64("seq", msg.seq)
        .str("kind", kind.map_or("unknown", FaultKind::name))
        .hex("rip", msg.regs.rip)
        .u64("restarts", msg.restarts);
    if kind == Some(FaultKind::Exception) {
        body = body
            .u64("vector", msg.vector)
            .str("exception", exception_name(msg.vector.min(255) as u8))
            .hex("error_code", msg.error_code);
        // CR2 means something only for a page fault.
        if msg.vector == PAGE_FAULT {
            body = body.hex("cr2", msg.cr2);
        }
    }
    if !text.is_empty() {
        body = body.str_max("message", text, 300);
    }
    body
}

pub fn emit(kind: &str, body: &Body) {
    if let Err(e) = libtask::supervise::emit(kind, body.as_str()) {
        println!("fault-server: event {kind} refused ({}): {}", e.name(), body.as_str());
    }
}
