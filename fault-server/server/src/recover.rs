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
//!    ([`walk_to_scope`]): the first frame whose CFA is at least the
//!    stack pointer the kernel recorded when the scope opened (also in the
//!    message). That frame must *be* the scope's: its pc inside an
//!    instance of `libtask::checkpoint::scope_body` (or libtask's asm
//!    scope function, for a fault in it; ranges found once per image in
//!    its symbol table) and its CFA (or, in the asm function, its own stack
//!    pointer) exactly the recorded one — so every frame from the fault up
//!    to it was unwound by the image's CFI with each CFA above the last,
//!    and the chain lands on the very activation the scope's open called. The
//!    stack comes with the message, so the walk makes no system call. A
//!    walk that cannot get there (no unwind info, unreadable stack, a
//!    loop, a frame that is not the scope's: a flipped `rip` or `rsp`, a
//!    smashed return address) does **not** stop the rollback: what the
//!    rollback restores — the registers the kernel recorded at the open,
//!    every private page as it was then — comes from the kernel, not from
//!    the stack, and what it releases comes from the recovery page, which
//!    the plan checks on its own. The walk names the frames and attributes
//!    the releases; without it the report says the scope's frame is `?`
//!    and why (`Recovered::unwalked`), and the backtrace event says where
//!    the walk stopped.
//! 3. **Plan** the releases (`recovery::plan`) from the copy of the task's
//!    recovery page in the message (libtask records its Arc asm-block
//!    addresses there too), its regions (also in the message) and the
//!    regions' layouts (`recovery::layout::RegionLayout`: each region's
//!    header, read with one `READ_MEM` the first time a page names an
//!    object in it, then kept). A page that fails any check releases
//!    nothing and escalates to a fresh start — never a wrong release. What
//!    provably names nothing shared (an entry whose address holds no object
//!    of its kind, the slots past a corrupt mutex count) is left out of the
//!    plan instead, and reported (`recovery::Salvage`), so one flipped
//!    register in libtask's bookkeeping does not cost the rollback and
//!    every other release.
//! 4. **Recover**: one `TASK_CTL RECOVER` carries the releases and the
//!    rollback (or the fresh start, or the stop) to the kernel, which does
//!    all of it under its lock and writes each outcome back. A server that
//!    dies around the call did all of it or none of it: nothing is released
//!    twice, and the kernel hands the fault to the next instance if not.
//!
//! Each step's time (`clock()`, guest instructions under icount) goes into
//! the record, for the benchmark's phase breakdown.
//!
//! **No allocation on this path.** The plan, the request and the walk are
//! filled in place; escalations are a fixed array; the walk and the list of
//! outcomes handed to the report come from pools ([`Recovery::reserve`]
//! refills them between faults, with fallible allocations, and reports give
//! them back when emitted). An empty pool degrades the report (its
//! backtrace is walked again from the fault; its releases are not listed),
//! never the recovery.

use crate::image::Unwinder;
use crate::memory::WindowMemory;
use crate::policy::{Decision, Policy};
use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use libtask::abi::checkpoint::{MAX_SCOPES, RegionInfo};
use libtask::abi::fault::{FaultMessage, Parsed};
use libtask::supervise::{self, FinalAction, RecoverRequest, TaskId};
use libtask::syscall;
use recovery::layout::RegionLayout;
use walker::{Regs, Stop};

/// Most salvage notes a report lists; a page with more (every slot
/// garbage) lists these and says how many it left out in all
/// (`Recovered::salvaged_total`).
pub const MAX_SALVAGE_NOTES: usize = 8;

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
    FreshStart { why: &'static str },
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
    pub escalations: Escalations,
    /// A rollback done although the walk did not reach the scope's frame:
    /// why it stopped.
    pub unwalked: Option<&'static str>,
    /// The scope frame's index in the walk and its pc (rollbacks).
    pub scope_frame: Option<(usize, u64)>,
    /// The walk to the scope's frame, if it got there (for the backtrace,
    /// whatever was done after it).
    pub walked: Option<Box<ScopeWalk>>,
    /// From [`Recovery`]'s pool (empty, without capacity, if it was empty).
    pub releases: Vec<Released>,
    /// What the plan left out of the recovery page, and why
    /// (`recovery::Salvage`; empty for an intact page, the usual case, so
    /// the copy costs one length store). Each becomes an event.
    pub salvaged: heapless::Vec<recovery::Salvage, MAX_SALVAGE_NOTES>,
    pub salvaged_total: usize,
    pub done: Done,
    pub phases: Phases,
}

