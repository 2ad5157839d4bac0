//! Notifications: a word of bits; `signal` ORs in, `wait` takes them all.
//!
//! A notification holds 63 bits (0..=62): `wait` returns them in `rax`,
//! where a set bit 63 would read as an error code, so `signal` refuses bit
//! 63 (`BadArgument`) and a woken waiter never sees a negative value.

use super::deadline;
use crate::sched::Scheduler;
use crate::task::State;
use abi::ipc::{CapKind, POLL, Rights};
use abi::syscall::Error;

/// `signal(cap, bits)` by the current task.
pub fn signal(s: &mut Scheduler) -> Result<u64, Error> {
    let me = s.current_index().ok_or(Error::BadTask)?;
    let f = &s.tasks[me].save.frame;
    let bits = f.rsi;
    let n = s.tasks[me].cap(f.rdi, CapKind::Notification, Rights::SEND)?.object as u16;
    if bits & abi::ipc::NOTIFY_RESERVED_BIT != 0 {
        return Err(Error::BadArgument);
    }
    let word = &mut s.notifications[n as usize].bits;
    *word |= bits;
    // The first waiter in table order (`table::TaskTable::waiters`).
    let waiters = s.tasks.waiters(n as usize);
    if *word != 0 && waiters != 0 {
        let w = waiters.trailing_zeros() as usize;
        let taken = core::mem::take(&mut s.notifications[n as usize].bits);
        s.tasks.set_state(w, State::Runnable);
        s.tasks[w].save.frame.rax = taken;
    }
    Ok(0)
}

/// `wait(cap)` by the current task (timeout in `rbx`).
pub fn wait(s: &mut Scheduler) -> Result<u64, Error> {
    let me = s.current_index().ok_or(Error::BadTask)?;
    let f = &s.tasks[me].save.frame;
    let timeout = f.rbx;
    let n = s.tasks[me].cap(f.rdi, CapKind::Notification, Rights::RECV)?.object as u16;
    let bits = core::mem::take(&mut s.notifications[n as usize].bits);
    if bits != 0 {
        return Ok(bits);
    }
    if timeout == POLL {
        return Err(Error::Timeout);
    }
    let deadline = deadline(s.ticks, timeout);
    s.tasks.set_state_unqueued(me, State::WaitBlocked { n, deadline });
    Ok(0)
}
