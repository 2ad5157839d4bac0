//! Transactional recovery: what the server does for a task that faulted
//! while holding shared objects, or inside checkpoint scopes.
//!
//! 1. **Choose the target** ([`Scopes::choose`]): the innermost open scope,
//!    unless it was rolled back too often lately (the task's manifest
//!    policy: at most `max_restarts` in `restart_window_ms`), then the one
//!    around it, and so on; past the outermost scope, a fresh start of the
//!    task from its image (`depth` 0). Each step outward is an `escalate`.
//! 2. **Walk** the stack from the faulting registers up to the target
//!    scope's frame ([`walk_reaches`]): the frame whose CFA lies above the
//!    stack pointer the kernel recorded when the scope opened. A walk that
//!    cannot get there (no unwind info, unreadable stack, a loop) means the
//!    stack is not trustworthy: fresh start.
//! 3. **Release** what the rolled-back scopes held ([`release`]): the
//!    task's recovery page is read and checked by the `recovery` crate,
//!    which lists the releases in reverse order; each is carried out with
//!    the kernel's atomic `TASK_CTL` operations and reported as a `release`
//!    event and a console line. A page that fails any check releases nothing and escalates to
//!    a fresh start (`escalate` with the reason) — never a wrong release.
//! 4. **Roll back** (`TASK_CTL ROLLBACK`): the kernel restores the scope's
//!    pages and registers and emits `restart` with `from: checkpoint`.

use crate::body::Body;
use crate::emit;
use crate::image::TaskImage;
use crate::memory::TaskMemory;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::String;
use libtask::abi::checkpoint::{self, RECOVERY_PAGE_SIZE, RegionInfo};
use libtask::abi::fault::FaultMessage;
use libtask::abi::ipc::{TASK_INFO_SIZE, TaskInfo, task_ctl};
use libtask::abi::trap::{REGISTERS_BYTES, Registers};
use libtask::supervise::{self, TaskId};
use libtask::{Error, println};
use recovery::{ArcSymbols, Outcome, SharedOps};
use walker::Stop;

/// Default restart policy when the manifest gives none.
pub const DEFAULT_MAX_RETRIES: u64 = 5;
pub const DEFAULT_WINDOW_MS: u64 = 2000;

/// Rollback history per (task, scope depth), to apply the policy.
#[derive(Default)]
pub struct Scopes {
    history: BTreeMap<(TaskId, u64), VecDeque<u64>>,
}

