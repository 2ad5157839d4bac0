//! Tasks: the unit of isolation, scheduling and (later) recovery.
//!
//! A task owns an address space, a name and priority from its manifest
//! entry, and a *save area*: its trap frame, which is where the CPU and the
//! entry stubs put its registers whenever it enters the kernel (TSS.RSP0
//! points at the end of the current task's save area). So switching tasks is
//! choosing which save area to return through; nothing is copied. Tasks are
//! boxed so save areas never move.

pub mod boot_image;

pub mod loader;

use crate::arch::syscall_entry::{USER_CS, USER_SS};
use crate::arch::trap_entry::TrapFrame;
use crate::mem::space::AddressSpace;
use crate::sched::table::Key;
use abi::image::TaskSpec;
use abi::layout::{USER_MAP_BASE, USER_STACK_TOP};

pub type TaskId = u32;

/// A tick deadline; 0 means none.
pub type Deadline = u64;

/// Where a task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Runnable,
    Sleeping {
        until_tick: u64,
    },
    /// In `send`/`call` on endpoint `ep`, waiting for a receiver. `since`
    /// orders waiting senders (first come, first served).
    SendBlocked {
        ep: u16,
        call: bool,
        badge: u64,
        since: u64,
    },
    /// In `recv` on endpoint `ep`.
    RecvBlocked {
        ep: u16,
        deadline: Deadline,
    },
    /// Its `call` was received; waiting for `server`'s reply.
    ReplyBlocked {
        server: TaskId,
    },
    /// In `wait` on notification `n`.
    WaitBlocked {
        n: u16,
        deadline: Deadline,
    },
    /// In `futex_wait` on the word of futex key `key` (`ipc::futex`).
    FutexWait {
        key: u64,
        deadline: Deadline,
        since: u64,
    },
    /// Faulted; its fault message waits for a receiver on endpoint `ep`.
    FaultPending {
        ep: u16,
        since: u64,
    },
    /// Its fault message was delivered; waiting for the supervisor's decision.
    FaultHeld,
    Exited {
        code: i64,
    },
    /// Stopped by a fault nobody handles (no fault endpoint).
    Faulted {
        vector: u8,
    },
    /// Stopped by its supervisor.
    Stopped,
}

impl State {
    /// Not ended: the task may still run.
    pub fn is_alive(self) -> bool {
        !matches!(self, State::Exited { .. } | State::Faulted { .. } | State::Stopped)
    }

    /// Will become runnable by the clock alone (sleep, or a timeout).
    pub fn has_deadline(self) -> bool {
        match self {
            State::Sleeping { .. } => true,
            State::RecvBlocked { deadline, .. }
            | State::WaitBlocked { deadline, .. }
            | State::FutexWait { deadline, .. } => deadline != 0,
            _ => false,
        }
    }
}

/// A capability held by a task (see `abi::ipc`).
#[derive(Clone, Debug)]
pub struct Cap {
    pub name: heapless::String<{ abi::image::NAME_LEN }>,
    pub kind: abi::ipc::CapKind,
    pub rights: abi::ipc::Rights,
    pub object: u32,
    pub badge: u64,
}

/// A fault whose message is not yet delivered (or just was).
#[derive(Clone, Copy, Debug)]
pub struct PendingFault {
    pub kind: u64,
    pub vector: u64,
    pub error_code: u64,
    pub cr2: u64,
    pub seq: u64,
    /// Guest TSC when the fault was taken (0 until `recovery::fault::fault`).
    pub tsc: u64,
    /// The CPU it happened on (set with `tsc`).
    pub cpu: u64,
    pub text: [u8; 256],
    pub text_len: usize,
}

impl Default for PendingFault {
    fn default() -> Self {
        PendingFault { kind: 0, vector: 0, error_code: 0, cr2: 0, seq: 0, tsc: 0, cpu: 0, text: [0; 256], text_len: 0 }
    }
}

/// The trap frame, placed so that its end is 16-byte aligned: in 64-bit
/// mode the CPU aligns RSP0 down to 16 before pushing, and the pushed
/// hardware frame must land exactly in `frame.ss ..= frame.rip`.
#[repr(C, align(16))]
pub struct SaveArea {
    _pad: u64,
    pub frame: TrapFrame,
}

const _: () = assert!((core::mem::offset_of!(SaveArea, frame) + core::mem::size_of::<TrapFrame>()) % 16 == 0);

