//! The fault server: a ring-3 task that decides what happens to faulted
//! tasks — and makes them run again first, reporting after.
//!
//! The kernel turns every fault of a task (CPU exception, panic, watchdog,
//! kill) into one message on the task's fault endpoint — `faults` by
//! default — and holds the task until its supervisor answers. This task is
//! that supervisor. Its manifest grants it `faults:recv` and `supervisor`
//! (the right to read and write other tasks' registers and memory, and to
//! recover, restart or stop them: no other task has it). It must run at a
//! more urgent priority than the tasks it supervises (0).
//!
//! ## One fault, top-down
//!
//! 1. `recv` on `faults` returns the message: registers, the open scopes'
//!    stack pointers, the task's policy and regions, a copy of its recovery
//!    page and of its stack (`abi::fault::FaultMessage`) — everything the
//!    decision needs, in one delivery ([`Server::handle`]);
//! 2. anything that is not a fault (wrong badge or label) is ignored; a
//!    malformed message stops its task; a *resume request* (`resume.rs`)
//!    resumes the task past its `ud2`;
//! 3. otherwise the **recovery path** (`recover.rs`): choose the scope, walk
//!    to its frame, plan the releases, and one `TASK_CTL RECOVER` that
//!    releases and rolls back (or restarts, or stops) — then the task runs;
//! 4. the server lowers its own priority (`SET_PRIORITY`) and queues a
//!    [`report::Report`]; while no fault waits, it emits the queued reports
//!    (`report.rs`: `fault`, `backtrace`, `release`, `restart`,
//!    `fault_report` events and a console line). A new fault gives it its
//!    priority back at once (the kernel does), so reports never delay a
//!    recovery; a task that keeps the CPU busy delays reports by at most
//!    `abi::syscall::LOWERED_MAX_TICKS` ticks (the kernel restores the
//!    priority then); a backlog of [`MAX_BACKLOG`] reports is emitted
//!    before the next recovery, never dropped;
//! 5. after its report, the fault's core file if the task's manifest asks
//!    for them (`coredump.rs`: `core_begin`, `core_memory`, `core_end`
//!    events, a batch per loop step, faults polled between steps).
//!
//! While no fault waits (and no report), the server also reads the images
//! — ELF symbols and unwind tables — of the tasks it supervises, one per
//! idle turn, below every task's priority ([`Server::preload_one`]): a
//! task's first fault then costs about what its later ones do.
//!
//! After restarting a task whose image exports a `u64` named
//! [`RESTARTS_SYMBOL`], the server writes the task's restart count there,
//! so the task knows which run it is on (`libtask::supervise::restart_count`).
//!
//! The server trusts nothing a task controls: the task's ELF file, stack,
//! recovery page and check block are parsed with bounds checks, and every
//! failure is a console line and a degraded report, never a panic of the
//! server. The recovery path does not depend on the reporting module.
#![no_std]
#![no_main]
// `Box::try_new`: the server's reserves are allocated fallibly.
#![feature(allocator_api)]

extern crate alloc;

mod backtrace;
mod console;
mod coredump;
mod image;
mod memory;
mod policy;
mod recover;
mod regcheck;
mod report;
mod resume;

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::rc::Rc;
use alloc::vec::Vec;
use image::{TaskImage, Unwinder};
use libtask::abi::fault::{FAULT_BUFFER, FAULT_LABEL, FaultMessage};
use libtask::abi::ipc::FAULT_BADGE;
use libtask::abi::syscall::PRIORITY_LOWEST;
use libtask::ipc::{self, Message, Received, Timeout};
use libtask::supervise::{self, TaskId};
use libtask::{Error, Start, println, syscall};
use recover::{Recovery, reason};
use report::{Outcome, Report};

libtask::entry!(main);

/// Symbol of the restart counter a task may export (see the module note).
pub const RESTARTS_SYMBOL: &str = "REWIND_RESTARTS";