/// Most escalations of one fault: one policy step per scope, and the
/// fresh-start and nothing-released notes.
pub const MAX_ESCALATIONS: usize = MAX_SCOPES + 4;
/// The escalations of one fault (a fixed array: no allocation).
pub type Escalations = heapless::Vec<Escalation, MAX_ESCALATIONS>;

/// Rollback history per (task, scope depth), to apply the policy.
#[derive(Default)]
pub struct Scopes {
    history: BTreeMap<(TaskId, u64), VecDeque<u64>>,
}

impl Scopes {
    /// The depth to roll back to: `open` scopes are open, the innermost
    /// first; 0 = none is allowed another retry (fresh start). Each step
    /// outward is noted in `out`.
    pub fn choose(&mut self, msg: &FaultMessage, now: u64, out: &mut Escalations) -> u64 {
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
            let _ = out.push(Escalation::Policy {
                from_scope: depth,
                retries_in_window: h.len() as u64,
                window_ms: window,
            });
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

/// Walks from the fault to the frame of scope `depth` and checks that it
/// is that scope's frame. The walk goes up to the first frame whose CFA is
/// at least the scope's saved stack pointer (the kernel's record of `rsp`
/// at the scope's `CHECKPOINT_OPEN`); every step on the way was the
/// image's CFI with CFAs strictly increasing (the walker checks). The
/// frame it stops at is accepted only if
/// * its pc (the return address less one, or the faulting pc for the
///   first frame) lies in an instance of `libtask::checkpoint::scope_body`
///   or in `__rewind_checkpoint_scope` (skipped, and said so in DESIGN.md,
///   for an image without a symbol table), and
/// * its CFA equals the recorded stack pointer — `scope_body`, which the
///   asm function calls right after the open without moving `rsp` — or
///   its own stack pointer does (the asm function's frame, for a fault in
///   it). One frame fewer to unwind than stopping at the asm function's.
///
/// Fills `out` (in place: it is a few hundred bytes).
pub fn walk_to_scope(unwinder: &Unwinder, p: &Parsed<'_>, depth: u64, out: &mut ScopeWalk) -> Result<(), &'static str> {
    let target = p.msg.scope_rsp(depth).ok_or("no such scope")?;
    let memory = WindowMemory::new(p.msg.task, p.msg.stack_base, p.stack);
    let found = unwinder.walk_to_cfa(fault_regs(&p.msg), &memory, 64, target, &mut out.frames)?;
    out.pages_read = memory.pages_read();
    match found {
        Ok((index, pc, exact, cfa, resume)) => {
            let pc = if exact { pc } else { pc.saturating_sub(1) };
            // `scope_body`'s activation has the recorded rsp as its CFA
            // (the asm function called it from there); a fault in the asm
            // function itself stops at its frame, whose own rsp it is.
            if cfa != target && resume.regs().sp() != Some(target) {
                return Err(
                    "the frame at the scope's stack pointer is not the scope's (neither its CFA nor its rsp is)",
                );
            }
            if unwinder.in_checkpoint(pc) == Some(false) {
                return Err("the frame at the scope's stack pointer is not a checkpoint frame");
            }
            out.index = index;
            out.pc = pc;
            out.resume = resume;
            Ok(())
        }
        Err(stop) => Err(stop_reason(stop)),
    }
}

/// Why a walk to a scope's frame ended first, for the `escalate` event.
fn stop_reason(stop: Stop) -> &'static str {
    match stop {
        Stop::Outermost => "reached the outermost frame without the scope's frame",
        Stop::NoFde { .. } => "walk stopped: a frame without unwind info",
        Stop::Unreadable { .. } => "walk stopped: unreadable stack",
        Stop::CfaNotIncreasing { .. } => "walk stopped: CFA not increasing (corrupt or cyclic stack)",
        Stop::DepthLimit => "walk stopped: too many frames",
        Stop::UnsupportedRule | Stop::UnknownRegister { .. } => "walk stopped: unsupported unwind rule",
        Stop::Expression(_) | Stop::BadCfi(_) => "walk stopped: bad unwind info",
        Stop::Visitor => "walk stopped",
    }
}

/// Region layouts kept (a region's header is read once; past this many
/// regions, the oldest is forgotten and read again when needed).
pub const MAX_LAYOUTS: usize = 64;
/// Walks and outcome lists kept ready for reports (see the module note).
const POOL: usize = 2;

/// The server's recovery state across faults.
pub struct Recovery {
    pub scopes: Scopes,
    pub policy: Policy,
    /// The `RECOVER` request and the release plan, reused for every fault
    /// (each is a few KiB: filled in place, never moved).
    req: alloc::boxed::Box<RecoverRequest>,
    plan: alloc::boxed::Box<recovery::Plan>,
    /// The walk to the scope's frame, filled in place (handed to the
    /// report after `RECOVER`, swapped for one from `spare_walks`).
    walked: Box<ScopeWalk>,
    spare_walks: Vec<Box<ScopeWalk>>,
    /// Outcome lists for reports, each with room for a whole plan.
    spare_releases: Vec<Vec<Released>>,
    /// Validated region layouts, by base (regions are global objects at
    /// fixed addresses, so one layout serves every holder).
    layouts: heapless::Vec<RegionLayout, MAX_LAYOUTS>,
    /// The task's regions when the message lists only the first ones.
    more_regions: [RegionInfo; MAX_REGIONS],
}

/// Most regions of one task the planner looks at.
const MAX_REGIONS: usize = 16;

impl Default for Recovery {
    fn default() -> Recovery {
        Recovery {
            scopes: Scopes::default(),
            policy: Policy::default(),
            req: alloc::boxed::Box::new(RecoverRequest::new(0, FinalAction::Stop { reason: 0 })),
            plan: alloc::boxed::Box::default(),
            walked: Box::new(ScopeWalk::new()),
            spare_walks: Vec::new(),
            spare_releases: Vec::new(),
            layouts: heapless::Vec::new(),
            more_regions: [RegionInfo::default(); MAX_REGIONS],
        }
    }
}

impl Recovery {
    /// Refills the pools the recovery path takes from (between faults, not
    /// on the path), with fallible allocations; `false` if memory ran out
    /// (the next recovery still works, its report is degraded; emitting a
    /// queued report gives its walk and list back).
    pub fn reserve(&mut self) -> bool {
        let mut ok = true;
        while self.spare_walks.len() < POOL && ok {
            ok = self.spare_walks.try_reserve(POOL).is_ok()
                && match Box::try_new(ScopeWalk::new()) {
                    Ok(w) => {
                        self.spare_walks.push(w);
                        true
                    }
                    Err(_) => false,
                };
        }
        while self.spare_releases.len() < POOL && ok {
            let mut v = Vec::new();
            ok = self.spare_releases.try_reserve(POOL).is_ok()
                && v.try_reserve_exact(recovery::plan::MAX_RELEASES).is_ok();
            if ok {
                self.spare_releases.push(v);
            }
        }
        ok
    }

    /// Takes back what a report is done with.
    pub fn recycle(&mut self, rec: Recovered) {
        if let Some(w) = rec.walked
            && self.spare_walks.len() < POOL
        {
            self.spare_walks.push(w);
        }
        let mut v = rec.releases;
        if v.capacity() >= recovery::plan::MAX_RELEASES && self.spare_releases.len() < POOL {
            v.clear();
            self.spare_releases.push(v);
        }
    }

    /// Reads, validates and keeps the layout of the region at `base`
    /// (`READ_MEM` of its header in `task`, which holds it); whether it
    /// is now known.
    fn learn_layout(&mut self, task: TaskId, region: RegionInfo) -> bool {
        let mut header = [0u8; RegionLayout::HEADER_BYTES];
        if supervise::read_mem(task, region.base, &mut header).is_err() {
            return false;
        }
        let Ok(layout) = RegionLayout::from_header(region.base, region.size, &header) else { return false };
        if self.layouts.is_full() {
            self.layouts.remove(0);
        }
        let _ = self.layouts.push(layout);
        true
    }
}

impl Recovery {
    /// The CPU the kernel did the last `RECOVER` on (its answer's `cpu`).
    pub fn restart_cpu(&self) -> u64 {
        self.req.header.cpu as u64
    }

    /// Recovers the held task of fault `p`: rollback if a scope may take
    /// it, else a fresh start or a stop, releasing what it held either way.
    /// `image` is `None` if the task's ELF is unreadable (no rollback then:
    /// the stack cannot be checked). `lower`: the kernel lowers our
    /// priority as it finishes, so the task runs before we go on.
    pub fn recover(&mut self, p: &Parsed<'_>, image: Option<&Unwinder>, received: u64, lower: bool) -> Recovered {
        let msg = &p.msg;
        let mut phases = Phases { received, ..Phases::default() };
        let mut escalations = Escalations::new();
        let mut depth = if msg.scopes > 0 { self.scopes.choose(msg, msg.fault_ticks, &mut escalations) } else { 0 };
        phases.decided = syscall::tsc();
        let mut scope_frame = None;
        let mut walked = false;
        let mut unwalked = None;
        if depth > 0 {
            match image {
                Some(unwinder) => match walk_to_scope(unwinder, p, depth, &mut self.walked) {
                    Ok(()) => {
                        scope_frame = Some((self.walked.index, self.walked.pc));
                        walked = true;
                    }
                    // The rollback does not rest on the stack (module note,
                    // step 2): roll back all the same, and say so.
                    Err(why) => unwalked = Some(why),
                },
                None => unwalked = Some("image unreadable"),
            }
        }
        phases.walked = syscall::tsc();
        let n_regions = if msg.region_count as usize <= msg.regions().len() {
            msg.regions().len()
        } else {
            all_regions(msg, &mut self.more_regions)
        };
        let mut planned = self.fill_plan(p, n_regions, depth);
        if depth > 0
            && let Err(why) = planned
        {
            let _ = escalations.push(Escalation::FreshStart { why });
            depth = 0;
            scope_frame = None;
            planned = self.fill_plan(p, n_regions, 0);
        }
        if let Err(why) = planned {
            let _ = escalations.push(Escalation::NothingReleased { why });
        }
        let plan = &mut *self.plan;
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
                    let _ = escalations.push(Escalation::FreshStart { why: e.name() });
                    scope_frame = None;
                    action = fresh_start(&mut self.policy, msg.task, msg.fault_ticks);
                }
                _ => break,
            }
        }
        phases.recovered = req.header.tsc_done;
        phases.released = req.header.tsc_released;
        phases.entered = req.header.tsc_entered;
        let mut releases = self.spare_releases.pop().unwrap_or_default();
        // With a pool list this never allocates (room for a whole plan);
        // without one (memory ran out), the report lists none.
        if releases.capacity() >= plan.releases().len() {
            releases.extend(plan.releases().iter().zip(req.ops()).map(|(&release, &op)| Released { release, op }));
        }
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
        let notes = plan.salvaged();
        Recovered {
            salvaged: notes.iter().take(MAX_SALVAGE_NOTES).copied().collect(),
            salvaged_total: notes.len(),
            lowered: lower && matches!(done, Done::Rollback { .. }),
            escalations,
            unwalked: if matches!(done, Done::Rollback { .. }) { unwalked } else { None },
            scope_frame,
            walked: if walked {
                self.spare_walks.pop().map(|spare| core::mem::replace(&mut self.walked, spare))
            } else {
                None
            },
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

/// All the task's shared regions (at most [`MAX_REGIONS`]), for a task
/// with more than the message lists: from the kernel, into `out`; how many.
fn all_regions(msg: &FaultMessage, out: &mut [RegionInfo; MAX_REGIONS]) -> usize {
    let n = (msg.region_count as usize).min(MAX_REGIONS);
    supervise::regions(msg.task, &mut out[..n]).unwrap_or(0).min(n)
}

impl Recovery {
    /// Fills the plan with the releases a rollback to `depth` owes (0:
    /// everything), from the message's regions (or the first `n_regions`
    /// of `more_regions`). A page naming an object in a region whose layout
    /// is not known yet has that region's header read once, then is
    /// planned again.
    fn fill_plan(&mut self, p: &Parsed<'_>, n_regions: usize, depth: u64) -> Result<(), &'static str> {
        self.plan.clear();
        if p.msg.recovery == 0 {
            return Ok(()); // no recovery page: the task holds no shared objects
        }
        if p.recovery.is_empty() {
            return Err("recovery page unreadable");
        }
        let from_msg = p.msg.region_count as usize <= p.msg.regions().len();
        for _ in 0..MAX_REGIONS {
            let regions: &[RegionInfo] =
                if from_msg { p.msg.regions() } else { &self.more_regions[..n_regions.min(MAX_REGIONS)] };
            match recovery::plan_into(p.recovery, regions, &self.layouts, &p.msg.regs, depth, &mut self.plan) {
                Err(recovery::Invalid::NoLayout { addr }) => {
                    let Some(&region) = regions.iter().find(|r| r.base <= addr && addr - r.base < r.size) else {
                        return Err(recovery::Invalid::NoLayout { addr }.reason());
                    };
                    if !self.learn_layout(p.msg.task, region) {
                        return Err(recovery::Invalid::NoLayout { addr }.reason());
                    }
                }
                other => return other.map_err(|e| e.reason()),
            }
        }
        Err("too many region layouts to learn")
    }
}
