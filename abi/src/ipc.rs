//! Inter-process communication: endpoints, notifications, capabilities.
//!
//! The model is L4/seL4's. An **endpoint** is a rendezvous point: `send`
//! blocks until a receiver takes the message, `recv` blocks until a sender
//! comes, `call` is a send that then waits for the answer through a one-shot
//! reply right that the receiver gets with the message and uses with `reply`
//! (or `reply_recv`, the server loop's single call). A **notification** is
//! a word of asynchronous bits: `signal` ORs bits in, `wait` takes them all.
//!
//! Tasks name kernel objects through **capabilities**: small indices into
//! their capability table, which the image manifest fills. A capability
//! carries rights (send, receive; signal, wait) and, for endpoint send
//! rights, a **badge** the kernel hands to the receiver with each message,
//! so a server knows who is calling; a task cannot choose or forge it.
//!
//! ## Registers (in addition to `abi::syscall`'s convention)
//!
//! | register | in | out (receiving calls) |
//! |---|---|---|
//! | `rdi` | capability index | the sender's badge |
//! | `rsi` | message label | label |
//! | `rdx`, `r10`, `r8`, `r9` | message words 0..4 | words |
//! | `r12`, `r13` | send buffer pointer, length (≤ [`MAX_BUFFER`]) | — / `r13` = bytes received |
//! | `r14`, `r15` | receive buffer pointer, capacity | unchanged |
//! | `rbx` | receive timeout in ms ([`WAIT_FOREVER`], or [`POLL`]) | unchanged |
//!
//! The kernel copies at most [`MAX_BUFFER`] bytes of buffer per message
//! between tasks; a fault message, which the kernel composes, may be up to
//! `crate::fault::FAULT_BUFFER` bytes. A receive buffer shorter than the
//! message gets its first bytes (`r13` says how many arrived).

/// Message words carried in registers.
pub const MSG_WORDS: usize = 4;
/// Largest buffer a message carries.
pub const MAX_BUFFER: usize = 1024;
/// Most requests a task's checkpoint scopes hold at once (received inside
/// a scope and not yet committed: `docs/ipc.md`, "Requests in a scope"). A
/// `recv` inside a scope when that many are held is `NoMemory`, and takes
/// nothing (the message stays queued).
pub const MAX_HELD: usize = 4;
/// Most capabilities a task holds.
pub const MAX_CAPS: usize = 16;
/// `rbx` timeout: block until something arrives.
pub const WAIT_FOREVER: u64 = 0;
/// `rbx` timeout: do not block at all.
pub const POLL: u64 = u64::MAX;

/// The bit of a notification word `SIGNAL` refuses (`BadArgument`): `WAIT`
/// returns the bits in `rax`, where bit 63 would read as an error code.
pub const NOTIFY_RESERVED_BIT: u64 = 1 << 63;

/// The kernel's badge on fault messages; no capability can carry it.
pub const FAULT_BADGE: u64 = u64::MAX;
/// Largest badge a manifest may give.
pub const MAX_BADGE: u64 = u64::MAX - 1;

/// Kinds of capability.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapKind {
    Endpoint = 1,
    Notification = 2,
    /// Control over other tasks: read/write their registers and memory,
    /// resume, restart or stop them (the fault server's).
    Supervisor = 3,
    /// A shared memory region, mapped into the task at load.
    Region = 4,
}

impl CapKind {
    pub fn from_u8(v: u8) -> Option<CapKind> {
        match v {
            1 => Some(CapKind::Endpoint),
            2 => Some(CapKind::Notification),
            3 => Some(CapKind::Supervisor),
            4 => Some(CapKind::Region),
            _ => None,
        }
    }
}

bitflags::bitflags! {
    /// The rights of a capability (one byte of its boot-image record,
    /// `crate::image::CapSpec`; the bits are the format). An image whose
    /// capability has a bit outside these is refused when it is read
    /// ([`crate::image::ImageError::BadCap`]). A system call that needs a
    /// right the capability lacks fails with
    /// [`crate::syscall::Error::Denied`].
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct Rights: u8 {
        /// Endpoint: `send` and `call`. Notification: `signal`.
        const SEND = 1 << 0;
        /// Endpoint: `recv`. Notification: `wait`.
        const RECV = 1 << 1;
    }
}

/// A message: a label and four words (plus an optional buffer, passed
/// separately).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Message {
    pub label: u64,
    pub words: [u64; MSG_WORDS],
}

