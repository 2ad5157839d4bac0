//! The system call interface.
//!
//! A task enters the kernel with the `syscall` instruction:
//!
//! * `rax` = the call number ([`nr`]); arguments in `rdi`, `rsi`, `rdx`,
//!   `r10`, `r8`, `r9` (the Linux convention: `rcx` and `r11` are taken by
//!   the instruction itself);
//! * on return `rax` holds the result: a non-negative value, or a negative
//!   [`Error`] code (`-(error as i64)`); `rcx` and `r11` are clobbered; every
//!   other register is preserved.
//!
//! Every pointer argument is checked by the kernel (user range, mapped, the
//! right permission) and a bad one yields [`Error::BadPointer`], never a
//! kernel fault.

/// System call numbers.
pub mod nr {
    /// Does nothing; returns 0. For measuring the entry/exit path.
    pub const NULL: u64 = 0;
    /// `write(ptr, len)`: writes UTF-8 bytes to the console; returns `len`.
    pub const WRITE: u64 = 1;
    /// `yield()`: gives up the rest of the time slice.
    pub const YIELD: u64 = 2;
    /// `sleep(ms)`: blocks for at least `ms` milliseconds.
    pub const SLEEP: u64 = 3;
    /// `exit(code)`: ends the task; never returns.
    pub const EXIT: u64 = 4;
    /// `task_id()`: the caller's task id.
    pub const TASK_ID: u64 = 5;
    /// `clock()`: the time stamp counter (guest instructions under icount).
    pub const CLOCK: u64 = 6;
    /// `map(hint, len, flags)`: maps `len` bytes (rounded up to pages) of
    /// zeroed anonymous memory; at `hint` if nonzero (page-aligned, free),
    /// else where the kernel chooses. Returns the address. `flags`:
    /// [`super::MapFlags`]; an unknown bit is `BadArgument`.
    pub const MAP: u64 = 7;
    /// `unmap(addr, len)`: unmaps pages previously returned by `map`.
    pub const UNMAP: u64 = 8;
    /// `report(name_ptr, name_len, ok, value)`: emits a `check` event
    /// stamped with the caller's task id.
    pub const REPORT: u64 = 9;
    /// `panic(msg_ptr, msg_len, file_ptr, file_len, line)`: reports a panic
    /// of the calling task (event `task_panic`) and ends it; never returns.
    pub const PANIC: u64 = 10;
    /// `ticks()`: timer ticks since boot (the scheduler's clock, in ms).
    pub const TICKS: u64 = 11;
    /// `send(cap, msg)`: see `abi::ipc` for the registers.
    pub const SEND: u64 = 12;
    /// `recv(cap, timeout) -> (badge, msg)`.
    pub const RECV: u64 = 13;
    /// `call(cap, msg) -> reply`: send, then wait for the reply.
    pub const CALL: u64 = 14;
    /// `reply(msg)`: answers the last `call` this task received.
    pub const REPLY: u64 = 15;
    /// `reply_recv(cap, msg, timeout)`: reply, then receive on `cap`.
    pub const REPLY_RECV: u64 = 16;
    /// `signal(cap, bits)`: ORs `bits` into a notification (bits 0..=62;
    /// bit 63 is `BadArgument`, see `WAIT`).
    pub const SIGNAL: u64 = 17;
    /// `wait(cap, timeout) -> bits`: takes a notification's bits, blocking
    /// while they are 0 (timeout in `rbx`, as for `recv`). The bits come
    /// back in `rax`; bit 63 is never set (`SIGNAL` refuses it), so they
    /// never read as an error code.
    pub const WAIT: u64 = 18;
    /// `cap_lookup(name_ptr, name_len) -> index`: finds a capability by the
    /// name the manifest gave it.
    pub const CAP_LOOKUP: u64 = 19;
    /// `task_ctl(op, task, ...)`: supervisor operations (`abi::ipc::task_ctl`).
    pub const TASK_CTL: u64 = 20;

    /// `emit(ptr, len)`: writes events for a supervisor (the fault
    /// server): `[ptr, len)` is a batch of `(at, len, event)` entries
    /// (`crate::event::encode_emit_entry`, at most
    /// [`crate::event::MAX_EMIT_BATCH`] bytes), each event of a supervisor
    /// kind ([`crate::event::is_supervisor_tag`]) dated `at` (the guest
    /// TSC when what it reports happened, not in the future; 0: now). The
    /// kernel checks the whole batch's framing, times and kind tags — it
    /// does not decode the events — then writes each as encoded, after its
    /// own stamps: `by`, and the time it was written (`emitted`) when `at`
    /// is earlier. A malformed batch is `BadArgument` and writes nothing.
    pub const EMIT: u64 = 21;