pub struct Task {
    pub save: SaveArea,
    pub id: TaskId,
    pub name: heapless::String<{ abi::image::NAME_LEN }>,
    /// The priority it runs at now: its manifest's (`spec.priority`), or
    /// less urgent while it defers work (`SET_PRIORITY`).
    priority: u8,
    /// The tick it first lowered its priority at since it last had nothing
    /// to defer (`SET_PRIORITY`; see `sched::tick`). A fault that gives it
    /// its priority back does not reset it: deferred work that keeps being
    /// interrupted by faults still ages.
    lowered_since: Option<u64>,
    /// Private, like the priority, the deferral tick, `running_on`,
    /// `held_until` and the affinity: the scheduler's masks
    /// (`sched::table`) are functions of them, so every write goes
    /// through the table, which keeps the masks exact (the setters below
    /// take its [`Key`]).
    state: State,
    pub space: Option<AddressSpace>,
    /// Next address `map` hands out when the task gives no hint.
    pub map_next: u64,
    /// The manifest entry it was loaded from (to restart it from its image).
    pub spec: TaskSpec<'static>,
    pub caps: heapless::Vec<Cap, { abi::ipc::MAX_CAPS }>,
    /// One-shot reply right: the caller whose `call` this task received.
    pub reply_to: Option<TaskId>,
    /// Requests received inside its checkpoint scopes, not yet committed
    /// (`ipc::held`), in the order received.
    pub held: heapless::Vec<crate::ipc::held::Held, { abi::ipc::MAX_HELD }>,
    /// The fault being handled, while `FaultPending`/`FaultHeld`.
    pub fault: Option<PendingFault>,
    /// Restarts from its image so far.
    pub restarts: u64,
    /// A supervisor's restarts that came soon after the previous one, and
    /// the tick of the last (`recovery::restart::supervisor_delay`).
    pub quick_restarts: u32,
    pub last_restart_tick: u64,
    /// Address of its `.eh_frame_hdr` (from `PT_GNU_EH_FRAME`), 0 if none.
    pub eh_frame_hdr: u64,
    /// Where its recovery page is (`SET_RECOVERY`), 0 if none.
    pub recovery: u64,
    /// Open checkpoint scopes: the registers to resume with.
    pub scopes: heapless::Vec<Scope, { abi::checkpoint::MAX_SCOPES }>,
    /// Timer ticks it has run since its last system call (the watchdog).
    pub ticks_since_syscall: u64,
    /// The user pc the kernel last resumed the task at after handling one
    /// of its exceptions itself (a copy-on-write preserve, a lazy FPU
    /// switch), until its next timer tick in user mode (0: none). A tick
    /// that finds the task still there expired during that exception:
    /// fault injection passes it over (`inject::on_tick`), as it does a
    /// tick right after a `syscall`.
    pub resumed_at: u64,
    /// Set by a `hang` injection: the pc it really was at (it now spins on
    /// the hang page); faults report this pc.
    pub hang_rip: Option<u64>,
    /// Faults this task has taken (exceptions, panics, watchdog, kills).
    pub faults: u64,
    /// The last injection into this task that may still be unresolved:
    /// `(tick, faults, restarts)` when it fired (`inject::on_tick` holds the
    /// next one back until the task faulted, restarted or a settle time
    /// passed).
    pub injected_at: Option<(u64, u64, u64)>,
    /// Its x87/SSE registers while another task owns the FPU (`arch::fpu`).
    pub fpu: crate::arch::fpu::FpuState,
    /// The CPU it runs on ([`NOT_RUNNING`]: none). Set by that CPU's
    /// scheduler when it makes the task current and cleared when it picks
    /// another or idles, all under the scheduler lock: a task runs on at
    /// most one CPU, and another CPU never resumes it nor touches its
    /// frame, memory or mappings while it is set (`sched::stop_remote`).
    running_on: u8,
    /// While the tick clock is below this, no CPU picks it: another CPU
    /// asked it to leave its CPU (`sched::stop_remote`) and acts on it
    /// once it has. Bounded: an asker that never comes back holds it at
    /// most two ticks — a `TASK_CTL` caller, `recovery::restart::HOLD_MAX_TICKS`
    /// (its retry, which clears it, may come a tick or more later).
    held_until: u64,
    /// A task this supervisor restarted and keeps off every CPU until its
    /// own next system call (several CPUs: `recovery::restart`).
    pub holds: Option<usize>,
    /// The one CPU it may run on (its manifest's `cpu`), or [`ANY_CPU`].
    affinity: u8,
    /// Its entry point, for the `task_start` event of its first run.
    pub entry: u64,
    /// Whether a CPU ran it yet (several CPUs: its `task_start` event is
    /// written by the CPU that runs it first, `sched::Scheduler::own`;
    /// with one CPU at load, where that CPU is known).
    pub started: bool,
}

