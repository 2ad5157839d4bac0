//! The scheduler: which task runs next, the tick clock, sleeping, idling.
//!
//! Policy: strict priorities (0 most urgent), round robin within a priority.
//! A running task keeps the CPU until it blocks, exits, faults or uses up
//! its time slice ([`SLICE_TICKS`] timer ticks); then the best priority's
//! next runnable task runs: the first, in table order, after the task last
//! picked *at that priority* (wrapping around). The position is kept per
//! priority ([`Scheduler::last`]), not taken from the task that ran last:
//! when a more urgent server blocks after answering one of several
//! equal-priority clients, the next client in turn runs, not the first
//! after the server every time (`docs/ipc.md`, "Scheduling"). Priority 0
//! takes turns after the current task, which is round robin there (with one
//! CPU no task of another priority runs while one of priority 0 is
//! runnable) ([`Scheduler::pick`]). Nothing scans the task table: the run
//! queues, waiters and timed tasks are bitmaps over table indices
//! ([`table`]), the best priority is the lowest bit of a 256-bit map, and
//! "the first after index `k`, wrapping" is a masked `trailing_zeros`.
//!
//! The kernel is not preemptible: it runs with interrupts off, on this
//! CPU's kernel stack, and every entry ends by choosing a save area to
//! return through ([`next`], [`next_locked`]). When nothing is runnable the
//! kernel idles *inside* `next` with `sti; hlt` — the only place where
//! interrupts nest into ring 0; those nested traps only count ticks, wake
//! sleepers or end the `hlt`, then return to the idle loop. When no task is
//! alive any more, the kernel shuts down.
//!
//! Several CPUs (DESIGN.md, SMP): one table under one lock, kept short by
//! the masks; each CPU with its own current task and slice (`percpu`) and
//! its own view of the run queues (its affinity's tasks no other CPU owns
//! nor holds: [`Scheduler::pick`]); a task runs on at most one CPU
//! (`Task::running_on`), another CPU that must act on it stops it first
//! ([`Scheduler::stop_remote`]), and an idle CPU is woken for new work by
//! the reschedule IPI ([`RESCHED_VECTOR`]).

use crate::arch::trap_entry::TrapFrame;
use crate::arch::{gdt, percpu};
use crate::events;
use crate::ipc::{Endpoint, Notification};
use crate::mem::region::Region;
use crate::task::NOT_RUNNING;
use crate::task::{State, Task, TaskId};
use abi::event::Event;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use spin::{Mutex, MutexGuard};
use table::TaskTable;

pub mod table;
use x86_64::VirtAddr;
use x86_64::registers::control::Cr3;
use x86_64::registers::model_specific::{FsBase, KernelGsBase};

/// Timer interrupts per second.
pub const TICK_HZ: u32 = 1000;
/// Ticks a task may run before another task of its priority gets the CPU.
pub const SLICE_TICKS: u32 = 10;

/// All task and IPC state, under one lock (the kernel is not preemptible).
pub struct Scheduler {
    /// The tasks, and the masks that find them without a scan (`table`).
    pub tasks: TaskTable,
    pub endpoints: Vec<Endpoint>,
    pub notifications: Vec<Notification>,
    pub regions: Vec<Region>,
    pub ticks: u64,
    next_id: TaskId,
    /// Orders blocked senders (first come, first served).
    order: u64,
    /// The last fault sequence number handed out.
    fault_seq: u64,
    /// The system call being handled must run again (`restart_syscall`):
    /// set and consumed within one critical section.
    again: bool,
    /// Per priority, the table index of the task last picked at it
    /// (`usize::MAX`: none yet): round robin goes on after it. Shared by
    /// every CPU, like the table.
    last: [usize; PRIORITIES],
}

/// Priorities are a task's `u8`: 0 (most urgent) to
/// `abi::syscall::PRIORITY_LOWEST`.
const PRIORITIES: usize = abi::syscall::PRIORITY_LOWEST as usize + 1;
const _: () = assert!(PRIORITIES == table::PRIORITIES);

