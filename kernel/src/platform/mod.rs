//! Platform discovery and the timer: ACPI tables, the local APIC, the I/O
//! APICs, a reference timer, and the calibration that ties them together.
//!
//! [`init`] runs once at boot with interrupts off:
//!
//! 1. `acpi` reads the static ACPI tables from the RSDP the PVH start info
//!    gives (with the `acpi` crate, allocation-free): the MADT for the local
//!    APIC address, the processors and the I/O APICs; the FADT for the ACPI
//!    PM timer; the HPET table. Every table we use is range-checked against
//!    the direct map and checksummed first: a missing or malformed table is a
//!    [`PlatformError`] that names it, never a wild read.
//! 2. `lapic` enables this CPU's local APIC in xAPIC mode (MMIO), with the
//!    spurious vector [`SPURIOUS_VECTOR`] and every local interrupt masked.
//! 3. `ioapic` masks every redirection entry of every I/O APIC: no device
//!    interrupt arrives until a driver routes it. (The legacy PIC is already
//!    remapped and masked by `arch::pic`.)
//! 4. `reftimer` picks the reference clock: the ACPI PM timer if the FADT
//!    has one, else the HPET (see that module for why this order).
//! 5. `calibrate` counts LAPIC timer ticks and TSC ticks over 10 ms of the
//!    reference clock. Every polling loop is bounded, so a dead clock is an
//!    error, not a hang, under plain TCG and under `-icount` alike.
//!
//! Then it reports one `platform` event (`docs/events.md`) and a console
//! line, and the scheduler gets a `&'static Platform` to start the periodic
//! LAPIC timer with ([`Platform::start_timer`], vector [`TIMER_VECTOR`]); the
//! trap path acknowledges each tick with [`eoi`], which needs no `Platform`.
//!
//! MMIO goes through the boot direct map (`mem::phys_to_virt`), whose top
//! 32 MiB below 4 GiB are mapped uncached (`boot/entry.rs`): LAPIC, I/O APIC
//! and HPET registers must lie there, and a table that puts them elsewhere
//! is rejected rather than accessed through a cached mapping.

mod acpi;
mod calibrate;
mod ioapic;
mod lapic;
mod reftimer;

use crate::events;
use crate::kprintln;
use abi::event::Event;
use core::fmt;
use spin::Once;

pub use lapic::eoi;

/// Vector of the LAPIC timer interrupt.
pub const TIMER_VECTOR: u8 = 0x40;
/// Vector of the LAPIC spurious interrupt (low nibble all ones, as old
/// xAPICs require).
pub const SPURIOUS_VECTOR: u8 = 0xff;

/// Most I/O APICs we keep track of.
pub const MAX_IOAPICS: usize = 16;

/// Physical range the boot page tables map uncached (`boot/entry.rs`): the
/// top 32 MiB below 4 GiB, where the PC platform puts its MMIO.
const UNCACHED_MMIO: core::ops::Range<u64> = (4 << 30) - (32 << 20)..(4 << 30);

/// What the kernel knows about the machine's interrupt and timer hardware.
pub struct Platform {
    /// ACPI revision from the RSDP (0 = ACPI 1.0).
    pub acpi_revision: u8,
    /// Enabled processors in the MADT (`arch::smp` starts the others).
    pub cpus: u32,
    /// Their local APIC ids, in MADT order (the first `MAX_CPUS`).
    pub apic_ids: heapless::Vec<u32, { crate::arch::percpu::MAX_CPUS }>,
    lapic: lapic::Lapic,
    ioapics: heapless::Vec<ioapic::IoApic, MAX_IOAPICS>,
    ref_timer: reftimer::RefTimer,
    calibration: calibrate::Calibration,
}

impl Platform {
    /// Starts the LAPIC timer in periodic mode at `hz` interrupts per second
    /// on [`TIMER_VECTOR`] (1000 = 1 ms ticks); `hz == 0` stops it. The
    /// period is rounded to whole LAPIC timer ticks.
    pub fn start_timer(&self, hz: u32) {
        if hz == 0 {
            self.lapic.stop_timer();
            return;
        }
        let count = (self.calibration.lapic_hz / u64::from(hz)).clamp(1, u64::from(u32::MAX));
        self.lapic.start_periodic(count as u32, TIMER_VECTOR);
    }

    /// TSC ticks per second, calibrated against the reference timer.
    pub fn tsc_hz(&self) -> u64 {
        self.calibration.tsc_hz
    }

    /// LAPIC timer ticks per second (at the divide `lapic::TIMER_DIVIDE`).
    pub fn lapic_timer_hz(&self) -> u64 {
        self.calibration.lapic_hz
    }

    /// The boot CPU's local APIC id.
    pub fn apic_id(&self) -> u32 {
        self.lapic.id
    }

