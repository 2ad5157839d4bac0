//! The fault server: a ring-3 task that decides what happens to faulted
//! tasks.
//!
//! The kernel turns every fault of a task (CPU exception, panic, watchdog,
//! kill) into one message on the task's fault endpoint — `faults` by
//! default — and holds the task until its supervisor answers. This task is
//! that supervisor. Its manifest grants it `faults:recv` and `supervisor`
//! (the right to read and write other tasks' registers and memory, and to
//! resume, restart or stop them: no other task has it). It must run at a
//! more urgent priority than the tasks it supervises (0): after a restart
//! it writes the restart count into the task before the task can run.
//!
//! For each message ([`Server::handle`]):
//!
//! 1. anything that is not a fault — wrong badge (only the kernel can send
//!    `FAULT_BADGE`) or label — is ignored with a console line;
//! 2. the `FaultMessage` is parsed; a message too short for it, or whose
//!    task id disagrees with its words, stops that task (a console line and
//!    the kernel's `escalate`), never the server;
//! 3. a *resume request* (`resume.rs`) is answered by resuming the task
//!    past its `ud2`;
//! 4. otherwise: the register check (`regcheck.rs`, only for tasks that
//!    carry a check block) and a `backtrace` event (`backtrace.rs`); then
//!    recovery (`recover.rs`): a fault inside checkpoint scopes rolls the
//!    task back to a scope — releasing the shared objects the rolled-back
//!    scopes held, from the task's registries — as the per-scope policy
//!    allows; beyond it, the policy (`policy.rs`): restart from the image —
//!    at once, then with doubling delays — or, after too many restarts in a
//!    short window, stop. Either way, what the task held is released first.
//!    The decision is reported as a `fault_report` event (schema in
//!    `docs/events.md`, next to the kernel's own `restart`/`escalate`).
//!
//! After restarting a task whose image exports a `u64` named
//! [`RESTARTS_SYMBOL`], the server writes the task's restart count there,
//! so the task knows which run it is on (`libtask::supervise::restart_count`).
//!
//! The server trusts nothing a task controls: the task's ELF file, stack and
//! check block are parsed with bounds checks, and every failure is a console
//! line and a degraded report, never a panic of the server.
#![no_std]
#![no_main]

extern crate alloc;

mod backtrace;
mod body;
mod image;
mod memory;
mod policy;
mod recover;
mod regcheck;
mod resume;

use alloc::collections::BTreeMap;
use alloc::rc::Rc;
use body::Body;
use image::TaskImage;
use libtask::abi::fault::{FAULT_LABEL, FAULT_MESSAGE_SIZE, FaultKind, FaultMessage};
use libtask::abi::ipc::{FAULT_BADGE, MAX_BUFFER};
use libtask::abi::trap::exception_name;
use libtask::ipc::{self, Message, Received, Timeout};
use libtask::supervise::{self, TaskId};
use libtask::{Start, println, syscall};
use policy::{Decision, Policy};

libtask::entry!(main);

/// `#PF`.
const PAGE_FAULT: u64 = 14;

/// Symbol of the restart counter a task may export (see the module note).
pub const RESTARTS_SYMBOL: &str = "REWIND_RESTARTS";

/// `STOP` reason codes (the kernel's `escalate` event shows them as
/// `reason_code`).
pub mod reason {
    /// Too many restarts within the policy window.
    pub const RESTART_STORM: u64 = 1;
    /// The fault message was malformed.
    pub const BAD_MESSAGE: u64 = 2;
}

fn main(start: Start) -> u64 {
    let faults = match ipc::cap("faults") {
        Ok(c) => c,
        Err(e) => {
            println!("fault-server: no `faults` capability ({}): nothing to serve", e.name());
            return 1;
        }
    };
    if ipc::cap("supervisor").is_err() {
        println!("fault-server: no `supervisor` capability: faults could not be answered");
        return 1;
    }
    println!("fault-server: task {} serving faults", start.id);
    let mut server = Server::default();
    let mut buf = [0u8; MAX_BUFFER];
    let mut errors = 0;
    loop {
        match ipc::recv_into(faults, &mut buf, Timeout::Forever) {
            Ok(got) => {
                errors = 0;
                let len = got.len.min(buf.len());
                server.handle(&got, &buf[..len]);
            }
            Err(e) => {
                println!("fault-server: recv failed: {}", e.name());
                errors += 1;
                if errors > 10 {
                    return 2;
                }
            }
        }
    }
}