pub static SCHED: Mutex<Scheduler> = Mutex::new(Scheduler {
    tasks: TaskTable::new(),
    endpoints: Vec::new(),
    notifications: Vec::new(),
    regions: Vec::new(),
    ticks: 0,
    next_id: 1,
    // Above every `since` a request handed back by a rollback gets
    // (`ipc::held`: below `MAX_HELD`), which so comes first.
    order: abi::ipc::MAX_HELD as u64,
    fault_seq: 0,
    again: false,
    last: [usize::MAX; PRIORITIES],
});

/// The earliest tick at which a task may need the clock (a sleep ends, a
/// timeout expires, a lowered priority is given back): [`Scheduler::tick`]
/// walks the timed tasks only from then. Every place that sets such a deadline
/// lowers it ([`arm`]); one woken early leaves it early, which costs one
/// scan that finds the real next one. Written under the scheduler lock
/// only (plain loads and stores, no read-modify-write needed). 0 at boot:
/// the first tick scans.
static WAKE_AT: AtomicU64 = AtomicU64::new(0);

/// A task may need the clock at tick `deadline` (see [`WAKE_AT`]; the
/// caller holds the scheduler lock).
#[inline(always)]
pub fn arm(deadline: u64) {
    if deadline < WAKE_AT.load(Ordering::Relaxed) {
        WAKE_AT.store(deadline, Ordering::Relaxed);
    }
}

/// A task may need the clock soon (a priority lowered: it is given back
/// [`abi::syscall::LOWERED_MAX_TICKS`] ticks later): the next tick scans
/// and finds when. One store — the `RECOVER` that lowers the fault server
/// is on the fault path.
#[inline(always)]
pub fn arm_next_tick() {
    WAKE_AT.store(0, Ordering::Relaxed);
}

/// Whether several CPUs run tasks (set once by [`start`], before any task
/// runs). With one CPU the per-CPU bookkeeping below (`running_on`, FPU
/// hand-over, the idle CR3, wake-up IPIs) is skipped: it could change
/// nothing, and the single-CPU paths stay what they were.
static SMP: AtomicBool = AtomicBool::new(false);

/// CPUs idling in `hlt` (bit = CPU index): a CPU that leaves a runnable
/// task behind wakes one of them with [`RESCHED_VECTOR`].
static IDLE: AtomicU32 = AtomicU32::new(0);

/// Application processors wait for this before entering the scheduler.
static GO: AtomicBool = AtomicBool::new(false);

/// The reschedule IPI's vector: "choose again". From ring 3 the CPU
/// re-enters the scheduler (a task another CPU asked to leave, or a more
/// urgent one made runnable); in the idle loop it ends the `hlt`.
pub const RESCHED_VECTOR: u8 = 0xf0;

#[inline(always)]
pub fn smp() -> bool {
    SMP.load(Ordering::Relaxed)
}

/// Locks the scheduler (every kernel entry that may change task state).
#[inline(always)]
pub fn lock() -> MutexGuard<'static, Scheduler> {
    SCHED.lock()
}

/// This CPU's current task (the one it returns to), if any.
#[inline(always)]
fn cur() -> Option<usize> {
    let c = percpu::get::<{ percpu::CURRENT }>();
    if c == percpu::NONE { None } else { Some(c as usize) }
}

#[inline(always)]
fn slice_left() -> u64 {
    percpu::get::<{ percpu::SLICE_LEFT }>()
}

#[inline(always)]
fn set_slice_left(v: u64) {
    percpu::set::<{ percpu::SLICE_LEFT }>(v);
}

