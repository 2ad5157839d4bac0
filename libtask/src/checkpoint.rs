//! Checkpoint scopes: `checkpoint(|attempt| body)` runs `body`, and if the
//! task faults inside it, the fault server can make it as if the failed run
//! never happened and run `body` again.
//!
//! ```ignore
//! let moved = libtask::checkpoint::checkpoint(|attempt| {
//!     if let Some(f) = attempt.last_fault {
//!         println!("retry {} after fault {} at {:#x}", attempt.number, f.seq, f.pc);
//!     }
//!     transfer(&accounts, 1, 2, 10)
//! })?;
//! ```
//!
//! ## What the kernel does, and why this function is this short
//!
//! `CHECKPOINT_OPEN` records the task's registers at the `syscall`
//! instruction and write-protects its private pages; from then on the first
//! write to each page preserves its old version (copy-on-write). A rollback
//! (`TASK_CTL ROLLBACK`, by the fault server) maps the preserved versions
//! back — stack, heap, data, this crate's recovery page: all private memory
//! as it was at the open — and puts the recorded registers back with
//! `rax` = the attempt number. The task thus returns from the *same*
//! `CHECKPOINT_OPEN` a second time. So:
//!
//! ```text
//! CHECKPOINT_OPEN                // the kernel: depth += 1 in the page
//! depth = the page's depth; attempt, fault = its scope record
//! r = body(attempt)
//! CHECKPOINT_COMMIT              // the kernel: entries to the parent, depth -= 1
//! ```
//!
//! ## The invariant: the kernel is the one source of the scope depth
//!
//! The recovery page's `depth` is written by the kernel only — at the open
//! (before the scope exists, so a rollback to it finds it so), at the
//! commit (with the hand-over of the scope's registry entries to the
//! parent, in the same call) and, through the restored page, at a
//! rollback. libtask never stores it. So at every user instruction the
//! page's `depth` equals the kernel's scope count (`CHECKPOINT_DEPTH`
//! asks the kernel directly; the sweeps in `faults/checkpoint-sweep.toml`
//! compare the two), and no fault between a system call and libtask's
//! bookkeeping can leave them apart.
//!
//! libtask decides from the page, not from `rax`, whether an open
//! happened: a skipped `syscall`, a flipped `rax` or a skipped branch
//! cannot make it ignore a scope the kernel opened, or count one it did
//! not. The attempt number comes from the scope record (the kernel zeroes
//! it at the open and fills it at a rollback), not from `rax` either.
//! After the open the page must say `parent + 1`; if it says `parent`,
//! the kernel opened nothing and libtask tries once more (a skipped
//! `syscall`) before it returns the kernel's error; anything else (a
//! flipped `parent`, an open executed twice) is a panic — a fault inside
//! the innermost kernel scope, which the fault server rolls back.
//! `checkpoint` returns `Err` only when the kernel refused twice: `body`
//! then did not run, and no scope is open for it. The commit checks the
//! page says the scope's own depth *before* it closes anything (else a
//! panic, rolled back to that scope), and after it believes the kernel
//! closed the scope if `rax` is 0 or the page says `depth - 1`.
//!
//! This is `setjmp` without `setjmp`'s trap. After a `longjmp`, locals that
//! the compiler kept in registers and locals it kept in memory disagree
//! about what changed since the `setjmp` (hence C's `volatile` rule). Here
//! the second return is indistinguishable from the first except for `rax`:
//! *every* register is what it was at the instruction (the kernel restores
//! the whole frame, and `rcx`/`r11` are declared clobbered by the asm as
//! for any syscall), and *every* byte of private memory is too. Whatever
//! the compiler chose to keep where, it finds it as it left it; even `body`,
//! an `FnOnce` that the failed attempt consumed, is back unconsumed, since
//! the consumption happened in memory that was rolled back. The asm is not
//! `nomem`, so the compiler assumes the call may have changed memory and
//! reloads what it needs — which is also right.
//!
//! `#[inline(never)]` is not needed for that argument; it gives the scope a
//! frame of its own, so that the fault server's stack walk from the fault
//! finds the checkpoint as one named frame (`checkpoint<...>`) whose stack
//! pointer matches the one the kernel recorded at the open.
//!
//! What is *not* rolled back: shared regions, kernel objects (messages sent,
//! notifications signalled), the console. Shared objects are what the
//! registries are for ([`crate::sync`]): the fault server releases the
//! mutexes and Arc references the rolled-back scopes held, from the
//! recovery page, before it rolls back.
//!
//! ## The recovery page on open and commit
//!
//! An empty scope must be cheap, and the first write to a page in a scope
//! is a copy-on-write fault (a page copy and a trap). So libtask writes
//! nothing of the page on the way in: `CHECKPOINT_OPEN` itself sets the
//! recovery page's `depth` and clears the new scope's record, as part of
//! the state the scope starts from (a rollback to the scope finds them so,
//! and the page says the right depth from the instant the kernel's scope
//! exists); and it preserves the stack page right below the caller's stack
//! pointer at once, which the call into `body` is about to write anyway (a
//! copy, without the fault). On the way out `CHECKPOINT_COMMIT` closes the
//! scope, re-tags the scope's live registry entries to the parent and
//! lowers `depth`, in that order, in one call; it makes the recovery page
//! writable again at an outermost commit, so libtask's deferred releases
//! after it do not fault either. What an empty scope then costs is the two
//! system calls, the write protection of the pages written since the
//! previous open, and that one stack page copy.

