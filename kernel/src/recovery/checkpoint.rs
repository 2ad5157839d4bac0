//! Checkpoint scopes: open, commit, roll back.
//!
//! `CHECKPOINT_OPEN` records the caller's whole register frame — the state
//! at the `syscall` instruction, as the kernel will return it — and opens a
//! memory scope in the address space (copy-on-write from now on). A
//! rollback puts both back: memory through `versions.rs`, registers by
//! copying the recorded frame, with `rax` = the attempt number. The task
//! thus returns from the same `CHECKPOINT_OPEN` once more, and tells the
//! re-run from the first run by the non-zero result (like `setjmp`, but with
//! the memory restored too, so nothing the failed attempt wrote survives).

use crate::events;
use crate::mem::space::AddressSpace;
use crate::task::{Scope, Task};
use abi::checkpoint::{MAX_ARCS, MAX_MUTEXES, MAX_SCOPES, MutexEntry, RELEASE_AT_COMMIT, RecoveryPage, ScopeRecord};
use abi::event::Event;
use abi::layout::PAGE_SIZE;
use abi::syscall::Error;
use core::mem::{offset_of, size_of};

pub fn open(task: &mut Task) -> Result<u64, Error> {
    if task.scopes.len() >= MAX_SCOPES {
        return Err(Error::BadArgument);
    }
    let depth = task.scopes.len() + 1;
    let recovery = task.recovery;
    let space = task.space.as_mut().ok_or(Error::BadTask)?;
    let mut frame = task.save.frame;
    frame.rax = 0;
    if recovery != 0 {
        // libtask's own record of the new scope — the depth, and a fresh
        // scope record — written here, as part of the state the scope
        // starts from: libtask then writes nothing to its recovery page
        // when it opens a scope (that would be a copy-on-write fault on
        // every open), the page says `depth` from the instant the scope
        // exists, and a rollback to the scope finds both as written here.
        let depth_at = depth_of(recovery);
        let record_at = recovery + (offset_of!(RecoveryPage, scopes) + (depth - 1) * size_of::<ScopeRecord>()) as u64;
        let page = recovery & !(PAGE_SIZE - 1);
        if record_at + size_of::<ScopeRecord>() as u64 <= page + PAGE_SIZE {
            let words = [
                (depth_at, depth as u64),
                (record_at, 0),
                (record_at + 8, 0),
                (record_at + 16, 0),
                (record_at + 24, 0),
            ];
            space.write_words(page, &words).map_err(|_| Error::BadPointer)?;
        } else {
            // A recovery page that straddles two pages (libtask's does not).
            space.write(depth_at, &(depth as u64).to_le_bytes()).map_err(|_| Error::BadPointer)?;
            space.write(record_at, &[0; size_of::<ScopeRecord>()]).map_err(|_| Error::BadPointer)?;
        }
    }
    if space.open_scope(frame.rsp).is_err() {
        // No scope: the page must not say one either (libtask tells a
        // refused open from an accepted one by the page's `depth`).
        if recovery != 0 {
            let _ = space.write(depth_of(recovery), &(depth as u64 - 1).to_le_bytes());
        }
        return Err(Error::NoMemory);
    }
    let sealed = frame.rdx == abi::checkpoint::SEAL;
    let _ = task.scopes.push(Scope { frame, attempt: 0, sealed, reply_to: task.reply_to });
    Ok(0)
}

