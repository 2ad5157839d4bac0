//! The recovery path: what the server does for a fault before the faulted
//! task runs again — and nothing more. Everything a person or a tool reads
//! about the fault is produced afterwards, from the [`Recovered`] record
//! this returns (`report.rs`).
//!
//! 1. **Choose the target** ([`Scopes::choose`]): the innermost open scope,
//!    unless it was rolled back too often lately (the task's manifest
//!    policy, which travels in the fault message: at most `max_restarts`
//!    in `restart_window_ms`), then the one around it, and so on; past the
//!    outermost scope, a fresh start of the task from its image (depth 0).
//! 2. **Walk** from the faulting registers to the target scope's frame
//!    ([`walk_to_scope`]): the first frame whose CFA lies above the stack
//!    pointer the kernel recorded when the scope opened (also in the
//!    message). The stack comes with the message, so the walk makes no
//!    system call. A walk that cannot get there (no unwind info, unreadable
//!    stack, a loop) means the stack is not trustworthy: fresh start.
//! 3. **Plan** the releases (`recovery::plan`) from the copy of the task's
//!    recovery page in the message (libtask records its Arc asm-block
//!    addresses there too) and its regions (also in the message). A page that fails
//!    any check releases nothing and escalates to a fresh start — never a
//!    wrong release.
//! 4. **Recover**: one `TASK_CTL RECOVER` carries the releases and the
//!    rollback (or the fresh start, or the stop) to the kernel, which does
//!    all of it under its lock and writes each outcome back. A server that
//!    dies around the call did all of it or none of it: nothing is released
//!    twice, and the kernel hands the fault to the next instance if not.
//!
//! Each step's time (`clock()`, guest instructions under icount) goes into
//! the record, for the benchmark's phase breakdown.

use crate::image::Unwinder;
use crate::memory::WindowMemory;
use crate::policy::{Decision, Policy};
use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use libtask::abi::checkpoint::{MAX_SCOPES, RegionInfo};
use libtask::abi::fault::{FaultMessage, Parsed};
use libtask::supervise::{self, FinalAction, RecoverRequest, TaskId};
use libtask::syscall;
use walker::{Regs, Stop};

/// Default restart policy when the manifest gives none.
pub const DEFAULT_MAX_RETRIES: u64 = 5;
pub const DEFAULT_WINDOW_MS: u64 = 2000;

/// `STOP` reason codes (the `escalate` event shows them as `reason_code`).
pub mod reason {
    /// Too many restarts within the policy window.
    pub const RESTART_STORM: u64 = 1;
    /// The fault message was malformed.
    pub const BAD_MESSAGE: u64 = 2;
}

