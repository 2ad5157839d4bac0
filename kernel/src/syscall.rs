//! System call handlers (ABI: `abi/src/syscall.rs`).
//!
//! Arguments come from the caller's trap frame and the result goes back in
//! its RAX. Every pointer is checked through the caller's address space
//! (`AddressSpace::read`/`write` translate and check each page), so a bad
//! pointer yields `Error::BadPointer`, never a kernel fault.

use crate::arch::trap_entry::TrapFrame;
use crate::events;
use crate::ipc;
use crate::mem::space::{Perm, SpaceError};
use crate::sched::{SCHED, Scheduler};
use crate::task::{PendingFault, State, Task};
use abi::event::Event;
use abi::fault::FaultKind;
use abi::layout::{PAGE_SIZE, SHARED_BASE, USER_MAP_BASE, is_user_range};
use abi::syscall::{Error, MapFlags, nr};
use core::mem::MaybeUninit;

/// Largest write accepted in one call (longer writes are cut: the return
/// value says how much was written).
const MAX_WRITE: usize = 4096;
/// Largest single `map`.
const MAX_MAP: u64 = 64 << 20;
/// Longest name in a `report`, message in a `panic`.
const MAX_TEXT: usize = 256;

type SysResult = Result<u64, Error>;

/// Calls that can block, wake or end a task, or otherwise change what
/// should run next; after any other call the caller simply continues.
const fn may_reschedule(number: u64) -> bool {
    !matches!(
        number,
        nr::NULL
            | nr::WRITE
            | nr::TASK_ID
            | nr::CLOCK
            | nr::TICKS
            | nr::MAP
            | nr::UNMAP
            | nr::REPORT
            | nr::CAP_LOOKUP
            | nr::EMIT
            | nr::CHECKPOINT_OPEN
            | nr::CHECKPOINT_COMMIT
            | nr::CHECKPOINT_RENEW
            | nr::SET_RECOVERY
            | nr::REGION
            | nr::CHECKPOINT_DEPTH
    )
}

/// Light calls: they cannot block, wake, switch or end a task, and they do
/// not record or expose the caller's frame (so, unlike `CHECKPOINT_OPEN`,
/// they do not need its CR2 / FS / GS slots). The syscall stub handles them
/// on its first tier (`arch::syscall_entry`), with only the hardware frame
/// and the GPRs saved, and returns straight to the caller: no scheduler.
const fn is_light(number: u64) -> bool {
    matches!(
        number,
        nr::NULL
            | nr::WRITE
            | nr::TASK_ID
            | nr::CLOCK
            | nr::TICKS
            | nr::MAP
            | nr::UNMAP
            | nr::REPORT
            | nr::CAP_LOOKUP
            | nr::EMIT
            | nr::SET_RECOVERY
            | nr::REGION
            | nr::CHECKPOINT_DEPTH
    )
}

/// The light calls as a bit mask (bit n: call n), for the syscall stub.
pub const LIGHT_CALLS: u64 = {
    let (mut mask, mut n) = (0u64, 0);
    while n < 64 {
        if is_light(n) {
            // Every light call is one that `handle` lets the caller continue after.
            assert!(!may_reschedule(n));
            mask |= 1 << n;
        }
        n += 1;
    }
    mask
};

