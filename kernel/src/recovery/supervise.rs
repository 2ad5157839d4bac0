//! `TASK_CTL`: what a supervisor may do to other tasks.
//!
//! Only a task holding a supervisor capability (the fault server, by its
//! manifest) gets past [`task_ctl`]'s first check; any other gets `Denied`,
//! so no task reads or writes another's registers or memory. A supervisor's
//! rights are scoped: it may act only on a task whose fault endpoint it
//! may receive on (the tasks whose faults it is sent), anything else is
//! `Denied` — so a supervisor cannot touch a task another supervisor
//! handles, nor another supervisor (the fault server has no fault
//! endpoint: no task can act on it). `GET_REGS`, `SET_REGS`, `RESUME` and
//! `ROLLBACK` need the target held for a fault (`FaultHeld`): a running
//! task's registers are in flux, and a blocked one's belong to its call.
//! Registers a
//! supervisor writes are sanitised: ring 3 selectors, no privileged RFLAGS
//! bits, user-half RIP/RSP and canonical FS/GS bases, so a resumed task can
//! never make `iretq` fault in the kernel.

use crate::arch::syscall_entry::{USER_CS, USER_SS};
use crate::events;
use crate::ipc::{Gone, abandon, held};
use crate::mem::space::AddressSpace;
use crate::sched::Scheduler;
use crate::task::{State, TaskId};
use abi::event::Event;
use abi::ipc::task_ctl as op;
use abi::layout::USER_END;
use abi::syscall::Error;
use abi::trap::{REGISTERS_BYTES, Registers};
use recovery::SharedOps;

/// Largest memory or image transfer per call.
const MAX_XFER: usize = 4096;
/// RFLAGS bits a supervisor may set for a task: CF PF AF ZF SF TF DF OF
/// ID. Not AC: the kernel clears it on every entry anyway (`arch`), but a
/// supervisor has no business arming user access for anyone.
const USER_RFLAGS: u64 = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x100 | 0x400 | 0x800 | 0x20_0000;
const RFLAGS_IF: u64 = 0x200;
const RFLAGS_RESERVED_1: u64 = 0x2;

type SysResult = Result<u64, Error>;