/// A step outward the policy or a failed check took (an `escalate` event).
#[derive(Clone, Debug)]
pub enum Escalation {
    /// Scope `from_scope` was retried too often: the one around it (or a
    /// fresh start, from scope 1).
    Policy { from_scope: u64, retries_in_window: u64, window_ms: u64 },
    /// The rollback could not be done (`why`): fresh start.
    FreshStart { why: String },
    /// The recovery page was refused on a fresh start: nothing released.
    NothingReleased { why: &'static str },
}

/// What happened to the task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Done {
    /// Rolled back to scope `depth`: `pages` restored, the re-run is
    /// attempt `attempt`.
    Rollback { depth: u64, pages: u64, attempt: u64 },
    /// Restarted from its image after `delay_ms` (`restarts` so far).
    Restart { delay_ms: u64, restarts: u64 },
    /// Stopped for good: too many restarts in the window.
    Stop { restarts_in_window: u64, restarts: u64 },
    /// The kernel refused the request (`error`): the task is still held.
    Refused { error: &'static str },
}

/// Guest-instruction time stamps of one recovery.
#[derive(Clone, Copy, Debug, Default)]
pub struct Phases {
    /// The server holds the message (`recv` returned).
    pub received: u64,
    /// The target scope is chosen.
    pub decided: u64,
    /// The walk reached the scope's frame.
    pub walked: u64,
    /// The releases are planned.
    pub planned: u64,
    /// The kernel took the `RECOVER` request.
    pub entered: u64,
    /// The kernel finished the releases (inside `RECOVER`).
    pub released: u64,
    /// The kernel finished the rollback, restart or stop (inside `RECOVER`).
    pub recovered: u64,
}

/// One planned release and what the kernel found doing it.
#[derive(Clone, Copy, Debug)]
pub struct Released {
    pub release: recovery::Release,
    pub op: libtask::abi::ipc::recover::ReleaseOp,
}

/// Everything the report needs, kept from the recovery path.
pub struct Recovered {
    /// Whether the kernel lowered our priority as it finished (`RECOVER`
    /// succeeded with `LOWER_CALLER`).
    pub lowered: bool,
    pub escalations: Vec<Escalation>,
    /// The scope frame's index in the walk and its pc (rollbacks).
    pub scope_frame: Option<(usize, u64)>,
    /// The walk to the scope's frame, if it got there (for the backtrace,
    /// whatever was done after it).
    pub walked: Option<alloc::boxed::Box<ScopeWalk>>,
    pub releases: Vec<Released>,
    pub done: Done,
    pub phases: Phases,
}

/// Rollback history per (task, scope depth), to apply the policy.
#[derive(Default)]
pub struct Scopes {
    history: BTreeMap<(TaskId, u64), VecDeque<u64>>,
}

impl Scopes {
    /// The depth to roll back to: `open` scopes are open, the innermost
    /// first; 0 = none is allowed another retry (fresh start). Each step
    /// outward is noted in `out`.
    pub fn choose(&mut self, msg: &FaultMessage, now: u64, out: &mut Vec<Escalation>) -> u64 {
        let (max, window) = policy(msg);
        let mut depth = msg.scopes.min(MAX_SCOPES as u64);
        while depth > 0 {
            let h = self.history.entry((msg.task, depth)).or_default();
            while h.front().is_some_and(|&t| now.saturating_sub(t) > window) {
                h.pop_front();
            }
            if (h.len() as u64) < max {
                h.push_back(now);
                return depth;
            }
            out.push(Escalation::Policy { from_scope: depth, retries_in_window: h.len() as u64, window_ms: window });
            depth -= 1;
        }
        0
    }