/// The syscall stub's first tier, for the calls in [`LIGHT_CALLS`]: handles
/// the light call of the current task and returns true (the stub then
/// returns to the caller), or returns false having done nothing (the stub completes the frame and calls
/// `trap::dispatch`). Also false when the caller's time slice is used up, so
/// that the scheduler runs.
///
/// # Safety
/// Only the syscall stub calls this, with the current task's save area, on
/// the kernel stack, interrupts off; the frame's RAX slot is written.
pub unsafe extern "C" fn light(frame: *const TrapFrame) -> bool {
    // SAFETY: per the contract, `frame` is the current task's save area and
    // its RAX slot holds the call number. Only that field is read, before
    // any reference to the task exists.
    let number = unsafe { core::ptr::addr_of!((*frame).rax).read() };
    // The stub calls only for these (`LIGHT_CALLS`).
    debug_assert!(is_light(number));
    let mut s = SCHED.lock();
    // The register-only calls right here; the others out of line.
    let ticks = s.ticks;
    let Some(task) = s.current_keeping_cpu() else { return false };
    let value = match number {
        nr::NULL => 0,
        nr::TASK_ID => task.id as u64,
        nr::CHECKPOINT_DEPTH => task.scopes.len() as u64,
        nr::CLOCK => crate::arch::rdtsc(),
        nr::TICKS => ticks,
        _ => {
            dispatch(&mut s);
            return true;
        }
    };
    task.ticks_since_syscall = 0;
    task.save.frame.rax = value;
    true
}

/// The syscall stub's second tier, with the caller's frame complete: the
/// IPC fastpath, else the full handler and, if the call may change what
/// runs, the scheduler. Returns the frame to resume.
///
/// # Safety
/// Only the syscall stub (and `trap::dispatch`, for the same kind of frame)
/// calls this, with the current task's complete save area, on the kernel
/// stack, interrupts off.
pub unsafe extern "C" fn full(frame: *mut TrapFrame) -> *mut TrapFrame {
    let mut s = SCHED.lock();
    if let Some(next) = ipc::endpoint::fastpath(&mut s) {
        return next;
    }
    // SAFETY: per the contract, `frame` is the current task's save area.
    if unsafe { (*frame).rflags } & crate::arch::RFLAGS_AC != 0
        && crate::selftest::SMAP_PROBE.load(core::sync::atomic::Ordering::Relaxed)
    {
        drop(s);
        // SAFETY: as above.
        crate::selftest::smap_probe(unsafe { &*frame });
        s = SCHED.lock();
    }
    // Most calls return to the caller; the frame is its save area, already
    // current (RSP0, CR3, bases).
    if !handle(&mut s) {
        return frame;
    }
    crate::sched::next_locked(s)
}

/// Handles the syscall in the current task's frame. Returns whether the
/// scheduler must choose again (false: return straight to the caller).
pub fn handle(s: &mut Scheduler) -> bool {
    let number = s.current().save.frame.rax;
    dispatch(s);
    may_reschedule(number) || !s.current_keeps_cpu()
}

