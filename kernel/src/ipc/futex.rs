//! Futexes: kernel-assisted waiting on a word in (shared) memory.
//!
//! The key of a word in a shared region is its *physical* address, so
//! tasks that map the region at the same or different addresses meet on
//! it (shared frames never move). A word in a task's *private* memory is
//! keyed by `(task, virtual address)` instead ([`PRIVATE_KEY`]): a private
//! page's frame changes under a copy-on-write in a checkpoint scope (and
//! back on a rollback), so a physical key taken before would go stale and
//! a wake after it would miss the waiter. Only the task itself (or its
//! supervisor, `TASK_CTL FUTEX_WAKE`) can name its private words. `wait`
//! blocks only if the word still holds the expected value (checked under
//! the kernel lock, so a wake between the task's check and its wait is not
//! lost); `wake` readies the longest waiters first, found among the
//! waiters of the key's hash bucket (`sched::table`), not by a scan.

use super::deadline;
use crate::mem::phys_to_virt;
use crate::recovery::versions::SHARED;
use crate::sched::{Scheduler, table};
use crate::task::{State, Task};
use abi::syscall::Error;

/// Bit 63 of a key: a private word, `(task id << 47) | vaddr` below it
/// (user addresses are below 2^47, task ids below 2^16). Physical
/// addresses never have it.
pub const PRIVATE_KEY: u64 = 1 << 63;

/// The futex key of the aligned `u32` at `addr` in `task`'s space, and the
/// word's physical address now.
pub fn key(task: &Task, addr: u64) -> Result<(u64, u64), Error> {
    if addr % 4 != 0 {
        return Err(Error::BadArgument);
    }
    let space = task.space.as_ref().ok_or(Error::BadTask)?;
    let (phys, flags) = space.translate(addr).ok_or(Error::BadPointer)?;
    if !flags.contains(x86_64::structures::paging::PageTableFlags::USER_ACCESSIBLE) {
        return Err(Error::BadPointer);
    }
    let key = if flags.contains(SHARED) { phys.as_u64() } else { PRIVATE_KEY | (task.id as u64) << 47 | addr };
    Ok((key, phys.as_u64()))
}

/// `futex_wait(addr, expected, timeout_ms)` by the current task.
pub fn wait(s: &mut Scheduler) -> Result<u64, Error> {
    let me = s.current_index().ok_or(Error::BadTask)?;
    let f = &s.tasks[me].save.frame;
    let (addr, expected, timeout) = (f.rdi, f.rsi as u32, f.rdx);
    let (key, paddr) = key(&s.tasks[me], addr)?;
    // SAFETY: `paddr` is a mapped, 4-aligned user word, in the direct map.
    let now = unsafe { core::ptr::read_volatile(phys_to_virt(paddr) as *const u32) };
    if now != expected {
        return Ok(1);
    }
    let since = s.next_order();
    let deadline = deadline(s.ticks, timeout);
    s.tasks.set_state_unqueued(me, State::FutexWait { key, deadline, since });
    Ok(0)
}

/// Wakes up to `n` waiters on the word of key `key`, longest waiting
/// first; returns how many. The waiters are those of the key's hash
/// bucket (`table::TaskTable::futex_waiters`) whose key matches: no scan
/// of the table.
pub fn wake_key(s: &mut Scheduler, key: u64, n: u64) -> u64 {
    let mut woken = 0;
    while woken < n {
        let next = table::bits(s.tasks.futex_waiters(key))
            .filter_map(|i| match s.tasks[i].state() {
                State::FutexWait { key: k, since, .. } if k == key => Some((since, i)),
                _ => None,
            })
            .min();
        let Some((_, i)) = next else { break };
        s.tasks.set_state(i, State::Runnable);
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
    let (key, _) = key(&s.tasks[me], addr)?;
    Ok(wake_key(s, key, n))
}
