//! Typed IPC: capabilities, endpoints and notifications (`abi::ipc`).
//!
//! A task names kernel objects by capability index; [`cap`] finds one by
//! the name the manifest gave it (`CAP_LOOKUP`), so tasks never hard-code
//! indices. The endpoint calls are the L4 set — [`send`], [`call`],
//! [`recv`], [`reply`], [`reply_recv`] — each with a `_with` form that also
//! moves a byte buffer (at most `abi::ipc::MAX_BUFFER` bytes); notifications
//! are [`signal`] and [`wait`]. Everything returns `Result<_, Error>`.
//!
//! ## Why the register shuffling lives in two places
//!
//! An IPC call uses thirteen registers at once (`abi::ipc`'s table: `rax`,
//! `rdi`, `rsi`, four words, `r12`–`r15` for the buffers, plus `rcx`/`r11`
//! that `syscall` destroys) and the receiving calls add `rbx` for the
//! timeout. Rust inline asm cannot name `rbx` (LLVM reserves it), and
//! with thirteen registers taken there is no free register left to swap it
//! through. So:
//!
//! * the **fast path** ([`raw::exchange_fast`], inline asm) is for messages
//!   that send no buffer — the common case, and the one IPC benchmarks
//!   measure. The send-buffer pointer register `r12` is then unused, so it
//!   carries the timeout and is `xchg`ed with `rbx` around the `syscall`;
//! * the **general path** ([`raw::exchange`], a `global_asm!` function with
//!   its own CFI) takes a block of all twelve values in memory, saves the
//!   callee-saved registers it uses, and can therefore set every IPC
//!   register including `rbx`. Messages with a send buffer go through it.
//!
//! Both leave every register as the Rust ABI expects; the register contract
//! is stated at each asm block.

pub mod raw;
pub mod typed;

use abi::ipc::{MAX_BUFFER, MSG_WORDS, POLL, WAIT_FOREVER};
use abi::syscall::{Error, nr};

pub use abi::ipc::Message;

/// A capability: an index into this task's capability table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cap(u64);

impl Cap {
    /// The capability at `index` (the kernel checks it on every use; a bad
    /// index is `Err(BadCapability)` there, never undefined behaviour).
    pub const fn from_index(index: u64) -> Cap {
        Cap(index)
    }

    /// Its index in the capability table.
    pub const fn index(self) -> u64 {
        self.0
    }
}

/// `CAP_LOOKUP`: the capability the manifest named `name` (`"faults"`,
/// `"supervisor"`, ...). `Err(BadCapability)` if this task has none.
pub fn cap(name: &str) -> Result<Cap, Error> {
    // SAFETY: CAP_LOOKUP only reads `name`, a live &str.
    Error::decode(unsafe { crate::syscall::raw::syscall2(nr::CAP_LOOKUP, name.as_ptr() as u64, name.len() as u64) })
        .map(Cap)
}

/// How long a receiving call ([`recv`], [`reply_recv`], [`wait`]) blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timeout {
    /// Until something arrives.
    Forever,
    /// Not at all: `Err(Timeout)` if nothing is there now.
    Poll,
    /// At most this many milliseconds (`Ms(0)` is the same as `Poll`).
    Ms(u64),
}

impl Timeout {
    /// The `rbx` value of the ABI.
    pub const fn raw(self) -> u64 {
        match self {
            Timeout::Forever => WAIT_FOREVER,
            Timeout::Poll | Timeout::Ms(0) => POLL,
            // `POLL` is u64::MAX: a huge timeout must not turn into a poll.
            Timeout::Ms(POLL) => POLL - 1,
            Timeout::Ms(ms) => ms,
        }
    }
}

/// A message that arrived (from [`recv`], [`reply_recv`] or as the reply
/// of [`call`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// The sender's badge (from its capability; `abi::ipc::FAULT_BADGE` for
    /// fault messages; 0 on a reply).
    pub badge: u64,
    pub msg: Message,
    /// Bytes written into the receive buffer.
    pub len: usize,
}

/// The values of one IPC system call, in and out (see `abi::ipc`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct IpcRegs {
    /// In: call number. Out: result (0 or a negative error).
    pub rax: u64,
    /// In: capability index. Out: badge.
    pub rdi: u64,
    /// In/out: label.
    pub rsi: u64,
    /// In/out: words 0..4.
    pub words: [u64; MSG_WORDS],
    /// In: send buffer pointer.
    pub r12: u64,
    /// In: send buffer length. Out: bytes received.
    pub r13: u64,
    /// In: receive buffer pointer.
    pub r14: u64,
    /// In: receive buffer capacity.
    pub r15: u64,
    /// In: timeout.
    pub rbx: u64,
}

