//! The fault injector: the kernel side of `cargo xtask inject`.
//!
//! Injections are armed from a *plan* (text appended to the boot image by
//! xtask; see `command.rs`) or typed live on the control channel (COM2's
//! receive side, polled at every timer tick; only the kernel reads it — a
//! task cannot reach the UART). Under `-icount shift=0,sleep=off` a plan
//! makes the whole run deterministic: same plan, byte-identical events.
//!
//! An injection fires at a tick, a TSC value (guest instructions) or when
//! the target reaches a pc (a one-shot `int3` patched into its text, then
//! optionally single-stepping `steps` more instructions with TF), always at
//! an instruction boundary of the *running* target, and acts on its saved
//! frame: a synthetic CPU fault (ud, pf, de, gp) that takes the normal fault
//! path; a bit flip in a register (RIP and RSP included), in private memory
//! (preserved first, like a write of the task's own) or in a shared region;
//! skipping an instruction; a kill; or a hang (the task is sent to a page
//! holding `jmp $`, and the watchdog or a kill finds it at its real pc).

pub mod command;

use crate::events;
use crate::sched::Scheduler;
use crate::task::{PendingFault, State};
use abi::event::{Event, InjectDetail};
use abi::fault::FaultKind;
use command::{Command, Kind, Spec, Trigger};
use spin::Mutex;

const MAX_PENDING: usize = 64;

/// An `int3` placed at a pc of a task.
#[derive(Clone, Copy)]
struct Breakpoint {
    spec_index: usize,
    task: crate::task::TaskId,
    pc: u64,
    original: u8,
    hit: bool,
    steps_left: u64,
}

struct Injector {
    pending: heapless::Vec<(Spec, bool), MAX_PENDING>,
    /// Which pending injections may act (bit i: `pending[i]`; `seed`'s
    /// second number). A cleared one is dropped when it would act.
    enabled: u64,
    breakpoints: heapless::Vec<Breakpoint, MAX_PENDING>,
    rng: u64,
    line: heapless::String<256>,
    injected: u64,
}

static INJECTOR: Mutex<Injector> = Mutex::new(Injector {
    pending: heapless::Vec::new(),
    enabled: u64::MAX,
    breakpoints: heapless::Vec::new(),
    rng: 0x9e37_79b9_7f4a_7c15,
    line: heapless::String::new(),
    injected: 0,
});

impl Injector {
    /// Whether `pending[i]` may act (the plan's mask; see `command`).
    fn may_act(&self, i: usize) -> bool {
        i >= 64 || self.enabled & (1 << i) != 0
    }