    /// `checkpoint_open() -> attempt`: opens a checkpoint scope. Returns 0
    /// when the scope opens; after a rollback to this scope the task resumes
    /// *here again* with its registers and private memory as they were,
    /// and the call returns the attempt number (1, 2, ...). Scopes nest (at
    /// most `abi::checkpoint::MAX_SCOPES`). `rdx` = `abi::checkpoint::SEAL`
    /// seals the scope (see there).
    pub const CHECKPOINT_OPEN: u64 = 22;
    /// `checkpoint_commit()`: closes the innermost scope, keeping its
    /// effects. A sealed scope whose seal does not hold is not closed: the
    /// task faults inside it (`FaultKind::ScopeCheck`) instead.
    pub const CHECKPOINT_COMMIT: u64 = 23;
    /// `futex_wait(addr, expected, timeout_ms)`: blocks while the `u32` at
    /// `addr` (in a shared region) equals `expected`; returns 0 when woken,
    /// 1 if the value already differed, `Timeout` on timeout (0 = none).
    pub const FUTEX_WAIT: u64 = 24;
    /// `futex_wake(addr, n) -> woken`: wakes up to `n` waiters on `addr`.
    pub const FUTEX_WAKE: u64 = 25;
    /// `set_recovery(addr)`: tells the kernel where this task's recovery
    /// page (`abi::checkpoint::RecoveryPage`) is, for the fault server.
    pub const SET_RECOVERY: u64 = 26;

    /// `region(cap) -> base`: where the shared region of capability `cap`
    /// is mapped in this task; its size comes back in `rdx`.
    pub const REGION: u64 = 27;

    /// `set_priority(priority)`: runs the caller at `priority` (numerically
    /// at least its manifest priority: a task can only make itself less
    /// urgent, or return to its own: [`super::PRIORITY_OWN`]). While lowered, the kernel gives the
    /// task its manifest priority back when a fault arrives on an endpoint
    /// it may receive from, or after `LOWERED_MAX_TICKS` timer ticks, so
    /// work done at the lower priority is deferred, never starved. The
    /// fault server reports faults this way, after the faulted task runs.
    pub const SET_PRIORITY: u64 = 28;

    /// `checkpoint_depth() -> scopes`: how many checkpoint scopes the kernel
    /// has open for the caller. libtask's recovery page says the same (the
    /// kernel writes its `depth` at every open, commit and rollback); this
    /// lets a task check that, and costs no more than `TASK_ID`.
    pub const CHECKPOINT_DEPTH: u64 = 29;

    /// `checkpoint_renew() -> attempt`: `CHECKPOINT_COMMIT` of the innermost
    /// scope and `CHECKPOINT_OPEN` of a new one at the same depth, here, in
    /// one call — so no instruction of the task runs outside a scope
    /// between the two (libtask's `checkpoint::repeat`: one scope per
    /// iteration of a loop, chained). Like the commit, it first checks a
    /// sealed scope's seal (else the task faults inside the old scope),
    /// makes the releases the page marks `checkpoint::RELEASE_AT_COMMIT`
    /// and delivers held replies at an outermost commit; like the open, it
    /// returns 0, and the attempt number (1, 2, ...) when the task resumes
    /// here after a rollback of the new scope; `rdx` = `SEAL` seals it.
    /// If the commit succeeds and the open fails (`NoMemory`), the old
    /// scope stays committed and no new one is open.
    pub const CHECKPOINT_RENEW: u64 = 30;

    /// One past the highest call number.
    pub const COUNT: u64 = 31;
}

/// `SET_PRIORITY` argument: back to the manifest priority.
pub const PRIORITY_OWN: u64 = u64::MAX;
/// The least urgent priority.
pub const PRIORITY_LOWEST: u8 = u8::MAX;

/// Ticks a task stays below its manifest priority (`SET_PRIORITY`).
pub const LOWERED_MAX_TICKS: u64 = 2;

bitflags::bitflags! {
    /// Flags of [`nr::MAP`] (its third argument, `rdx`; the bits are the
    /// ABI). The kernel refuses a bit it does not know with
    /// [`Error::BadArgument`] and maps nothing; it refuses `WRITE | EXEC`
    /// (W^X) the same way.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct MapFlags: u64 {
        /// Writable (default: read-only).
        const WRITE = 1 << 0;
        /// Executable (default: no-execute).
        const EXEC = 1 << 1;
    }
}

/// Error codes, returned as `-(code)`.
#[repr(i64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// No such system call.
    NoSuchCall = 1,
    /// A pointer argument is outside user space, unmapped, or lacks the
    /// needed permission.
    BadPointer = 2,
    /// An argument is out of range.
    BadArgument = 3,
    /// Out of memory (or of address space).
    NoMemory = 4,
    /// The operation is not permitted to this task.
    Denied = 5,
    /// The capability index is out of range or of the wrong kind.
    BadCapability = 6,
    /// A receive or wait timed out (or had nothing to take, with `POLL`).
    Timeout = 7,
    /// `reply` without a caller waiting for it.
    NoCaller = 8,
    /// No such task, or the task is not in a state the operation needs.
    BadTask = 9,
    /// `call`: the server was restarted from its image while it held the
    /// request (received, not yet answered): the request is lost with the
    /// old instance. `rdx` carries the server's new generation (its
    /// restarts from its image, `TaskInfo::restarts`). `docs/ipc.md`.
    Restarted = 10,
    /// `call`/`send`: the server ended for good (stopped, faulted with no
    /// supervisor, exited) while the call was in flight or queued, or no
    /// task that may receive on the endpoint is alive any more. `rdx`
    /// carries the generation of the instance that ended.
    Stopped = 11,
}