#[derive(Default)]
struct Server {
    policy: Policy,
    scopes: recover::Scopes,
    /// Images of tasks seen so far (`None`: unreadable), by task id. A
    /// restart reloads the same file, so an entry stays valid.
    images: BTreeMap<TaskId, Option<Rc<TaskImage>>>,
}

impl Server {
    fn handle(&mut self, got: &Received, bytes: &[u8]) {
        if got.badge != FAULT_BADGE || got.msg.label != FAULT_LABEL {
            println!("fault-server: ignoring a message with label {:#x}, badge {:#x}", got.msg.label, got.badge);
            // If it was a call, do not leave the caller blocked forever.
            let _ = ipc::reply(&Message::default());
            return;
        }
        let task = got.msg.words[0];
        let Some(msg) = FaultMessage::from_bytes(bytes).filter(|m| m.task == task) else {
            println!("fault-server: malformed fault message for task {task} ({} bytes): stopping it", bytes.len());
            self.stop(task, got.msg.words[3], reason::BAD_MESSAGE, "malformed fault message");
            return;
        };
        let text_len = (msg.text_len as usize).min(bytes.len() - FAULT_MESSAGE_SIZE);
        let text = core::str::from_utf8(&bytes[FAULT_MESSAGE_SIZE..FAULT_MESSAGE_SIZE + text_len])
            .unwrap_or("<invalid UTF-8>");

        if resume::is_request(&msg) {
            let report = describe(&msg, text).str("action", "resume");
            match resume::resume_past_ud2(task) {
                Ok(rip) => {
                    println!("fault-server: task {task} asked to be resumed: resumed at {rip:#x}");
                    emit("fault_report", report.hex("resume_rip", rip));
                }
                Err(e) => {
                    println!("fault-server: resuming task {task} failed: {}", e.name());
                    self.restart_or_stop(&msg, text);
                }
            }
            return;
        }

        let image = self.image(task);
        if let Some(image) = &image {
            if let Some(check) = regcheck::check(task, image, &msg) {
                emit("check", check);
            }
            emit("backtrace", backtrace::backtrace(task, image, &msg));
        }
        if self.roll_back(&msg, image.as_deref()) {
            return;
        }
        // A fresh start or a stop: give back everything the task held.
        if let Err(why) = recover::release(task, &msg, image.as_deref(), 0, "") {
            println!("fault-server: task {task}: registry refused ({why}): nothing released");
            emit(
                "escalate",
                Body::new().u64("task", task).u64("seq", msg.seq).str("action", "fresh_start").str("reason", why),
            );
        }
        self.scopes.forget(task);
        let restarted = self.restart_or_stop(&msg, text);
        if let (true, Some(image)) = (restarted, &image) {
            note_restart_count(task, image, msg.restarts + 1);
        }
    }

    /// A fault inside checkpoint scopes: roll back to the scope the policy
    /// allows, after releasing what the rolled-back scopes held. Returns
    /// false when recovery must escalate to a fresh start.
    fn roll_back(&mut self, msg: &FaultMessage, image: Option<&TaskImage>) -> bool {
        let task = msg.task;
        if msg.scopes == 0 {
            return false;
        }
        let depth = self.scopes.choose(task, msg.seq, msg.scopes, syscall::ticks());
        if depth == 0 {
            return false;
        }
        let escalate = |why: &str| {
            println!("fault-server: task {task} fault {}: cannot roll back ({why}): fresh start", msg.seq);
            emit(
                "escalate",
                Body::new().u64("task", task).u64("seq", msg.seq).str("action", "fresh_start").str("reason", why),
            );
        };
        let Some(image) = image else {
            escalate("image unreadable");
            return false;
        };
        let frame = match recover::walk_reaches(task, image, msg, depth) {
            Ok((_, name)) => name,
            Err(why) => {
                escalate(&why);
                return false;
            }
        };
        let releases = match recover::release(task, msg, Some(image), depth, &frame) {
            Ok(n) => n,
            Err(why) => {
                escalate(why);
                return false;
            }
        };
        // SAFETY: ROLLBACK reads no memory of ours.
        match unsafe { supervise::task_ctl(libtask::abi::ipc::task_ctl::ROLLBACK, task, depth, 0, 0) } {
            Ok(pages) => {
                println!(
                    "fault-server: task {task} fault {} ({}): rolled back to scope {depth} in {frame}",
                    msg.seq,
                    what(msg)
                );
                emit(
                    "fault_report",
                    describe(msg, "")
                        .str("action", "rollback")
                        .u64("scope", depth)
                        .str("frame", &frame)
                        .u64("releases", releases as u64)
                        .u64("pages", pages),
                );
                true
            }
            Err(e) => {
                escalate(e.name());
                false
            }
        }
    }