    /// xorshift64*: deterministic for a given seed.
    fn next(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Runs the plan appended to the boot image.
pub fn load_plan(s: &mut Scheduler, text: &str) {
    for line in text.lines() {
        execute_line(s, line);
    }
}

fn execute_line(s: &mut Scheduler, line: &str) {
    match command::parse(line) {
        Ok(None) => {}
        Ok(Some(cmd)) => execute(s, cmd),
        Err(e) => events::emit(&Event::InjectError { id: None, line: Some(line), error: e }),
    }
}

fn execute(s: &mut Scheduler, cmd: Command) {
    match cmd {
        Command::Seed { seed, enabled } => {
            let mut inj = INJECTOR.lock();
            inj.rng = seed.max(1);
            inj.enabled = enabled;
        }
        Command::Inject(spec) => {
            let mut inj = INJECTOR.lock();
            if inj.pending.push((spec.clone(), false)).is_err() {
                events::emit(&Event::InjectError { id: Some(spec.id), line: None, error: "too many injections armed" });
                return;
            }
            let index = inj.pending.len() - 1;
            drop(inj);
            if let Trigger::Pc { pc, steps } = spec.at {
                arm_breakpoint(s, index, &spec, pc, steps);
            }
            events::emit(&Event::InjectArmed { id: spec.id, kind: spec.kind.name() });
        }
        Command::List => {
            for t in s.tasks.iter() {
                let state = events::text::<128>(format_args!("{:?}", t.state()));
                events::emit(&Event::TaskInfo {
                    task: t.id as u64,
                    name: &t.name,
                    state: &state,
                    scopes: t.scopes.len() as u64,
                    restarts: t.restarts,
                });
            }
        }
        Command::Stats => {
            let alive = s.tasks.iter().filter(|t| t.state().is_alive()).count() as u64;
            let inj = INJECTOR.lock();
            events::emit(&Event::Stats {
                ticks: s.ticks,
                tasks: s.tasks.len() as u64,
                alive,
                injected: inj.injected,
                armed: inj.pending.iter().filter(|(_, done)| !done).count() as u64,
                free_frames: crate::mem::frames::free_count() as u64,
            });
        }
    }
}

fn arm_breakpoint(s: &mut Scheduler, spec_index: usize, spec: &Spec, pc: u64, steps: u64) {
    let target = spec.task.as_ref().and_then(|n| s.tasks.iter().position(|t| t.name == *n));
    let armed = target.and_then(|i| {
        let t = &s.tasks[i];
        // The pristine byte comes from the ELF, so re-arming is idempotent.
        let original = original_byte(t, pc)?;
        let byte = text_byte(t, pc)?;
        // SAFETY: `text_byte` checked `pc` is mapped user memory of the task;
        // the write goes through the direct map into its own text frame.
        unsafe { *byte = 0xcc };
        Some(Breakpoint { spec_index, task: t.id, pc, original, hit: false, steps_left: steps })
    });
    match armed {
        Some(b) => {
            let _ = INJECTOR.lock().breakpoints.push(b);
        }
        None => events::emit(&Event::InjectError {
            id: Some(spec.id),
            line: None,
            error: "pc is not in the named task's text",
        }),
    }
}

/// Whether task `t`'s saved rip is right after a `syscall` (`0f 05`) of
/// its pristine text: it is back from a system call and has run no
/// instruction since (see `on_tick`). An instruction that merely ends in
/// those two bytes (an immediate) is taken for one too: that point is
/// skipped, a bias of one instruction where it occurs.
fn follows_syscall(t: &crate::task::Task) -> bool {
    let rip = t.save.frame.rip;
    rip >= 2 && original_byte(t, rip - 2) == Some(0x0f) && original_byte(t, rip - 1) == Some(0x05)
}

/// Whether task `t` is at its ELF entry point with nothing run yet.
fn at_entry(t: &crate::task::Task) -> bool {
    use object::read::elf::FileHeader;
    let Ok(header) = object::elf::FileHeader64::<object::LittleEndian>::parse(t.spec.elf) else { return false };
    let Ok(endian) = header.endian() else { return false };
    t.save.frame.rip == header.e_entry(endian)
}

/// Direct-map pointer to the text byte at `pc` of task `t`.
fn text_byte(t: &crate::task::Task, pc: u64) -> Option<*mut u8> {
    let space = t.space.as_ref()?;
    let (phys, flags) = space.translate(pc)?;
    if !flags.contains(x86_64::structures::paging::PageTableFlags::USER_ACCESSIBLE) {
        return None;
    }
    Some(crate::mem::phys_to_virt(phys.as_u64()) as *mut u8)
}

/// The byte at `pc` in the task's ELF (its pristine text).
fn original_byte(t: &crate::task::Task, pc: u64) -> Option<u8> {
    use object::read::elf::{FileHeader, ProgramHeader};
    let data = t.spec.elf;
    let header = object::elf::FileHeader64::<object::LittleEndian>::parse(data).ok()?;
    let endian = header.endian().ok()?;
    for ph in header.program_headers(endian, data).ok()? {
        let (vaddr, filesz, offset) = (ph.p_vaddr(endian), ph.p_filesz(endian), ph.p_offset(endian));
        if ph.p_type(endian) == object::elf::PT_LOAD && pc >= vaddr && pc < vaddr + filesz {
            return data.get((offset + pc - vaddr) as usize).copied();
        }
    }
    None
}

/// Polls the control channel (COM2 receive); runs complete lines.
pub fn poll_control(s: &mut Scheduler) {
    while let Some(byte) = crate::events::try_read_byte() {
        let mut inj = INJECTOR.lock();
        if byte == b'\n' || byte == b'\r' {
            let line = core::mem::take(&mut inj.line);
            drop(inj);
            execute_line(s, &line);
        } else if inj.line.push(byte as char).is_err() {
            inj.line.clear();
            drop(inj);
            events::emit(&Event::InjectError { id: None, line: None, error: "control line longer than 256 bytes" });
        }
    }
}

/// At every timer tick that interrupted task `current` (None: the kernel
/// idled): fires due time/TSC injections whose target is running.
pub fn on_tick(s: &mut Scheduler, current: Option<usize>) {
    poll_control(s);
    let now_tsc = crate::arch::rdtsc();
    let ticks = s.ticks;
    let mut inj = INJECTOR.lock();
    for i in 0..inj.pending.len() {
        let (spec, done) = inj.pending[i].clone();
        if done {
            continue;
        }
        let due = match spec.at {
            Trigger::Tick(t) => ticks >= t,
            Trigger::Tsc(t) => now_tsc >= t,
            Trigger::Pc { .. } => false,
        };
        if !due {
            continue;
        }
        // The target: named, or a random live task that is not a supervisor.
        let target = match &spec.task {
            Some(name) => s.tasks.iter().position(|t| t.name == *name),
            None => {
                let live: heapless::Vec<usize, 64> = s
                    .tasks
                    .iter()
                    .enumerate()
                    .filter(|(_, t)| t.state().is_alive() && !t.is_supervisor())
                    .map(|(i, _)| i)
                    .collect();
                if live.is_empty() { None } else { Some(live[(inj.next() % live.len() as u64) as usize]) }
            }
        };
        let Some(target) = target else {
            inj.pending[i].1 = true;
            events::emit(&Event::InjectMissed { id: spec.id, reason: "no such task" });
            continue;
        };
        let t = &s.tasks[target];
        if !t.state().is_alive() {
            inj.pending[i].1 = true;
            events::emit(&Event::InjectMissed { id: spec.id, reason: "task not alive" });
            continue;
        }
        // At most one unresolved injection per task, so every fault can be
        // blamed on exactly one: a due injection waits (stays armed) while
        // the previous one into this task has had no effect yet — no fault,
        // no restart — for less than `SETTLE_TICKS`.
        if let Some((at, faults, restarts)) = t.injected_at
            && t.faults == faults
            && t.restarts == restarts
            && ticks.saturating_sub(at) < SETTLE_TICKS
        {
            continue;
        }
        // Asynchronous kinds act on a task wherever it is; the others need it
        // interrupted in user mode, i.e. running right now.
        let anywhere = matches!(spec.kind, Kind::Kill | Kind::MemFlip | Kind::SharedFlip);
        let ok_state = !matches!(t.state(), State::FaultPending { .. } | State::FaultHeld);
        if !ok_state || !(anywhere || current == Some(target)) {
            continue;
        }
        // A tick that interrupted the task right after a `syscall` expired
        // while the task was in the kernel (interrupts are masked there),
        // so it is delivered before the first user instruction after the
        // call: firing there would put every such injection on that one
        // instruction (64 % of a campaign's once landed after
        // `CHECKPOINT_OPEN`). Wait for a tick that expired in user mode:
        // those land on user instructions uniformly, each as likely as the
        // time the task spends on it (exactly so under icount).
        if !anywhere && follows_syscall(&s.tasks[target]) {
            continue;
        }
        // Likewise a tick that expired while the kernel handled one of the
        // task's exceptions itself and resumed it (a copy-on-write
        // preserve: the first write to each page a scope tracks): it lands
        // on the instruction that faulted. Once, 182 of a pipeline
        // consumer's 377 fired injections of these kinds hit its first
        // store to the recovery page after a renew.
        let t = &s.tasks[target];
        if !anywhere && t.resumed_at != 0 && t.resumed_at == t.save.frame.rip {
            continue;
        }
        // "Wherever it is" stops at another CPU: a task running there is
        // asked to leave it, and the injection fires at a later tick
        // (`Scheduler::stop_remote`); its frame is not read before.
        if current != Some(target) && !s.stop_remote(target) {
            continue;
        }
        // Nor at a task that has not run its first instruction yet (at
        // boot, or just restarted from its image): there is nothing of it
        // to hit — a kill there is a restart of a task that never ran —
        // and it spends no user time there.
        if at_entry(&s.tasks[target]) {
            continue;
        }
        inj.pending[i].1 = true;
        if !inj.may_act(i) {
            continue; // disabled by the plan: dropped here, without a trace
        }
        inj.injected += 1;
        let rand = inj.next();
        drop(inj);
        let t = &mut s.tasks[target];
        t.injected_at = Some((ticks, t.faults, t.restarts));
        apply(s, target, &spec, rand);
        inj = INJECTOR.lock();
    }
}

/// How long an injection with no visible effect (no fault, no restart of
/// its task) holds back the next injection into the same task: ticks
/// (ms). Effects that take longer to show are blamed on the latest
/// injection, as before.
pub const SETTLE_TICKS: u64 = 10;

/// A `#BP` or `#DB` from task `current`: returns true if it was ours.
pub fn on_debug_trap(s: &mut Scheduler, current: usize, vector: u64) -> bool {
    let id = s.tasks[current].id;
    let rip = s.tasks[current].save.frame.rip;
    let mut inj = INJECTOR.lock();
    // A task may have several breakpoints armed: a #BP is the one at the
    // pc it trapped at (rip is past the int3), a #DB the one stepping.
    let Some(b) = inj
        .breakpoints
        .iter_mut()
        .find(|b| b.task == id && if vector == 3 { !b.hit && rip.wrapping_sub(1) == b.pc } else { b.hit })
    else {
        return false;
    };
    let frame = &mut s.tasks[current].save.frame;
    if vector == 3 {
        if frame.rip.wrapping_sub(1) != b.pc {
            return false;
        }
        b.hit = true;
        frame.rip = b.pc;
        if let Some(byte) = text_byte(&s.tasks[current], b.pc) {
            // SAFETY: the same mapped text byte we patched.
            unsafe { *byte = b.original };
        }
    } else if b.steps_left > 0 {
        b.steps_left -= 1;
    }
    let frame = &mut s.tasks[current].save.frame;
    const TF: u64 = 1 << 8;
    if b.steps_left > 0 {
        frame.rflags |= TF;
        return true;
    }
    frame.rflags &= !TF;
    let spec_index = b.spec_index;
    let removed = inj.breakpoints.iter().position(|x| x.task == id && x.hit && x.steps_left == 0);
    if let Some(r) = removed {
        inj.breakpoints.swap_remove(r);
    }
    let (spec, _) = inj.pending[spec_index].clone();
    inj.pending[spec_index].1 = true;
    if !inj.may_act(spec_index) {
        return true; // disabled by the plan: the trap was ours, nothing acts
    }
    inj.injected += 1;
    let rand = inj.next();
    drop(inj);
    apply(s, current, &spec, rand);
    true
}

fn apply(s: &mut Scheduler, idx: usize, spec: &Spec, rand: u64) {
    let t = &mut s.tasks[idx];
    let rip = t.save.frame.rip;
    let mut detail = InjectDetail::None;
    let synthetic = |vector: u64, error_code: u64, cr2: u64| (vector, error_code, cr2);
    let fault = match spec.kind {
        Kind::InvalidOpcode => Some(synthetic(6, 0, 0)),
        Kind::DivideError => Some(synthetic(0, 0, 0)),
        Kind::GeneralProtection => Some(synthetic(13, 0, 0)),
        Kind::PageFault => {
            let addr = if spec.addr != 0 { spec.addr } else { rand & 0x0000_7fff_ffff_fff8 };
            detail = InjectDetail::PageFault { cr2: addr };
            Some(synthetic(14, 0b100, addr))
        }
        Kind::RegFlip => {
            let mut regs = t.save.frame.registers();
            let named = regs.named();
            let (name, before) = named[spec.reg as usize % named.len()];
            let mut after = before ^ (1 << spec.bit);
            if name == "rflags" {
                // A bit a ring-3 task cannot hold (IF, IOPL, NT, VM, RF) is
                // not flipped: IOPL 3 would let the task `cli` and keep the
                // CPU; the flip then has no effect (`after` says so).
                after = crate::recovery::supervise::user_rflags(after);
            }
            set_register(&mut regs, spec.reg as usize, after);
            crate::recovery::supervise::set_frame(&mut t.save.frame, &regs);
            detail = InjectDetail::RegFlip { reg: name, bit: spec.bit as u64, before, after };
            None
        }
        Kind::MemFlip | Kind::SharedFlip => {
            let (addr, bit) = flip_target(s, idx, spec, rand);
            let t = &mut s.tasks[idx];
            match addr.and_then(|a| flip_bit(t, a, bit).map(|_| a)) {
                Some(a) => detail = InjectDetail::MemFlip { addr: a, bit: bit as u64 },
                None => detail = InjectDetail::Missed { missed: "no memory to flip" },
            }
            None
        }
        Kind::Skip => {
            t.save.frame.rip = rip.wrapping_add(spec.len);
            detail = InjectDetail::Skip { len: spec.len };
            None
        }
        Kind::Hang => {
            // A second hang of a task already spinning on the hang page
            // keeps the pc it really was at (found by `faults/kv-storm.toml`:
            // the hang page as the "real" pc made its fault unwalkable).
            t.hang_rip.get_or_insert(rip);
            t.save.frame.rip = abi::layout::USER_HANG_PAGE;
            None
        }
        Kind::Kill => None,
    };
    let seq = if fault.is_some() || spec.kind == Kind::Kill { s.next_fault_seq() } else { 0 };
    let t = &s.tasks[idx];
    events::emit(&Event::Inject {
        id: spec.id,
        task: t.id as u64,
        name: &t.name,
        kind: spec.kind.name(),
        rip,
        detail,
        seq: (seq != 0).then_some(seq),
    });
    let pending = match (fault, spec.kind) {
        (Some((vector, error_code, cr2)), _) => Some(PendingFault {
            kind: FaultKind::Exception as u64,
            vector,
            error_code,
            cr2,
            seq,
            ..PendingFault::default()
        }),
        (None, Kind::Kill) => Some(PendingFault { kind: FaultKind::Kill as u64, seq, ..PendingFault::default() }),
        _ => None,
    };
    if let Some(p) = pending {
        crate::recovery::fault::fault(s, idx, p);
    }
}

fn set_register(r: &mut abi::trap::Registers, index: usize, value: u64) {
    let mut bytes = r.to_bytes();
    bytes[index * 8..index * 8 + 8].copy_from_slice(&value.to_le_bytes());
    if let Some(new) = abi::trap::Registers::from_bytes(&bytes) {
        *r = new;
    }
}

/// Where a memory flip lands: the given address, or a random byte of a
/// random private writable page (memflip) or shared region (sharedflip).
fn flip_target(s: &mut Scheduler, idx: usize, spec: &Spec, rand: u64) -> (Option<u64>, u8) {
    let bit = (spec.bit as u64 % 8) as u8;
    if spec.addr != 0 {
        return (Some(spec.addr), bit);
    }
    if spec.kind == Kind::SharedFlip {
        let t = &s.tasks[idx];
        let regions: heapless::Vec<&crate::mem::region::Region, 16> = t
            .caps
            .iter()
            .filter(|c| c.kind == abi::ipc::CapKind::Region)
            .filter_map(|c| s.regions.get(c.object as usize))
            .filter(|r| r.pages > 0)
            .collect();
        if regions.is_empty() {
            return (None, bit);
        }
        let r = regions[(rand % regions.len() as u64) as usize];
        return (Some(r.base + (rand >> 8) % r.size()), bit);
    }
    let pages = s.tasks[idx].space.as_mut().and_then(|sp| sp.private_writable_page(rand));
    (pages.map(|p| p + ((rand >> 20) % 4096)), bit)
}

fn flip_bit(t: &mut crate::task::Task, addr: u64, bit: u8) -> Option<()> {
    let space = t.space.as_mut()?;
    let mut b = [0u8; 1];
    space.read(addr, &mut b).ok()?;
    b[0] ^= 1 << bit;
    // `write_as_kernel` preserves a tracked page first: a flip inside a
    // checkpoint scope is rolled back like the task's own writes. Shared
    // pages are never rolled back.
    space.write_as_kernel(addr, &b, false).ok()
}
