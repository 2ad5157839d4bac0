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
use core::ops::ControlFlow;

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
pub fn checkpoint<R, F: FnOnce(Attempt) -> R>(body: F) -> Result<R, Error> {
    let mut ctx = Scope::new(Once { body: Some(body), result: None });
    let mut raw = run_scope(&mut ctx);
    if !ctx.opened {
        // The kernel opened nothing: it refused (scopes full, no memory),
        // or the `syscall` was skipped. One more try tells them apart.
        let first = ctx.open_raw;
        raw = run_scope(&mut ctx);
        if !ctx.opened {
            return Err(refusal(ctx.open_raw, first));
        }
    }
    committed(ctx.depth, raw);
    match ctx.run.result.take() {
        Some(r) => Ok(r),
        // `scope_body` stores the result before it lets the commit happen.
        None => panic!("checkpoint: scope {} committed without a result", ctx.depth),
    }
}

/// Runs `body` again and again, each run in a checkpoint scope of its
/// own, until it returns `ControlFlow::Break(b)`; returns `b`. A fault in
/// a run rolls back that run only — to the state the previous run
/// committed — and runs it again (`attempt.number > 0`).
///
/// ```ignore
/// let mut served = 0;
/// let total = checkpoint::repeat(|_attempt| {
///     served += handle(next_request()?);
///     if served == N { ControlFlow::Break(served) } else { ControlFlow::Continue(()) }
/// })?;
/// ```
///
/// What it adds to a loop of [`checkpoint`]s: **no instruction of the
/// task runs outside a scope between two runs.** One run's commit and the
/// next run's open are one system call (`CHECKPOINT_RENEW`), so a fault,
/// kill or hang that lands "between iterations" — in a loop of
/// `checkpoint`s, the commit's tail and the next open, outside any scope,
/// hence a restart from the image with all private state lost — lands in
/// a scope and is rolled back like any other. A task whose work is one
/// `repeat` is inside a scope from its first open to its last commit,
/// blocked or running (block, sleep and yield *inside* `body`).
///
/// A run that released (dropped) a `Mutex` guard or an `Arc` handle an
/// *earlier* run took — a release that must wait for a commit
/// (`crate::sync`) — hands it to the kernel, which makes it inside the
/// renew (`abi::checkpoint::RELEASE_AT_COMMIT`): no instruction of the
/// task runs between the release and the commit either. Two exceptions,
/// both after a commit and before the next open: such a release of an
/// `RwLock` guard or a `Once` is made by libtask after a real commit
/// (`CHECKPOINT_COMMIT`), the next run opened afresh; and a renew whose
/// open the kernel refused (`NoMemory`) is opened again the same way. Errors: as [`checkpoint`]'s, when the
/// kernel refused the first open twice (`body` then did not run).
#[inline(never)]
pub fn repeat<B, F: FnMut(Attempt) -> ControlFlow<B>>(mut body: F) -> Result<B, Error> {
    let mut refused: Option<u64> = None;
    loop {
        let mut ctx = Scope::new(Repeat { body: &mut body, result: None, ran: false });
        let raw = run_scope(&mut ctx);
        if ctx.opened {
            committed(ctx.depth, raw);
            if let Some(b) = ctx.run.result.take() {
                return Ok(b);
            }
            // Committed for a deferred release (made by `committed`):
            // the next run opens afresh.
            continue;
        }
        if ctx.run.ran {
            // A renew committed the last run but could not open the next.
            continue;
        }
        match refused {
            Some(first) => return Err(refusal(ctx.open_raw, first)),
            None => refused = Some(ctx.open_raw),
        }
    }
}

/// The error of an open the kernel refused twice (`raw`, `first`: the
/// two opens' results).
fn refusal(raw: u64, first: u64) -> Error {
    Error::decode(raw).err().or(Error::decode(first).err()).unwrap_or(Error::BadArgument)
}

/// After the commit of scope `depth` (`raw`: the commit's `rax`): checks
/// what the kernel did, then makes the releases inner scopes deferred to
/// it.
fn committed(depth: u64, raw: u64) {
    if raw != 0 || registry::depth() != depth - 1 {
        recommit(depth, raw);
    }
    registry::note_commit(depth - 1);
    crate::sync::release_deferred(depth - 1);
}

/// What a scope runs: once ([`checkpoint`]) or until done ([`repeat`]).
trait Run {
    /// Whether the body has produced its result (a run after that — a
    /// skipped branch that renewed instead of committing — commits).
    fn done(&self) -> bool;
    /// Runs the body once; whether it is done.
    fn run(&mut self, attempt: Attempt) -> bool;
}