impl Scopes {
    /// The depth to roll back to: `open` scopes are open, the innermost
    /// first; 0 = none is allowed another retry (fresh start).
    pub fn choose(&mut self, task: TaskId, seq: u64, open: u64, now: u64) -> u64 {
        let (max, window) = policy(task);
        let mut depth = open;
        while depth > 0 {
            let h = self.history.entry((task, depth)).or_default();
            while h.front().is_some_and(|&t| now.saturating_sub(t) > window) {
                h.pop_front();
            }
            if (h.len() as u64) < max {
                h.push_back(now);
                return depth;
            }
            emit(
                "escalate",
                Body::new()
                    .u64("task", task)
                    .u64("seq", seq)
                    .str("action", if depth > 1 { "outer_scope" } else { "fresh_start" })
                    .u64("from_scope", depth)
                    .u64("retries_in_window", h.len() as u64)
                    .u64("window_ms", window),
            );
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
fn policy(task: TaskId) -> (u64, u64) {
    let mut buf = [0u8; TASK_INFO_SIZE];
    // SAFETY: TASK_INFO writes `TASK_INFO_SIZE` bytes into `buf`, which
    // lives for the call; the kernel checks the pointer.
    let got = unsafe { supervise::task_ctl(task_ctl::TASK_INFO, task, buf.as_mut_ptr() as u64, 0, 0) };
    match got.ok().and_then(|_| TaskInfo::from_bytes(&buf)) {
        Some(info) if info.max_restarts > 0 => {
            (info.max_restarts, if info.restart_window_ms > 0 { info.restart_window_ms } else { DEFAULT_WINDOW_MS })
        }
        _ => (DEFAULT_MAX_RETRIES, DEFAULT_WINDOW_MS),
    }
}

/// The registers saved when scope `depth` opened.
fn scope_regs(task: TaskId, depth: u64) -> Result<Registers, Error> {
    let mut buf = [0u8; REGISTERS_BYTES];
    // SAFETY: SCOPE_REGS writes `REGISTERS_BYTES` into `buf`.
    unsafe { supervise::task_ctl(task_ctl::SCOPE_REGS, task, depth, buf.as_mut_ptr() as u64, 0)? };
    Registers::from_bytes(&buf).ok_or(Error::BadArgument)
}

/// Walks from the fault to the frame of scope `depth`. `Ok(frames)` when
/// reached, with the name of the frame that opened the scope.
pub fn walk_reaches(
    task: TaskId,
    image: &TaskImage,
    msg: &FaultMessage,
    depth: u64,
) -> Result<(usize, String), String> {
    let target = scope_regs(task, depth).map_err(|e| format!("scope registers: {}", e.name()))?;
    let (eh, regs) = crate::backtrace::walk_start(image, msg)?;
    let memory = TaskMemory::new(task);
    let mut reached: Option<(usize, u64)> = None;
    let mut n = 0;
    let stop = eh.walk(regs, &memory, 64, |f| {
        n += 1;
        if f.cfa > target.rsp {
            reached = Some((n, if f.exact_pc { f.pc } else { f.pc.saturating_sub(1) }));
            return false;
        }
        true
    });
    match reached {
        Some((n, pc)) => {
            let name = image.symbols().lookup(pc).map(|s| format!("{:#}", s.demangled()));
            Ok((n, name.unwrap_or_else(|| String::from("?"))))
        }
        None => Err(match stop {
            Stop::Outermost => String::from("reached the outermost frame without the scope's frame"),
            other => format!("walk stopped: {other:?}"),
        }),
    }
}

/// The kernel's atomic operations on the faulted task's memory.
struct TaskOps(TaskId);

impl SharedOps for TaskOps {
    type Error = Error;
    fn cas64(&mut self, addr: u64, old: u64, new: u64) -> Result<u64, Error> {
        // SAFETY: CAS64 reads no memory of ours.
        unsafe { supervise::task_ctl(task_ctl::CAS64, self.0, addr, old, new) }
    }
    fn fetch_add32(&mut self, addr: u64, delta: i32) -> Result<u32, Error> {
        // SAFETY: FETCH_ADD32 reads no memory of ours.
        unsafe { supervise::task_ctl(task_ctl::FETCH_ADD32, self.0, addr, delta as u32 as u64, 0).map(|v| v as u32) }
    }
    fn futex_wake(&mut self, addr: u64, n: u64) -> Result<u64, Error> {
        // SAFETY: FUTEX_WAKE reads no memory of ours.
        unsafe { supervise::task_ctl(task_ctl::FUTEX_WAKE, self.0, addr, n, 0) }
    }
}

/// The task's shared regions.
fn regions(task: TaskId) -> alloc::vec::Vec<RegionInfo> {
    let mut buf = [0u8; 16 * 16];
    // SAFETY: REGIONS writes at most 16 records of 16 bytes into `buf`.
    let n =
        unsafe { supervise::task_ctl(task_ctl::REGIONS, task, buf.as_mut_ptr() as u64, 16, 0) }.unwrap_or(0) as usize;
    (0..n.min(16))
        .map(|i| {
            let w = |o: usize| u64::from_le_bytes(buf[o..o + 8].try_into().unwrap_or([0; 8]));
            RegionInfo { base: w(i * 16), size: w(i * 16 + 8) }
        })
        .collect()
}

fn arc_symbols(image: Option<&TaskImage>) -> ArcSymbols {
    let addr = |name: &str| image.and_then(|i| i.symbol(name)).map_or(0, |(a, _)| a);
    ArcSymbols {
        inc_start: addr(checkpoint::ARC_INC_START_SYMBOL),
        inc_commit: addr(checkpoint::ARC_INC_COMMIT_SYMBOL),
        dec_start: addr(checkpoint::ARC_DEC_START_SYMBOL),
        dec_commit: addr(checkpoint::ARC_DEC_COMMIT_SYMBOL),
    }
}

/// Performs the releases a rollback to `depth` owes (0: everything, for a
/// fresh start or a stop). `frame` names the scope's frame for the events.
/// Returns the number of releases, or why the page was refused.
pub fn release(
    task: TaskId,
    msg: &FaultMessage,
    image: Option<&TaskImage>,
    depth: u64,
    frame: &str,
) -> Result<usize, &'static str> {
    if msg.recovery == 0 {
        return Ok(0); // no recovery page: the task holds no shared objects
    }
    let mut page = [0u8; RECOVERY_PAGE_SIZE];
    supervise::read_mem(task, msg.recovery, &mut page).map_err(|_| "recovery page unreadable")?;
    let plan = recovery::plan(&page, &regions(task), &msg.regs, depth, &arc_symbols(image)).map_err(|e| e.reason())?;
    let mut ops = TaskOps(task);
    for r in plan.releases() {
        // A mutex release checks the owner word, so repeating it is
        // harmless: mark it done afterwards. An Arc decrement is not
        // idempotent: mark it done *before*, so a server that dies in
        // between leaks one reference rather than freeing a live object.
        let is_arc = matches!(r.action, recovery::Action::ArcDecrement { .. });
        if is_arc {
            tombstone(task, msg.recovery, r.origin);
        }
        let outcome = recovery::execute(&r.action, task, &mut ops);
        let mut body = Body::new()
            .u64("task", task)
            .u64("seq", msg.seq)
            .str("kind", r.action.name())
            .hex("addr", r.action.addr())
            .u64("scope", r.scope)
            .str(
                "origin",
                match r.origin {
                    recovery::Origin::Intent => "intent",
                    recovery::Origin::Mutex(_) => "mutex_registry",
                    recovery::Origin::Arc(_) => "arc_registry",
                },
            )
            .str("frame", frame);
        let said = outcome.as_ref().map_or_else(|e| e.name(), |o| o.name());
        println!(
            "fault-server: task {task} fault {}: release of {} {:#x} (scope {}): {said}",
            msg.seq,
            r.action.name(),
            r.action.addr(),
            r.scope
        );
        body = match outcome {
            Ok(o) => {
                let b = body.str("outcome", o.name());
                match o {
                    Outcome::MutexReleased { woken, .. } | Outcome::MutexNotHeld { woken, .. } => b.u64("woken", woken),
                    Outcome::ArcDecremented { count, .. } => b.u64("count", count as u64),
                    _ => b,
                }
            }
            Err(e) => body.str("outcome", "failed").str("error", e.name()),
        };
        emit("release", body);
        if !is_arc {
            tombstone(task, msg.recovery, r.origin);
        }
    }
    Ok(plan.releases().len())
}

/// Marks a performed release in the task's recovery page (address 0 is
/// libtask's "released" slot; an intent op of 0 is "none"), so that if this
/// server dies before the rollback and its successor gets the fault again,
/// the release is not done twice. The write goes through the kernel like a
/// write of the task's own, so the scope's rollback still restores the page
/// as it was when the scope opened.
fn tombstone(task: TaskId, page: u64, origin: recovery::Origin) {
    use core::mem::{offset_of, size_of};
    use libtask::abi::checkpoint::{ArcEntry, Intent, MutexEntry, RecoveryPage};
    let at = match origin {
        recovery::Origin::Intent => page + (offset_of!(RecoveryPage, intent) + offset_of!(Intent, op)) as u64,
        recovery::Origin::Mutex(i) => page + (offset_of!(RecoveryPage, mutexes) + i * size_of::<MutexEntry>()) as u64,
        recovery::Origin::Arc(i) => page + (offset_of!(RecoveryPage, arcs) + i * size_of::<ArcEntry>()) as u64,
    };
    let _ = supervise::write_mem(task, at, &0u64.to_le_bytes());
}