    /// The policy's answer to a fault: restart (with back-off) or stop.
    /// Returns whether the task was restarted.
    fn restart_or_stop(&mut self, msg: &FaultMessage, text: &str) -> bool {
        let task = msg.task;
        match self.policy.decide(task, syscall::ticks()) {
            Decision::Restart { delay_ms } => {
                println!("fault-server: task {task} fault {} ({}): restarting it in {delay_ms} ms", msg.seq, what(msg));
                emit("fault_report", describe(msg, text).str("action", "restart").u64("delay_ms", delay_ms));
                match supervise::restart(task, delay_ms) {
                    Ok(()) => true,
                    Err(e) => {
                        println!("fault-server: restarting task {task} failed: {}", e.name());
                        self.policy.forget(task);
                        false
                    }
                }
            }
            Decision::Stop { restarts_in_window } => {
                println!(
                    "fault-server: task {task} faulted after {restarts_in_window} restarts within {} ms: stopping it",
                    policy::WINDOW_MS
                );
                emit(
                    "fault_report",
                    describe(msg, text)
                        .str("action", "stop")
                        .str("reason", "restart_storm")
                        .u64("restarts_in_window", restarts_in_window as u64)
                        .u64("window_ms", policy::WINDOW_MS),
                );
                self.stop(task, msg.seq, reason::RESTART_STORM, "restart storm");
                false
            }
        }
    }

    fn stop(&mut self, task: TaskId, seq: u64, code: u64, why: &str) {
        if code != reason::RESTART_STORM {
            emit(
                "fault_report",
                Body::new().u64("task", task).u64("seq", seq).str("action", "stop").str("reason", why),
            );
        }
        if let Err(e) = supervise::stop(task, code) {
            println!("fault-server: stopping task {task} failed: {}", e.name());
        }
        self.policy.forget(task);
    }

    /// The parsed image of `task`, read once.
    fn image(&mut self, task: TaskId) -> Option<Rc<TaskImage>> {
        self.images
            .entry(task)
            .or_insert_with(|| match TaskImage::load(task) {
                Ok(image) => Some(Rc::new(image)),
                Err(why) => {
                    println!("fault-server: cannot read the image of task {task}: {why}");
                    None
                }
            })
            .clone()
    }
}

/// A few words on the fault, for the console.
fn what(msg: &FaultMessage) -> &'static str {
    match FaultKind::from_u64(msg.kind) {
        Some(FaultKind::Exception) => exception_name(msg.vector.min(255) as u8),
        Some(kind) => kind.name(),
        None => "unknown kind",
    }
}

/// The common fields of a `fault_report`.
fn describe(msg: &FaultMessage, text: &str) -> Body {
    let kind = FaultKind::from_u64(msg.kind);
    let mut body = Body::new()
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

/// Writes the restart count into a restarted task that asks for it.
fn note_restart_count(task: TaskId, image: &TaskImage, count: u64) {
    if let Some((addr, 8)) = image.symbol(RESTARTS_SYMBOL)
        && let Err(e) = supervise::write_mem(task, addr, &count.to_le_bytes())
    {
        println!("fault-server: cannot write the restart count of task {task}: {}", e.name());
    }
}

fn emit(kind: &str, body: Body) {
    if let Err(e) = supervise::emit(kind, body.as_str()) {
        println!("fault-server: event {kind} refused ({}): {}", e.name(), body.as_str());
    }
}