pub fn task_ctl(s: &mut Scheduler) -> SysResult {
    let me = s.current_index().ok_or(Error::BadTask)?;
    if !s.tasks[me].is_supervisor() {
        return Err(Error::Denied);
    }
    let f = &s.tasks[me].save.frame;
    let (operation, target_id, a, b, c) = (f.rdi, f.rsi, f.rdx, f.r10, f.r8);
    // Ids are table positions + 1 (no scan); a search if that ever changes.
    let target = TaskId::try_from(target_id)
        .ok()
        .and_then(|id| crate::ipc::endpoint::task_index(&s.tasks, id))
        .or_else(|| s.tasks.iter().position(|t| t.id as u64 == target_id))
        .ok_or(Error::BadTask)?;
    if target == me {
        return Err(Error::BadTask);
    }
    if !s.tasks[target].fault_endpoint().is_some_and(|ep| s.tasks[me].receives_on(ep)) {
        return Err(Error::Denied);
    }
    // Every operation that reads or writes the target's registers, memory
    // or state needs it off every other CPU first: if it runs elsewhere,
    // that CPU is asked to leave it and this call runs again (nothing was
    // done). Those that read only what the kernel keeps under its lock
    // (image, info, regions, scope registers) do not disturb it.
    if !matches!(operation, op::READ_IMAGE | op::TASK_INFO | op::REGIONS | op::SCOPE_REGS) && !s.stop_remote(target) {
        // Off every CPU until this caller's retry — its next system call
        // (`syscall::dispatch` releases the hold, the retried `TASK_CTL`
        // clears it) — not just the two ticks of `stop_remote`, which ran
        // out before a busy or sleeping caller came back. Bounded like a
        // restart's hold.
        let until = s.ticks.saturating_add(crate::recovery::restart::HOLD_MAX_TICKS);
        s.tasks.set_held_until(target, until);
        s.tasks[me].holds = Some(target);
        s.restart_syscall();
        return Ok(0);
    }
    match operation {
        op::GET_REGS => {
            if s.tasks[target].state() != State::FaultHeld {
                return Err(Error::BadTask);
            }
            let regs = s.tasks[target].save.frame.registers();
            let bytes = regs.to_bytes();
            let space = s.tasks[me].space.as_mut().ok_or(Error::BadPointer)?;
            space.write(a, &bytes).map_err(|_| Error::BadPointer)?;
            Ok(0)
        }
        op::SET_REGS => {
            if s.tasks[target].state() != State::FaultHeld {
                return Err(Error::BadTask);
            }
            let mut bytes = [0u8; REGISTERS_BYTES];
            s.tasks[me].space.as_ref().ok_or(Error::BadPointer)?.read(a, &mut bytes).map_err(|_| Error::BadPointer)?;
            let regs = sanitize(Registers::from_bytes(&bytes).ok_or(Error::BadArgument)?)?;
            set_frame(&mut s.tasks[target].save.frame, &regs);
            Ok(0)
        }
        op::READ_MEM | op::WRITE_MEM => {
            let (addr, buf, len) = (a, b, c as usize);
            if len > MAX_XFER {
                return Err(Error::BadArgument);
            }
            let (src, dst) = if operation == op::READ_MEM { (target, me) } else { (me, target) };
            let (src_addr, dst_addr) = if operation == op::READ_MEM { (addr, buf) } else { (buf, addr) };
            // Straight from one space to the other (no bounce buffer); `me`
            // and `target` differ (checked above), so the borrows are disjoint.
            let (src_task, dst_task) = s.tasks.read_write(src, dst);
            let from = src_task.space.as_ref().ok_or(Error::BadTask)?;
            let to = dst_task.space.as_mut().ok_or(Error::BadTask)?;
            AddressSpace::copy_between(from, src_addr, to, dst_addr, len as u64).map_err(|_| Error::BadPointer)?;
            Ok(len as u64)
        }
        op::READ_IMAGE => {
            let (offset, buf, len) = (a as usize, b, (c as usize).min(MAX_XFER));
            let elf = s.tasks[target].spec.elf;
            let chunk = elf.get(offset..).map(|rest| &rest[..len.min(rest.len())]).unwrap_or(&[]);
            s.tasks[me].space.as_mut().ok_or(Error::BadPointer)?.write(buf, chunk).map_err(|_| Error::BadPointer)?;
            Ok(chunk.len() as u64)
        }
        op::RESUME => {
            if s.tasks[target].state() != State::FaultHeld {
                return Err(Error::BadTask);
            }
            s.tasks.set_state_unqueued(target, State::Runnable);
            let t = &mut s.tasks[target];
            let seq = t.fault.take().map_or(0, |f| f.seq);
            events::emit(&Event::Resume { task: t.id as u64, name: &t.name, seq, rip: t.save.frame.rip });
            Ok(0)
        }
        op::RESTART => {
            let delay_ms = a;
            let seq = s.tasks[target].fault.take().map_or(0, |f| f.seq);
            if super::restart::restart_from_image(s, target, seq, delay_ms, None, true) {
                Ok(0)
            } else {
                Err(Error::NoMemory)
            }
        }
        op::STOP => {
            stop(s, target, a, true);
            Ok(0)
        }
        op::ROLLBACK => {
            let depth = a as usize;
            let t = &mut s.tasks[target];
            if t.state() != State::FaultHeld {
                return Err(Error::BadTask);
            }
            let (kind, seq) = t.fault.map_or((0, 0), |f| (f.kind, f.seq));
            let (pages, _) = super::checkpoint::rollback(t, depth, kind, seq, true)?;
            s.tasks.set_state_unqueued(target, State::Runnable);
            held::on_rollback(s, target, depth);
            Ok(pages as u64)
        }
        op::KILL => {
            let t = &s.tasks[target];
            if !t.state().is_alive() || matches!(t.state(), State::FaultPending { .. } | State::FaultHeld) {
                return Err(Error::BadTask);
            }
            let seq = s.next_fault_seq();
            let fault =
                crate::task::PendingFault { kind: abi::fault::FaultKind::Kill as u64, seq, ..Default::default() };
            super::fault::fault(s, target, fault);
            Ok(seq)
        }
        op::STORE32 => {
            let word = word_ptr(&mut s.tasks[target], a, 4)? as *const core::sync::atomic::AtomicU32;
            // SAFETY: `word_ptr` checked that the aligned word is mapped,
            // user-accessible and writable in the target's space, and gave
            // its direct-map address; atomics make the access race-free
            // against tasks using the same word.
            unsafe { &*word }.store(b as u32, core::sync::atomic::Ordering::SeqCst);
            Ok(0)
        }
        op::FETCH_ADD32 => KernelOps::new(s, target).fetch_add32(a, b as i32).map(u64::from),
        op::CAS64 => KernelOps::new(s, target).cas64(a, b, c),
        op::FUTEX_WAKE => KernelOps::new(s, target).futex_wake(a, b),
        op::RECOVER => recover(s, target, a),
        op::REGIONS => {
            let (buf, cap) = (a, b as usize);
            let mut bytes = [0u8; 16 * 16];
            let mut n = 0;
            for cap_ in s.tasks[target].caps.iter().filter(|c| c.kind == abi::ipc::CapKind::Region) {
                if let Some(r) = s.regions.get(cap_.object as usize)
                    && n < 16
                {
                    bytes[n * 16..n * 16 + 8].copy_from_slice(&r.base.to_le_bytes());
                    bytes[n * 16 + 8..n * 16 + 16].copy_from_slice(&r.size().to_le_bytes());
                    n += 1;
                }
            }
            let written = n.min(cap);
            if written > 0 {
                s.tasks[me]
                    .space
                    .as_mut()
                    .ok_or(Error::BadPointer)?
                    .write(buf, &bytes[..written * 16])
                    .map_err(|_| Error::BadPointer)?;
            }
            Ok(n as u64)
        }
        op::SCOPE_REGS => {
            let (depth, buf) = (a as usize, b);
            let t = &s.tasks[target];
            let open = t.scopes.len() as u64;
            if depth == 0 || depth > t.scopes.len() {
                return if depth == 0 { Ok(open) } else { Err(Error::BadArgument) };
            }
            let bytes = t.scopes[depth - 1].frame.registers().to_bytes();
            s.tasks[me].space.as_mut().ok_or(Error::BadPointer)?.write(buf, &bytes).map_err(|_| Error::BadPointer)?;
            Ok(open)
        }
        op::TASK_INFO => {
            let t = &s.tasks[target];
            let mut name = [0u8; abi::image::NAME_LEN];
            name[..t.name.len()].copy_from_slice(t.name.as_bytes());
            let info = abi::ipc::TaskInfo {
                id: t.id as u64,
                priority: t.priority() as u64,
                watchdog_ms: t.spec.watchdog_ms as u64,
                max_restarts: t.spec.max_restarts as u64,
                restart_window_ms: t.spec.restart_window_ms as u64,
                restarts: t.restarts,
                scopes: t.scopes.len() as u64,
                name,
                core_dumps: t.spec.core_dumps as u64,
            };
            s.tasks[me]
                .space
                .as_mut()
                .ok_or(Error::BadPointer)?
                .write(a, &info.to_bytes())
                .map_err(|_| Error::BadPointer)?;
            Ok(0)
        }
        _ => Err(Error::BadArgument),
    }
}