    /// A fresh start forgets the task's scope history.
    pub fn forget(&mut self, task: TaskId) {
        self.history.retain(|(t, _), _| *t != task);
    }
}

/// `(max retries, window ms)` from the task's manifest, or the defaults.
fn policy(msg: &FaultMessage) -> (u64, u64) {
    match (msg.max_restarts, msg.restart_window_ms) {
        (0, _) => (DEFAULT_MAX_RETRIES, DEFAULT_WINDOW_MS),
        (max, 0) => (max, DEFAULT_WINDOW_MS),
        (max, window) => (max, window),
    }
}

/// The registers at the fault, as the walker takes them.
pub fn fault_regs(msg: &FaultMessage) -> Regs {
    let r = &msg.regs;
    Regs::from_dwarf_array([
        r.rax, r.rdx, r.rcx, r.rbx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15,
        r.rip,
    ])
}

/// Frames of the recovery's walk kept for the report's backtrace (its
/// length: `backtrace::MAX_FRAMES`).
pub const RECORDED_FRAMES: usize = 16;

/// What the walk to a scope's frame saw, kept for the report: the report's
/// backtrace lists these frames and walks on from the scope's frame
/// (`backtrace.rs`), so no frame is walked twice.
#[derive(Clone, Debug)]
pub struct ScopeWalk {
    /// The scope frame's index in the walk.
    pub index: usize,
    /// Its pc (a return address minus 1: the call).
    pub pc: u64,
    /// `(pc, exact)` of the frames before it (the first [`RECORDED_FRAMES`]).
    pub frames: [(u64, bool); RECORDED_FRAMES],
    /// The scope's frame, to walk on from.
    pub resume: walker::WalkState,
    /// Pages read from the task outside the message's stack copy.
    pub pages_read: u64,
}

impl ScopeWalk {
    pub fn new() -> ScopeWalk {
        ScopeWalk {
            index: 0,
            pc: 0,
            frames: [(0, false); RECORDED_FRAMES],
            resume: walker::WalkState::new(Regs::new()),
            pages_read: 0,
        }
    }
}

/// Walks from the fault to the frame of scope `depth`: the first frame
/// whose CFA is above the scope's saved stack pointer. Fills `out` (in
/// place: it is a few hundred bytes).
pub fn walk_to_scope(unwinder: &Unwinder, p: &Parsed<'_>, depth: u64, out: &mut ScopeWalk) -> Result<(), String> {
    let target = p.msg.scope_rsp(depth).ok_or_else(|| String::from("no such scope"))?;
    let memory = WindowMemory::new(p.msg.task, p.msg.stack_base, p.stack);
    let found = unwinder.walk_to_cfa(fault_regs(&p.msg), &memory, 64, target, &mut out.frames).map_err(String::from)?;
    out.pages_read = memory.pages_read();
    match found {
        Ok((index, pc, exact, resume)) => {
            out.index = index;
            out.pc = if exact { pc } else { pc.saturating_sub(1) };
            out.resume = resume;
            Ok(())
        }
        Err(Stop::Outermost) => Err(String::from("reached the outermost frame without the scope's frame")),
        Err(other) => Err(alloc::format!("walk stopped: {other:?}")),
    }
}

/// The server's recovery state across faults.
pub struct Recovery {
    pub scopes: Scopes,
    pub policy: Policy,
    /// The `RECOVER` request and the release plan, reused for every fault
    /// (each is a few KiB: filled in place, never moved).
    req: alloc::boxed::Box<RecoverRequest>,
    plan: alloc::boxed::Box<recovery::Plan>,
    /// The walk to the scope's frame, filled in place (handed to the
    /// report after `RECOVER`).
    walked: alloc::boxed::Box<ScopeWalk>,
}

impl Default for Recovery {
    fn default() -> Recovery {
        Recovery {
            scopes: Scopes::default(),
            policy: Policy::default(),
            req: alloc::boxed::Box::new(RecoverRequest::new(0, FinalAction::Stop { reason: 0 })),
            plan: alloc::boxed::Box::default(),
            walked: alloc::boxed::Box::new(ScopeWalk::new()),
        }
    }
}

impl Recovery {
    /// Recovers the held task of fault `p`: rollback if a scope may take
    /// it, else a fresh start or a stop, releasing what it held either way.
    /// `image` is `None` if the task's ELF is unreadable (no rollback then:
    /// the stack cannot be checked). `lower`: the kernel lowers our
    /// priority as it finishes, so the task runs before we go on.
    pub fn recover(&mut self, p: &Parsed<'_>, image: Option<&Unwinder>, received: u64, lower: bool) -> Recovered {
        let msg = &p.msg;
        let mut phases = Phases { received, ..Phases::default() };
        let mut escalations = Vec::new();
        let mut depth = if msg.scopes > 0 { self.scopes.choose(msg, msg.fault_ticks, &mut escalations) } else { 0 };
        phases.decided = syscall::tsc();
        let mut scope_frame = None;
        let mut walked = false;
        if depth > 0 {
            match image {
                Some(unwinder) => match walk_to_scope(unwinder, p, depth, &mut self.walked) {
                    Ok(()) => {
                        scope_frame = Some((self.walked.index, self.walked.pc));
                        walked = true;
                    }
                    Err(why) => {
                        escalations.push(Escalation::FreshStart { why });
                        depth = 0;
                    }
                },
                None => {
                    escalations.push(Escalation::FreshStart { why: "image unreadable".into() });
                    depth = 0;
                }
            }
        }
        phases.walked = syscall::tsc();
        let more;
        let regions = if msg.region_count as usize <= msg.regions().len() {
            msg.regions()
        } else {
            more = all_regions(msg);
            &more[..]
        };
        let plan = &mut *self.plan;
        let mut planned = fill_plan(p, regions, depth, plan);
        if depth > 0
            && let Err(why) = planned
        {
            escalations.push(Escalation::FreshStart { why: why.into() });
            depth = 0;
            scope_frame = None;
            planned = fill_plan(p, regions, 0, plan);
        }
        if let Err(why) = planned {
            escalations.push(Escalation::NothingReleased { why });
        }
        phases.planned = syscall::tsc();

        let mut action = match depth {
            0 => fresh_start(&mut self.policy, msg.task, msg.fault_ticks),
            depth => FinalAction::Rollback { depth },
        };
        let mut result = Ok(());
        let req = &mut *self.req;
        for _attempt in 0..2 {
            req.reset(msg.seq, action);
            // Only a rollback: after a restart the server still writes the
            // restart count into the task before it may run.
            if lower && matches!(action, FinalAction::Rollback { .. }) {
                req.lower_caller();
            }
            for r in plan.releases() {
                req.push(r.action.to_op());
            }
            result = supervise::recover(msg.task, req);
            match (&result, action) {
                // The kernel refused the rollback (and did nothing): start afresh.
                (Err(e), FinalAction::Rollback { .. }) => {
                    escalations.push(Escalation::FreshStart { why: e.name().into() });
                    scope_frame = None;
                    action = fresh_start(&mut self.policy, msg.task, msg.fault_ticks);
                }
                _ => break,
            }
        }
        phases.recovered = req.header.tsc_done;
        phases.released = req.header.tsc_released;
        phases.entered = req.header.tsc_entered;
        let releases = plan.releases().iter().zip(req.ops()).map(|(&release, &op)| Released { release, op }).collect();
        let h = &req.header;
        let done = match (result, action) {
            (Err(e), _) => Done::Refused { error: e.name() },
            (Ok(()), FinalAction::Rollback { depth }) => Done::Rollback { depth, pages: h.result, attempt: h.attempt },
            (Ok(()), FinalAction::Restart { delay_ms }) => Done::Restart { delay_ms, restarts: h.result },
            (Ok(()), FinalAction::Stop { .. }) => {
                let n = self.policy.restarts_in_window(msg.task);
                self.policy.forget(msg.task);
                Done::Stop { restarts_in_window: n, restarts: h.result }
            }
        };
        if !matches!(done, Done::Rollback { .. }) {
            self.scopes.forget(msg.task);
        }
        Recovered {
            lowered: lower && matches!(done, Done::Rollback { .. }),
            escalations,
            scope_frame,
            walked: walked.then(|| core::mem::replace(&mut self.walked, alloc::boxed::Box::new(ScopeWalk::new()))),
            releases,
            done,
            phases,
        }
    }
}

/// The policy's answer when no scope takes the fault.
fn fresh_start(policy: &mut Policy, task: TaskId, now: u64) -> FinalAction {
    match policy.decide(task, now) {
        Decision::Restart { delay_ms } => FinalAction::Restart { delay_ms },
        Decision::Stop { .. } => FinalAction::Stop { reason: reason::RESTART_STORM },
    }
}

/// All the task's shared regions, for a task with more than the message
/// lists: from the kernel.
fn all_regions(msg: &FaultMessage) -> Vec<RegionInfo> {
    let mut all = alloc::vec![RegionInfo::default(); (msg.region_count as usize).min(16)];
    let n = supervise::regions(msg.task, &mut all).unwrap_or(0).min(all.len());
    all.truncate(n);
    all
}

/// Fills `out` with the releases a rollback to `depth` owes (0: everything).
fn fill_plan(p: &Parsed<'_>, regions: &[RegionInfo], depth: u64, out: &mut recovery::Plan) -> Result<(), &'static str> {
    out.clear();
    if p.msg.recovery == 0 {
        return Ok(()); // no recovery page: the task holds no shared objects
    }
    if p.recovery.is_empty() {
        return Err("recovery page unreadable");
    }
    recovery::plan_into(p.recovery, regions, &p.msg.regs, depth, out).map_err(|e| e.reason())
}