/// [`checkpoint`]'s body.
struct Once<F, R> {
    body: Option<F>,
    result: Option<R>,
}

impl<R, F: FnOnce(Attempt) -> R> Run for Once<F, R> {
    fn done(&self) -> bool {
        self.result.is_some()
    }
    fn run(&mut self, attempt: Attempt) -> bool {
        let Some(body) = self.body.take() else { panic!("checkpoint: the scope has no body") };
        self.result = Some(body(attempt));
        true
    }
}

/// [`repeat`]'s body.
struct Repeat<'a, F, B> {
    body: &'a mut F,
    result: Option<B>,
    /// A run happened in this call of the asm function (so a later
    /// refused open is a renew's).
    ran: bool,
}

impl<B, F: FnMut(Attempt) -> ControlFlow<B>> Run for Repeat<'_, F, B> {
    fn done(&self) -> bool {
        self.result.is_some()
    }
    fn run(&mut self, attempt: Attempt) -> bool {
        self.ran = true;
        match (self.body)(attempt) {
            ControlFlow::Break(b) => {
                self.result = Some(b);
                true
            }
            ControlFlow::Continue(()) => false,
        }
    }
}

/// One scope's state, in the `checkpoint` (or `repeat`) frame (private
/// memory: a rollback restores it as it was at the open, `body`
/// unconsumed).
struct Scope<C> {
    /// [`SCOPE_MAGIC`]: `scope_body` checks it before it writes anything
    /// through the pointer it was handed (a flipped `rdi` must not make it
    /// write `None` into some other memory — shared memory, even).
    magic: u64,
    run: C,
    /// The page's depth before the open.
    parent: u64,
    /// The scope's depth, once opened.
    depth: u64,
    /// Whether the kernel opened the scope (and the commit was made).
    opened: bool,
    /// The open's `rax`, for the error when the kernel refused.
    open_raw: u64,
    /// This run handed releases to the kernel for the renew
    /// (`registry::mark_for_commit`).
    marked: bool,
}

impl<C: Run> Scope<C> {
    fn new(run: C) -> Self {
        Scope {
            magic: SCOPE_MAGIC,
            run,
            parent: registry::depth(),
            depth: 0,
            opened: false,
            open_raw: 0,
            marked: false,
        }
    }
}

/// [`Scope::magic`].
const SCOPE_MAGIC: u64 = 0x5c0e_5c0e_0b5e_55ed;

/// Opens a sealed scope, runs [`scope_body`] in it — again after each
/// renew it asks for ([`repeat`]) — and commits it, all in
/// `__rewind_checkpoint_scope`; returns the commit's `rax` (meaningless if
/// `ctx.opened` is false: then nothing was committed).
fn run_scope<C: Run>(ctx: &mut Scope<C>) -> u64 {
    // SAFETY: the asm function's contract (at its definition): `ctx` is
    // valid for `scope_body::<C>` for the whole call. It returns twice
    // or more (after rollbacks) from its `CHECKPOINT_OPEN` and
    // `CHECKPOINT_RENEW`s, each time with all registers and all private
    // memory as at that instruction — `ctx` included: sound, see the
    // module documentation.
    unsafe { __rewind_checkpoint_scope((ctx as *mut Scope<C>).cast(), scope_body::<C>) }
}

/// [`scope_body`]'s answers to `__rewind_checkpoint_scope`.
const NOT_OPENED: u64 = 0;
const COMMIT: u64 = 1;
const RENEW: u64 = 2;

