//! The task table and its masks: who is runnable, blocked, timed, where.
//!
//! A task is named by its table index (tasks are never removed, at most
//! [`MAX_TASKS`] = 64 of them), so a set of tasks is one `u64`. The table
//! keeps, next to the tasks, the sets the scheduler and IPC ask about on
//! their hot paths, so that none of them scans the table:
//!
//! | mask | tasks in it |
//! |------|-------------|
//! | `ready[p]` (+ `nonempty`, 256 bits) | runnable at priority `p`, current on no CPU |
//! | `on_cpu` | several CPUs: the current task of some CPU (`percpu::CURRENT`) |
//! | `running` | `running_on` set (several CPUs: owned by a CPU) |
//! | `held` | `held_until` set (expired holds are dropped lazily) |
//! | `any_cpu`, `pinned[c]` | by affinity (fixed at load) |
//! | `recv[ep]`, `send[ep]` | in `recv` on `ep`; sending on it or with a fault pending there |
//! | `wait[n]` | in `wait` on notification `n` |
//! | `futex[b]` | in `futex_wait` on a key that hashes to bucket `b` |
//! | `timed` | in a state with a deadline (sleep, a timeout) |
//! | `lowered` / `below` | deferral clock running (`lowered_since`) / below its manifest priority |
//!
//! `ready` leaves out the tasks CPUs are running (as seL4's "Benno"
//! scheduling does): then the IPC fastpath's switch between two tasks that
//! are not runnable before or after it touches no run queue at all, and
//! "the best priority runnable other than mine" is the lowest set bit of
//! `nonempty`. A CPU's run queue at priority `p` is a view:
//! `ready[p] & (any_cpu | pinned[cpu]) & !(running of other CPUs) & !held`
//! (`super::Scheduler::pick`).
//!
//! Exactness: every write of a field a mask depends on goes through a
//! method here (the fields are private to `task`, their setters take a
//! [`Key`], which only this module makes), and debug kernels recompute
//! every mask from the tasks at each scheduling decision ([`TaskTable::verify`]).

use crate::arch::percpu;
use crate::task::{ANY_CPU, NOT_RUNNING, State, Task};
use abi::image::MAX_TASKS;
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ops::{Deref, Index, IndexMut};

/// A set of tasks is one word.
const _: () = assert!(MAX_TASKS <= u64::BITS as usize, "a task mask is one u64");

/// Priorities are a task's `u8`.
pub const PRIORITIES: usize = 256;

/// Futex wait buckets (by key hash).
const FUTEX_BUCKETS: usize = 64;

/// Permission to write a task's scheduling fields: only this module makes
/// one, so every such write is one of the table's.
pub struct Key(());

/// The tasks and their masks (see the module notes).
pub struct TaskTable {
    tasks: Vec<Box<Task>>,
    ready: [u64; PRIORITIES],
    nonempty: [u64; PRIORITIES / 64],
    on_cpu: u64,
    running: u64,
    held: u64,
    any_cpu: u64,
    pinned: [u64; percpu::MAX_CPUS],
    recv: Vec<u64>,
    send: Vec<u64>,
    wait: Vec<u64>,
    futex: [u64; FUTEX_BUCKETS],
    timed: u64,
    lowered: u64,
    below: u64,
    /// Bit 0 set with several CPUs: the IPC fastpath, which reads the best
    /// queued priority through [`TaskTable::fast_best_ready`], then sees
    /// priority 0 taken and never switches (no test of its own).
    fast_gate: u64,
}

#[inline(always)]
const fn bit(i: usize) -> u64 {
    1 << i
}