#[inline(never)]
fn dispatch(s: &mut Scheduler) {
    let ticks = s.ticks;
    let task = s.current();
    task.ticks_since_syscall = 0;
    let f = &task.save.frame;
    let (number, a0, a1, a2, a3, a4) = (f.rax, f.rdi, f.rsi, f.rdx, f.r10, f.r8);
    // A supervisor's next call after it restarted a task (several CPUs):
    // anything but a `TASK_CTL` lets that task run (`recovery::restart`).
    if task.holds.is_some() && number != nr::TASK_CTL {
        release_hold(s);
    }
    let task = s.current();
    let result = match number {
        nr::NULL => Ok(0),
        nr::WRITE => write(task, a0, a1),
        nr::YIELD => {
            s.yield_current();
            Ok(0)
        }
        nr::SLEEP => {
            let until_tick = ticks.saturating_add(a0.max(1));
            crate::sched::arm(until_tick);
            let me = current_index(s);
            s.tasks.set_state_unqueued(me, State::Sleeping { until_tick });
            Ok(0)
        }
        nr::EXIT => {
            let id = task.id;
            let me = current_index(s);
            exit(s, me, a0 as i64);
            ipc::abandon(s, id, ipc::Gone::Ended);
            Ok(0)
        }
        nr::TASK_ID => Ok(task.id as u64),
        nr::CHECKPOINT_DEPTH => Ok(task.scopes.len() as u64),
        nr::CLOCK => Ok(crate::arch::rdtsc()),
        nr::TICKS => Ok(ticks),
        nr::MAP => map(task, a0, a1, a2),
        nr::UNMAP => unmap(task, a0, a1),
        nr::REPORT => report(task, a0, a1, a2, a3),
        nr::PANIC => return panic(s, a0, a1, a2, a3, a4),
        nr::SEND => ipc::endpoint::send(s, false),
        nr::CALL => ipc::endpoint::send(s, true),
        nr::RECV => ipc::endpoint::recv(s),
        nr::REPLY => ipc::endpoint::reply(s),
        nr::REPLY_RECV => ipc::endpoint::reply_recv(s),
        nr::SIGNAL => ipc::notify::signal(s),
        nr::WAIT => ipc::notify::wait(s),
        nr::CAP_LOOKUP => cap_lookup(task, a0, a1),
        nr::TASK_CTL => crate::recovery::supervise::task_ctl(s),
        nr::EMIT => emit(task, a0, a1),
        nr::CHECKPOINT_OPEN => crate::recovery::checkpoint::open(task),
        nr::CHECKPOINT_COMMIT => match crate::recovery::checkpoint::seal_broken(task) {
            None => commit(s),
            Some(broken) => return seal_fault(s, broken),
        },
        nr::CHECKPOINT_RENEW => match crate::recovery::checkpoint::seal_broken(task) {
            // Commit, then open at the same depth from this very frame: the
            // kernel is not preemptible, so nothing of the task runs
            // between the two.
            None => commit(s).and_then(|_| crate::recovery::checkpoint::open(s.current())),
            Some(broken) => return seal_fault(s, broken),
        },
        nr::FUTEX_WAIT => ipc::futex::wait(s),
        nr::FUTEX_WAKE => ipc::futex::wake(s),
        nr::SET_RECOVERY => set_recovery(task, a0),
        nr::REGION => region(s, a0),
        nr::SET_PRIORITY => set_priority(s, a0, ticks),
        _ => Err(Error::NoSuchCall),
    };
    let Some(me) = s.current_index() else { return };
    if s.take_again() {
        // The call waits for another CPU (`Scheduler::restart_syscall`):
        // back over the 2-byte `syscall`, RAX still its number — after a
        // tick's sleep, not at once: a caller that retried at once kept
        // its CPU busy (QEMU's icount runs the vCPUs round-robin and moves
        // on only at a halt or a timer deadline), and the other CPU had
        // not left the task before its hold ran out (the mixed campaign on
        // 4 CPUs: a fault server retrying `READ_MEM` 600,000 times).
        s.tasks[me].save.frame.rip -= 2;
        let until = ticks.saturating_add(1);
        s.tasks.set_state_unqueued(me, State::Sleeping { until_tick: until });
        crate::sched::arm(until);
        return;
    }
    let task = &mut s.tasks[me];
    task.save.frame.rax = match result {
        Ok(v) => v,
        Err(e) => e.to_raw(),
    };
}

/// `CHECKPOINT_COMMIT` (and the first half of `CHECKPOINT_RENEW`) of the
/// current task's innermost scope, its seal checked: the scope closes;
/// what it held of IPC goes to its parent or, at the outermost commit,
/// its held replies are delivered (`ipc::held`).
fn commit(s: &mut Scheduler) -> Result<u64, Error> {
    let mut marked = crate::recovery::checkpoint::Marked::new();
    let task = s.current();
    let n = task.scopes.len();
    let r = crate::recovery::checkpoint::commit(task, &mut marked);
    let held = !task.held.is_empty();
    if r.is_ok()
        && let Some(me) = s.current_index()
    {
        if !marked.is_empty() {
            crate::recovery::checkpoint::release_marked(s, me, &marked);
        }
        if held {
            ipc::held::on_commit(s, me, n);
        }
    }
    r
}

