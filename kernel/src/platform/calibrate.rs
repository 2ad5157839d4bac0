//! Calibration: how fast the LAPIC timer and the TSC count, measured
//! against the reference timer.
//!
//! With interrupts off: arm the LAPIC timer as a masked one-shot from
//! `u32::MAX`, wait for the reference counter to tick (so the interval
//! starts on an edge), read the TSC and the LAPIC count, poll the reference
//! counter until [`CALIBRATION_MS`] of its ticks have passed, read both
//! again. Rates are `delta * ref_hz / ref_elapsed`, in 128-bit integers (the
//! kernel has no floating point). Reading order is the same at both ends,
//! so the fixed cost of a read cancels out.
//!
//! Every loop is bounded by a number of reads, not by time (the clocks are
//! what is being checked): if the reference counter stays unchanged for
//! [`MAX_STALL_READS`] reads it is declared stuck, and the whole interval
//! may take at most [`MAX_READS`]. Both bounds are far above what 10 ms
//! takes on real hardware (a port read is ~1 µs), under TCG (~0.1 µs) and
//! under `-icount` (where a read loop iteration is a few dozen instructions
//! and one instruction is 1 ns), and reachable in seconds if a clock is
//! dead, so calibration ends in every mode.

use super::PlatformError;
use super::lapic::Lapic;
use super::reftimer::RefTimer;
use crate::arch::rdtsc;

/// Length of the measured interval, in reference-timer time.
pub const CALIBRATION_MS: u64 = 10;
/// Reads of an unchanged reference counter after which it is stuck.
const MAX_STALL_READS: u32 = 1_000_000;
/// Reads allowed for the whole interval.
const MAX_READS: u64 = 20_000_000;

/// Calibration results.
pub struct Calibration {
    /// Reference-timer ticks actually measured over (≥ 10 ms worth).
    pub ref_ticks: u64,
    /// LAPIC timer ticks per second at `lapic::TIMER_DIVIDE`.
    pub lapic_hz: u64,
    /// TSC ticks per second.
    pub tsc_hz: u64,
}

pub fn calibrate(ref_timer: &RefTimer, lapic: &Lapic) -> Result<Calibration, PlatformError> {
    let result = x86_64::instructions::interrupts::without_interrupts(|| measure(ref_timer, lapic));
    lapic.stop_timer();
    result
}

fn measure(ref_timer: &RefTimer, lapic: &Lapic) -> Result<Calibration, PlatformError> {
    let ref_hz = ref_timer.hz();
    let interval = (ref_hz * CALIBRATION_MS).div_ceil(1000);

    lapic.start_masked_count(u32::MAX);
    let first = ref_timer.read();
    let start = poll_until(ref_timer, first, 1)?;
    let tsc_start = rdtsc();
    let lapic_start = lapic.current_count();

    let end = poll_until(ref_timer, start, interval)?;
    let tsc_end = rdtsc();
    let lapic_end = lapic.current_count();

    if lapic_end == 0 {
        return Err(PlatformError::LapicTimerTooFast);
    }
    let lapic_ticks = u64::from(lapic_start.saturating_sub(lapic_end));
    if lapic_ticks == 0 {
        return Err(PlatformError::NotCounting("the LAPIC timer"));
    }
    let tsc_ticks = tsc_end.wrapping_sub(tsc_start);
    if tsc_ticks == 0 {
        return Err(PlatformError::NotCounting("the TSC"));
    }
    let ref_ticks = ref_timer.elapsed(start, end);
    let rate = |ticks: u64| (u128::from(ticks) * u128::from(ref_hz) / u128::from(ref_ticks)) as u64;
    Ok(Calibration { ref_ticks, lapic_hz: rate(lapic_ticks), tsc_hz: rate(tsc_ticks) })
}

/// Polls the reference counter until at least `ticks` have passed since the
/// value `since`; returns the value read then.
fn poll_until(ref_timer: &RefTimer, since: u64, ticks: u64) -> Result<u64, PlatformError> {
    let mut last = since;
    let mut unchanged = 0;
    for _ in 0..MAX_READS {
        let now = ref_timer.read();
        if ref_timer.elapsed(since, now) >= ticks {
            return Ok(now);
        }
        if now == last {
            unchanged += 1;
            if unchanged >= MAX_STALL_READS {
                return Err(PlatformError::ReferenceTimerStuck(ref_timer.name()));
            }
        } else {
            last = now;
            unchanged = 0;
        }
        core::hint::spin_loop();
    }
    Err(PlatformError::ReferenceTimerStuck(ref_timer.name()))
}