/// The futex bucket of key `key`.
#[inline(always)]
fn bucket(key: u64) -> usize {
    (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize
}

/// The set bits of `m`, lowest first.
#[inline(always)]
pub fn bits(mut m: u64) -> impl Iterator<Item = usize> {
    core::iter::from_fn(move || {
        if m == 0 {
            return None;
        }
        let i = m.trailing_zeros() as usize;
        m &= m - 1;
        Some(i)
    })
}

/// The first index in `m` at or after `start`, wrapping around (`None` if
/// `m` is empty): round robin in table order is a masked
/// `trailing_zeros`.
#[inline(always)]
pub fn first_from(m: u64, start: usize) -> Option<usize> {
    if m == 0 {
        return None;
    }
    let hi = if start < 64 { m & (!0 << start) } else { 0 };
    Some(if hi != 0 { hi } else { m }.trailing_zeros() as usize)
}

impl Deref for TaskTable {
    type Target = [Box<Task>];
    #[inline(always)]
    fn deref(&self) -> &[Box<Task>] {
        &self.tasks
    }
}

impl Index<usize> for TaskTable {
    type Output = Task;
    #[inline(always)]
    fn index(&self, i: usize) -> &Task {
        &self.tasks[i]
    }
}

impl IndexMut<usize> for TaskTable {
    #[inline(always)]
    fn index_mut(&mut self, i: usize) -> &mut Task {
        &mut self.tasks[i]
    }
}

impl TaskTable {
    pub const fn new() -> TaskTable {
        TaskTable {
            tasks: Vec::new(),
            ready: [0; PRIORITIES],
            nonempty: [0; PRIORITIES / 64],
            on_cpu: 0,
            running: 0,
            held: 0,
            any_cpu: 0,
            pinned: [0; percpu::MAX_CPUS],
            recv: Vec::new(),
            send: Vec::new(),
            wait: Vec::new(),
            futex: [0; FUTEX_BUCKETS],
            timed: 0,
            lowered: 0,
            below: 0,
            fast_gate: 0,
        }
    }

    /// Several CPUs run tasks (before any runs): the IPC fastpath stays
    /// off ([`Self::fast_best_ready`]) and `on_cpu` is kept.
    pub fn close_fastpath(&mut self) {
        self.fast_gate = 1;
    }

    /// [`Self::best_ready`] for the IPC fastpath: 0 with several CPUs.
    #[inline(always)]
    pub fn fast_best_ready(&self) -> u16 {
        let w = self.nonempty[0] | self.fast_gate;
        if w != 0 { w.trailing_zeros() as u16 } else { self.best_ready() }
    }

    /// Sizes the per-object masks (at boot, once the image's endpoints and
    /// notifications exist, before any task blocks on one).
    pub fn set_objects(&mut self, endpoints: usize, notifications: usize) {
        self.recv.resize(endpoints, 0);
        self.send.resize(endpoints, 0);
        self.wait.resize(notifications, 0);
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Task> {
        self.tasks.iter_mut().map(|t| &mut **t)
    }

    pub fn get_mut(&mut self, i: usize) -> Option<&mut Task> {
        self.tasks.get_mut(i).map(|t| &mut **t)
    }

    /// Task `a` to read and task `b` to write (two different tasks).
    #[inline(always)]
    pub fn read_write(&mut self, a: usize, b: usize) -> (&Task, &mut Task) {
        assert_ne!(a, b);
        if a < b {
            let (lo, hi) = self.tasks.split_at_mut(b);
            (&lo[a], &mut hi[0])
        } else {
            let (lo, hi) = self.tasks.split_at_mut(a);
            (&hi[0], &mut lo[b])
        }
    }

    /// Tasks `a` and `b`, both mutable.
    ///
    /// # Safety
    /// Both are in bounds and they differ.
    #[inline(always)]
    pub unsafe fn disjoint_unchecked_mut(&mut self, a: usize, b: usize) -> [&mut Task; 2] {
        // SAFETY: per the contract, so the two references do not alias.
        let [a, b] = unsafe { self.tasks.get_disjoint_unchecked_mut([a, b]) };
        [&mut **a, &mut **b]
    }

    /// Adds a task (runnable, as `Task::new` makes it); returns its index,
    /// or `None` (the task dropped) if the table is full ([`MAX_TASKS`]:
    /// the masks have one bit per task).
    pub fn add(&mut self, task: Task) -> Option<usize> {
        let i = self.tasks.len();
        if i >= MAX_TASKS {
            return None;
        }
        debug_assert!(task.state() == State::Runnable && task.lowered_since().is_none() && !task.is_lowered());
        match task.affinity() {
            ANY_CPU => self.any_cpu |= bit(i),
            c => self.pinned[c as usize % percpu::MAX_CPUS] |= bit(i),
        }
        let p = task.priority();
        self.tasks.push(Box::new(task));
        self.enqueue(p, i);
        Some(i)
    }

    // --- The run queues.

    #[inline(always)]
    fn enqueue(&mut self, p: u8, i: usize) {
        let p = p as usize;
        self.ready[p] |= bit(i);
        self.nonempty[p / 64] |= bit(p % 64);
    }

    #[inline(always)]
    fn dequeue(&mut self, p: u8, i: usize) {
        let p = p as usize;
        self.ready[p] &= !bit(i);
        if self.ready[p] == 0 {
            self.nonempty[p / 64] &= !bit(p % 64);
        }
    }

    /// Runnable tasks of priority `p` that no CPU has current.
    #[inline(always)]
    pub fn ready(&self, p: u8) -> u64 {
        self.ready[p as usize]
    }

    /// The most urgent priority with a runnable task no CPU has current
    /// (`u16::MAX`: none) — with one CPU, every runnable task but the
    /// current one.
    #[inline(always)]
    pub fn best_ready(&self) -> u16 {
        // Unrolled, without a call (the IPC fastpath calls this: a call
        // would make it save registers around it).
        let n = &self.nonempty;
        if n[0] != 0 {
            n[0].trailing_zeros() as u16
        } else if n[1] != 0 {
            64 + n[1].trailing_zeros() as u16
        } else if n[2] != 0 {
            128 + n[2].trailing_zeros() as u16
        } else if n[3] != 0 {
            192 + n[3].trailing_zeros() as u16
        } else {
            u16::MAX
        }
    }

    /// The first priority at or after `from` (0..=256) with ready tasks
    /// (`u16::MAX`: none).
    pub fn next_ready_priority(&self, from: usize) -> u16 {
        let mut w = from / 64;
        while w < self.nonempty.len() {
            let m = if w == from / 64 { self.nonempty[w] & (!0 << (from % 64)) } else { self.nonempty[w] };
            if m != 0 {
                return (w * 64) as u16 + m.trailing_zeros() as u16;
            }
            w += 1;
        }
        u16::MAX
    }

    /// Every runnable task no CPU has current (one word per priority in
    /// use).
    pub fn all_ready(&self) -> u64 {
        let mut all = 0;
        let mut p = self.next_ready_priority(0);
        while p != u16::MAX {
            all |= self.ready[p as usize];
            p = self.next_ready_priority(p as usize + 1);
        }
        all
    }

    /// Whether some task is runnable (queued, or current on a CPU).
    pub fn any_runnable(&self) -> bool {
        let cur = percpu::get::<{ percpu::CURRENT }>();
        let on_cpu = if cur == percpu::NONE { self.on_cpu } else { self.on_cpu | bit(cur as usize) };
        self.nonempty.iter().any(|&w| w != 0) || bits(on_cpu).any(|i| self.tasks[i].state() == State::Runnable)
    }

    /// The tasks CPU `cpu` may run by affinity.
    #[inline(always)]
    pub fn allowed(&self, cpu: usize) -> u64 {
        self.any_cpu | self.pinned[cpu % percpu::MAX_CPUS]
    }

    #[inline(always)]
    pub fn any_cpu(&self) -> u64 {
        self.any_cpu
    }

    #[inline(always)]
    pub fn pinned(&self, cpu: usize) -> u64 {
        self.pinned[cpu % percpu::MAX_CPUS]
    }

    /// Tasks some CPU owns (`running_on` set).
    #[inline(always)]
    pub fn running(&self) -> u64 {
        self.running
    }

    /// Tasks under a hold that has not run out at tick `now`; holds that
    /// have are dropped here (a hold at or before `now` means nothing).
    pub fn held_at(&mut self, now: u64) -> u64 {
        let mut held = 0;
        for i in bits(self.held) {
            if self.tasks[i].held_until() > now {
                held |= bit(i);
            } else {
                self.set_held_until(i, 0);
            }
        }
        held
    }

    // --- The choke points: every write of a field a mask depends on.

    /// Task `i` enters state `new`.
    #[inline(always)]
    pub fn set_state(&mut self, i: usize, new: State) {
        let t = &mut self.tasks[i];
        let (old, p) = (t.state(), t.priority());
        t.put_state(new, Key(()));
        self.unindex_state(i, old, p);
        self.index_state(i, new, p);
    }

    /// [`Self::set_state`] for a task in no mask now: the current task of
    /// this CPU (runnable, and so in no run queue), or one blocked for a
    /// reply or a fault decision — the usual ways into and out of the
    /// kernel's hot paths, which so skip clearing the old state's bit
    /// (debug-asserted).
    #[inline(always)]
    pub fn set_state_unqueued(&mut self, i: usize, new: State) {
        debug_assert!(
            match self.tasks[i].state() {
                State::Runnable => self.is_current(i),
                old => matches!(old, State::ReplyBlocked { .. } | State::FaultHeld),
            },
            "task {} is in a mask ({:?})",
            self.tasks[i].id,
            self.tasks[i].state()
        );
        let t = &mut self.tasks[i];
        let p = t.priority();
        t.put_state(new, Key(()));
        self.index_state(i, new, p);
    }

    #[inline(always)]
    fn unindex_state(&mut self, i: usize, old: State, p: u8) {
        let b = !bit(i);
        match old {
            State::Runnable => self.dequeue(p, i),
            State::Sleeping { .. } => self.timed &= b,
            State::SendBlocked { ep, .. } | State::FaultPending { ep, .. } => {
                if let Some(m) = self.send.get_mut(ep as usize) {
                    *m &= b;
                }
            }
            State::RecvBlocked { ep, .. } => {
                if let Some(m) = self.recv.get_mut(ep as usize) {
                    *m &= b;
                }
                self.timed &= b;
            }
            State::WaitBlocked { n, .. } => {
                if let Some(m) = self.wait.get_mut(n as usize) {
                    *m &= b;
                }
                self.timed &= b;
            }
            State::FutexWait { key, .. } => {
                self.futex[bucket(key)] &= b;
                self.timed &= b;
            }
            _ => {}
        }
    }

    #[inline(always)]
    fn index_state(&mut self, i: usize, new: State, p: u8) {
        let b = bit(i);
        if new.has_deadline() {
            self.timed |= b;
        }
        match new {
            State::Runnable if !self.is_current(i) => self.enqueue(p, i),
            State::SendBlocked { ep, .. } | State::FaultPending { ep, .. } => {
                if let Some(m) = self.send.get_mut(ep as usize) {
                    *m |= b;
                }
            }
            State::RecvBlocked { ep, .. } => {
                if let Some(m) = self.recv.get_mut(ep as usize) {
                    *m |= b;
                }
            }
            State::WaitBlocked { n, .. } => {
                if let Some(m) = self.wait.get_mut(n as usize) {
                    *m |= b;
                }
            }
            State::FutexWait { key, .. } => self.futex[bucket(key)] |= b,
            _ => {}
        }
    }

    /// Task `i` runs at priority `p` now. (On the fault path: the fault
    /// server lowers itself and takes its priority back once per fault.)
    #[inline(always)]
    pub fn set_priority(&mut self, i: usize, p: u8) {
        let t = &mut self.tasks[i];
        let old = t.priority();
        if old == p {
            return;
        }
        t.put_priority(p, Key(()));
        let b = bit(i);
        self.below = if t.is_lowered() { self.below | b } else { self.below & !b };
        // Queued exactly if in its old priority's queue.
        if self.ready[old as usize] & b != 0 {
            self.dequeue(old, i);
            self.enqueue(p, i);
        }
    }

    /// Gives task `i` its manifest priority back.
    pub fn restore_priority(&mut self, i: usize) {
        let p = self.tasks[i].spec.priority;
        self.set_priority(i, p);
    }

    #[inline(always)]
    pub fn set_lowered_since(&mut self, i: usize, since: Option<u64>) {
        self.tasks[i].put_lowered_since(since, Key(()));
        if since.is_some() {
            self.lowered |= bit(i);
        } else {
            self.lowered &= !bit(i);
        }
    }

    pub fn set_running_on(&mut self, i: usize, cpu: u8) {
        self.tasks[i].put_running_on(cpu, Key(()));
        if cpu != NOT_RUNNING {
            self.running |= bit(i);
        } else {
            self.running &= !bit(i);
        }
    }

    pub fn set_held_until(&mut self, i: usize, tick: u64) {
        self.tasks[i].put_held_until(tick, Key(()));
        if tick != 0 {
            self.held |= bit(i);
        } else {
            self.held &= !bit(i);
        }
    }

    /// Whether task `i` is the current task of some CPU: this one's
    /// (`percpu::CURRENT`), or with several CPUs another's (`on_cpu`; with
    /// one CPU it stays empty, so that the IPC fastpath, one-CPU only,
    /// need not keep it).
    #[inline(always)]
    pub fn is_current(&self, i: usize) -> bool {
        percpu::get::<{ percpu::CURRENT }>() == i as u64 || self.on_cpu & bit(i) != 0
    }

    /// This CPU's current task becomes `c` (`percpu::CURRENT`): the one it
    /// leaves goes back to its run queue if runnable, `c` leaves it.
    #[inline(always)]
    pub fn set_cur(&mut self, c: Option<usize>) {
        let old = percpu::get::<{ percpu::CURRENT }>();
        let several = self.fast_gate != 0;
        if old != percpu::NONE {
            let o = old as usize;
            if several {
                self.on_cpu &= !bit(o);
            }
            let t = &self.tasks[o];
            if t.state() == State::Runnable {
                let p = t.priority();
                self.enqueue(p, o);
            }
        }
        if let Some(c) = c {
            if several {
                self.on_cpu |= bit(c);
            }
            let p = self.tasks[c].priority();
            self.dequeue(p, c);
        }
        percpu::set::<{ percpu::CURRENT }>(c.map_or(percpu::NONE, |c| c as u64));
    }

    // --- Waiters.

    /// Tasks in `recv` on endpoint `ep`.
    #[inline(always)]
    pub fn receivers(&self, ep: usize) -> u64 {
        self.recv.get(ep).copied().unwrap_or(0)
    }

    /// Tasks sending on endpoint `ep`, or with a fault pending there.
    #[inline(always)]
    pub fn senders(&self, ep: usize) -> u64 {
        self.send.get(ep).copied().unwrap_or(0)
    }

    /// [`Self::senders`], `None` if `ep` is no endpoint.
    #[inline(always)]
    pub fn senders_on(&self, ep: usize) -> Option<u64> {
        self.send.get(ep).copied()
    }

    /// Tasks in `wait` on notification `n`.
    pub fn waiters(&self, n: usize) -> u64 {
        self.wait.get(n).copied().unwrap_or(0)
    }

    /// Tasks in `futex_wait` on key `key` — and on keys of the same bucket:
    /// the caller compares the key.
    pub fn futex_waiters(&self, key: u64) -> u64 {
        self.futex[bucket(key)]
    }

    /// Tasks the clock may change: a deadline in their state, or a
    /// lowered priority to give back.
    pub fn timed(&self) -> u64 {
        self.timed | self.lowered
    }

    /// Tasks with a deadline in their state (they may still be woken by
    /// the clock alone).
    pub fn state_timed(&self) -> u64 {
        self.timed
    }

    /// Tasks running below their manifest priority.
    pub fn below(&self) -> u64 {
        self.below
    }

    // --- The IPC fastpath's switches (`ipc::endpoint`): what
    // `set_state` twice and `set_cur` do for these states, minus the run
    // queues, which neither task is in before or after (the one leaving
    // the CPU is blocked, the one taking it is current).

    /// `call`: current task `me` waits for the reply of receiver `r`,
    /// which was in `recv` on `ep` and is current now.
    ///
    /// # Safety
    /// `me` and `r` are tasks of the table, `ep` an endpoint (`r` is in
    /// its receiver mask).
    #[inline(always)]
    pub unsafe fn fast_call_switch(&mut self, me: usize, r: usize, ep: usize) {
        // SAFETY: per the contract (no bounds checks: registers are
        // scarce on the fastpath).
        unsafe {
            let server = self.tasks.get_unchecked(r).id;
            self.tasks.get_unchecked_mut(me).put_state(State::ReplyBlocked { server }, Key(()));
            self.tasks.get_unchecked_mut(r).put_state(State::Runnable, Key(()));
            *self.recv.get_unchecked_mut(ep) &= !bit(r);
        }
        self.timed &= !bit(r);
        debug_assert!(self.fast_gate == 0 && self.on_cpu == 0);
        percpu::set::<{ percpu::CURRENT }>(r as u64);
    }

    /// `reply_recv`: current task `me` waits in `recv` on `ep` (until
    /// `deadline`), its caller `c` got the reply and is current now.
    ///
    /// # Safety
    /// `me` and `c` are tasks of the table, `ep` an endpoint.
    #[inline(always)]
    pub unsafe fn fast_reply_recv_switch(&mut self, me: usize, c: usize, ep: usize, deadline: u64) {
        // SAFETY: per the contract.
        unsafe {
            self.tasks.get_unchecked_mut(me).put_state(State::RecvBlocked { ep: ep as u16, deadline }, Key(()));
            self.tasks.get_unchecked_mut(c).put_state(State::Runnable, Key(()));
            *self.recv.get_unchecked_mut(ep) |= bit(me);
        }
        if deadline != 0 {
            self.timed |= bit(me);
        }
        debug_assert!(self.fast_gate == 0 && self.on_cpu == 0);
        percpu::set::<{ percpu::CURRENT }>(c as u64);
    }

    /// Debug kernels: every mask equals its recomputation from the tasks
    /// (a write that bypassed the choke points, or one they handle wrong,
    /// fails here at the next scheduling decision).
    #[cfg(debug_assertions)]
    pub fn verify(&self, smp: bool) {
        let mut m = TaskTable::new();
        m.set_objects(self.recv.len(), self.wait.len());
        let cur = percpu::get::<{ percpu::CURRENT }>();
        if !smp {
            assert_eq!(self.on_cpu, 0, "on_cpu mask with one CPU");
        } else {
            assert!(cur == percpu::NONE || self.on_cpu & bit(cur as usize) != 0, "on_cpu mask misses this CPU's task");
            assert!(self.on_cpu & !self.running == 0, "a current task no CPU owns");
        }
        m.on_cpu = self.on_cpu;
        for (i, t) in self.tasks.iter().enumerate() {
            let b = bit(i);
            m.index_state(i, t.state(), t.priority());
            match t.affinity() {
                ANY_CPU => m.any_cpu |= b,
                c => m.pinned[c as usize % percpu::MAX_CPUS] |= b,
            }
            if t.running_on() != NOT_RUNNING {
                m.running |= b;
            }
            if t.held_until() != 0 {
                m.held |= b;
            }
            if t.lowered_since().is_some() {
                m.lowered |= b;
            }
            if t.is_lowered() {
                m.below |= b;
            }
        }
        assert!(m.ready == self.ready && m.nonempty == self.nonempty, "run queue masks");
        assert!(m.running == self.running && m.held == self.held, "running/held masks");
        assert!(m.any_cpu == self.any_cpu && m.pinned == self.pinned, "affinity masks");
        assert!(m.recv == self.recv && m.send == self.send && m.wait == self.wait, "endpoint/notification masks");
        assert!(m.futex == self.futex && m.timed == self.timed, "futex/timed masks");
        assert!(m.lowered == self.lowered && m.below == self.below, "lowered masks");
    }
}