/// `TASK_CTL RECOVER`: the releases and the final action for a held fault,
/// all or nothing as far as the supervisor can tell (the kernel holds its
/// one lock throughout, and checks everything that can be refused before
/// it changes anything). Each release's outcome and the action's result are
/// written back into the request.
fn recover(s: &mut Scheduler, target: usize, req: u64) -> SysResult {
    use abi::ipc::recover::{self as r, Header, ReleaseOp};
    let entered = crate::arch::rdtsc();
    const MAX: usize = r::HEADER_SIZE + r::MAX_RELEASE_OPS * r::OP_SIZE;
    let me = s.current_index().ok_or(Error::BadTask)?;
    let space = s.tasks[me].space.as_mut().ok_or(Error::BadPointer)?;
    // The request is read and answered in place when it lies in one
    // writable page of the caller (libtask's does: no copies in and out);
    // otherwise through a copy.
    // Only a failed in-place request pays for (and zeroes) the copy.
    let mut copy: [u64; MAX.div_ceil(8)];
    let fits = |b: &[u8]| {
        let count = bytemuck::pod_read_unaligned::<Header>(&b[..r::HEADER_SIZE]).count as usize;
        count <= r::MAX_RELEASE_OPS && r::HEADER_SIZE + count * r::OP_SIZE <= b.len()
    };
    let (raw, in_place): (&mut [u8], bool) = match request_in_place(space, req).filter(|b| fits(b)) {
        Some(bytes) => (bytes, true),
        None => {
            copy = [0; MAX.div_ceil(8)];
            let copy: &mut [u8] = bytemuck::cast_slice_mut(&mut copy[..]);
            space.read(req, &mut copy[..r::HEADER_SIZE]).map_err(|_| Error::BadPointer)?;
            let count = bytemuck::pod_read_unaligned::<Header>(&copy[..r::HEADER_SIZE]).count as usize;
            if count > r::MAX_RELEASE_OPS {
                return Err(Error::BadArgument);
            }
            let len = r::HEADER_SIZE + count * r::OP_SIZE;
            // The whole request must be writable: outcomes are written back.
            space.check_writable(req, len as u64).map_err(|_| Error::BadPointer)?;
            space.read(req + r::HEADER_SIZE as u64, &mut copy[r::HEADER_SIZE..len]).map_err(|_| Error::BadPointer)?;
            (copy, false)
        }
    };
    // Both are 8-aligned (the page piece starts at an 8-aligned `req`; the
    // copy is `u64`s): the header and the operations are used in place.
    let (head, rest) = raw.split_at_mut(r::HEADER_SIZE);
    let h: &mut Header = bytemuck::try_from_bytes_mut(head).map_err(|_| Error::BadPointer)?;
    h.tsc_entered = entered;
    h.cpu = crate::arch::percpu::cpu() as u32;
    let count = h.count as usize;
    let len = r::HEADER_SIZE + count * r::OP_SIZE;
    if count > r::MAX_RELEASE_OPS || count * r::OP_SIZE > rest.len() {
        return Err(Error::BadArgument);
    }
    let release_ops: &mut [ReleaseOp] =
        bytemuck::try_cast_slice_mut(&mut rest[..count * r::OP_SIZE]).map_err(|_| Error::BadPointer)?;
    let t = &s.tasks[target];
    let (kind, seq) = match t.fault {
        Some(f) if t.state() == State::FaultHeld && f.seq == h.seq => (f.kind, f.seq),
        _ => return Err(Error::BadTask),
    };
    match h.action {
        r::ROLLBACK if h.arg >= 1 && h.arg <= t.scopes.len() as u64 && t.space.is_some() => {}
        r::RESTART | r::STOP => {}
        _ => return Err(Error::BadArgument),
    }
    let id = t.id;
    // One translation cache for the whole batch: a region's mutexes and
    // Arc slots mostly share a page.
    let mut ops = KernelOps::new(s, target);
    for op in release_ops.iter_mut() {
        let done = match recovery::Action::from_op(op) {
            Some(action) => recovery::execute(&action, id as u64, &mut ops),
            None => Err(Error::BadArgument),
        };
        (op.outcome, op.value, op.extra) = match done {
            Ok(outcome) => outcome.to_words(),
            Err(e) => (r::FAILED, e.to_raw(), 0),
        };
    }
    h.tsc_released = crate::arch::rdtsc();
    match h.action {
        r::ROLLBACK => {
            let (pages, attempt) = super::checkpoint::rollback(&mut s.tasks[target], h.arg as usize, kind, seq, false)?;
            s.tasks.set_state_unqueued(target, State::Runnable);
            held::on_rollback(s, target, h.arg as usize);
            (h.result, h.attempt) = (pages as u64, attempt);
        }
        r::RESTART => {
            s.tasks[target].fault = None;
            if !super::restart::restart_from_image(s, target, seq, h.arg, None, false) {
                return Err(Error::NoMemory);
            }
            h.result = s.tasks[target].restarts;
        }
        _ => {
            h.result = s.tasks[target].restarts;
            stop(s, target, h.arg, false);
        }
    }
    h.tsc_done = crate::arch::rdtsc();
    let flags = h.flags;
    let now = s.ticks;
    let caller = &mut s.tasks[me];
    if !in_place {
        caller.space.as_mut().ok_or(Error::BadPointer)?.write(req, &raw[..len]).map_err(|_| Error::BadPointer)?;
    }
    if flags & r::LOWER_CALLER != 0 {
        s.tasks.set_priority(me, abi::syscall::PRIORITY_LOWEST.max(s.tasks[me].spec.priority));
        if s.tasks[me].is_lowered() && s.tasks[me].lowered_since().is_none() {
            s.tasks.set_lowered_since(me, Some(now));
            crate::sched::arm_next_tick();
        }
    }
    Ok(0)
}