#[cold]
#[inline(never)]
fn release_hold(s: &mut Scheduler) {
    if let Some(h) = s.current().holds.take()
        && h < s.tasks.len()
    {
        s.tasks.set_held_until(h, 0);
    }
}

fn bad_pointer(_: SpaceError) -> Error {
    Error::BadPointer
}

/// An uninitialised text buffer (filled by `AddressSpace::read_uninit`:
/// nothing is zeroed first).
type TextBuf = [MaybeUninit<u8>; MAX_TEXT];
const TEXT_BUF: TextBuf = [MaybeUninit::uninit(); MAX_TEXT];

/// Copies a user string of at most `MAX_TEXT` bytes into `buf`.
fn user_text<'b>(task: &Task, ptr: u64, len: u64, buf: &'b mut TextBuf) -> Result<&'b str, Error> {
    let len = (len as usize).min(MAX_TEXT);
    let space = task.space.as_ref().ok_or(Error::BadPointer)?;
    let text = space.read_uninit(ptr, &mut buf[..len]).map_err(bad_pointer)?;
    Ok(core::str::from_utf8(text).unwrap_or("<invalid UTF-8>"))
}

/// The bytes go to the console as they are, straight from the task's pages
/// through the direct map: no buffer, no formatting. (Invalid UTF-8 is not
/// replaced here; readers of the console decode it lossily.)
fn write(task: &Task, ptr: u64, len: u64) -> SysResult {
    let len = len.min(MAX_WRITE as u64);
    let space = task.space.as_ref().ok_or(Error::BadPointer)?;
    // Checked before the console is touched: a bad pointer prints nothing.
    space.check_readable(ptr, len).map_err(bad_pointer)?;
    crate::console::write_pieces(|out| {
        let _ = space.read_pieces(ptr, len, |piece| out(piece));
    });
    Ok(len)
}

/// This CPU's current task (the caller of a system call).
fn current_index(s: &Scheduler) -> usize {
    s.current_index().expect("a system call has a current task")
}

pub fn exit(s: &mut Scheduler, me: usize, code: i64) {
    s.tasks.set_state_unqueued(me, State::Exited { code });
    let task = &mut s.tasks[me];
    task.space = None;
    task.reply_to = None;
    events::emit(&Event::TaskExitV2 {
        task: task.id as u64,
        name: &task.name,
        code,
        cpu: crate::arch::percpu::cpu() as u64,
    });
}

fn map(task: &mut Task, hint: u64, len: u64, flags: u64) -> SysResult {
    // A flag bit the ABI does not define is refused, not ignored.
    let Some(flags) = MapFlags::from_bits(flags) else { return Err(Error::BadArgument) };
    if len == 0 || len > MAX_MAP {
        return Err(Error::BadArgument);
    }
    let perm = Perm { write: flags.contains(MapFlags::WRITE), exec: flags.contains(MapFlags::EXEC) };
    if perm.write && perm.exec {
        return Err(Error::BadArgument); // W^X
    }
    let len = len.div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let addr = if hint != 0 {
        // Hints must stay in the map area, clear of the image, the shared
        // regions and the stack.
        let ok =
            hint % PAGE_SIZE == 0 && hint >= USER_MAP_BASE && is_user_range(hint, len) && hint + len <= SHARED_BASE;
        if !ok {
            return Err(Error::BadArgument);
        }
        hint
    } else {
        task.map_next
    };
    let space = task.space.as_mut().ok_or(Error::NoMemory)?;
    match space.map_zeroed(addr, len, perm) {
        Ok(()) => {}
        Err(SpaceError::OutOfMemory) => {
            let _ = space.unmap(addr, len);
            return Err(Error::NoMemory);
        }
        Err(_) => return Err(Error::BadArgument),
    }
    if hint == 0 {
        // Leave an unmapped page between allocations.
        task.map_next += len + PAGE_SIZE;
    }
    Ok(addr)
}

