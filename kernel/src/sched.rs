//! The scheduler: which task runs next, the tick clock, sleeping, idling.
//!
//! Policy: strict priorities (0 most urgent), round robin within a priority.
//! A running task keeps the CPU until it blocks, exits, faults or uses up
//! its time slice ([`SLICE_TICKS`] timer ticks); then the next runnable task
//! of the best priority, after it in table order, runs.
//!
//! The kernel is not preemptible: it runs with interrupts off, on one kernel
//! stack, and every entry ends by choosing a save area to return through
//! ([`next`]). When nothing is runnable the kernel idles *inside* `next`
//! with `sti; hlt` — the only place where interrupts nest into ring 0; those
//! nested traps only count ticks and wake sleepers, then return to the idle
//! loop. When no task is alive any more, the kernel shuts down.

use crate::arch::trap_entry::TrapFrame;
use crate::arch::{gdt, percpu};
use crate::events;
use crate::ipc::{Endpoint, Notification};
use crate::mem::region::Region;
use crate::task::{State, Task, TaskId};
use abi::event::Event;
use alloc::boxed::Box;
use alloc::vec::Vec;
use spin::Mutex;
use x86_64::VirtAddr;
use x86_64::registers::control::Cr3;
use x86_64::registers::model_specific::{FsBase, KernelGsBase};

/// Timer interrupts per second.
pub const TICK_HZ: u32 = 1000;
/// Ticks a task may run before another task of its priority gets the CPU.
pub const SLICE_TICKS: u32 = 10;

/// All task and IPC state, under one lock (the kernel is not preemptible).
pub struct Scheduler {
    pub tasks: Vec<Box<Task>>,
    pub endpoints: Vec<Endpoint>,
    pub notifications: Vec<Notification>,
    pub regions: Vec<Region>,
    current: Option<usize>,
    pub ticks: u64,
    slice_left: u32,
    next_id: TaskId,
    /// Orders blocked senders (first come, first served).
    order: u64,
    /// The last fault sequence number handed out.
    fault_seq: u64,
}

pub static SCHED: Mutex<Scheduler> = Mutex::new(Scheduler {
    tasks: Vec::new(),
    endpoints: Vec::new(),
    notifications: Vec::new(),
    regions: Vec::new(),
    current: None,
    ticks: 0,
    slice_left: SLICE_TICKS,
    next_id: 1,
    order: 0,
    fault_seq: 0,
});