/// Reports that may wait; one more and the oldest is emitted before the
/// next recovery (each holds one fault message, ~7 KiB).
pub const MAX_BACKLOG: usize = 32;

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
    let mut server = Server { preload: Some(1), ..Server::default() };
    // Our own id is not a task we supervise.
    let me = start.id;
    let mut errors = 0;
    loop {
        if server.preload == Some(me) {
            server.preload = Some(me + 1);
        }
        let reports_waiting = !server.backlog.is_empty() || server.cores.sending() || server.preload.is_some();
        if reports_waiting && !server.lowered && syscall::set_priority(PRIORITY_LOWEST).is_ok() {
            // Deferred work (reports, cores, preloading) runs below every
            // task; a fault gives us our priority back (the kernel does).
            server.lowered = true;
        }
        if !reports_waiting && server.lowered {
            // Nothing to defer: wait for faults at our own priority.
            let _ = syscall::restore_priority();
            server.lowered = false;
        }
        // Refill the recovery path's pools before waiting (not on the
        // path); short of memory, give the oldest report's back first.
        while !server.recovery.reserve() && !server.backlog.is_empty() {
            server.report_oldest();
        }
        let Some(mut buf) = server.spare.pop().or_else(MsgBuf::try_new) else {
            // Out of memory for one more buffer: a queued report gives
            // its buffer back (there is one unless memory ran out before
            // the first fault; then wait for memory).
            if server.backlog.is_empty() {
                let _ = syscall::sleep(1);
            }
            server.report_oldest();
            continue;
        };
        let timeout = if reports_waiting { Timeout::Poll } else { Timeout::Forever };
        match ipc::recv_into(faults, &mut buf, timeout) {
            Ok(got) => {
                errors = 0;
                server.handle(&got, buf);
            }
            Err(Error::Timeout) => {
                server.spare.push(buf);
                if !server.backlog.is_empty() {
                    server.report_oldest();
                } else if server.cores.sending() {
                    server.cores.send_step(&mut server.batch);
                } else {
                    server.preload_one();
                }
            }
            Err(e) => {
                server.spare.push(buf);
                println!("fault-server: recv failed: {}", e.name());
                errors += 1;
                if errors > 10 {
                    return 2;
                }
            }
        }
    }
}

/// A task image read once, with its unwinder (walkers and rows of its own,
/// whose caches stay warm across the task's faults).
///
/// The unwinder borrows the image's sections; both live here, the image
/// boxed (its address does not move with `Known`) and dropped after the
/// unwinder (fields drop in declaration order), so the borrow — given a
/// `'static` lifetime in [`Known::load`] — never outlives the bytes.
struct Known {
    unwinder: Unwinder,
    image: Box<TaskImage>,
}

impl Known {
    fn load(task: TaskId) -> Result<Known, &'static str> {
        let image = Box::try_new(TaskImage::load(task)?).map_err(|_| "out of memory")?;
        // SAFETY: the box's contents stay at this address until `Known` is
        // dropped, and the unwinder, which borrows them, is dropped first
        // (see the struct note); nothing hands the `'static` borrow out
        // beyond a `&Known`'s lifetime.
        let borrowed: &'static TaskImage = unsafe { &*(&*image as *const TaskImage) };
        let unwinder = Unwinder::new(borrowed)?;
        Ok(Known { unwinder, image })
    }
}

/// Task images kept at most (about 50–100 KiB each: sections and walker);
/// past it the least recently used is dropped. A task whose image was
/// dropped has it read again at its next fault (the cold cost, as on its
/// first: `fault_to_checkpoint_cold`); nothing else about the task is lost
/// (its policy history and scope counts are kept apart).
pub const MAX_IMAGES: usize = 16;

/// An image cache entry (`None`: unreadable, remembered so that a bad file
/// is not read at every fault) and when it was last used.
struct Cached {
    known: Option<Rc<Known>>,
    used: u64,
}