/// The seal of the innermost scope, checked at its `CHECKPOINT_COMMIT`:
/// `Some((index in SEAL_REGS, at the open, now))` for the first callee-saved
/// register or stack pointer that is not what it was at the open, `None`
/// if the seal holds or the scope is not sealed (`abi::checkpoint::SEAL`).
///
/// Why this catches what rollback alone cannot: a bit flipped in a register
/// that holds a value of the scope's *caller* (a loop counter, a pointer
/// kept in `r12` across the call) faults nowhere inside the scope — the
/// body never reads it — so without this the commit would make the
/// corruption permanent and the caller would compute on it. libtask opens
/// and commits from one asm function that calls the body in between; the
/// SysV ABI makes the body return those registers unchanged, so at the
/// commit they must equal the open's record exactly. Seven compares on the
/// commit path.
pub fn seal_broken(task: &Task) -> Option<(usize, u64, u64)> {
    let scope = task.scopes.last().filter(|s| s.sealed)?;
    let (a, b) = (&scope.frame, &task.save.frame);
    let pairs = [
        (a.rbx, b.rbx),
        (a.rbp, b.rbp),
        (a.r12, b.r12),
        (a.r13, b.r13),
        (a.r14, b.r14),
        (a.r15, b.r15),
        (a.rsp, b.rsp),
    ];
    pairs.iter().position(|(x, y)| x != y).map(|i| (i, pairs[i].0, pairs[i].1))
}

/// Where the recovery page at `recovery` keeps `depth`.
fn depth_of(recovery: u64) -> u64 {
    recovery + offset_of!(RecoveryPage, depth) as u64
}

/// Closes the innermost scope `n` and, as part of the same call, does in
/// the recovery page what the close means there: the scope's live registry
/// entries pass to the parent (`scope` `n` -> `n - 1`), then `depth` drops
/// to `n - 1`. Done here rather than by libtask after the call, so that no
/// fault, skip or flipped register in the task can fall between the
/// kernel's close and the page's record of it: the page's `depth` is the
/// kernel's scope count at every user instruction (`docs/recovery.md`).
///
/// Entries libtask marked [`RELEASE_AT_COMMIT`] are taken out of the page
/// here too, and listed in `marked` for the caller to give back
/// ([`release_marked`]) in the same system call.
pub fn commit(task: &mut Task, marked: &mut Marked) -> Result<u64, Error> {
    let n = task.scopes.len() as u64;
    let recovery = task.recovery;
    let space = task.space.as_mut().ok_or(Error::BadTask)?;
    if task.scopes.pop().is_none() {
        return Err(Error::BadArgument);
    }
    space.commit_scope().map_err(|_| Error::BadArgument)?;
    if recovery != 0 {
        // libtask still writes the page after the commit (its deferred
        // releases): at an outermost commit, unprotect it now, not by a
        // fault then. Then the writes below are plain stores, or, inside
        // a parent scope, preserved in it like any write of the task.
        space.unprotect(recovery);
        hand_to_parent(space, recovery, n, marked);
    }
    Ok(0)
}

/// Releases marked [`RELEASE_AT_COMMIT`] that a commit took out of the
/// page: `(is a mutex, address)`.
pub type Marked = heapless::Vec<(bool, u64), { MAX_MUTEXES + MAX_ARCS }>;

/// Gives back what a commit of task `me` took out of its page marked
/// [`RELEASE_AT_COMMIT`] (`marked`): a mutex unlocked, an Arc reference
/// decremented, with the very operations libtask's own release makes
/// (`recovery::execute::unlock`, `recovery::execute::arc_decrement`, on
/// the task's own memory through `KernelOps`). libtask marks such releases
/// right before `CHECKPOINT_RENEW`, so a release and the commit that makes
/// it final happen in one system call, with no instruction of the task
/// between them (`checkpoint::repeat`). An address that is no mapped,
/// writable word of the task, or an Arc outside its regions, is skipped:
/// the page is the task's, and nothing of another task is at stake.
pub fn release_marked(s: &mut crate::sched::Scheduler, me: usize, marked: &Marked) {
    let task_id = s.tasks[me].id as u64;
    for &(is_mutex, addr) in marked {
        if is_mutex {
            let mut ops = crate::recovery::supervise::KernelOps::new(s, me);
            let _ = recovery::execute::unlock(addr, task_id, &mut ops);
        } else if let Some(base) = region_base(s, me, addr) {
            let mut ops = crate::recovery::supervise::KernelOps::new(s, me);
            let _ = recovery::execute::arc_decrement(addr, base, &mut ops);
        }
    }
}