/// The `RECOVER` request at `req` in the caller's memory, as bytes seen
/// through the direct map from `req` (8-aligned) to the end of its page — if that page
/// is present, user-accessible and writable right now (not shared, not
/// tracked by a scope: a write then needs no preservation first) and
/// holds at least the header. The caller is the current task and the
/// kernel holds its lock, so nothing else writes the page meanwhile; the
/// slice is used only within the `RECOVER` call.
fn request_in_place(space: &mut crate::mem::space::AddressSpace, req: u64) -> Option<&'static mut [u8]> {
    use crate::recovery::versions::{SHARED, TRACKED};
    use abi::layout::PAGE_SIZE;
    use x86_64::structures::paging::PageTableFlags as F;
    let room = PAGE_SIZE - (req & (PAGE_SIZE - 1));
    if req >= USER_END || !req.is_multiple_of(8) || room < abi::ipc::recover::HEADER_SIZE as u64 {
        return None;
    }
    let (phys, flags) = space.translate(req)?;
    if !flags.contains(F::USER_ACCESSIBLE | F::WRITABLE) || flags.intersects(SHARED | TRACKED) {
        return None;
    }
    // SAFETY: `phys .. phys + room` is the rest of a present, writable
    // user page of the current task, in the direct map (checked above);
    // see the function's note for why no one else touches it meanwhile.
    Some(unsafe { core::slice::from_raw_parts_mut(crate::mem::phys_to_virt(phys.as_u64()) as *mut u8, room as usize) })
}