fn unmap(task: &mut Task, addr: u64, len: u64) -> SysResult {
    if addr < USER_MAP_BASE || len == 0 || len > MAX_MAP {
        return Err(Error::BadArgument);
    }
    let space = task.space.as_mut().ok_or(Error::BadArgument)?;
    space.unmap(addr, len.div_ceil(PAGE_SIZE) * PAGE_SIZE).map_err(|e| match e {
        SpaceError::OutOfMemory => Error::NoMemory, // a scope's page records are full
        _ => Error::BadArgument,
    })?;
    Ok(0)
}

fn report(task: &Task, name_ptr: u64, name_len: u64, ok: u64, value: u64) -> SysResult {
    let mut buf = TEXT_BUF;
    let name = user_text(task, name_ptr, name_len, &mut buf)?;
    events::emit(&Event::Check {
        task: Some(task.id as u64),
        task_name: Some(&task.name),
        name,
        ok: ok != 0,
        value: Some(value),
        error: None,
    });
    Ok(0)
}

fn region(s: &mut Scheduler, cap: u64) -> SysResult {
    let me = s.current_index().ok_or(Error::BadTask)?;
    let object = s.tasks[me].cap(cap, abi::ipc::CapKind::Region, abi::ipc::Rights::empty())?.object as usize;
    let r = s.regions.get(object).ok_or(Error::BadCapability)?;
    let (base, size) = (r.base, r.size());
    s.tasks[me].save.frame.rdx = size;
    Ok(base)
}

/// `SET_PRIORITY`: a task may run less urgently than its manifest says (to
/// defer work), or return to its own priority; never more urgently.
fn set_priority(s: &mut Scheduler, priority: u64, now: u64) -> SysResult {
    let me = current_index(s);
    if priority == abi::syscall::PRIORITY_OWN {
        s.tasks.restore_priority(me);
        s.tasks.set_lowered_since(me, None);
        return Ok(0);
    }
    if priority > u8::MAX as u64 || priority < s.tasks[me].spec.priority as u64 {
        return Err(Error::BadArgument);
    }
    s.tasks.set_priority(me, priority as u8);
    if s.tasks[me].is_lowered() {
        if s.tasks[me].lowered_since().is_none() {
            s.tasks.set_lowered_since(me, Some(now));
            crate::sched::arm_next_tick();
        }
    } else {
        s.tasks.set_lowered_since(me, None);
    }
    Ok(0)
}

fn set_recovery(task: &mut Task, addr: u64) -> SysResult {
    let len = abi::checkpoint::RECOVERY_PAGE_SIZE as u64;
    if addr % 8 != 0 || !is_user_range(addr, len) {
        return Err(Error::BadArgument);
    }
    task.recovery = addr;
    Ok(0)
}

/// `EMIT` (supervisors only): a batch of typed events (below).
// Not inlined (nor `emit_event`): their buffers would make every system
// call's frame larger than a page, and pay for stack probes.
#[inline(never)]
fn emit(task: &Task, body_ptr: u64, body_len: u64) -> SysResult {
    if !task.is_supervisor() {
        return Err(Error::Denied);
    }
    emit_event(task, body_ptr, body_len)
}

/// The typed `EMIT`: a batch of `(at, len, event)` entries
/// (`abi::event::encode_emit_entry`), supervisor kinds only, `at` never in
/// the future. The whole batch is checked before anything is written, so a
/// malformed one leaves no trace. The check reads the framing, the times
/// and each event's kind tag, not the events (`abi::event`, "Who may write
/// what": the kernel vouches for the stamps it adds, not for the payload).
#[inline(never)]
fn emit_event(task: &Task, body_ptr: u64, body_len: u64) -> SysResult {
    let len = body_len as usize;
    if len == 0 || len > abi::event::MAX_EMIT_BATCH {
        return Err(Error::BadArgument);
    }
    let mut buf = [MaybeUninit::<u8>::uninit(); abi::event::MAX_EMIT_BATCH];
    let body =
        task.space.as_ref().ok_or(Error::BadPointer)?.read_uninit(body_ptr, &mut buf[..len]).map_err(bad_pointer)?;
    let now = crate::arch::rdtsc();
    abi::event::check_emit_batch(body, now, MAX_EMIT_ENTRIES).map_err(|_| Error::BadArgument)?;
    events::emit_batch_by(task.id, body);
    Ok(0)
}

