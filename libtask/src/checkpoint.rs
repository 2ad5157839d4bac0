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
//! attempt = CHECKPOINT_OPEN      // 0 now; 1, 2, ... after rollbacks
//! depth += 1; read the fault record if attempt > 0
//! r = body(attempt)
//! CHECKPOINT_COMMIT; hand the scope's registry entries to the parent
//! ```
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
//! nothing on the way in: `CHECKPOINT_OPEN` itself sets the recovery
//! page's `depth` and clears the new scope's record, as part of the state
//! the scope starts from (a rollback to the scope finds them so, and the
//! page says the right depth from the instant the kernel's scope exists);
//! and it preserves the stack page right below the caller's stack pointer
//! at once, which the call into `body` is about to write anyway (a copy,
//! without the fault). On the way out the order is fixed — the kernel
//! closes the scope, then the scope's registry entries pass to the parent,
//! then libtask lowers `depth` — so that write stays here; the kernel makes
//! the recovery page writable again at an outermost commit, so it does not
//! fault either. What an empty scope then costs is the two system calls,
//! the write protection of the pages written since the previous open, and
//! that one stack page copy.
//!
//! ## Nesting and the registries
//!
//! Scopes nest up to `abi::checkpoint::MAX_SCOPES`. Registry entries are
//! owned by the innermost scope open when they were taken. On commit, the
//! kernel closes the scope *first*, then its entries pass to the parent
//! scope, then the depth drops (`docs/recovery.md` shows why this order is
//! exact for a fault at any point), and finally releases that inner scopes
//! deferred for the parent's entries happen (see [`crate::sync`]).

use crate::sync::registry;
use abi::checkpoint::MAX_SCOPES;
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

/// Scopes open (0 outside any).
pub fn depth() -> usize {
    registry::depth() as usize
}

/// Runs `body` in a checkpoint scope (see the module documentation).
/// `Err(BadArgument)` if `MAX_SCOPES` scopes are open already.
#[inline(never)]
pub fn checkpoint<R>(body: impl FnOnce(Attempt) -> R) -> Result<R, Error> {
    let parent = registry::depth();
    if parent >= MAX_SCOPES as u64 {
        return Err(Error::BadArgument);
    }
    // SAFETY: CHECKPOINT_OPEN touches no memory of ours. It returns twice or
    // more (after rollbacks), each time with all registers and all private
    // memory as at this instruction: sound, see the module documentation.
    let attempt = Error::decode(unsafe { crate::syscall::raw::syscall0(nr::CHECKPOINT_OPEN) })?;
    let depth = parent + 1;
    // The kernel has written `depth` and a fresh scope record into the
    // recovery page as part of the open (see "The recovery page on open
    // and commit" above); after a rollback, the record says why.
    let last_fault = if attempt == 0 {
        None
    } else {
        let r = registry::scope_record(depth);
        Some(FaultInfo { kind_raw: r.fault_kind, seq: r.fault_seq, pc: r.fault_pc })
    };
    // The mutex registry's size at this open, for the unlock's scope check
    // (libtask's private bookkeeping next to the page; also after a
    // rollback, which restored it to before this point).
    registry::note_open(depth);
    let result = body(Attempt { number: attempt, last_fault });
    commit(depth);
    Ok(result)
}

/// Closes scope `depth`, which the caller opened.
fn commit(depth: u64) {
    // SAFETY: CHECKPOINT_COMMIT touches no memory of ours.
    let closed = Error::decode(unsafe { crate::syscall::raw::syscall0(nr::CHECKPOINT_COMMIT) });
    if let Err(e) = closed {
        // The kernel has no scope where libtask counts one: their records
        // disagree, and no recovery can be trusted any more.
        panic!("checkpoint commit at depth {depth} refused: {}", e.name());
    }
    registry::hand_to_parent(depth);
    registry::set_depth(depth - 1);
    crate::sync::release_deferred(depth - 1);
}