/// Inside the scope (called by `__rewind_checkpoint_scope` right after
/// its open or renew, with that call's `rax`): checks the open from the page, runs the
/// body, checks the page before the commit. Returns [`COMMIT`] to have the
/// scope committed, [`RENEW`] to have it committed and the next run's
/// opened ([`repeat`]), [`NOT_OPENED`] if the kernel opened none.
extern "C" fn scope_body<C: Run>(ctx: *mut u8, _body: u64, raw: u64) -> u64 {
    // A read first: the pointer came through `rdi` across the open, where a
    // flipped bit would make every write below land elsewhere.
    // SAFETY: the asm function passes its `&mut Scope<C>`, valid and
    // aligned (a corrupted pointer faults here or fails the check: a panic
    // inside the scope, rolled back, then escalated by the policy).
    if unsafe { core::ptr::read_volatile(&raw const (*ctx.cast::<Scope<C>>()).magic) } != SCOPE_MAGIC {
        panic!("checkpoint: the scope's context at {ctx:p} is not one");
    }
    // SAFETY: as above; no other reference to it is used until the asm
    // function returns.
    let ctx = unsafe { &mut *ctx.cast::<Scope<C>>() };
    let parent = ctx.parent;
    // Whether the kernel opened the scope is what the page's `depth` says
    // (the kernel writes it as part of the open, and only then), not what
    // `rax` says: a skipped `syscall`, a flipped `rax` or a skipped branch
    // must not make libtask and the kernel disagree (module documentation).
    let mut depth = registry::depth();
    if depth != parent + 1 {
        depth = match reopened(parent, raw) {
            Some(d) => d,
            None => {
                ctx.open_raw = raw;
                return NOT_OPENED;
            }
        };
    }
    if ctx.marked {
        // The previous run handed releases to its renew: the kernel made
        // them and took the entries out of the page — unless the renew did
        // not happen (a skipped `syscall`), which leaves them marked.
        ctx.marked = false;
        registry::unmark(depth - 1);
    }
    if !ctx.run.done() {
        // The attempt number and the last fault, from the scope's record in
        // the page, which the kernel cleared at the open and fills at a
        // rollback.
        let record = registry::scope_record(depth);
        let attempt = record.attempt;
        let last_fault = if attempt == 0 {
            None
        } else {
            Some(FaultInfo { kind_raw: record.fault_kind, seq: record.fault_seq, pc: record.fault_pc })
        };
        // The mutex registry's size at this open, for the unlock's scope
        // check (libtask's private bookkeeping next to the page; also after
        // a rollback, which restored it to before this point).
        registry::note_open(depth);
        let done = ctx.run.run(Attempt { number: attempt, last_fault });
        precommit(depth);
        // A release an earlier run's entry waits for is made by the kernel
        // inside the renew (`RELEASE_AT_COMMIT`): never inside the next run,
        // whose rollback would revive the entry, nor between a commit and
        // the next open, outside every scope. Only an `RwLock`'s or
        // `Once`'s waiting release makes it a real commit
        // (`repeat`'s documentation).
        if !done {
            if !registry::deferred_any(depth - 1) {
                return RENEW;
            }
            if registry::mark_for_commit(depth - 1) {
                // Checked, not trusted: a skipped or flipped store in the
                // marking leaves a release unmarked, which no renew would
                // ever make (a reference or lock leaked for good; the mixed
                // campaign found it). Still inside the run: a panic rolls
                // it back, and the re-run drops and marks again.
                if registry::deferred_any(depth - 1) {
                    panic!("checkpoint: a release of scope {} was left unmarked", depth - 1);
                }
                ctx.marked = true;
                return RENEW;
            }
        }
    }
    ctx.depth = depth;
    ctx.opened = true;
    COMMIT
}

/// The open did not leave the page at `parent + 1` (the fast path's check):
/// decides from the page, the kernel's record, and the open's `raw` result
/// what happened. `None`: the kernel opened nothing.
#[cold]
#[inline(never)]
fn reopened(parent: u64, raw: u64) -> Option<u64> {
    let depth = registry::depth();
    if depth == parent + 1 {
        // The check itself went wrong (a skipped or flipped compare).
        return Some(depth);
    }
    if depth == parent {
        // Nothing opened: the kernel refused (an error in `rax`) or the
        // `syscall` was skipped (`rax` still the call number). But `rax` =
        // 0 says it *did* open — as does `rax` = the attempt the page's
        // record holds, a rollback's re-entry — so `parent` may be what is
        // wrong: flipped to the new depth before the open (and written
        // before it, so every rollback restores it so), and a retry would
        // open a second scope that nothing commits. Fault instead, inside
        // the scope the kernel (perhaps) opened: its policy escalates
        // outward (the sweeps of `faults/checkpoint-sweep.toml` found it).
        if raw == 0 || (depth > 0 && raw == registry::scope_record(depth).attempt) {
            panic!("checkpoint: the open returned {raw} but the page still says depth {depth}");
        }
        return None;
    }
    // Anything else: `parent` is wrong (a flipped register), or the open
    // ran twice (a flipped `rip` that came back to the `syscall`). Both
    // agree on nothing libtask could continue from; a fault here is
    // rolled back to the innermost kernel scope, which restores `parent`
    // (and a double open escalates, by the server's policy, to the first).
    panic!("checkpoint: kernel depth {depth} after an open at depth {parent}")
}