/// [`Task::affinity`] of a task every CPU may run.
pub const ANY_CPU: u8 = u8::MAX;

/// [`Task::running_on`] of a task no CPU runs.
pub const NOT_RUNNING: u8 = u8::MAX;

impl Task {
    #[inline(always)]
    pub fn state(&self) -> State {
        self.state
    }

    #[inline(always)]
    pub fn priority(&self) -> u8 {
        self.priority
    }

    #[inline(always)]
    pub fn lowered_since(&self) -> Option<u64> {
        self.lowered_since
    }

    #[inline(always)]
    pub fn running_on(&self) -> u8 {
        self.running_on
    }

    #[inline(always)]
    pub fn held_until(&self) -> u64 {
        self.held_until
    }

    /// The one CPU it may run on, or [`ANY_CPU`] (fixed at load).
    #[inline(always)]
    pub fn affinity(&self) -> u8 {
        self.affinity
    }

    // The setters: only the task table (`sched::table`) holds a `Key`.

    #[inline(always)]
    pub fn put_state(&mut self, state: State, _: Key) {
        self.state = state;
    }

    #[inline(always)]
    pub fn put_priority(&mut self, priority: u8, _: Key) {
        self.priority = priority;
    }

    #[inline(always)]
    pub fn put_lowered_since(&mut self, since: Option<u64>, _: Key) {
        self.lowered_since = since;
    }

    #[inline(always)]
    pub fn put_running_on(&mut self, cpu: u8, _: Key) {
        self.running_on = cpu;
    }

    #[inline(always)]
    pub fn put_held_until(&mut self, tick: u64, _: Key) {
        self.held_until = tick;
    }

