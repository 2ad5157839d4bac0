//! Supervisor operations: `TASK_CTL` and `EMIT` (the fault server's tools).
//!
//! Only a task whose manifest grants it the `supervisor` capability may use
//! these; for any other the kernel answers `Err(Denied)` — which is also
//! what a test task observes when it tries. The kernel identifies the
//! supervisor by that capability, not by an index, so these functions take
//! no [`Cap`](crate::ipc::Cap).
//!
//! What a supervisor can do to another task (`abi::ipc::task_ctl`): read
//! and, while the task is held on a fault, write its registers; read and
//! write its memory; read its ELF image (to find symbols); and decide what
//! happens to a faulted task: [`resume`] it (after [`set_regs`], e.g. past
//! a trapping instruction), [`restart`] it from its image after a delay,
//! or [`stop`] it. The kernel writes the `resume`, `restart` and
//! `escalate` events for those; [`emit_event`] lets the supervisor add its
//! own (`fault_report`, `backtrace`, `release`, `check`, `escalate`: typed
//! `abi::event::Event`s; [`emit`] is the transitional JSON-text form).
//!
//! Transfers larger than the kernel's 4 KiB per call are split here.

extern crate alloc;

use crate::syscall::raw;
use abi::ipc::task_ctl as op;
use abi::syscall::{Error, nr};
use abi::trap::{REGISTERS_BYTES, Registers};

/// Largest memory or image transfer the kernel does in one call.
pub const MAX_XFER: usize = 4096;

/// A task, by its id (as in the event stream).
pub type TaskId = u64;

/// `TASK_CTL(op, task, a, b, c)` as it is: the raw result. For operations
/// this module has no wrapper for (checkpoints, futexes, ...).
///
/// # Safety
/// Operations that write into this task's memory (`a`/`b` as buffers) must
/// be given buffers that are live, writable and large enough; the kernel
/// checks that they are mapped, not that Rust is done with them.
pub unsafe fn task_ctl(operation: u64, task: TaskId, a: u64, b: u64, c: u64) -> Result<u64, Error> {
    // SAFETY: the caller upholds the buffer contract above.
    Error::decode(unsafe { raw::syscall5(nr::TASK_CTL, operation, task, a, b, c) })
}

/// `GET_REGS`: the task's saved registers (its state at the fault while it
/// is held; else at its last entry into the kernel).
pub fn get_regs(task: TaskId) -> Result<Registers, Error> {
    let mut bytes = [0u8; REGISTERS_BYTES];
    // SAFETY: the kernel writes REGISTERS_BYTES bytes into `bytes`.
    unsafe { task_ctl(op::GET_REGS, task, bytes.as_mut_ptr() as u64, 0, 0)? };
    Registers::from_bytes(&bytes).ok_or(Error::BadArgument)
}

/// `SET_REGS`: replaces a held task's registers (the kernel forces CS, SS
/// and the privileged RFLAGS bits to safe values, and refuses kernel RIP/RSP).
pub fn set_regs(task: TaskId, regs: &Registers) -> Result<(), Error> {
    let bytes = regs.to_bytes();
    // SAFETY: SET_REGS only reads `bytes`.
    unsafe { task_ctl(op::SET_REGS, task, bytes.as_ptr() as u64, 0, 0) }.map(drop)
}

/// `READ_MEM`: fills `buf` from the task's memory at `addr`. All or
/// nothing per 4 KiB piece: `Err(BadPointer)` if any byte is unmapped.
pub fn read_mem(task: TaskId, addr: u64, buf: &mut [u8]) -> Result<(), Error> {
    for (i, chunk) in buf.chunks_mut(MAX_XFER).enumerate() {
        let at = addr.checked_add((i * MAX_XFER) as u64).ok_or(Error::BadPointer)?;
        // SAFETY: the kernel writes at most `chunk.len()` bytes into `chunk`.
        unsafe { task_ctl(op::READ_MEM, task, at, chunk.as_mut_ptr() as u64, chunk.len() as u64)? };
    }
    Ok(())
}