/// Right before scope `depth`'s commit. `#[inline(never)]`: the sweeps of
/// `faults/checkpoint-sweep.toml` inject from its entry.
#[inline(never)]
fn precommit(depth: u64) {
    if registry::depth() != depth {
        // Before the kernel closes anything, so that the fault rolls back
        // this scope (or the inner one left open), not its parent.
        panic!("checkpoint commit of scope {depth} at kernel depth {}", registry::depth());
    }
}

unsafe extern "C" {
    /// `u64 __rewind_checkpoint_scope(u8 *ctx, u64 (*body)(u8 *ctx, u64 body, u64 open_rax))`.
    fn __rewind_checkpoint_scope(ctx: *mut u8, body: extern "C" fn(*mut u8, u64, u64) -> u64) -> u64;
}

// __rewind_checkpoint_scope(rdi = ctx, rsi = body): a C-ABI function, the
// scope's own frame, for `checkpoint` and `repeat` alike. Opens a *sealed*
// scope (`rdx` = SEAL) and calls body(ctx, body, open's rax); body returns
// 2 to have the run committed and the next one opened in the same call
// (`CHECKPOINT_RENEW`, sealed as the open), after which body is called
// again; 1 to commit and return; 0 (nothing opened) to return. Returns
// the last call's rax (body's 0 when there was no commit). Clobbers the
// caller-saved registers.
//
// ctx and body live in rbx and r12 from before the open to the last
// commit: callee-saved, so body hands them back; saved for the caller on
// the stack around the whole function; preserved by the kernel across
// each `syscall` and restored with the frame at a rollback (which resumes
// right after the open or renew it returns to) — no memory slot whose
// store a skipped instruction could leave stale (the sweeps of
// `faults/checkpoint-sweep.toml` found one: a stale slot read as the
// context pointer, and its writes landed in a shared region's header).
// Between the open and the last commit it writes none of rbx, rbp,
// r12-r15 and does not move rsp, and body must hand them back as it found
// them (SysV ABI): so at every renew and commit they are what the kernel
// recorded at the open or renew before — the seal it checks — unless
// something corrupted them inside the scope; the caller's own rbx and r12
// wait in memory meanwhile. What precedes the open is chosen so that a
// skipped instruction faults or is caught rather than writes: the call
// number comes from the stack word the aligning push left (`mov eax,
// imm32`'s zero bytes would decode as `add [rax], al`), and the seal's
// bytes are `ud2`s. The two pushes and the call number's keep the stack
// 16-byte aligned at `call r12`. CFI for every instruction (`.cfi_offset`
// for the saved registers), so the fault server's walk finds the scope's
// frame (this function: its symbol is how the server recognises it) from
// a fault anywhere in it.
core::arch::global_asm!(
    ".section .text.__rewind_checkpoint_scope, \"ax\", @progbits",
    ".global __rewind_checkpoint_scope",
    ".type __rewind_checkpoint_scope, @function",
    "__rewind_checkpoint_scope:",
    ".cfi_startproc",
    "    push rbx",
    ".cfi_adjust_cfa_offset 8",
    ".cfi_offset rbx, -16",
    "    push r12",
    ".cfi_adjust_cfa_offset 8",
    ".cfi_offset r12, -24",
    "    mov rbx, rdi",
    "    mov r12, rsi",
    "    push {open}",
    ".cfi_adjust_cfa_offset 8",
    "    movabs rdx, {seal}",
    "    mov rax, [rsp]",
    "    syscall",
    "3:",
    "    mov rdx, rax",
    "    mov rdi, rbx",
    "    mov rsi, r12",
    "    call r12",
    "    cmp rax, 2",
    "    jne 4f",
    "    movabs rdx, {seal}",
    "    mov eax, {renew}",
    "    syscall",
    "    jmp 3b",
    "4:",
    "    test rax, rax",
    "    jz 2f",
    "    mov eax, {commit}",
    "    syscall",
    "2:",
    "    add rsp, 8",
    ".cfi_adjust_cfa_offset -8",
    "    pop r12",
    ".cfi_adjust_cfa_offset -8",
    ".cfi_restore r12",
    "    pop rbx",
    ".cfi_adjust_cfa_offset -8",
    ".cfi_restore rbx",
    "    ret",
    ".cfi_endproc",
    ".size __rewind_checkpoint_scope, . - __rewind_checkpoint_scope",
    seal = const abi::checkpoint::SEAL,
    open = const nr::CHECKPOINT_OPEN,
    renew = const nr::CHECKPOINT_RENEW,
    commit = const nr::CHECKPOINT_COMMIT,
);

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