/// Operations of the `TASK_CTL` system call (needs a supervisor capability).
/// Registers: `rdi` = op, `rsi` = target task id, `rdx`, `r10`, `r8` = args.
pub mod task_ctl {
    /// `(task, buf)`: copies the task's saved `Registers` to `buf`.
    pub const GET_REGS: u64 = 1;
    /// `(task, buf)`: replaces the task's saved registers from `buf`
    /// (CS, SS and RFLAGS' privileged bits are forced to safe values).
    pub const SET_REGS: u64 = 2;
    /// `(task, addr, buf, len)`: reads the task's memory (len ≤ 4096).
    pub const READ_MEM: u64 = 3;
    /// `(task, addr, buf, len)`: writes the task's memory (len ≤ 4096).
    pub const WRITE_MEM: u64 = 4;
    /// `(task)`: resumes a faulted task with its saved registers.
    pub const RESUME: u64 = 5;
    /// `(task, delay_ms)`: restarts a task from its image after a delay.
    pub const RESTART: u64 = 6;
    /// `(task, reason)`: stops a task for good.
    pub const STOP: u64 = 7;
    /// `(task, offset, buf, len)`: reads the task's ELF image; returns the
    /// bytes read (0 at the end).
    pub const READ_IMAGE: u64 = 8;
    /// `(task, depth)`: rolls a faulted task back to its checkpoint scope
    /// `depth` (1 = outermost) and resumes it there; deeper scopes are
    /// rolled back too. Returns the number of pages rolled back.
    pub const ROLLBACK: u64 = 9;
    /// `(task)`: stops the task where it is and handles it as a fault of
    /// kind `Kill` (its fault message goes to its fault endpoint).
    pub const KILL: u64 = 10;
    /// `(task, addr, value)`: atomically stores the `u32` `value` at `addr`
    /// in the task's memory (4-aligned; for releasing a mutex).
    pub const STORE32: u64 = 11;
    /// `(task, addr, n)`: wakes up to `n` futex waiters on the task's `addr`.
    pub const FUTEX_WAKE: u64 = 12;
    /// `(task, addr, delta)`: atomically adds `delta` (as `i32`) to the
    /// `u32` at `addr`; returns the old value (for releasing an Arc).
    pub const FETCH_ADD32: u64 = 13;
    /// `(task, addr, old, new)`: compare-and-swap of the `u64` at `addr`;
    /// returns the value found (equal to `old` iff the swap happened).
    pub const CAS64: u64 = 14;
    /// `(task, buf, cap)`: writes the task's shared regions as
    /// `abi::checkpoint::RegionInfo` records; returns how many it has.
    pub const REGIONS: u64 = 15;
    /// `(task, depth, buf)`: copies the registers saved when scope `depth`
    /// (1 = outermost) opened; returns the number of open scopes.
    pub const SCOPE_REGS: u64 = 16;
    /// `(task, buf)`: writes the task's manifest policy as a
    /// [`crate::ipc::TaskInfo`] (watchdog, restart policy, name).
    pub const TASK_INFO: u64 = 17;
    /// `(task, req, 0)`: the fault server's whole answer to a held fault in
    /// one call: a [`crate::ipc::recover::Header`] at `req`, followed by
    /// `count` [`crate::ipc::recover::ReleaseOp`]s. The kernel checks the
    /// fault (`seq`) and the final action first, then performs every
    /// release in order and the final action (roll back, restart or stop),
    /// all under one lock: a supervisor that dies around the call either
    /// did all of it or none of it, so nothing is released twice. It writes
    /// each release's outcome and the action's result back into the
    /// request, and emits no event (the supervisor reports). Returns 0.
    pub const RECOVER: u64 = 18;
}

/// The request of `TASK_CTL RECOVER`.
pub mod recover {
    use crate::checkpoint::{MAX_ARCS, MAX_MUTEXES};

    /// [`Header::action`]: roll back to scope `arg` (1 = outermost).
    pub const ROLLBACK: u64 = 1;
    /// Restart from the image after `arg` ms.
    pub const RESTART: u64 = 2;
    /// Stop for good with reason code `arg`.
    pub const STOP: u64 = 3;

    /// [`ReleaseOp::kind`]: poison and unlock the mutex at `addr` if the
    /// task owns it, then wake one waiter (`recovery::Action::PoisonAndUnlockMutex`).
    pub const MUTEX: u64 = 1;
    /// Give back one reference to the Arc slot at `addr` in the region at
    /// `region_base` (`recovery::Action::ArcDecrement`).
    pub const ARC: u64 = 2;
    /// Poison and unlock the `RwLock` writer word at `addr` if the task
    /// owns it, then wake every waiter on it
    /// (`recovery::Action::PoisonAndUnlockRwLock`).
    pub const RWLOCK_WRITE: u64 = 3;
    /// Give back the task's read locks of the `RwLock` at `addr` beyond
    /// the first `region_base` (the reads of scopes that survive the
    /// rollback, which stay held), then wake the writers and readers
    /// sleeping on its drain word (`recovery::Action::ReleaseRwLockReads`;
    /// the field carries the count to keep for this kind).
    pub const RWLOCK_READS: u64 = 4;
    /// Reset the `Once` at `addr` to incomplete, poisoned, if the task is
    /// its running initializer, then wake every waiter on it
    /// (`recovery::Action::ResetOnce`).
    pub const ONCE: u64 = 5;