/// The base of the shared region of task `me` that holds `addr`.
fn region_base(s: &crate::sched::Scheduler, me: usize, addr: u64) -> Option<u64> {
    s.tasks[me]
        .caps
        .iter()
        .filter(|c| c.kind == abi::ipc::CapKind::Region)
        .filter_map(|c| s.regions.get(c.object as usize))
        .find(|r| addr >= r.base && addr - r.base < r.size())
        .map(|r| r.base)
}

/// The page's part of closing scope `n` (see [`commit`]). The page is the
/// task's: a word that cannot be read or written is skipped (the fault
/// server validates the page before it trusts any of it).
fn hand_to_parent(space: &mut AddressSpace, recovery: u64, n: u64, marked: &mut Marked) {
    if let Some(page) = page_in_place(space, recovery) {
        let mutexes = (page.mutex_count as usize).min(MAX_MUTEXES);
        for e in page.mutexes[..mutexes].iter_mut().filter(|e| e.addr != 0) {
            if e.scope & RELEASE_AT_COMMIT != 0 {
                take_marked(true, &mut e.addr, &mut e.scope, marked);
            } else if e.scope == n {
                e.scope = n - 1;
            }
        }
        let arcs = (page.arc_count as usize).min(MAX_ARCS);
        for e in page.arcs[..arcs].iter_mut().filter(|e| e.addr != 0) {
            if e.scope & RELEASE_AT_COMMIT != 0 {
                take_marked(false, &mut e.addr, &mut e.scope, marked);
            } else if e.scope == n {
                e.scope = n - 1;
            }
        }
        page.depth = n - 1;
        return;
    }
    let word = |space: &AddressSpace, at: u64| {
        let mut b = [0u8; 8];
        space.read(at, &mut b).ok().map(|()| u64::from_le_bytes(b))
    };
    let put = |space: &mut AddressSpace, at: u64, v: u64| {
        let _ = space.write_words(at & !(PAGE_SIZE - 1), &[(at, v)]);
    };
    let tables = [
        (offset_of!(RecoveryPage, mutex_count), offset_of!(RecoveryPage, mutexes), MAX_MUTEXES),
        (offset_of!(RecoveryPage, arc_count), offset_of!(RecoveryPage, arcs), MAX_ARCS),
    ];
    for (count_at, entries_at, cap) in tables {
        let count = word(space, recovery + count_at as u64).unwrap_or(0).min(cap as u64);
        for i in 0..count {
            // `MutexEntry` and `ArcEntry` are both `{addr, scope}` words.
            let entry = recovery + (entries_at + i as usize * size_of::<MutexEntry>()) as u64;
            let Some(mut addr) = word(space, entry).filter(|&a| a != 0) else { continue };
            match word(space, entry + 8) {
                Some(mut scope) if scope & RELEASE_AT_COMMIT != 0 => {
                    take_marked(entries_at == offset_of!(RecoveryPage, mutexes), &mut addr, &mut scope, marked);
                    put(space, entry, addr);
                    put(space, entry + 8, scope);
                }
                Some(scope) if scope == n => put(space, entry + 8, n - 1),
                _ => {}
            }
        }
    }
    put(space, depth_of(recovery), n - 1);
}

/// An entry marked [`RELEASE_AT_COMMIT`]: listed in `marked` (an untagged
/// mutex or an Arc; libtask marks no other) and cleared, or, a tagged lock
/// entry — which no libtask marks: the page was written over — unmarked
/// and left held.
fn take_marked(is_mutex: bool, addr: &mut u64, scope: &mut u64, marked: &mut Marked) {
    if is_mutex && *addr & abi::checkpoint::lock_tag::MASK != 0 {
        *scope &= !RELEASE_AT_COMMIT;
        return;
    }
    if marked.push((is_mutex, *addr)).is_ok() {
        (*addr, *scope) = (0, 0);
    }
}