/// Most events in one `EMIT`.
const MAX_EMIT_ENTRIES: usize = 64;

fn cap_lookup(task: &Task, ptr: u64, len: u64) -> SysResult {
    let mut buf = TEXT_BUF;
    let name = user_text(task, ptr, len, &mut buf)?;
    task.caps.iter().position(|c| c.name == name).map(|i| i as u64).ok_or(Error::BadCapability)
}

/// A task panic: a synchronous fault of kind `panic` when the task has a
/// fault endpoint; else a supervisor (the fault server: its allocator
/// panics when memory runs out) is restarted from its image like one that
/// faults, the faults it held redelivered; any other task is reported and
/// ended (exit code 101).
/// A sealed scope's commit found `broken` (`checkpoint::seal_broken`): the
/// scope stays open and the task faults inside it, as if the commit were a
/// faulting instruction, so its supervisor rolls the scope back. A task
/// without a fault endpoint is stopped like for any unsupervised fault.
fn seal_fault(s: &mut Scheduler, (reg, at_open, now): (usize, u64, u64)) {
    let Some(me) = s.current_index() else { return };
    let seq = s.next_fault_seq();
    let name = abi::checkpoint::SEAL_REGS[reg];
    let mut fault =
        PendingFault { kind: FaultKind::ScopeCheck as u64, error_code: reg as u64, seq, ..PendingFault::default() };
    let mut text = heapless::String::<256>::new();
    let _ = core::fmt::write(
        &mut text,
        format_args!("scope check: {name} is {now:#x} at the commit, {at_open:#x} at the open"),
    );
    fault.text_len = text.len();
    fault.text[..text.len()].copy_from_slice(text.as_bytes());
    s.tasks[me].save.frame.rax = 0;
    crate::recovery::fault::fault(s, me, fault);
}

fn panic(s: &mut Scheduler, msg: u64, msg_len: u64, file: u64, file_len: u64, line: u64) {
    let Some(me) = s.current_index() else { return };
    let seq = s.next_fault_seq();
    let task = &mut s.tasks[me];
    let (mut mbuf, mut fbuf) = (TEXT_BUF, TEXT_BUF);
    let message = user_text(task, msg, msg_len, &mut mbuf).unwrap_or("<unreadable message>");
    let file = user_text(task, file, file_len, &mut fbuf).unwrap_or("<unreadable>");
    crate::kprintln!("task {} ({}) panicked at {file}:{line}: {message}", task.id, task.name);
    events::emit(&Event::TaskPanic { task: task.id as u64, name: &task.name, seq, message, file, line });
    let mut fault = PendingFault { kind: FaultKind::Panic as u64, seq, ..PendingFault::default() };
    let mut text = heapless::String::<256>::new();
    let _ = core::fmt::write(&mut text, format_args!("{message} at {file}:{line}"));
    fault.text_len = text.len();
    fault.text[..text.len()].copy_from_slice(text.as_bytes());
    // The panic returns nothing: if the task is ever resumed, it sees 0.
    task.save.frame.rax = 0;
    if crate::recovery::fault::raise(s, me, fault) {
        return;
    }
    if s.tasks[me].is_supervisor() {
        let delay = crate::recovery::restart::supervisor_delay(s, me);
        crate::recovery::restart::restart_from_image(s, me, seq, delay, Some("supervisor panicked"), true);
        return;
    }
    exit(s, me, 101);
}