impl Scheduler {
    pub fn allocate_id(&mut self) -> TaskId {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    pub fn next_order(&mut self) -> u64 {
        self.order += 1;
        self.order
    }

    /// A new fault sequence number (unique for the run, from 1).
    pub fn next_fault_seq(&mut self) -> u64 {
        self.fault_seq += 1;
        self.fault_seq
    }

    /// Maps the shared regions task `idx` holds capabilities for (at load
    /// and after every restart from its image).
    pub fn map_regions(&mut self, idx: usize) {
        let Self { tasks, regions, .. } = self;
        let task = &mut tasks[idx];
        let Some(space) = task.space.as_mut() else { return };
        for cap in task.caps.iter().filter(|c| c.kind == abi::ipc::CapKind::Region) {
            if let Some(r) = regions.get(cap.object as usize)
                && space.map_shared(r.base, r.first, r.pages).is_err()
            {
                events::emit(&Event::RegionMapFailed { task: task.id as u64, region: &r.name });
            }
        }
    }

    pub fn add(&mut self, task: Task) {
        self.tasks.push(Box::new(task));
    }

    /// The task that entered the kernel (valid during a trap from ring 3).
    pub fn current(&mut self) -> &mut Task {
        let i = self.current.expect("a trap from ring 3 has a current task");
        &mut self.tasks[i]
    }

    pub fn current_index(&self) -> Option<usize> {
        self.current
    }

    /// Task `idx` got a new address space while it may be the current one:
    /// make the next switch to it a full one (CR3, RSP0, bases).
    pub fn forget_current(&mut self, idx: usize) {
        if self.current == Some(idx) {
            self.current = None;
        }
    }

    /// Whether the current task may simply continue: still runnable, with
    /// time left in its slice.
    pub fn current_keeps_cpu(&self) -> bool {
        self.current.is_some_and(|c| self.tasks[c].state == State::Runnable) && self.slice_left > 0
    }

    /// Makes the current task give up the rest of its slice.
    pub fn yield_current(&mut self) {
        self.slice_left = 0;
    }

    /// Counts a timer tick: wakes sleepers, charges the running task.
    pub fn tick(&mut self, from_user: bool) {
        self.ticks += 1;
        let now = self.ticks;
        for t in self.tasks.iter_mut() {
            if let State::Sleeping { until_tick } = t.state
                && until_tick <= now
            {
                t.state = State::Runnable;
            }
            // Deferred work (`SET_PRIORITY`) is late, never starved.
            if let Some(since) = t.lowered_since
                && now.saturating_sub(since) >= abi::syscall::LOWERED_MAX_TICKS
            {
                t.restore_priority();
                t.lowered_since = None;
            }
        }
        crate::ipc::expire_timeouts(self);
        if from_user {
            self.slice_left = self.slice_left.saturating_sub(1);
        }
    }

    /// Picks the next task: the best priority among runnable tasks, the
    /// first after the current one in table order (round robin). The
    /// current task stays if its slice is not used up and nothing more
    /// urgent is runnable.
    fn pick(&self) -> Option<usize> {
        let n = self.tasks.len();
        let best = self.tasks.iter().filter(|t| t.state == State::Runnable).map(|t| t.priority).min()?;
        if let Some(c) = self.current
            && self.slice_left > 0
            && self.tasks[c].state == State::Runnable
            && self.tasks[c].priority == best
        {
            return Some(c);
        }
        let start = self.current.map_or(0, |c| c + 1);
        (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| self.tasks[i].state == State::Runnable && self.tasks[i].priority == best)
    }

    /// Whether anything can still happen: a task is runnable, or will be
    /// woken by the clock. (Tasks blocked in IPC with no timeout can only be
    /// woken by another task; if none can run, none ever will.)
    fn can_progress(&self) -> bool {
        self.tasks.iter().any(|t| t.state == State::Runnable || t.state.has_deadline())
    }

    /// Makes task `i` the one the CPU returns to; returns its frame.
    fn switch_to(&mut self, i: usize) -> *mut TrapFrame {
        if self.current == Some(i) {
            // Still the same task: RSP0, the save area, CR3 and the FS/GS
            // bases are already its own (only a supervisor changes another
            // task's bases, and never the running task's).
            return self.tasks[i].frame_ptr();
        }
        self.slice_left = SLICE_TICKS;
        self.current = Some(i);
        let task = &mut self.tasks[i];
        let top = task.save_top();
        gdt::set_rsp0(top);
        percpu::set_save_top(top);
        if let Some(space) = &task.space {
            let (cur, flags) = Cr3::read();
            if cur != space.root() {
                // SAFETY: the task's PML4 maps the kernel half like every
                // other space, so the kernel keeps running after the switch.
                unsafe { Cr3::write(space.root(), flags) };
            }
        }
        // The user's FS base now; its GS base goes into KERNEL_GS_BASE,
        // where the `swapgs` on the way out picks it up.
        let f = &task.save.frame;
        if is_canonical(f.fs_base) && is_canonical(f.gs_base) {
            FsBase::write(VirtAddr::new(f.fs_base));
            KernelGsBase::write(VirtAddr::new(f.gs_base));
        }
        task.frame_ptr()
    }
}

fn is_canonical(a: u64) -> bool {
    VirtAddr::try_new(a).is_ok()
}

/// Chooses the frame to return through. Idles while nothing is runnable;
/// shuts the machine down when no task is alive.
pub fn next() -> *mut TrapFrame {
    loop {
        {
            let mut s = SCHED.lock();
            if let Some(i) = s.pick() {
                return s.switch_to(i);
            }
            if !s.can_progress() {
                let count = |f: fn(&State) -> bool| s.tasks.iter().filter(|t| f(&t.state)).count() as u64;
                let exited = count(|st| matches!(st, State::Exited { .. }));
                let faulted = count(|st| matches!(st, State::Faulted { .. }));
                let stopped = count(|st| matches!(st, State::Stopped));
                let blocked = count(|st| st.is_alive());
                drop(s);
                // Servers waiting forever are normal; anything else blocked
                // (a fault nobody takes, a call nobody answers) is reported.
                events::emit(&Event::AllTasksDone {
                    exited,
                    faulted,
                    stopped,
                    blocked,
                    free_frames: crate::mem::frames::free_count() as u64,
                });
                crate::power::exit(abi::exit::GuestExit::Success);
            }
            s.current = None;
        }
        // Nothing runnable, something sleeping: wait for the next interrupt.
        // `sti; hlt` is atomic (STI's one-instruction shadow).
        // SAFETY: the scheduler lock is released; nested interrupt handlers
        // may take it.
        unsafe { core::arch::asm!("sti", "hlt", "cli", options(nomem, nostack)) };
    }
}

/// Enters the first task; never returns.
pub fn start() -> ! {
    let frame = next();
    // SAFETY: `next` made `frame`'s task current (RSP0, CR3, bases).
    unsafe { crate::arch::trap_entry::resume(frame) }
}