    /// The tick at which the clock alone changes something of it: its
    /// sleep ends, its timeout expires, or its lowered priority is given
    /// back (`sched::Scheduler::tick`).
    pub fn clock_deadline(&self) -> Option<u64> {
        let state = match self.state {
            State::Sleeping { until_tick } => Some(until_tick),
            State::RecvBlocked { deadline, .. }
            | State::WaitBlocked { deadline, .. }
            | State::FutexWait { deadline, .. } => (deadline != 0).then_some(deadline),
            _ => None,
        };
        let lowered = self.lowered_since.map(|since| since.saturating_add(abi::syscall::LOWERED_MAX_TICKS));
        match (state, lowered) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// An open checkpoint scope's registers (its memory versions live in the
/// address space, `recovery/versions.rs`).
#[derive(Clone, Copy, Debug)]
pub struct Scope {
    /// The frame at `CHECKPOINT_OPEN`: resuming it re-enters the scope.
    pub frame: TrapFrame,
    /// How many times the scope was rolled back and re-run.
    pub attempt: u64,
    /// Opened with `abi::checkpoint::SEAL`: its commit checks the seal
    /// (`recovery::checkpoint::seal_broken`).
    pub sealed: bool,
    /// The task's reply right at the open: a rollback to the scope gives
    /// it back if an outer scope holds that request (`ipc::held`).
    pub reply_to: Option<TaskId>,
}

impl Task {
    /// A runnable task at `entry` in `space`, with the start contract of
    /// `docs/first-task.md`: RSP at the stack top, RDI = id, RSI = arg,
    /// RDX = instance.
    pub fn new(id: TaskId, spec: TaskSpec<'static>, loaded: loader::Loaded) -> Task {
        let loader::Loaded { space, entry, eh_frame_hdr } = loaded;
        let mut name = heapless::String::new();
        let _ = name.push_str(spec.name);
        let mut task = Task {
            // SAFETY: TrapFrame is plain integers; all-zero is a valid value.
            save: SaveArea { _pad: 0, frame: unsafe { core::mem::zeroed() } },
            id,
            name,
            priority: spec.priority,
            lowered_since: None,
            state: State::Runnable,
            space: Some(space),
            map_next: USER_MAP_BASE,
            spec,
            caps: heapless::Vec::new(),
            reply_to: None,
            held: heapless::Vec::new(),
            fault: None,
            restarts: 0,
            quick_restarts: 0,
            last_restart_tick: 0,
            eh_frame_hdr,
            recovery: 0,
            scopes: heapless::Vec::new(),
            ticks_since_syscall: 0,
            resumed_at: 0,
            hang_rip: None,
            faults: 0,
            injected_at: None,
            fpu: crate::arch::fpu::FpuState::INITIAL,
            running_on: NOT_RUNNING,
            held_until: 0,
            holds: None,
            affinity: if spec.cpu == abi::image::ANY_CPU { ANY_CPU } else { spec.cpu as u8 },
            entry,
            started: false,
        };
        task.reset_frame(entry);
        task
    }

    /// Writes its `task_start` event, with `cpu` the CPU that runs it
    /// first, and marks it started.
    #[cold]
    #[inline(never)]
    pub fn start_event(&mut self, endpoints: &[crate::ipc::Endpoint], cpu: usize) {
        self.started = true;
        let ep = self.spec.fault_endpoint.and_then(|ep| endpoints.get(ep as usize));
        crate::events::emit(&abi::event::Event::TaskStartV2 {
            task: self.id as u64,
            name: &self.name,
            priority: self.spec.priority as u64,
            arg: self.spec.arg,
            entry: self.entry,
            image_bytes: self.spec.elf.len() as u64,
            fault_endpoint: ep.map(|e| e.name.as_str()),
            cpu: cpu as u64,
        });
    }

    /// Puts the start registers in the frame (also for a restart).
    pub fn reset_frame(&mut self, entry: u64) {
        // SAFETY: TrapFrame is plain integers; all-zero is a valid value.
        self.save.frame = unsafe { core::mem::zeroed() };
        let (id, arg, instance) = (self.id, self.spec.arg, self.spec.instance);
        let f = &mut self.save.frame;
        f.rip = entry;
        f.cs = USER_CS;
        f.rflags = 0x202; // IF
        f.rsp = USER_STACK_TOP;
        f.ss = USER_SS;
        f.rdi = id as u64;
        f.rsi = arg;
        f.rdx = instance as u64;
    }

    /// Reloads the task from its image: fresh memory, start registers
    /// (its priority and deferral are the table's to reset:
    /// `recovery::restart`).
    pub fn reload(&mut self) -> Result<(), loader::LoadError> {
        let loaded = loader::load(&self.spec)?;
        self.map_next = USER_MAP_BASE;
        self.eh_frame_hdr = loaded.eh_frame_hdr;
        self.recovery = 0;
        self.scopes.clear();
        self.ticks_since_syscall = 0;
        self.hang_rip = None;
        // SAFETY: this task's own area, in its box; the scheduler lock is
        // held by every caller of a restart.
        unsafe { crate::arch::fpu::reset(&mut self.fpu) };
        self.space = Some(loaded.space);
        self.reset_frame(loaded.entry);
        Ok(())
    }

    /// The capability at `index`, if it is of `kind` and has `rights`.
    pub fn cap(
        &self,
        index: u64,
        kind: abi::ipc::CapKind,
        rights: abi::ipc::Rights,
    ) -> Result<&Cap, abi::syscall::Error> {
        let cap = self.caps.get(index as usize).ok_or(abi::syscall::Error::BadCapability)?;
        if cap.kind != kind {
            return Err(abi::syscall::Error::BadCapability);
        }
        if !cap.rights.contains(rights) {
            return Err(abi::syscall::Error::Denied);
        }
        Ok(cap)
    }

    /// The endpoint its faults go to (from the manifest).
    pub fn fault_endpoint(&self) -> Option<u16> {
        self.spec.fault_endpoint
    }

    /// Whether it may receive on endpoint `ep`.
    pub fn receives_on(&self, ep: u16) -> bool {
        self.caps.iter().any(|c| {
            c.kind == abi::ipc::CapKind::Endpoint && c.object == ep as u32 && c.rights.contains(abi::ipc::Rights::RECV)
        })
    }

    /// Whether it runs below its manifest priority now.
    pub fn is_lowered(&self) -> bool {
        self.priority != self.spec.priority
    }

    /// Whether it holds a supervisor capability.
    pub fn is_supervisor(&self) -> bool {
        self.caps.iter().any(|c| c.kind == abi::ipc::CapKind::Supervisor)
    }

    /// The address TSS.RSP0 must hold while this task runs.
    pub fn save_top(&self) -> u64 {
        let frame = &self.save.frame as *const TrapFrame as u64;
        frame + core::mem::size_of::<TrapFrame>() as u64
    }

    pub fn frame_ptr(&mut self) -> *mut TrapFrame {
        &mut self.save.frame
    }
}
