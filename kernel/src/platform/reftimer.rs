//! The reference timer: a clock of known frequency to calibrate against.
//!
//! Choice: the ACPI PM timer first, the HPET if there is no PM timer.
//!
//! * The PM timer (FADT `PM_TMR_BLK`) runs at a frequency fixed by the ACPI
//!   specification, 3.579545 MHz, and is one read-only I/O port: nothing to
//!   set up, no state to change, nothing a later driver could disagree with.
//!   Every PC-compatible (non-hardware-reduced) ACPI machine has one,
//!   including both QEMU machine types (PIIX4 and ICH9). Its counter is 24
//!   or 32 bits wide (FADT `TMR_VAL_EXT`); it wraps after 4.7 s at 24 bits,
//!   far longer than the 10 ms we measure.
//! * The HPET is the fallback, for hardware-reduced ACPI platforms without a
//!   PM timer. Its period is read from its capabilities register, and its
//!   main counter may have to be started (ENABLE_CNF), which changes device
//!   state. Its comparators and legacy routing are left alone.
//!
//! Under QEMU both count the virtual clock, so under `-icount` both advance
//! one nanosecond per guest instruction and calibration is deterministic.

use super::acpi::Tables;
use super::{PlatformError, mmio};
use x86_64::instructions::port::PortRead;

/// ACPI PM timer frequency (ACPI spec, "PM Timer").
pub const PM_TIMER_HZ: u64 = 3_579_545;

/// HPET register offsets (IA-PC HPET spec, 2.3).
const HPET_CAPABILITIES: u64 = 0x000;
const HPET_CONFIG: u64 = 0x010;
const HPET_MAIN_COUNTER: u64 = 0x0f0;
const HPET_ENABLE: u64 = 1 << 0;
const HPET_COUNTER_64BIT: u64 = 1 << 13;
/// The spec's longest allowed tick period: 100 ns, in femtoseconds.
const HPET_MAX_PERIOD_FS: u64 = 100_000_000;
const FS_PER_S: u64 = 1_000_000_000_000_000;
const HPET_REGS_BYTES: u64 = 0x400;

pub enum RefTimer {
    PmTimer { port: u16, mask: u64 },
    Hpet { paddr: u64, base: u64, hz: u64, mask: u64 },
}

impl RefTimer {
    /// Picks the reference timer (see the module note for the order).
    pub fn select(tables: &Tables) -> Result<RefTimer, PlatformError> {
        if let Some(pm) = tables.pm_timer {
            let mask = if pm.bits32 { u64::from(u32::MAX) } else { (1 << 24) - 1 };
            return Ok(RefTimer::PmTimer { port: pm.port, mask });
        }
        let Some(paddr) = tables.hpet_paddr else { return Err(PlatformError::NoReferenceTimer) };
        let base = mmio("HPET", paddr, HPET_REGS_BYTES)?;
        let caps = hpet_read(base, HPET_CAPABILITIES);
        if caps == u64::MAX {
            return Err(PlatformError::DeviceAbsent { what: "HPET", paddr });
        }
        let period_fs = caps >> 32;
        if !(1..=HPET_MAX_PERIOD_FS).contains(&period_fs) {
            return Err(PlatformError::BadHpetPeriod(period_fs));
        }
        let mask = if caps & HPET_COUNTER_64BIT != 0 { u64::MAX } else { u64::from(u32::MAX) };
        let config = hpet_read(base, HPET_CONFIG);
        if config & HPET_ENABLE == 0 {
            hpet_write(base, HPET_CONFIG, config | HPET_ENABLE);
        }
        Ok(RefTimer::Hpet { paddr, base, hz: FS_PER_S / period_fs, mask })
    }

    /// The name used on the console and in the `platform` event.
    pub fn name(&self) -> &'static str {
        match self {
            RefTimer::PmTimer { .. } => "pm_timer",
            RefTimer::Hpet { .. } => "hpet",
        }
    }

    /// The I/O port (PM timer) or physical MMIO address (HPET).
    pub fn address(&self) -> u64 {
        match *self {
            RefTimer::PmTimer { port, .. } => u64::from(port),
            RefTimer::Hpet { paddr, .. } => paddr,
        }
    }

    /// Counter frequency.
    pub fn hz(&self) -> u64 {
        match *self {
            RefTimer::PmTimer { .. } => PM_TIMER_HZ,
            RefTimer::Hpet { hz, .. } => hz,
        }
    }

    /// The counter's current value (it wraps at `mask`).
    pub fn read(&self) -> u64 {
        match *self {
            RefTimer::PmTimer { port, mask } => {
                // SAFETY: `port` is the PM timer's read-only port from the
                // FADT; reading it has no side effects.
                u64::from(unsafe { u32::read_from_port(port) }) & mask
            }
            RefTimer::Hpet { base, mask, .. } => hpet_read(base, HPET_MAIN_COUNTER) & mask,
        }
    }

    /// Ticks from `earlier` to `later`, across at most one wrap.
    pub fn elapsed(&self, earlier: u64, later: u64) -> u64 {
        let mask = match *self {
            RefTimer::PmTimer { mask, .. } | RefTimer::Hpet { mask, .. } => mask,
        };
        later.wrapping_sub(earlier) & mask
    }
}

fn hpet_read(base: u64, offset: u64) -> u64 {
    // SAFETY: `base` maps the HPET's register block uncached (`mmio`); the
    // offsets used are 64-bit registers of the general block, where a read
    // has no side effects.
    unsafe { ((base + offset) as *const u64).read_volatile() }
}

fn hpet_write(base: u64, offset: u64, value: u64) {
    // SAFETY: as in `hpet_read`; the only write sets ENABLE_CNF in the
    // general configuration register, keeping its other bits.
    unsafe { ((base + offset) as *mut u64).write_volatile(value) }
}