/// The IPC fastpath switches this CPU to blocked task `t`: no CPU runs it
/// (a blocked task left its CPU in the critical section in which it
/// blocked: `next_locked`). A hold another CPU put on it while it ran
/// (`stop_remote`) is not looked at: that CPU retries its operation, and
/// a restarted task held for its supervisor is runnable, not blocked.
#[inline(always)]
pub fn debug_assert_not_running(t: &Task) {
    debug_assert!(t.running_on() == NOT_RUNNING, "blocked task {} still runs on CPU {}", t.id, t.running_on());
}

/// This CPU's current task index again, which the caller read before as
/// `me` (the same value: nothing changed it since; debug-asserted). A
/// fresh read costs one instruction, keeping `me` alive costs a saved
/// register in the IPC fastpath.
#[inline(always)]
pub fn current_again(me: usize) -> usize {
    let c = percpu::get::<{ percpu::CURRENT }>() as usize;
    debug_assert_eq!(c, me);
    c
}

/// Sends CPU `cpu` the reschedule IPI.
fn resched_ipi(cpu: usize) {
    if let Some(p) = crate::platform::get() {
        p.send_fixed(percpu::apic_id_of(cpu), RESCHED_VECTOR);
    }
}

impl Scheduler {
    pub fn allocate_id(&mut self) -> TaskId {
        let id = self.next_id;
        debug_assert!(id <= abi::image::MAX_TASK_ID, "task id {id} past abi::image::MAX_TASK_ID");
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

    /// Adds a task; `None` if the table is full.
    pub fn add(&mut self, task: Task) -> Option<usize> {
        self.tasks.add(task)
    }

    /// The task that entered the kernel on this CPU (valid during a trap
    /// from ring 3).
    pub fn current(&mut self) -> &mut Task {
        let i = cur().expect("a trap from ring 3 has a current task");
        &mut self.tasks[i]
    }

    /// This CPU's current task.
    #[inline(always)]
    pub fn current_index(&self) -> Option<usize> {
        cur()
    }

    /// Task `idx` got a new address space while it may be the current one:
    /// make the next switch to it a full one (CR3, RSP0, bases).
    pub fn forget_current(&mut self, idx: usize) {
        if cur() == Some(idx) {
            self.tasks.set_cur(None);
        }
    }

    /// Whether the current task may simply continue: still runnable, with
    /// time left in its slice.
    pub fn current_keeps_cpu(&self) -> bool {
        slice_left() > 0 && cur().is_some_and(|c| matches!(self.tasks[c].state(), State::Runnable))
    }

    /// The current task if it may simply continue ([`Self::current_keeps_cpu`]),
    /// with one read of the per-CPU words and one bounds check (the light
    /// system calls' path).
    #[inline(always)]
    pub fn current_keeping_cpu(&mut self) -> Option<&mut Task> {
        if slice_left() == 0 {
            return None;
        }
        // No task is `percpu::NONE`, beyond every index: one bounds check.
        let t = self.tasks.get_mut(percpu::get::<{ percpu::CURRENT }>() as usize)?;
        if matches!(t.state(), State::Runnable) { Some(t) } else { None }
    }

    /// Makes the current task give up the rest of its slice.
    pub fn yield_current(&mut self) {
        set_slice_left(0);
    }

    /// The system call being handled is to run again from the start: the
    /// caller's `rip` goes back over its `syscall` (2 bytes) with every
    /// argument register as it was, and it yields (`syscall::dispatch`
    /// consumes this). Used when the call must wait for another CPU
    /// ([`Self::stop_remote`]); nothing of the call may have been done.
    pub fn restart_syscall(&mut self) {
        self.again = true;
    }

    /// Whether the call just handled must run again (and clears it).
    #[inline(always)]
    pub fn take_again(&mut self) -> bool {
        if self.again {
            self.again = false;
            return true;
        }
        false
    }

    /// Whether task `idx` may be read and changed from this CPU now: it
    /// runs on no other CPU. If it does, that CPU is asked to leave it (no
    /// CPU picks it for the next two ticks — `TASK_CTL` extends that to
    /// its caller's retry; a reschedule IPI makes its
    /// CPU choose again) and this returns false: the caller backs out
    /// without a change and retries (`restart_syscall`). So a `TASK_CTL`
    /// or an injection that reads or writes another task's frame, memory
    /// or mappings never races with that task running, and its address
    /// space is then live on no CPU's TLB but this one's (see
    /// `next`: a CPU that leaves a task loads another root).
    pub fn stop_remote(&mut self, idx: usize) -> bool {
        // One CPU: nothing is ever held (only this function and the
        // several-CPU paths set a hold), nothing to clear.
        if !smp() {
            return true;
        }
        let t = &self.tasks[idx];
        let (on, held) = (t.running_on(), t.held_until());
        let me = percpu::cpu() as u8;
        if on == NOT_RUNNING || on == me {
            if held != 0 {
                self.tasks.set_held_until(idx, 0);
            }
            return true;
        }
        self.tasks.set_held_until(idx, self.ticks + 2);
        resched_ipi(on as usize);
        false
    }

    /// Counts a timer tick on this CPU: charges its running task; the boot
    /// CPU's ticks are the clock (wakes sleepers, timeouts, gives lowered
    /// tasks their priority back). The tasks with a deadline are walked
    /// (not the table) only on a tick at or past the earliest such deadline
    /// ([`WAKE_AT`], which every deadline set lowers: [`arm`]), not on
    /// every tick; the walk finds the next one.
    pub fn tick(&mut self, from_user: bool) {
        if from_user {
            set_slice_left(slice_left().saturating_sub(1));
        }
        if percpu::cpu() != 0 {
            return;
        }
        self.ticks += 1;
        let now = self.ticks;
        if now < WAKE_AT.load(Ordering::Relaxed) {
            debug_assert!(
                self.tasks.iter().all(|t| t.clock_deadline().is_none_or(|d| d > now)),
                "a deadline at or before tick {now} was not armed"
            );
            return;
        }
        // Only the tasks with a deadline (`table::TaskTable::timed`).
        let mut next = u64::MAX;
        for i in table::bits(self.tasks.timed()) {
            if let State::Sleeping { until_tick } = self.tasks[i].state()
                && until_tick <= now
            {
                self.tasks.set_state(i, State::Runnable);
            }
            // Deferred work (`SET_PRIORITY`) is late, never starved.
            if let Some(since) = self.tasks[i].lowered_since()
                && now.saturating_sub(since) >= abi::syscall::LOWERED_MAX_TICKS
            {
                self.tasks.restore_priority(i);
                self.tasks.set_lowered_since(i, None);
            }
            crate::ipc::expire_timeout(&mut self.tasks, i, now);
            if let Some(d) = self.tasks[i].clock_deadline() {
                next = next.min(d);
            }
        }
        WAKE_AT.store(next, Ordering::Relaxed);
    }

    /// Picks the next task and records it as the last picked at its
    /// priority ([`Scheduler::last`]): the best priority among runnable
    /// tasks, and at it the first after the task last picked at that
    /// priority in table order, wrapping around (round robin per
    /// priority; priority 0: after the current task, see below). The
    /// current task stays if its slice is not used up and nothing more
    /// urgent is runnable.
    ///
    /// No scan: the candidates at a priority are a mask, this CPU's run
    /// queue (`table`: the queued tasks it may run, plus its current task
    /// if that is runnable), and "the first after index `k` in table
    /// order, wrapping" is a masked `trailing_zeros`
    /// ([`table::first_from`]). The choice is the one the scan of the
    /// table made before the masks, task for task.
    fn pick(&mut self) -> Option<usize> {
        let current = cur();
        // The candidates: the best priority's queue this CPU may take
        // from, with this CPU's current task if runnable there.
        let (candidates, best, mine) = if smp() {
            self.smp_candidates(current)
        } else {
            let mut best = self.tasks.best_ready();
            let mut candidates = if best == u16::MAX { 0 } else { self.tasks.ready(best as u8) };
            let mut mine = 0;
            if let Some(c) = current {
                let t = &self.tasks[c];
                if t.state() == State::Runnable {
                    mine = 1u64 << c;
                    let p = t.priority() as u16;
                    if p < best {
                        (best, candidates) = (p, mine);
                    } else if p == best {
                        candidates |= mine;
                    }
                }
            }
            (candidates, best, mine)
        };
        if candidates == 0 {
            return None;
        }
        // The first candidate in round-robin order after the current task
        // (it comes last), and whether there are several. At priority 0
        // "after the current task" is round robin already (with one CPU
        // no task of another priority is current while one of priority 0
        // is runnable): the first is taken without looking at `last`,
        // which kept the fault path (a fault server at 0) cheap when this
        // was a scan that stopped there.
        let first = table::first_from(candidates, current.map_or(0, |c| c + 1)).unwrap_or(0);
        let several = best != 0 && candidates & (candidates - 1) != 0;
        // A priority is a `u8` (`best` is wider only for its sentinel): no
        // bounds check on `last`.
        let slot = best as u8 as usize;
        let last = self.last[slot];
        let picked = match current {
            // The current task keeps the CPU while its slice lasts and
            // nothing more urgent is runnable.
            Some(c) if candidates & mine != 0 && slice_left() > 0 => c,
            // The current task is the one last picked at `best` (the usual
            // case: it yields, blocks or used up its slice), or there is
            // no choice: the order after the current task was the
            // round-robin order.
            Some(c) if c == last => first,
            _ if !several => first,
            // Another priority ran since `best` last had its turn (a more
            // urgent server answered one of several clients): go on after
            // the task last picked at `best`.
            _ => table::first_from(candidates, last.wrapping_add(1)).unwrap_or(first),
        };
        self.last[slot] = picked;
        Some(picked)
    }

    /// [`Self::pick`]'s candidates with several CPUs: the queues seen
    /// through [`Self::smp_view`] (a priority whose queued tasks this CPU
    /// may not take is skipped), and the current task if runnable, not
    /// held and allowed here. Returns the candidates, their priority and
    /// the current task's bit if it is one.
    #[inline(never)]
    fn smp_candidates(&mut self, current: Option<usize>) -> (u64, u16, u64) {
        let view = self.smp_view();
        let mine = match current {
            Some(c) if self.tasks[c].state() == State::Runnable && view & (1 << c) != 0 => 1u64 << c,
            _ => 0,
        };
        let mut best = self.tasks.best_ready();
        let mut queued = if best == u16::MAX { 0 } else { self.tasks.ready(best as u8) & view };
        while queued == 0 && best != u16::MAX {
            best = self.tasks.next_ready_priority(best as usize + 1);
            queued = if best == u16::MAX { 0 } else { self.tasks.ready(best as u8) & view };
        }
        let candidates = match current {
            Some(c) if mine != 0 => {
                let p = self.tasks[c].priority() as u16;
                if p < best {
                    best = p;
                    mine
                } else if p == best {
                    queued | mine
                } else {
                    queued
                }
            }
            _ => queued,
        };
        (candidates, best, mine)
    }

    /// Several CPUs: the tasks this CPU may take from the run queues — its
    /// affinity's, minus those another CPU owns and those held (an
    /// expired hold is dropped on the way). Out of line: several CPUs only.
    #[inline(never)]
    fn smp_view(&mut self) -> u64 {
        let me = percpu::cpu();
        let owned = percpu::get::<{ percpu::OWNED }>();
        let mine = if owned == percpu::NONE { 0 } else { 1u64 << owned };
        let held = self.tasks.held_at(self.ticks);
        self.tasks.allowed(me) & !(self.tasks.running() & !mine) & !held
    }

    /// Whether anything can still happen: a task is runnable, or will be
    /// woken by the clock. (Tasks blocked in IPC with no timeout can only be
    /// woken by another task; if none can run, none ever will.)
    fn can_progress(&self) -> bool {
        self.tasks.any_runnable() || self.tasks.state_timed() != 0
    }

    /// The IPC fastpath made task `i`, of priority `priority`, the one to
    /// run (see [`enter_fast`]): it is current now (the fastpath's
    /// `table::TaskTable::fast_call_switch` and the like recorded it),
    /// with a fresh slice, as `switch_to` would leave it, and the last
    /// picked at its priority, as `pick` would record it (the fastpath's
    /// task is the only runnable one of the best priority, so `pick` would
    /// choose it). Returns `frame` (task `i`'s, from `enter_fast`). One
    /// CPU only: with several the fastpath never switches (see
    /// `ipc::endpoint::fastpath`), so this needs no `running_on`
    /// bookkeeping nor a test for it.
    #[inline(always)]
    pub fn set_current(&mut self, i: usize, priority: u8, frame: *mut TrapFrame) -> *mut TrapFrame {
        debug_assert!(!smp(), "the IPC fastpath switched tasks with several CPUs");
        self.last[priority as usize] = i;
        percpu::set_const::<{ percpu::SLICE_LEFT }, { SLICE_TICKS as i32 }>();
        #[cfg(debug_assertions)]
        self.tasks.verify(false);
        frame
    }

    /// This CPU now runs task `i` (several CPUs): the task it ran before
    /// is released (its FPU registers saved, so another CPU can load
    /// them), `i` marked as running here.
    fn own(&mut self, i: usize) {
        let me = percpu::cpu();
        let owned = percpu::get::<{ percpu::OWNED }>();
        if owned == i as u64 {
            return;
        }
        if owned != percpu::NONE {
            self.release(owned as usize);
        }
        let on = self.tasks[i].running_on();
        debug_assert!(on == NOT_RUNNING, "task {} runs on CPU {} already", self.tasks[i].id, on);
        self.tasks.set_running_on(i, me as u8);
        let Self { tasks, endpoints, .. } = self;
        let t = &mut tasks[i];
        if !t.started {
            t.start_event(endpoints, me);
        }
        // Its CR3 is loaded here next (`switch_to`, `enter_fast`).
        if let Some(space) = t.space.as_mut() {
            space.live_on = me as u8;
        }
        percpu::set::<{ percpu::OWNED }>(i as u64);
    }

    /// Task `i` leaves this CPU (several CPUs).
    fn release(&mut self, i: usize) {
        debug_assert_eq!(self.tasks[i].running_on() as usize, percpu::cpu());
        self.tasks.set_running_on(i, NOT_RUNNING);
        let t = &mut self.tasks[i];
        // SAFETY: the task's own area in its box; the lock is held.
        unsafe { crate::arch::fpu::release_this_cpu(&mut t.fpu) };
        if let Some(space) = t.space.as_mut() {
            space.live_on = crate::mem::space::NOT_LIVE;
        }
        percpu::set::<{ percpu::OWNED }>(percpu::NONE);
    }

    /// The CPUs that could take a runnable task no CPU runs (other than
    /// `picked`, which this CPU takes), as a bit mask: every CPU for a task
    /// of any CPU, its own for a task with an affinity. From the masks:
    /// one word per priority in use and per CPU, no scan of the table.
    fn cpus_wanted(&mut self, picked: Option<usize>) -> u32 {
        let held = self.tasks.held_at(self.ticks);
        let picked = picked.map_or(0, |p| 1u64 << p);
        let waiting = self.tasks.all_ready() & !self.tasks.running() & !held & !picked;
        if waiting == 0 {
            return 0;
        }
        if waiting & self.tasks.any_cpu() != 0 {
            return u32::MAX;
        }
        (0..percpu::MAX_CPUS).filter(|&c| waiting & self.tasks.pinned(c) != 0).fold(0, |want, c| want | 1 << c)
    }

    /// Wakes one idle CPU (not this one) that may run a runnable task no
    /// CPU runs, if there is one (several CPUs; `picked` is the task this
    /// CPU takes, if any). Out of line: several CPUs only.
    #[inline(never)]
    fn wake_idle_for_others(&mut self, picked: Option<usize>) {
        let idle = IDLE.load(Ordering::Relaxed) & !(1 << percpu::cpu());
        if idle == 0 {
            return;
        }
        let wake = idle & self.cpus_wanted(picked);
        if wake != 0 {
            let cpu = wake.trailing_zeros();
            IDLE.fetch_and(!(1 << cpu), Ordering::Relaxed);
            resched_ipi(cpu as usize);
        }
    }

    /// Makes task `i` the one the CPU returns to; returns its frame.
    fn switch_to(&mut self, i: usize) -> *mut TrapFrame {
        if cur() == Some(i) {
            // Still the same task: RSP0, the save area, CR3 and the FS/GS
            // bases are already its own (only a supervisor changes another
            // task's bases, and never the running task's). If it was chosen
            // again with its slice used up (nothing else of its priority is
            // runnable), it starts a new one.
            if slice_left() == 0 {
                percpu::set_const::<{ percpu::SLICE_LEFT }, { SLICE_TICKS as i32 }>();
            }
            return self.tasks[i].frame_ptr();
        }
        percpu::set_const::<{ percpu::SLICE_LEFT }, { SLICE_TICKS as i32 }>();
        let smp = smp();
        if smp {
            self.own(i);
        }
        self.tasks.set_cur(Some(i));
        let task = &mut self.tasks[i];
        // SAFETY: the task's own area in its box; the lock is held.
        unsafe { crate::arch::fpu::switch_to(&mut task.fpu) };
        let top = task.save_top();
        gdt::set_rsp0(top);
        percpu::set_save_top(top);
        if let Some(space) = &mut task.space {
            let (cur, flags) = Cr3::read();
            if cur != space.root() {
                // SAFETY: the task's PML4 maps the kernel half like every
                // other space, so the kernel keeps running after the switch.
                unsafe { Cr3::write(space.root(), flags) };
            }
            if smp {
                space.live_on = percpu::cpu() as u8;
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

/// The IPC fastpath's switch from the current task (which just entered
/// with a complete frame and is no longer runnable) to `task`, which the
/// fastpath checked is the task `pick` would choose: what `switch_to` does,
/// minus the scan (the caller then records it with
/// [`Scheduler::set_current`]). `live` are the FS and GS bases in the MSRs
/// (the leaving task's, just saved by the entry); they are written only if
/// `task`'s differ. Returns its frame. (The fastpath only picks tasks
/// blocked in IPC, which always have an address space.)
#[inline(always)]
pub fn enter_fast(task: &mut Task, live: (u64, u64)) -> *mut TrapFrame {
    // SAFETY: the task's own area in its box; the lock is held.
    unsafe { crate::arch::fpu::switch_to(&mut task.fpu) };
    let top = task.save_top();
    gdt::set_rsp0(top);
    percpu::set_save_top(top);
    if let Some(space) = &task.space {
        let (cur, flags) = Cr3::read();
        if cur != space.root() {
            // SAFETY: the task's PML4 maps the kernel half like every other
            // space, so the kernel keeps running after the switch.
            unsafe { Cr3::write(space.root(), flags) };
        }
    }
    let f = &task.save.frame;
    if (f.fs_base, f.gs_base) != live && is_canonical(f.fs_base) && is_canonical(f.gs_base) {
        FsBase::write(VirtAddr::new(f.fs_base));
        KernelGsBase::write(VirtAddr::new(f.gs_base));
    }
    task.frame_ptr()
}

fn is_canonical(a: u64) -> bool {
    VirtAddr::try_new(a).is_ok()
}

/// Chooses the frame to return through. Idles while nothing is runnable;
/// shuts the machine down when no task is alive.
pub fn next() -> *mut TrapFrame {
    next_locked(lock())
}

/// [`next`] with the lock the entry already holds: the task that entered
/// leaves this CPU (or stays) in the same critical section in which it
/// blocked, faulted or was stopped, so no other CPU ever sees a blocked
/// task still marked as running here.
pub fn next_locked(mut s: MutexGuard<'static, Scheduler>) -> *mut TrapFrame {
    loop {
        {
            #[cfg(debug_assertions)]
            s.tasks.verify(smp());
            if let Some(i) = s.pick() {
                if smp() {
                    s.wake_idle_for_others(Some(i));
                }
                return s.switch_to(i);
            }
            if !s.can_progress() {
                let count = |f: fn(&State) -> bool| s.tasks.iter().filter(|t| f(&t.state())).count() as u64;
                let exited = count(|st| matches!(st, State::Exited { .. }));
                let faulted = count(|st| matches!(st, State::Faulted { .. }));
                let stopped = count(|st| matches!(st, State::Stopped));
                let blocked = count(|st| st.is_alive());
                // The lock stays held to the exit: with several CPUs, the
                // others idle too and would each report the end again.
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
            s.tasks.set_cur(None);
            if smp() {
                // The task this CPU ran may now run elsewhere: its FPU
                // registers go to its area, and its page tables leave this
                // CPU's CR3 (so its TLB entries go too: nothing of a space
                // stays cached on a CPU that does not run its task).
                let owned = percpu::get::<{ percpu::OWNED }>();
                if owned != percpu::NONE {
                    s.release(owned as usize);
                }
                let (root, flags) = Cr3::read();
                let kernel = crate::mem::space::kernel_root();
                if root != kernel {
                    // SAFETY: the kernel's PML4 maps the kernel half, as
                    // every space does.
                    unsafe { Cr3::write(kernel, flags) };
                }
                // A task this CPU may not run (its affinity names another)
                // may have been made runnable here: its CPU is woken.
                s.wake_idle_for_others(None);
                IDLE.fetch_or(1 << percpu::cpu(), Ordering::Relaxed);
            }
        }
        drop(s);
        // Nothing runnable, something sleeping: wait for the next interrupt.
        // `sti; hlt` is atomic (STI's one-instruction shadow).
        // SAFETY: the scheduler lock is released; nested interrupt handlers
        // may take it.
        unsafe { core::arch::asm!("sti", "hlt", "cli", options(nomem, nostack)) };
        if smp() {
            IDLE.fetch_and(!(1 << percpu::cpu()), Ordering::Relaxed);
        }
        s = lock();
    }
}

/// Whether the boot CPU has entered the scheduler (APs wait for it).
pub fn started() -> bool {
    GO.load(Ordering::Acquire)
}

/// Enters the first task on the boot CPU, and lets the application
/// processors enter the scheduler too; never returns.
pub fn start() -> ! {
    if crate::arch::smp::cpus_online() > 1 {
        SMP.store(true, Ordering::Release);
        SCHED.lock().tasks.close_fastpath();
    }
    GO.store(true, Ordering::Release);
    crate::arch::smp::wake_all(RESCHED_VECTOR);
    let frame = next();
    // SAFETY: `next` made `frame`'s task current (RSP0, CR3, bases).
    unsafe { crate::arch::trap_entry::resume(frame) }
}

/// An application processor's way into the scheduler (from `arch::smp`,
/// once online): waits until the boot CPU has loaded the tasks and entered
/// the scheduler itself, starts this CPU's timer (the boot CPU's
/// calibration), and runs tasks; never returns.
pub fn start_ap() -> ! {
    if let Some(p) = crate::platform::get() {
        p.start_timer(TICK_HZ);
    }
    let frame = next();
    // SAFETY: `next` made `frame`'s task current on this CPU.
    unsafe { crate::arch::trap_entry::resume(frame) }
}