//! ## Nesting and the registries
//!
//! Scopes nest up to `abi::checkpoint::MAX_SCOPES`. Registry entries are
//! owned by the innermost scope open when they were taken. On commit, the
//! kernel closes the scope, passes its entries to the parent scope and
//! lowers the depth, all in the one system call (no fault can fall in
//! between), and then libtask makes the releases that inner scopes
//! deferred for the parent's entries (see [`crate::sync`]).

use crate::sync::registry;
use abi::fault::FaultKind;
use abi::syscall::{Error, nr};

/// The fault that caused a rollback, as the kernel recorded it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultInfo {
    /// `abi::fault::FaultKind` as a number (see [`FaultInfo::kind`]).
    pub kind_raw: u64,
    /// The fault's sequence number (as in the `fault` event).
    pub seq: u64,
    /// Where the task was.
    pub pc: u64,
}

impl FaultInfo {
    pub fn kind(&self) -> Option<FaultKind> {
        FaultKind::from_u64(self.kind_raw)
    }
}

/// Which run of a scope this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// 0 for the first run, then 1, 2, ... for each re-run after a rollback.
    pub number: u64,
    /// The fault that caused the last rollback (`None` on the first run).
    pub last_fault: Option<FaultInfo>,
}

impl Attempt {
    pub fn is_retry(&self) -> bool {
        self.number > 0
    }
}

/// Scopes open (0 outside any): the kernel's count, as it wrote it into
/// the recovery page.
pub fn depth() -> usize {
    registry::depth() as usize
}

/// The kernel's count of this task's open scopes, asked of the kernel
/// (`CHECKPOINT_DEPTH`, a light call). Always equal to [`depth`] unless the
/// recovery page was overwritten (a stray store into it): for checks.
pub fn kernel_depth() -> usize {
    // SAFETY: CHECKPOINT_DEPTH touches no memory and cannot fail.
    unsafe { crate::syscall::raw::syscall0(nr::CHECKPOINT_DEPTH) as usize }
}

/// Runs `body` in a checkpoint scope (see the module documentation).
/// `Err(BadArgument)` if `MAX_SCOPES` scopes are open already,
/// `Err(NoMemory)` if the kernel could not open one: in both cases the
/// kernel opened nothing and `body` did not run.
#[inline(never)]
pub fn checkpoint<R>(body: impl FnOnce(Attempt) -> R) -> Result<R, Error> {
    let parent = registry::depth();
    // SAFETY: CHECKPOINT_OPEN touches no memory of ours. It returns twice or
    // more (after rollbacks), each time with all registers and all private
    // memory as at this instruction: sound, see the module documentation.
    let raw = unsafe { crate::syscall::raw::syscall0(nr::CHECKPOINT_OPEN) };
    // Whether the kernel opened the scope is what the page's `depth` says
    // (the kernel writes it as part of the open, and only then), not what
    // `rax` says: a skipped `syscall`, a flipped `rax` or a skipped branch
    // must not make libtask and the kernel disagree (module documentation).
    let mut depth = registry::depth();
    if depth != parent + 1 {
        depth = reopen(parent, raw)?;
    }
    // The attempt number and the last fault, from the scope's record in the
    // page, which the kernel cleared at the open and fills at a rollback.
    let record = registry::scope_record(depth);
    let attempt = record.attempt;
    let last_fault = if attempt == 0 {
        None
    } else {
        Some(FaultInfo { kind_raw: record.fault_kind, seq: record.fault_seq, pc: record.fault_pc })
    };
    // The mutex registry's size at this open, for the unlock's scope check
    // (libtask's private bookkeeping next to the page; also after a
    // rollback, which restored it to before this point).
    registry::note_open(depth);
    let result = body(Attempt { number: attempt, last_fault });
    commit(depth);
    Ok(result)
}

