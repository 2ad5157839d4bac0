//! Futexes: kernel-assisted waiting on a word in (shared) memory.
//!
//! The key is the word's *physical* address, so tasks that map the same
//! shared region at the same or different addresses meet on it. `wait`
//! blocks only if the word still holds the expected value (checked under
//! the kernel lock, so a wake between the task's check and its wait is not
//! lost); `wake` readies the longest waiters first.

use super::deadline;
use crate::mem::phys_to_virt;
use crate::sched::Scheduler;
use crate::task::{State, Task};
use abi::syscall::Error;

/// The physical address of the aligned `u32` at `addr` in `task`'s space.
pub fn key(task: &Task, addr: u64) -> Result<u64, Error> {
    if addr % 4 != 0 {
        return Err(Error::BadArgument);
    }
    let space = task.space.as_ref().ok_or(Error::BadTask)?;
    let (phys, flags) = space.translate(addr).ok_or(Error::BadPointer)?;
    if !flags.contains(x86_64::structures::paging::PageTableFlags::USER_ACCESSIBLE) {
        return Err(Error::BadPointer);
    }
    Ok(phys.as_u64())
}

/// `futex_wait(addr, expected, timeout_ms)` by the current task.
pub fn wait(s: &mut Scheduler) -> Result<u64, Error> {
    let me = s.current_index().ok_or(Error::BadTask)?;
    let f = &s.tasks[me].save.frame;
    let (addr, expected, timeout) = (f.rdi, f.rsi as u32, f.rdx);
    let paddr = key(&s.tasks[me], addr)?;
    // SAFETY: `paddr` is a mapped, 4-aligned user word, in the direct map.
    let now = unsafe { core::ptr::read_volatile(phys_to_virt(paddr) as *const u32) };
    if now != expected {
        return Ok(1);
    }
    let since = s.next_order();
    let deadline = deadline(s.ticks, timeout);
    s.tasks[me].state = State::FutexWait { paddr, deadline, since };
    Ok(0)
}

/// Wakes up to `n` waiters on physical word `paddr`; returns how many.
pub fn wake_key(s: &mut Scheduler, paddr: u64, n: u64) -> u64 {
    let mut woken = 0;
    while woken < n {
        let next = s
            .tasks
            .iter()
            .enumerate()
            .filter_map(|(i, t)| match t.state {
                State::FutexWait { paddr: p, since, .. } if p == paddr => Some((since, i)),
                _ => None,
            })
            .min();
        let Some((_, i)) = next else { break };
        s.tasks[i].state = State::Runnable;
        s.tasks[i].save.frame.rax = 0;
        woken += 1;
    }
    woken
}

/// `futex_wake(addr, n)` by the current task.
pub fn wake(s: &mut Scheduler) -> Result<u64, Error> {
    let me = s.current_index().ok_or(Error::BadTask)?;
    let f = &s.tasks[me].save.frame;
    let (addr, n) = (f.rdi, f.rsi);
    let paddr = key(&s.tasks[me], addr)?;
    Ok(wake_key(s, paddr, n))
}