    /// [`ReleaseOp::outcome`], written by the kernel (`value`, `extra`):
    pub const NOT_DONE: u64 = 0;
    /// The mutex was held: now poisoned and unlocked (woken, contended).
    pub const MUTEX_RELEASED: u64 = 1;
    /// Not held by the task: untouched (woken, owner).
    pub const MUTEX_NOT_HELD: u64 = 2;
    /// The word kept changing: gave up.
    pub const MUTEX_CONTESTED: u64 = 3;
    /// One reference given back (count after, freed 0/1).
    pub const ARC_DECREMENTED: u64 = 4;
    /// The count was 0: restored and counted as a double free.
    pub const ARC_UNDERFLOW: u64 = 5;
    /// The operation failed (raw `Error` code).
    pub const FAILED: u64 = 6;
    /// Read locks given back (released, held: the task's reads found).
    pub const READS_RELEASED: u64 = 7;

    /// Most releases one request carries: the intent and both registries.
    pub const MAX_RELEASE_OPS: usize = 1 + MAX_MUTEXES + MAX_ARCS;

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
    pub struct Header {
        /// The held fault this answers (a stale answer is refused).
        pub seq: u64,
        pub action: u64,
        pub arg: u64,
        /// Release operations that follow.
        pub count: u64,
        /// Out: pages restored (rollback), restarts so far (restart).
        pub result: u64,
        /// Out: the attempt number the re-run scope sees (rollback).
        pub attempt: u64,
        /// Out: guest TSC when the kernel took the request (the benchmark's
        /// phase breakdown, as the two below).
        pub tsc_entered: u64,
        /// Out: guest TSC when the releases were done and the final action
        /// began.
        pub tsc_released: u64,
        /// Out: guest TSC when the final action was done.
        pub tsc_done: u64,
        /// [`LOWER_CALLER`] and nothing else.
        pub flags: u32,
        /// Out: the CPU the kernel performed the request on (the kernel's
        /// CPU index; the `restart` event's `cpu`). In the upper half of
        /// what was one `u64` of flags: the header keeps its size.
        pub cpu: u32,
    }

    /// [`Header::flags`]: once done, run the caller at the lowest priority
    /// (as `SET_PRIORITY` would, with the same way back): the recovered
    /// task runs at once, and the supervisor's own bookkeeping and report
    /// wait for a free CPU, without a second system call on the way.
    pub const LOWER_CALLER: u32 = 1;

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
    pub struct ReleaseOp {
        pub kind: u64,
        pub addr: u64,
        pub region_base: u64,
        /// Out: one of the outcome codes above.
        pub outcome: u64,
        pub value: u64,
        pub extra: u64,
    }

    pub const HEADER_SIZE: usize = core::mem::size_of::<Header>();
    pub const OP_SIZE: usize = core::mem::size_of::<ReleaseOp>();
}

/// What `TASK_CTL TASK_INFO` tells a supervisor about a task.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskInfo {
    pub id: u64,
    pub priority: u64,
    pub watchdog_ms: u64,
    /// Restart policy from the manifest (0 = the supervisor's default).
    pub max_restarts: u64,
    pub restart_window_ms: u64,
    pub restarts: u64,
    /// Checkpoint scopes open now.
    pub scopes: u64,
    /// The name, NUL-padded.
    pub name: [u8; crate::image::NAME_LEN],
    /// Core files per minute its supervisor may make (the manifest's
    /// `core_dumps`; 0 = none).
    pub core_dumps: u64,
}

/// Size of [`TaskInfo`] in bytes.
pub const TASK_INFO_SIZE: usize = core::mem::size_of::<TaskInfo>();

impl TaskInfo {
    pub fn to_bytes(&self) -> [u8; TASK_INFO_SIZE] {
        let mut out = [0u8; TASK_INFO_SIZE];
        let words = [
            self.id,
            self.priority,
            self.watchdog_ms,
            self.max_restarts,
            self.restart_window_ms,
            self.restarts,
            self.scopes,
        ];
        for (i, w) in words.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        out[56..80].copy_from_slice(&self.name);
        out[80..88].copy_from_slice(&self.core_dumps.to_le_bytes());
        out
    }

    pub fn from_bytes(b: &[u8]) -> Option<TaskInfo> {
        if b.len() < TASK_INFO_SIZE {
            return None;
        }
        let w = |i: usize| {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[i * 8..i * 8 + 8]);
            u64::from_le_bytes(x)
        };
        let mut name = [0u8; crate::image::NAME_LEN];
        name.copy_from_slice(&b[56..56 + crate::image::NAME_LEN]);
        Some(TaskInfo {
            id: w(0),
            priority: w(1),
            watchdog_ms: w(2),
            max_restarts: w(3),
            restart_window_ms: w(4),
            restarts: w(5),
            scopes: w(6),
            name,
            core_dumps: w(10),
        })
    }

    /// The name as text.
    pub fn name(&self) -> &str {
        let len = self.name.iter().position(|&b| b == 0).unwrap_or(self.name.len());
        core::str::from_utf8(&self.name[..len]).unwrap_or("?")
    }
}