/// The open did not leave the page at `parent + 1` (the fast path's check):
/// decides from the page, the kernel's record, what happened.
#[cold]
#[inline(never)]
fn reopen(parent: u64, raw: u64) -> Result<u64, Error> {
    let depth = registry::depth();
    if depth == parent + 1 {
        // The check itself went wrong (a skipped or flipped compare).
        return Ok(depth);
    }
    if depth == parent {
        // The kernel opened nothing: it refused (scopes full, no memory),
        // or the `syscall` was skipped. One more try tells them apart.
        // SAFETY: as for the open in `checkpoint` (a rollback to a scope
        // opened here returns here, with this frame as it was).
        let again = unsafe { crate::syscall::raw::syscall0(nr::CHECKPOINT_OPEN) };
        let depth = registry::depth();
        if depth == parent + 1 {
            return Ok(depth);
        }
        return Err(Error::decode(again).err().or(Error::decode(raw).err()).unwrap_or(Error::BadArgument));
    }
    // Anything else: `parent` is wrong (a flipped register), or the open
    // ran twice (a flipped `rip` that came back to the `syscall`). Both
    // agree on nothing libtask could continue from; a fault here is
    // rolled back to the innermost kernel scope, which restores `parent`
    // (and a double open escalates, by the server's policy, to the first).
    panic!("checkpoint: kernel depth {depth} after an open at depth {parent}")
}

/// Closes scope `depth`, which the caller opened. `#[inline(never)]`: the
/// sweeps of `faults/checkpoint-sweep.toml` inject from its entry.
#[inline(never)]
fn commit(depth: u64) {
    if registry::depth() != depth {
        // Before the kernel closes anything, so that the fault rolls back
        // this scope (or the inner one left open), not its parent.
        panic!("checkpoint commit of scope {depth} at kernel depth {}", registry::depth());
    }
    // SAFETY: CHECKPOINT_COMMIT touches no memory of ours. The kernel hands
    // the scope's registry entries to the parent and lowers the page's
    // `depth` as part of it.
    let raw = unsafe { crate::syscall::raw::syscall0(nr::CHECKPOINT_COMMIT) };
    if raw != 0 || registry::depth() != depth - 1 {
        recommit(depth, raw);
    }
    registry::note_commit(depth - 1);
    crate::sync::release_deferred(depth - 1);
}

/// The commit did not return 0, or the page does not say `depth - 1`:
/// decides from the page (which said `depth` right before the call) what
/// the call did.
#[cold]
#[inline(never)]
fn recommit(depth: u64, raw: u64) {
    let now = registry::depth();
    if now == depth - 1 {
        return; // closed; `rax` was flipped on the way back
    }
    // The call did not run (a skipped `syscall`: `rax` still holds the
    // call number), or ran as an open (a flipped call number: 23 ^ 1 is
    // `CHECKPOINT_OPEN`, which opened a scope inside this one). Close
    // what is open above the parent, at most twice.
    let not_run = now == depth && matches!(Error::decode(raw), Ok(n) if n != 0);
    if not_run || now == depth + 1 {
        for _ in 0..2 {
            if registry::depth() == depth - 1 {
                return;
            }
            // SAFETY: as for the commit in `commit`.
            let _ = unsafe { crate::syscall::raw::syscall0(nr::CHECKPOINT_COMMIT) };
        }
        if registry::depth() == depth - 1 {
            return;
        }
    }
    // The kernel has no scope where libtask counts one: their records
    // disagree, and no recovery can be trusted any more.
    panic!(
        "checkpoint commit at depth {depth} refused: {}",
        Error::decode(raw).err().unwrap_or(Error::BadArgument).name()
    );
}