/// The recovery page at `recovery`, seen in place through the direct map,
/// when it is page-aligned and its page is present, user and writable by
/// the task now — preserved first if a scope tracks it, so the writes are
/// rolled back with that scope like the task's own. `None` otherwise (the
/// word-by-word path then does the same through the checked accessors).
/// The task is not running (it is in this system call) and the kernel holds
/// its lock: nothing else touches the page while the view is used.
fn page_in_place(space: &mut AddressSpace, recovery: u64) -> Option<&'static mut RecoveryPage> {
    use crate::recovery::versions::{SHARED, TRACKED};
    use x86_64::structures::paging::PageTableFlags as F;
    if !recovery.is_multiple_of(PAGE_SIZE) {
        return None;
    }
    let (_, flags) = space.translate(recovery)?;
    if flags.contains(TRACKED) && !flags.contains(F::WRITABLE) {
        space.preserve_on_write(recovery);
    }
    let (phys, flags) = space.translate(recovery)?;
    if !flags.contains(F::USER_ACCESSIBLE | F::WRITABLE) || flags.contains(SHARED) {
        return None;
    }
    // SAFETY: a whole present, user, writable page of this space (checked
    // just now; `RecoveryPage` fits in a page), page-aligned so the view
    // is aligned, in the direct map; see above for exclusivity.
    Some(unsafe { &mut *(crate::mem::phys_to_virt(phys.as_u64()) as *mut RecoveryPage) })
}

/// Rolls `task` back to scope `depth` (1 = outermost), ready to run
/// there (the caller makes it runnable: `sched::table::TaskTable::set_state`). Returns the number of pages restored and the attempt
/// number the re-run sees. Emits `restart` if `emit` (the single
/// `ROLLBACK` operation); a batched `RECOVER` leaves the report to the
/// supervisor.
pub fn rollback(task: &mut Task, depth: usize, fault_kind: u64, seq: u64, emit: bool) -> Result<(usize, u64), Error> {
    if depth == 0 || depth > task.scopes.len() {
        return Err(Error::BadArgument);
    }
    let fault_pc = task.save.frame.rip;
    let space = task.space.as_mut().ok_or(Error::BadTask)?;
    let rsp = task.scopes[depth - 1].frame.rsp;
    let (pages, stack_kept) = space.rollback_to(depth, rsp).map_err(|_| Error::BadArgument)?;
    task.scopes.truncate(depth);
    let scope = task.scopes.last_mut().expect("depth <= len");
    // The re-run writes the stack below the scope's rsp at once, as at the
    // open: `rollback_to` left that page writable when the scope had its
    // version; otherwise preserve it now (a copy) rather than by a fault.
    if !stack_kept {
        space.preserve_on_write(rsp.wrapping_sub(8));
    }
    scope.attempt += 1;
    let attempt = scope.attempt;
    task.save.frame = scope.frame;
    task.save.frame.rax = attempt;
    task.fault = None;
    task.ticks_since_syscall = 0;
    task.hang_rip = None;
    // Tell libtask why (its recovery page is private memory of the task:
    // written after the rollback, so the re-run sees it).
    if task.recovery != 0 {
        let record = ScopeRecord { attempt, fault_kind, fault_seq: seq, fault_pc };
        let offset = core::mem::offset_of!(abi::checkpoint::RecoveryPage, scopes)
            + (depth - 1) * core::mem::size_of::<ScopeRecord>();
        let words = [record.attempt, record.fault_kind, record.fault_seq, record.fault_pc];
        // Not preserved: rewritten at every rollback, and a rollback to an
        // outer scope restores the page as that scope found it anyway.
        if let Some(space) = task.space.as_mut() {
            let _ = space.write_words_unversioned(task.recovery + offset as u64, &words);
        }
    }
    if !emit {
        return Ok((pages, attempt));
    }
    events::emit(&Event::RestartCheckpointV2 {
        task: task.id as u64,
        name: &task.name,
        seq,
        scope: depth as u64,
        attempt,
        pages: pages as u64,
        cpu: crate::arch::percpu::cpu() as u64,
    });
    Ok((pages, attempt))
}
