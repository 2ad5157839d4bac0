//! `Instant` and `Duration` on the guest clock, shaped like `std::time`.
//!
//! The clock is the kernel's tick count (`TICKS`: milliseconds since boot,
//! from the 1 kHz timer), the one every timeout of the system is counted
//! in — `SLEEP`, receive timeouts, futex waits — so an `Instant` compares
//! directly with them. Resolution is one millisecond; for finer timing of
//! a code path there is the TSC ([`crate::syscall::tsc`]), in guest
//! instructions under `-icount`. [`Duration`] is `core::time::Duration`.

pub use core::time::Duration;

use core::ops::{Add, AddAssign, Sub, SubAssign};

/// A point on the guest clock (monotonic: the tick count never goes back).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant {
    /// Milliseconds since boot.
    ms: u64,
}

impl Instant {
    /// Now.
    pub fn now() -> Instant {
        Instant { ms: crate::syscall::ticks() }
    }

    /// The instant `ms` milliseconds after boot.
    pub const fn from_millis_since_boot(ms: u64) -> Instant {
        Instant { ms }
    }

    /// Milliseconds since boot.
    pub const fn millis_since_boot(self) -> u64 {
        self.ms
    }

    /// Time from `earlier` to `self`; zero if `earlier` is later (as std).
    pub fn duration_since(self, earlier: Instant) -> Duration {
        self.saturating_duration_since(earlier)
    }

    /// Time from `earlier` to `self`, or `None` if `earlier` is later.
    pub fn checked_duration_since(self, earlier: Instant) -> Option<Duration> {
        self.ms.checked_sub(earlier.ms).map(Duration::from_millis)
    }

    /// Time from `earlier` to `self`, or zero.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        self.checked_duration_since(earlier).unwrap_or(Duration::ZERO)
    }

    /// Time since `self`.
    pub fn elapsed(self) -> Duration {
        Instant::now().saturating_duration_since(self)
    }

    /// `self + d`, `None` past the clock's range (sub-millisecond parts of
    /// `d` are rounded up: a deadline is never early).
    pub fn checked_add(self, d: Duration) -> Option<Instant> {
        self.ms.checked_add(millis_up(d)?).map(|ms| Instant { ms })
    }

    /// `self - d`, `None` before boot (sub-millisecond parts rounded up).
    pub fn checked_sub(self, d: Duration) -> Option<Instant> {
        self.ms.checked_sub(millis_up(d)?).map(|ms| Instant { ms })
    }
}

/// Whole milliseconds of `d`, rounded up; `None` past `u64`.
fn millis_up(d: Duration) -> Option<u64> {
    let ms = d.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).ok()
}

impl Add<Duration> for Instant {
    type Output = Instant;
    /// Panics past the clock's range, as std's does.
    fn add(self, d: Duration) -> Instant {
        self.checked_add(d).expect("overflow when adding a duration to an instant")
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, d: Duration) {
        *self = *self + d;
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    fn sub(self, d: Duration) -> Instant {
        self.checked_sub(d).expect("overflow when subtracting a duration from an instant")
    }
}

impl SubAssign<Duration> for Instant {
    fn sub_assign(&mut self, d: Duration) {
        *self = *self - d;
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    fn sub(self, earlier: Instant) -> Duration {
        self.duration_since(earlier)
    }
}

/// Sleeps for at least `d` (rounded up to whole milliseconds; `SLEEP`).
pub fn sleep(d: Duration) -> Result<(), crate::Error> {
    crate::syscall::sleep(millis_up(d).unwrap_or(u64::MAX))
}

/// Sleeps until `deadline` (returns at once if it has passed).
pub fn sleep_until(deadline: Instant) -> Result<(), crate::Error> {
    match deadline.checked_duration_since(Instant::now()) {
        Some(d) if !d.is_zero() => sleep(d),
        _ => Ok(()),
    }
}