/// The kernel's atomic operations on a task's memory, for releases
/// (`recovery::execute`): shared regions are mapped at the same address in
/// every holder, so the faulted task's addresses are the ones used. The
/// last page translated is kept: a release's operations (a mutex's CAS and
/// its wake, an Arc's count) mostly touch one page.
pub(crate) struct KernelOps<'a> {
    s: &'a mut Scheduler,
    target: usize,
    /// `(page, its frame's direct-map address, user-writable)`.
    last: Option<(u64, u64, bool)>,
}

impl<'a> KernelOps<'a> {
    pub(crate) fn new(s: &'a mut Scheduler, target: usize) -> KernelOps<'a> {
        KernelOps { s, target, last: None }
    }

    /// The direct-map address of the `n`-byte aligned word at `addr`,
    /// checked mapped, user and writable (a tracked private page is
    /// preserved first, so the change is rolled back with its scope).
    fn word(&mut self, addr: u64, n: u64) -> Result<u64, Error> {
        use abi::layout::PAGE_SIZE;
        if !addr.is_multiple_of(n) || addr >= USER_END {
            return Err(Error::BadArgument);
        }
        let page = addr & !(PAGE_SIZE - 1);
        if let Some((p, virt, writable)) = self.last
            && p == page
        {
            return if writable { Ok(virt + (addr - page)) } else { Err(Error::BadPointer) };
        }
        let virt = word_ptr(&mut self.s.tasks[self.target], page, 8);
        self.last = Some((page, virt.unwrap_or(0), virt.is_ok()));
        Ok(virt? + (addr - page))
    }
}

impl recovery::SharedOps for KernelOps<'_> {
    type Error = Error;

    fn cas64(&mut self, addr: u64, old: u64, new: u64) -> Result<u64, Error> {
        let word = self.word(addr, 8)? as *const core::sync::atomic::AtomicU64;
        // SAFETY: `word` checked that the aligned u64 is mapped,
        // user-accessible and writable in the task's space, and gave its
        // direct-map address; atomics make the access race-free against
        // tasks using the same word.
        let word = unsafe { &*word };
        use core::sync::atomic::Ordering::SeqCst;
        Ok(match word.compare_exchange(old, new, SeqCst, SeqCst) {
            Ok(v) | Err(v) => v,
        })
    }