#[derive(Default)]
struct Server {
    recovery: Recovery,
    /// Images of tasks seen so far (`None`: unreadable), by task id. A
    /// restart reloads the same file, so an entry stays valid.
    images: BTreeMap<TaskId, Cached>,
    /// Use counter for the images' LRU order.
    uses: u64,
    backlog: VecDeque<Report>,
    /// Receive buffers of reported faults, for reuse.
    spare: Vec<MsgBuf>,
    /// Whether we run below our own priority (reports waiting).
    lowered: bool,
    /// Reports emitted before a recovery because the backlog was full.
    late: u64,
    /// The events of the report being made (one `EMIT` per report).
    batch: supervise::EventBatch,
    /// Core files made after their reports, sent a batch at a time.
    cores: Box<coredump::Cores>,
    /// Image preloading while idle: the next task id to look at (ids start
    /// at 1), or `None` once every supervised task's image is read or the
    /// cache is full (`preload_one`).
    preload: Option<TaskId>,
}

impl Server {
    fn handle(&mut self, got: &Received, buf: MsgBuf) {
        let received = syscall::tsc();
        if got.badge != FAULT_BADGE || got.msg.label != FAULT_LABEL {
            println!("fault-server: ignoring a message with label {:#x}, badge {:#x}", got.msg.label, got.badge);
            // If it was a call, do not leave the caller blocked forever.
            let _ = ipc::reply(&Message::default());
            self.spare.push(buf);
            return;
        }
        let task = got.msg.words[0];
        let len = got.len.min(buf.len());
        let Some(p) = FaultMessage::parse(&buf[..len]).filter(|p| p.msg.task == task) else {
            println!("fault-server: malformed fault message for task {task} ({len} bytes): stopping it");
            let seq = got.msg.words[3];
            let action = libtask::abi::event::Decision::Stop {
                reason: "malformed fault message",
                restarts_in_window: None,
                window_ms: None,
            };
            let report =
                libtask::abi::event::Event::FaultReport { task, seq, fault: None, message: None, action, cost: None };
            report::emit(&report, 0);
            if let Err(e) = supervise::stop(task, reason::BAD_MESSAGE) {
                println!("fault-server: stopping task {task} failed: {}", e.name());
            }
            self.recovery.policy.forget(task);
            self.spare.push(buf);
            return;
        };
        if self.backlog.len() >= MAX_BACKLOG {
            // Never drop a report: this fault waits for the oldest one.
            self.report_oldest();
            self.late += 1;
        }
        let known = self.known(task);
        let known = known.as_deref();
        let regcheck = known.and_then(|k| regcheck::check(task, &k.image, &p.msg));
        let outcome = match resume::is_request(&p.msg).then(|| resume::resume_past_ud2(task)) {
            Some(Ok(rip)) => Outcome::Resumed { rip, at: syscall::tsc() },
            resumed => {
                if let Some(Err(e)) = resumed {
                    println!("fault-server: resuming task {task} failed: {}", e.name());
                }
                let rec = match known {
                    Some(k) => self.recovery.recover(&p, Some(&k.unwinder), received, true),
                    None => self.recovery.recover(&p, None, received, true),
                };
                self.lowered |= rec.lowered;
                if let (recover::Done::Restart { restarts, .. }, Some(k)) = (rec.done, known) {
                    note_restart_count(task, &k.image, restarts);
                }
                Outcome::Recovered(rec)
            }
        };
        self.backlog.push_back(Report {
            bytes: buf,
            len,
            outcome,
            regcheck,
            backlog: self.backlog.len() + 1,
            late: self.late,
            cpu: self.recovery.restart_cpu(),
        });
        // Let the task we just recovered run before we report it (a
        // successful `RECOVER` already lowered us, and the task ran).
        if !self.lowered && syscall::set_priority(PRIORITY_LOWEST).is_ok() {
            self.lowered = true;
        }
    }

