//! `FUTEX_WAIT` and `FUTEX_WAKE`: sleeping on a word of shared memory.
//!
//! The kernel keys a futex by the word's physical address, so tasks that
//! share a region meet on it. `wait` sleeps only if the word still holds
//! the expected value (checked in the kernel, so a wake between the
//! caller's check and its sleep is not lost).

use abi::syscall::{Error, nr};
use core::sync::atomic::AtomicU32;

/// How a wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    Woken,
    /// The word no longer held the expected value.
    Changed,
    TimedOut,
}

/// Sleeps while `word == expected`, at most `timeout_ms` (0: no limit).
pub fn wait(word: &AtomicU32, expected: u32, timeout_ms: u64) -> Result<Wait, Error> {
    let addr = word.as_ptr() as u64;
    // SAFETY: FUTEX_WAIT only reads the word (the kernel checks the address).
    match Error::decode(unsafe { crate::syscall::raw::syscall3(nr::FUTEX_WAIT, addr, expected as u64, timeout_ms) }) {
        Ok(0) => Ok(Wait::Woken),
        Ok(_) => Ok(Wait::Changed),
        Err(Error::Timeout) => Ok(Wait::TimedOut),
        Err(e) => Err(e),
    }
}

/// Wakes up to `n` waiters on the word at `addr`; returns how many.
pub fn wake_addr(addr: u64, n: u64) -> Result<u64, Error> {
    // SAFETY: FUTEX_WAKE touches no memory (the kernel checks the address).
    Error::decode(unsafe { crate::syscall::raw::syscall2(nr::FUTEX_WAKE, addr, n) })
}

/// Wakes up to `n` waiters on `word`.
pub fn wake(word: &AtomicU32, n: u64) -> Result<u64, Error> {
    wake_addr(word.as_ptr() as u64, n)
}