    fn fetch_add32(&mut self, addr: u64, delta: i32) -> Result<u32, Error> {
        let word = self.word(addr, 4)? as *const core::sync::atomic::AtomicU32;
        // SAFETY: as for `cas64`, for an aligned u32.
        let word = unsafe { &*word };
        Ok(word.fetch_add(delta as u32, core::sync::atomic::Ordering::SeqCst))
    }

    fn futex_wake(&mut self, addr: u64, n: u64) -> Result<u64, Error> {
        // Checked writable like the other operations; the key is the
        // word's physical address in a shared region, (task, address) in
        // private memory (`ipc::futex`).
        self.word(addr, 4)?;
        let (key, _) = crate::ipc::futex::key(&self.s.tasks[self.target], addr)?;
        Ok(crate::ipc::futex::wake_key(self.s, key, n))
    }
}

/// The direct-map address of the `n`-byte aligned word at `addr` in
/// `task`'s space, checked mapped, user and writable (a tracked private page
/// is preserved first, so the change is rolled back with its scope).
fn word_ptr(task: &mut crate::task::Task, addr: u64, n: u64) -> Result<u64, Error> {
    use crate::recovery::versions::{SHARED, TRACKED};
    use x86_64::structures::paging::PageTableFlags as F;
    if !addr.is_multiple_of(n) || addr >= USER_END {
        return Err(Error::BadArgument);
    }
    let space = task.space.as_mut().ok_or(Error::BadTask)?;
    let (mut phys, mut flags) = space.translate(addr).ok_or(Error::BadPointer)?;
    if flags.contains(TRACKED) && !flags.contains(SHARED) {
        space.preserve_on_write(addr);
        (phys, flags) = space.translate(addr).ok_or(Error::BadPointer)?;
    }
    if !flags.contains(F::USER_ACCESSIBLE | F::WRITABLE) {
        return Err(Error::BadPointer);
    }
    Ok(crate::mem::phys_to_virt(phys.as_u64()))
}

/// Stops task `target` for good with reason code `reason` (`escalate`,
/// unless a batched `RECOVER` leaves the report to the supervisor).
fn stop(s: &mut Scheduler, target: usize, reason: u64, emit: bool) {
    let seq = s.tasks[target].fault.take().map_or(0, |f| f.seq);
    let id = s.tasks[target].id;
    abandon(s, id, Gone::Ended);
    s.tasks.set_state(target, State::Stopped);
    let t = &mut s.tasks[target];
    t.space = None;
    if !emit {
        return;
    }
    events::emit(&Event::Escalate {
        task: id as u64,
        name: Some(&t.name),
        seq,
        action: "stop",
        reason_code: Some(reason),
        reason: None,
        restarts: Some(t.restarts),
        from_scope: None,
        retries_in_window: None,
        window_ms: None,
    });
}

/// `rflags` as a ring-3 task may hold it: its own arithmetic and control
/// bits kept, IF set, IOPL 0, no NT, VM, RF (what `TASK_CTL SET_REGS` and
/// the fault injector's `regflip` leave in a frame).
pub fn user_rflags(rflags: u64) -> u64 {
    (rflags & USER_RFLAGS) | RFLAGS_IF | RFLAGS_RESERVED_1
}

fn sanitize(mut r: Registers) -> Result<Registers, Error> {
    if r.rip >= USER_END || r.rsp >= USER_END || r.fs_base >= USER_END || r.gs_base >= USER_END {
        return Err(Error::BadArgument);
    }
    r.cs = USER_CS;
    r.ss = USER_SS;
    r.rflags = user_rflags(r.rflags);
    Ok(r)
}

pub fn set_frame(f: &mut crate::arch::trap_entry::TrapFrame, r: &Registers) {
    f.rax = r.rax;
    f.rbx = r.rbx;
    f.rcx = r.rcx;
    f.rdx = r.rdx;
    f.rsi = r.rsi;
    f.rdi = r.rdi;
    f.rbp = r.rbp;
    f.r8 = r.r8;
    f.r9 = r.r9;
    f.r10 = r.r10;
    f.r11 = r.r11;
    f.r12 = r.r12;
    f.r13 = r.r13;
    f.r14 = r.r14;
    f.r15 = r.r15;
    f.rip = r.rip;
    f.rsp = r.rsp;
    f.rflags = r.rflags;
    f.cs = r.cs;
    f.ss = r.ss;
    f.fs_base = r.fs_base;
    f.gs_base = r.gs_base;
}