    /// Emits the oldest queued report.
    fn report_oldest(&mut self) {
        let Some(rep) = self.backlog.pop_front() else { return };
        let task = FaultMessage::from_bytes(&rep.bytes[..rep.len]).map_or(0, |m| m.task);
        let known = self.known(task);
        let unwinder = known.as_deref().map(|k| &k.unwinder);
        report::emit_report(&rep, unwinder, &mut self.batch);
        if let (Outcome::Recovered(_), Some(p)) = (&rep.outcome, FaultMessage::parse(&rep.bytes[..rep.len])) {
            self.cores.make(&p);
        }
        self.spare.push(rep.bytes);
        if let Outcome::Recovered(rec) = rep.outcome {
            self.recovery.recycle(rec);
        }
    }

    /// Reads the image of one more task this server supervises, while no
    /// fault waits: a task's first fault then costs what its later ones do
    /// (reading an ELF and its unwind tables is ~100k instructions, most of
    /// a first recovery). Ids are table positions + 1; `TASK_INFO` tells
    /// which are ours (`Denied`: another supervisor's) and where the table
    /// ends (`BadTask`). Stops once the cache is full, never evicting.
    fn preload_one(&mut self) {
        let Some(id) = self.preload else { return };
        if self.images.len() >= MAX_IMAGES {
            self.preload = None;
            return;
        }
        self.preload = Some(id + 1);
        match supervise::task_info(id) {
            Ok(_) if !self.images.contains_key(&id) => {
                let _ = self.known(id);
            }
            Ok(_) | Err(Error::Denied) => {}
            Err(_) => self.preload = None,
        }
    }

    /// The parsed image of `task`: read once, kept while among the
    /// [`MAX_IMAGES`] most recently used.
    fn known(&mut self, task: TaskId) -> Option<Rc<Known>> {
        self.uses += 1;
        if let Some(c) = self.images.get_mut(&task) {
            c.used = self.uses;
            return c.known.clone();
        }
        if self.images.len() >= MAX_IMAGES
            && let Some((&oldest, _)) = self.images.iter().min_by_key(|(_, c)| c.used)
        {
            // Dropped here unless a queued report still holds it.
            self.images.remove(&oldest);
        }
        let known = match Known::load(task) {
            Ok(k) => Rc::try_new(k).ok(),
            Err(why) => {
                println!("fault-server: cannot read the image of task {task}: {why}");
                None
            }
        };
        self.images.insert(task, Cached { known: known.clone(), used: self.uses });
        known
    }
}

/// A receive buffer for one fault message, 8-aligned (it is `u64`s): the
/// message's sections are 8-aligned in it, so the recovery page copy is
/// read in place (`abi::checkpoint::RecoveryPage::view`).
pub struct MsgBuf(Box<[u64]>);

impl MsgBuf {
    /// A zeroed buffer; `None` if memory ran out (never a panic).
    fn try_new() -> Option<MsgBuf> {
        let n = FAULT_BUFFER.div_ceil(8);
        let mut v: Vec<u64> = Vec::new();
        v.try_reserve_exact(n).ok()?;
        v.resize(n, 0);
        Some(MsgBuf(v.into_boxed_slice()))
    }
}

impl core::ops::Deref for MsgBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the `u64`s are initialised memory of `len * 8` bytes;
        // `u8` has no alignment requirement and every bit pattern is valid.
        unsafe { core::slice::from_raw_parts(self.0.as_ptr() as *const u8, self.0.len() * 8) }
    }
}

impl core::ops::DerefMut for MsgBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and any bytes written are valid `u64`s.
        unsafe { core::slice::from_raw_parts_mut(self.0.as_mut_ptr() as *mut u8, self.0.len() * 8) }
    }
}

/// Writes the restart count into a restarted task that asks for it.
fn note_restart_count(task: TaskId, image: &TaskImage, count: u64) {
    if let Some(addr) = image.restarts
        && let Err(e) = supervise::write_mem(task, addr, &count.to_le_bytes())
    {
        println!("fault-server: cannot write the restart count of task {task}: {}", e.name());
    }
}