impl Error {
    pub const ALL: [Error; 11] = [
        Error::NoSuchCall,
        Error::BadPointer,
        Error::BadArgument,
        Error::NoMemory,
        Error::Denied,
        Error::BadCapability,
        Error::Timeout,
        Error::NoCaller,
        Error::BadTask,
        Error::Restarted,
        Error::Stopped,
    ];

    /// The raw `rax` value for this error.
    pub const fn to_raw(self) -> u64 {
        (-(self as i64)) as u64
    }

    /// Decodes a raw `rax` value: `Ok(value)` or `Err(error)`.
    pub fn decode(raw: u64) -> Result<u64, Error> {
        let signed = raw as i64;
        if signed >= 0 {
            return Ok(raw);
        }
        // `wrapping_neg`: `i64::MIN` (a value with only bit 63 set, as
        // `WAIT` can return) has no negation; it is no error code.
        let code = signed.wrapping_neg();
        Err(Self::ALL.into_iter().find(|e| *e as i64 == code).unwrap_or(Error::BadArgument))
    }

    pub const fn name(self) -> &'static str {
        match self {
            Error::NoSuchCall => "no_such_call",
            Error::BadPointer => "bad_pointer",
            Error::BadArgument => "bad_argument",
            Error::NoMemory => "no_memory",
            Error::Denied => "denied",
            Error::BadCapability => "bad_capability",
            Error::Timeout => "timeout",
            Error::NoCaller => "no_caller",
            Error::BadTask => "bad_task",
            Error::Restarted => "restarted",
            Error::Stopped => "stopped",
        }
    }

    /// What went wrong, in a sentence (its [`Display`](core::fmt::Display)).
    pub const fn describe(self) -> &'static str {
        match self {
            Error::NoSuchCall => "no such system call",
            Error::BadPointer => "a pointer is not mapped user memory",
            Error::BadArgument => "an argument is out of range",
            Error::NoMemory => "out of memory",
            Error::Denied => "not permitted to this task",
            Error::BadCapability => "no such capability, or of the wrong kind",
            Error::Timeout => "timed out",
            Error::NoCaller => "no caller waits for a reply",
            Error::BadTask => "no such task, or not in the state the operation needs",
            Error::Restarted => "the server was restarted from its image holding the request",
            Error::Stopped => "the server ended for good: nobody will answer",
        }
    }
}

/// `bad_capability: no such capability, or of the wrong kind`.
impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}: {}", self.name(), self.describe())
    }
}

impl core::error::Error for Error {}

#[cfg(test)]
mod tests {
    #[test]
    fn decode_takes_every_raw_value_without_overflow() {
        // Found by the in-guest fuzzer: bit 63 alone (i64::MIN) panicked.
        assert_eq!(super::Error::decode(1 << 63), Err(super::Error::BadArgument));
        assert_eq!(super::Error::decode(u64::MAX >> 1), Ok(u64::MAX >> 1));
        for e in super::Error::ALL {
            assert_eq!(super::Error::decode(e.to_raw()), Err(e));
        }
    }

    use super::*;

    #[test]
    fn errors_display_their_name_and_meaning() {
        extern crate std;
        use std::string::ToString;
        assert_eq!(Error::Timeout.to_string(), "timeout: timed out");
        for e in Error::ALL {
            let shown = e.to_string();
            assert!(shown.starts_with(e.name()) && shown.len() > e.name().len() + 2, "{shown}");
            let _: &dyn core::error::Error = &e;
        }
    }

    /// The flag and rights bits are the ABI: they keep the values the
    /// integer constants had, and a bit outside them does not convert.
    #[test]
    fn map_flags_and_rights_keep_their_bits() {
        assert_eq!((MapFlags::WRITE.bits(), MapFlags::EXEC.bits(), MapFlags::all().bits()), (1, 2, 3));
        assert_eq!(MapFlags::from_bits(0), Some(MapFlags::empty()));
        for unknown in [1 << 2, 1 << 63, 0b101, u64::MAX] {
            assert_eq!(MapFlags::from_bits(unknown), None, "{unknown:#x}");
        }
        use crate::ipc::Rights;
        assert_eq!((Rights::SEND.bits(), Rights::RECV.bits(), Rights::all().bits()), (1, 2, 3));
        for unknown in [1 << 2, 0x80, 0xff] {
            assert_eq!(Rights::from_bits(unknown), None, "{unknown:#x}");
        }
    }

    #[test]
    fn errors_round_trip_through_rax() {
        for e in Error::ALL {
            assert_eq!(Error::decode(e.to_raw()), Err(e));
        }
        assert_eq!(Error::decode(42), Ok(42));
        assert_eq!(Error::decode(0), Ok(0));
    }
}