/// Reads one little-endian `u64` of the task's memory.
pub fn read_u64(task: TaskId, addr: u64) -> Result<u64, Error> {
    let mut b = [0u8; 8];
    read_mem(task, addr, &mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// `WRITE_MEM`: writes `data` into the task's memory at `addr`.
pub fn write_mem(task: TaskId, addr: u64, data: &[u8]) -> Result<(), Error> {
    for (i, chunk) in data.chunks(MAX_XFER).enumerate() {
        let at = addr.checked_add((i * MAX_XFER) as u64).ok_or(Error::BadPointer)?;
        // SAFETY: WRITE_MEM only reads `chunk`.
        unsafe { task_ctl(op::WRITE_MEM, task, at, chunk.as_ptr() as u64, chunk.len() as u64)? };
    }
    Ok(())
}

/// `READ_IMAGE`: copies the task's ELF file from `offset` into `buf`;
/// returns the bytes read (fewer at the end, 0 past it).
pub fn read_image(task: TaskId, offset: u64, buf: &mut [u8]) -> Result<usize, Error> {
    let mut done = 0;
    while done < buf.len() {
        let end = (done + MAX_XFER).min(buf.len());
        let chunk = &mut buf[done..end];
        // SAFETY: the kernel writes at most `chunk.len()` bytes into `chunk`.
        let n = unsafe {
            task_ctl(op::READ_IMAGE, task, offset + done as u64, chunk.as_mut_ptr() as u64, chunk.len() as u64)?
        };
        if n == 0 {
            break;
        }
        done += (n as usize).min(chunk.len());
    }
    Ok(done)
}

/// The task's whole ELF file (at most `limit` bytes: `Err(NoMemory)` for a
/// larger one, so a supervisor bounds what it allocates).
pub fn image(task: TaskId, limit: usize) -> Result<alloc::vec::Vec<u8>, Error> {
    let mut out = alloc::vec::Vec::new();
    let mut chunk = [0u8; MAX_XFER];
    loop {
        let n = read_image(task, out.len() as u64, &mut chunk)?;
        if n == 0 {
            return Ok(out);
        }
        if out.len() + n > limit {
            return Err(Error::NoMemory);
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

/// `RESUME`: lets a held task run on with its (possibly changed) registers.
pub fn resume(task: TaskId) -> Result<(), Error> {
    // SAFETY: RESUME touches none of our memory.
    unsafe { task_ctl(op::RESUME, task, 0, 0, 0) }.map(drop)
}

/// `RESTART`: reloads the task from its image; it runs again from its
/// entry point after `delay_ms` (0: at once). Event `restart`.
pub fn restart(task: TaskId, delay_ms: u64) -> Result<(), Error> {
    // SAFETY: RESTART touches none of our memory.
    unsafe { task_ctl(op::RESTART, task, delay_ms, 0, 0) }.map(drop)
}

/// `STOP`: ends the task for good; `reason` is a code of the supervisor's
/// choosing, shown in the kernel's `escalate` event as `reason_code`.
pub fn stop(task: TaskId, reason: u64) -> Result<(), Error> {
    // SAFETY: STOP touches none of our memory.
    unsafe { task_ctl(op::STOP, task, reason, 0, 0) }.map(drop)
}

/// `KILL`: stops a running task and handles it as a fault of kind `kill`.
pub fn kill(task: TaskId) -> Result<(), Error> {
    // SAFETY: KILL touches none of our memory.
    unsafe { task_ctl(op::KILL, task, 0, 0, 0) }.map(drop)
}

/// `EMIT` of a typed event (`abi::event`): encoded with postcard into a
/// stack buffer and written with one system call; the kernel checks it (a
/// supervisor kind, at most `abi::event::MAX_EMIT` bytes: else
/// `Err(BadArgument)`) and stamps it with the time and our id.
pub fn emit_event(event: &abi::event::Event<'_>) -> Result<(), Error> {
    emit_event_at(event, 0)
}

/// [`emit_event`] for something that happened at guest TSC `at` (not in
/// the future; 0 = now): the event's `tsc` is `at`, and the kernel adds
/// when it wrote it (`emitted`).
pub fn emit_event_at(event: &abi::event::Event<'_>, at: u64) -> Result<(), Error> {
    let mut buf = [0u8; abi::event::MAX_EMIT + 16];
    let n = abi::event::encode_emit_entry(at, event, &mut buf, 0).map_err(|_| Error::BadArgument)?;
    emit_raw(&buf[..n])
}

/// Several events in one `EMIT`: a supervisor's report of one fault is a
/// handful of events, each stamped with when what it reports happened; one
/// system call writes them all, in order, or — if any is refused — none.
pub struct EventBatch {
    buf: alloc::boxed::Box<[u8; abi::event::MAX_EMIT_BATCH]>,
    len: usize,
}

impl Default for EventBatch {
    fn default() -> EventBatch {
        EventBatch { buf: alloc::boxed::Box::new([0; abi::event::MAX_EMIT_BATCH]), len: 0 }
    }
}

impl EventBatch {
    /// Adds `event`, which happened at `at` (0: now). A full batch is sent
    /// first; an event too large for any batch is `Err(BadArgument)`.
    pub fn push(&mut self, event: &abi::event::Event<'_>, at: u64) -> Result<(), Error> {
        if let Ok(n) = abi::event::encode_emit_entry(at, event, &mut self.buf[..], self.len) {
            self.len = n;
            return Ok(());
        }
        self.send()?;
        self.len = abi::event::encode_emit_entry(at, event, &mut self.buf[..], 0).map_err(|_| Error::BadArgument)?;
        Ok(())
    }

    /// Writes the batch (one `EMIT`) and empties it.
    pub fn send(&mut self) -> Result<(), Error> {
        let n = core::mem::take(&mut self.len);
        if n == 0 {
            return Ok(());
        }
        emit_raw(&self.buf[..n])
    }
}

/// `EMIT` of a batch body.
fn emit_raw(body: &[u8]) -> Result<(), Error> {
    // SAFETY: EMIT only reads the live buffer.
    Error::decode(unsafe { raw::syscall2(nr::EMIT, body.as_ptr() as u64, body.len() as u64) }).map(drop)
}

/// `STORE32`: writes the `u32` at `addr` in the task's memory, atomically.
pub fn store32(task: TaskId, addr: u64, value: u32) -> Result<(), Error> {
    // SAFETY: STORE32 touches none of our memory.
    unsafe { task_ctl(op::STORE32, task, addr, value as u64, 0) }.map(drop)
}

/// `FETCH_ADD32`: adds `delta` to the `u32` at `addr` in the task's memory,
/// atomically; returns the old value.
pub fn fetch_add32(task: TaskId, addr: u64, delta: i32) -> Result<u32, Error> {
    // SAFETY: FETCH_ADD32 touches none of our memory.
    unsafe { task_ctl(op::FETCH_ADD32, task, addr, delta as u32 as u64, 0) }.map(|v| v as u32)
}

/// `CAS64`: compare-and-swap of the `u64` at `addr` in the task's memory;
/// returns the value found (equal to `old` iff the swap happened).
pub fn cas64(task: TaskId, addr: u64, old: u64, new: u64) -> Result<u64, Error> {
    // SAFETY: CAS64 touches none of our memory.
    unsafe { task_ctl(op::CAS64, task, addr, old, new) }
}

/// `FUTEX_WAKE`: wakes up to `n` waiters on the task's `addr`.
pub fn futex_wake(task: TaskId, addr: u64, n: u64) -> Result<u64, Error> {
    // SAFETY: FUTEX_WAKE touches none of our memory.
    unsafe { task_ctl(op::FUTEX_WAKE, task, addr, n, 0) }
}

/// `ROLLBACK`: rolls a held task back to scope `depth` (1 = outermost) on
/// its own (the kernel emits `restart`); returns the pages restored.
/// A fault server uses [`recover`], which releases in the same call.
pub fn rollback(task: TaskId, depth: u64) -> Result<u64, Error> {
    // SAFETY: ROLLBACK touches none of our memory.
    unsafe { task_ctl(op::ROLLBACK, task, depth, 0, 0) }
}

/// `REGIONS`: the task's shared regions (at most `out.len()` written);
/// returns how many it has in all.
pub fn regions(task: TaskId, out: &mut [abi::checkpoint::RegionInfo]) -> Result<usize, Error> {
    let mut buf = [0u8; 16 * 16];
    let cap = out.len().min(16);
    // SAFETY: REGIONS writes at most `cap` records of 16 bytes into `buf`.
    let n = unsafe { task_ctl(op::REGIONS, task, buf.as_mut_ptr() as u64, cap as u64, 0)? } as usize;
    for (i, r) in out.iter_mut().take(n.min(cap)).enumerate() {
        let w = |o: usize| u64::from_le_bytes(buf[o..o + 8].try_into().unwrap_or([0; 8]));
        *r = abi::checkpoint::RegionInfo { base: w(i * 16), size: w(i * 16 + 8) };
    }
    Ok(n)
}

/// `SCOPE_REGS`: the registers saved when scope `depth` (1 = outermost)
/// opened.
pub fn scope_regs(task: TaskId, depth: u64) -> Result<Registers, Error> {
    let mut buf = [0u8; REGISTERS_BYTES];
    // SAFETY: SCOPE_REGS writes REGISTERS_BYTES bytes into `buf`.
    unsafe { task_ctl(op::SCOPE_REGS, task, depth, buf.as_mut_ptr() as u64, 0)? };
    Registers::from_bytes(&buf).ok_or(Error::BadArgument)
}

/// `TASK_INFO`: the task's manifest policy and state.
pub fn task_info(task: TaskId) -> Result<abi::ipc::TaskInfo, Error> {
    let mut buf = [0u8; abi::ipc::TASK_INFO_SIZE];
    // SAFETY: TASK_INFO writes TASK_INFO_SIZE bytes into `buf`.
    unsafe { task_ctl(op::TASK_INFO, task, buf.as_mut_ptr() as u64, 0, 0)? };
    abi::ipc::TaskInfo::from_bytes(&buf).ok_or(Error::BadArgument)
}

/// What a [`RecoverRequest`] does after its releases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinalAction {
    /// Roll back to scope `depth` (1 = outermost).
    Rollback { depth: u64 },
    /// Restart from the image after `delay_ms`.
    Restart { delay_ms: u64 },
    /// Stop for good with a reason code (the kernel's `escalate`).
    Stop { reason: u64 },
}

/// A `TASK_CTL RECOVER` request: the releases a held fault owes and what
/// happens to the task after them, carried out by the kernel in one call
/// (see `abi::ipc::task_ctl::RECOVER`). Outcomes come back in place.
#[repr(C)]
pub struct RecoverRequest {
    pub header: abi::ipc::recover::Header,
    ops: [abi::ipc::recover::ReleaseOp; abi::ipc::recover::MAX_RELEASE_OPS],
}

impl RecoverRequest {
    /// An empty request answering fault `seq` with `action`.
    pub fn new(seq: u64, action: FinalAction) -> RecoverRequest {
        let mut req = RecoverRequest {
            header: abi::ipc::recover::Header::default(),
            ops: [abi::ipc::recover::ReleaseOp::default(); abi::ipc::recover::MAX_RELEASE_OPS],
        };
        req.reset(seq, action);
        req
    }

    /// Makes this request an empty one answering fault `seq` with `action`
    /// (a request is ~4.7 KiB: a server keeps one and reuses it rather
    /// than clearing a new one per fault).
    pub fn reset(&mut self, seq: u64, action: FinalAction) {
        use abi::ipc::recover as r;
        let (action, arg) = match action {
            FinalAction::Rollback { depth } => (r::ROLLBACK, depth),
            FinalAction::Restart { delay_ms } => (r::RESTART, delay_ms),
            FinalAction::Stop { reason } => (r::STOP, reason),
        };
        self.header = r::Header { seq, action, arg, ..r::Header::default() };
    }

    /// Asks the kernel to lower the caller's priority once done
    /// (`abi::ipc::recover::LOWER_CALLER`).
    pub fn lower_caller(&mut self) {
        self.header.flags |= abi::ipc::recover::LOWER_CALLER;
    }

    /// Adds a release; false if the request is full.
    pub fn push(&mut self, op: abi::ipc::recover::ReleaseOp) -> bool {
        let n = self.header.count as usize;
        if n >= self.ops.len() {
            return false;
        }
        self.ops[n] = op;
        self.header.count += 1;
        true
    }

    /// The releases, with their outcomes once [`recover`] returned.
    pub fn ops(&self) -> &[abi::ipc::recover::ReleaseOp] {
        &self.ops[..(self.header.count as usize).min(self.ops.len())]
    }
}

/// `RECOVER`: performs `req` on the held task (releases, then the final
/// action), atomically; outcomes and results are written into `req`.
pub fn recover(task: TaskId, req: &mut RecoverRequest) -> Result<(), Error> {
    // SAFETY: RECOVER reads and writes `req`, a live, exclusively borrowed
    // `repr(C)` header followed by its operations.
    unsafe { task_ctl(op::RECOVER, task, req as *mut RecoverRequest as u64, 0, 0) }.map(drop)
}

/// The supervised side of the restart-count convention: a fault server
/// that restarts a task writes the task's restart count into this `u64`
/// (found by its symbol name, `REWIND_RESTARTS`, in the task's ELF) before
/// the task runs again. It stays in the binary only if the task calls
/// [`restart_count`].
#[unsafe(no_mangle)]
static mut REWIND_RESTARTS: u64 = 0;

/// How many times this task was restarted (0 on its first run), as its
/// fault server wrote it (see `fault-server/README.md`).
pub fn restart_count() -> u64 {
    // SAFETY: a plain aligned read of a static that only the fault server
    // writes, and only while this task is not running (it writes before
    // the restarted task is scheduled).
    unsafe { (&raw const REWIND_RESTARTS).read_volatile() }
}
