//! The restart policy: restart at once, then back off, then give up.
//!
//! A task that faults is restarted from its image — that is the default
//! action for every fault kind. But a task that faults on every start would
//! then restart forever, as fast as it can fault, starving everything at its
//! priority: a restart storm. So the server keeps, per task, the times of
//! its recent restarts and (constants below, in milliseconds of the
//! kernel's tick clock):
//!
//! * the first restart within [`WINDOW_MS`] is immediate;
//! * each further one waits twice as long as the one before, starting at
//!   [`BASE_DELAY_MS`] and capped at [`MAX_DELAY_MS`] (10, 20, 40, ... ms);
//! * a fault when [`MAX_RESTARTS`] restarts already happened within the
//!   last [`WINDOW_MS`] stops the task for good (`TASK_CTL STOP`; the
//!   kernel reports it as `escalate`).
//!
//! This is OTP's "at most R restarts in T" with an exponential back-off
//! between them. Restarts older than the window are forgotten, so a task
//! that faults now and then is restarted at once every time.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

/// Restarts allowed within [`WINDOW_MS`] before the task is stopped.
pub const MAX_RESTARTS: usize = 5;
/// The window over which restarts are counted.
pub const WINDOW_MS: u64 = 2000;
/// Delay of the second restart within the window; doubles after.
pub const BASE_DELAY_MS: u64 = 10;
/// Longest delay.
pub const MAX_DELAY_MS: u64 = 1000;

/// What to do with a faulted task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Restart {
        delay_ms: u64,
    },
    /// Too many restarts within the window.
    Stop {
        restarts_in_window: usize,
    },
}

/// Per-task restart history.
#[derive(Default)]
pub struct Policy {
    /// Tick of each restart still inside the window, oldest first.
    history: BTreeMap<u64, Vec<u64>>,
}

impl Policy {
    /// Decides for a fault of `task` at tick `now`, and records a restart.
    pub fn decide(&mut self, task: u64, now: u64) -> Decision {
        let recent = self.history.entry(task).or_default();
        recent.retain(|&t| now.saturating_sub(t) < WINDOW_MS);
        let n = recent.len();
        if n >= MAX_RESTARTS {
            return Decision::Stop { restarts_in_window: n };
        }
        let delay_ms = match n {
            0 => 0,
            n => BASE_DELAY_MS.saturating_mul(1 << (n - 1).min(20)).min(MAX_DELAY_MS),
        };
        // The restart happens after the delay: count it from then, so the
        // back-off itself does not empty the window.
        recent.push(now + delay_ms);
        Decision::Restart { delay_ms }
    }

    /// Forgets a task (it was stopped).
    pub fn forget(&mut self, task: u64) {
        self.history.remove(&task);
    }
}

impl Policy {
    /// Restarts of `task` recorded within the window (for the report).
    pub fn restarts_in_window(&self, task: u64) -> u64 {
        self.history.get(&task).map_or(0, |h| h.len() as u64)
    }
}