    /// Sends INIT to the CPU with local APIC id `apic_id` (from the boot
    /// CPU's LAPIC). False if the IPI was not accepted.
    pub fn send_init(&self, apic_id: u32) -> bool {
        self.lapic.send_init(apic_id)
    }

    /// Sends a startup IPI to `apic_id`: it starts in real mode at physical
    /// address `page << 12`.
    pub fn send_startup(&self, apic_id: u32, page: u8) -> bool {
        self.lapic.send_startup(apic_id, page)
    }

    /// Sends interrupt `vector` to the CPU with local APIC id `apic_id`
    /// (from the calling CPU's LAPIC: the register page's address is the
    /// same on every CPU, each reaching its own).
    pub fn send_fixed(&self, apic_id: u32, vector: u8) -> bool {
        self.lapic.send_fixed(apic_id, vector)
    }

    /// Enables the calling application processor's local APIC (the same
    /// setup as the boot CPU's: every local interrupt masked, spurious
    /// vector set) and returns its APIC id.
    pub fn init_ap_lapic(&self) -> Result<u32, PlatformError> {
        lapic::Lapic::init(self.lapic.paddr).map(|l| l.id)
    }
}

/// Why platform discovery failed. `Display` says what is missing or
/// malformed and where.
#[derive(Debug)]
pub enum PlatformError {
    /// The PVH start info carries no RSDP address.
    NoRsdp,
    /// A table or register block lies (partly) outside the direct map.
    OutsideDirectMap { what: &'static str, paddr: u64, len: u64 },
    /// The RSDP is malformed (`problem` says how).
    BadRsdp { paddr: u64, problem: &'static str },
    /// An ACPI table is malformed: bad signature, checksum, length or entry.
    BadTable { table: &'static str, paddr: u64, problem: &'static str },
    /// A table we cannot do without is not in the RSDT/XSDT.
    MissingTable(&'static str),
    /// CPUID or the MADT shows no usable local APIC.
    NoLocalApic(&'static str),
    /// The firmware left the local APIC in x2APIC mode; we drive the xAPIC.
    X2ApicMode,
    /// The MADT and IA32_APIC_BASE disagree on where the local APIC is.
    LapicAddressMismatch { madt: u64, msr: u64 },
    /// The MADT lists no I/O APIC.
    NoIoApic,
    /// The MADT lists more than [`MAX_IOAPICS`] I/O APICs.
    TooManyIoApics,
    /// Register block outside the uncached MMIO window (see the module note).
    MmioNotUncached { what: &'static str, paddr: u64 },
    /// A device does not answer (its registers read as all ones).
    DeviceAbsent { what: &'static str, paddr: u64 },
    /// Neither an ACPI PM timer (FADT) nor an HPET (HPET table).
    NoReferenceTimer,
    /// The HPET reports an impossible tick period.
    BadHpetPeriod(u64),
    /// The reference timer stopped counting during calibration.
    ReferenceTimerStuck(&'static str),
    /// A counter did not advance during calibration.
    NotCounting(&'static str),
    /// The LAPIC timer ran out before the calibration interval ended.
    LapicTimerTooFast,
}

impl fmt::Display for PlatformError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use PlatformError::*;
        match self {
            NoRsdp => write!(f, "no ACPI RSDP: the PVH start info has rsdp_paddr = 0"),
            OutsideDirectMap { what, paddr, len } => {
                write!(f, "{what}: {len:#x} bytes at {paddr:#x} lie outside the direct map of the first 4 GiB")
            }
            BadRsdp { paddr, problem } => write!(f, "malformed ACPI RSDP at {paddr:#x}: {problem}"),
            BadTable { table, paddr, problem } => write!(f, "malformed ACPI table {table} at {paddr:#x}: {problem}"),
            MissingTable(table) => write!(f, "ACPI table {table} is missing"),
            NoLocalApic(why) => write!(f, "no local APIC: {why}"),
            X2ApicMode => write!(f, "the local APIC is in x2APIC mode; only xAPIC (MMIO) mode is supported"),
            LapicAddressMismatch { madt, msr } => {
                write!(f, "the MADT puts the local APIC at {madt:#x} but IA32_APIC_BASE says {msr:#x}")
            }
            NoIoApic => write!(f, "the MADT lists no I/O APIC"),
            TooManyIoApics => write!(f, "the MADT lists more than {MAX_IOAPICS} I/O APICs"),
            MmioNotUncached { what, paddr } => write!(
                f,
                "{what} registers at {paddr:#x} are outside the uncached MMIO window {:#x}..{:#x}",
                UNCACHED_MMIO.start, UNCACHED_MMIO.end
            ),
            DeviceAbsent { what, paddr } => write!(f, "{what} at {paddr:#x} does not respond (reads all ones)"),
            NoReferenceTimer => write!(f, "no reference timer: the FADT has no PM timer and there is no HPET table"),
            BadHpetPeriod(fs) => write!(f, "the HPET reports a tick period of {fs} fs (must be 1..=100000000)"),
            ReferenceTimerStuck(name) => write!(f, "the reference timer ({name}) stopped counting during calibration"),
            NotCounting(what) => write!(f, "{what} did not advance during calibration"),
            LapicTimerTooFast => write!(f, "the LAPIC timer counted down to 0 within the calibration interval"),
        }
    }
}

static PLATFORM: Once<Platform> = Once::new();

/// The platform, once [`init`] has succeeded.
pub fn get() -> Option<&'static Platform> {
    PLATFORM.get()
}

/// Discovers the platform from the ACPI tables at `rsdp_paddr`, sets up the
/// local APIC and I/O APICs, calibrates the LAPIC timer and the TSC, and
/// reports the `platform` event. Call once at boot, interrupts off; a second
/// call returns the first result without touching the hardware again.
pub fn init(rsdp_paddr: u64) -> Result<&'static Platform, PlatformError> {
    if let Some(platform) = PLATFORM.get() {
        return Ok(platform);
    }
    let tables = acpi::discover(rsdp_paddr)?;
    let lapic = lapic::Lapic::init(tables.lapic_paddr)?;
    let mut ioapics = heapless::Vec::new();
    for entry in &tables.ioapics {
        let ioapic = ioapic::IoApic::init_masked(entry)?;
        ioapics.push(ioapic).map_err(|_| PlatformError::TooManyIoApics)?;
    }
    let ref_timer = reftimer::RefTimer::select(&tables)?;
    let calibration = calibrate::calibrate(&ref_timer, &lapic)?;
    let platform = PLATFORM.call_once(|| Platform {
        acpi_revision: tables.revision,
        cpus: tables.cpus,
        apic_ids: tables.apic_ids.clone(),
        lapic,
        ioapics,
        ref_timer,
        calibration,
    });
    platform.report();
    Ok(platform)
}

impl Platform {
    /// The console line and the `platform` event.
    fn report(&self) {
        let pins: u32 = self.ioapics.iter().map(|io| io.pins).sum();
        let first_ioapic = self.ioapics.first().map_or(0, |io| io.paddr);
        let ticks_per_ms = self.calibration.lapic_hz / 1000;
        kprintln!(
            "  ACPI {}: {} CPU(s); local APIC {:#x} (id {}); {} I/O APIC(s), {} pins, all masked",
            self.acpi_revision,
            self.cpus,
            self.lapic.paddr,
            self.lapic.id,
            self.ioapics.len(),
            pins
        );
        for io in &self.ioapics {
            kprintln!("    I/O APIC {} at {:#x}: GSIs {}..{}", io.id, io.paddr, io.gsi_base, io.gsi_base + io.pins);
        }
        kprintln!(
            "  timers: {} at {:#x} ({} Hz) -> LAPIC timer {} ticks/ms (divide {}), TSC {} kHz",
            self.ref_timer.name(),
            self.ref_timer.address(),
            self.ref_timer.hz(),
            ticks_per_ms,
            lapic::TIMER_DIVIDE,
            self.calibration.tsc_hz / 1000
        );
        events::emit(&Event::Platform {
            acpi_revision: u64::from(self.acpi_revision),
            cpus: u64::from(self.cpus),
            lapic: self.lapic.paddr,
            apic_id: u64::from(self.apic_id()),
            ioapics: self.ioapics.len() as u64,
            ioapic: first_ioapic,
            ioapic_pins: u64::from(pins),
            ref_timer: self.ref_timer.name(),
            ref_timer_addr: self.ref_timer.address(),
            ref_hz: self.ref_timer.hz(),
            calibration_ref_ticks: self.calibration.ref_ticks,
            lapic_divide: u64::from(lapic::TIMER_DIVIDE),
            lapic_ticks_per_ms: ticks_per_ms,
            lapic_timer_hz: self.lapic_timer_hz(),
            tsc_hz: self.tsc_hz(),
        });
    }
}

/// The direct-map address of `len` bytes of MMIO registers at `paddr`,
/// which must lie in the uncached window.
fn mmio(what: &'static str, paddr: u64, len: u64) -> Result<u64, PlatformError> {
    match paddr.checked_add(len) {
        Some(end) if paddr >= UNCACHED_MMIO.start && end <= UNCACHED_MMIO.end => Ok(crate::mem::phys_to_virt(paddr)),
        _ => Err(PlatformError::MmioNotUncached { what, paddr }),
    }
}