/// Builds the registers of call `nr` and runs it on the right path;
/// returns the decoded `rax` and what arrived.
fn ipc(
    nr: u64,
    cap: u64,
    msg: &Message,
    send: &[u8],
    recv: &mut [u8],
    timeout: Timeout,
) -> Result<(u64, Received), Error> {
    if send.len() > MAX_BUFFER {
        return Err(Error::BadArgument);
    }
    let mut r = IpcRegs {
        rax: nr,
        rdi: cap,
        rsi: msg.label,
        words: msg.words,
        r12: send.as_ptr() as u64,
        r13: send.len() as u64,
        r14: recv.as_mut_ptr() as u64,
        // Not capped at MAX_BUFFER: a fault message (from the kernel) may
        // be larger (`abi::fault::FAULT_BUFFER`); task messages never are.
        r15: recv.len() as u64,
        rbx: timeout.raw(),
    };
    if send.is_empty() {
        // SAFETY: the kernel writes at most `r15` bytes into `recv` (a live,
        // exclusively borrowed buffer of at least that size) and nothing
        // else of ours; every pointer is checked by the kernel.
        unsafe { raw::exchange_fast(&mut r) };
    } else {
        // SAFETY: as above; `send` is a live buffer of `r13` bytes the
        // kernel only reads.
        unsafe { raw::exchange(&mut r) };
    }
    let value = Error::decode(r.rax)?;
    let received =
        Received { badge: r.rdi, msg: Message { label: r.rsi, words: r.words }, len: (r.r13 as usize).min(recv.len()) };
    Ok((value, received))
}

/// `SEND`: blocks until a receiver takes `msg`.
pub fn send(cap: Cap, msg: &Message) -> Result<(), Error> {
    send_with(cap, msg, &[])
}

/// `SEND` with a buffer of at most `MAX_BUFFER` bytes.
pub fn send_with(cap: Cap, msg: &Message, bytes: &[u8]) -> Result<(), Error> {
    ipc(nr::SEND, cap.0, msg, bytes, &mut [], Timeout::Forever).map(drop)
}

/// `CALL`: sends `msg` and waits for the reply.
pub fn call(cap: Cap, msg: &Message) -> Result<Received, Error> {
    call_with(cap, msg, &[], &mut [])
}

/// `CALL` with a send buffer and a buffer for the reply's bytes.
pub fn call_with(cap: Cap, msg: &Message, send: &[u8], reply: &mut [u8]) -> Result<Received, Error> {
    ipc(nr::CALL, cap.0, msg, send, reply, Timeout::Forever).map(|(_, r)| r)
}

/// `RECV`: the next message on endpoint `cap` (words only).
pub fn recv(cap: Cap, timeout: Timeout) -> Result<Received, Error> {
    recv_into(cap, &mut [], timeout)
}

/// `RECV` with a buffer for the message's bytes (`Received::len` says how
/// many arrived; a longer message is cut).
pub fn recv_into(cap: Cap, buf: &mut [u8], timeout: Timeout) -> Result<Received, Error> {
    ipc(nr::RECV, cap.0, &Message::default(), &[], buf, timeout).map(|(_, r)| r)
}

/// `REPLY`: answers the last `call` this task received.
pub fn reply(msg: &Message) -> Result<(), Error> {
    reply_with(msg, &[])
}

/// `REPLY` with a buffer.
pub fn reply_with(msg: &Message, bytes: &[u8]) -> Result<(), Error> {
    ipc(nr::REPLY, 0, msg, bytes, &mut [], Timeout::Forever).map(drop)
}

/// `REPLY_RECV`: answers the pending caller (if any), then receives on
/// `cap`: a server loop's one call per request.
pub fn reply_recv(cap: Cap, msg: &Message, timeout: Timeout) -> Result<Received, Error> {
    reply_recv_with(cap, msg, &[], &mut [], timeout)
}

/// `REPLY_RECV` with a reply buffer and a receive buffer.
pub fn reply_recv_with(
    cap: Cap,
    msg: &Message,
    send: &[u8],
    recv: &mut [u8],
    timeout: Timeout,
) -> Result<Received, Error> {
    ipc(nr::REPLY_RECV, cap.0, msg, send, recv, timeout).map(|(_, r)| r)
}

/// `SIGNAL`: ORs `bits` into notification `cap`.
pub fn signal(cap: Cap, bits: u64) -> Result<(), Error> {
    // SAFETY: SIGNAL touches no memory.
    Error::decode(unsafe { crate::syscall::raw::syscall2(nr::SIGNAL, cap.0, bits) }).map(drop)
}

/// `WAIT`: takes the bits of notification `cap`, blocking while they are 0
/// (the timeout goes in `rbx`, as for [`recv`]). The bits come back in
/// `rax`; notifications hold bits 0..=62 only ([`signal`] with bit 63 is
/// `BadArgument`), so they never read as an error code.
pub fn wait(cap: Cap, timeout: Timeout) -> Result<u64, Error> {
    ipc(nr::WAIT, cap.0, &Message::default(), &[], &mut [], timeout).map(|(bits, _)| bits)
}
