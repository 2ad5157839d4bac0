//! This CPU's local APIC, in xAPIC mode (MMIO registers).
//!
//! [`Lapic::init`] checks that there is one (CPUID) where the MADT says
//! (IA32_APIC_BASE), refuses x2APIC mode (the registers then are MSRs, not
//! MMIO, and the firmware we boot under never enables it), sets the global
//! enable bit if the firmware cleared it, and software-enables the APIC
//! through the spurious-interrupt vector register with vector
//! [`SPURIOUS_VECTOR`]. It masks LINT0 (the 8259's ExtINT line: the PIC is
//! masked and unused) and the error and timer LVTs; LINT1 keeps the NMI
//! wiring the firmware set up.
//!
//! The timer counts down from an initial count at the bus clock divided by
//! [`TIMER_DIVIDE`]; in one-shot mode it stops at 0, in periodic mode it
//! reloads and raises its vector each time it reaches 0. `calibrate` measures
//! how fast it counts. A masked LVT still counts, which is how calibration
//! uses it without an interrupt handler.
//!
//! [`eoi`] is a free function over a static copy of the register base, so
//! the trap path can acknowledge an interrupt without a `&Platform`.

use super::{PlatformError, SPURIOUS_VECTOR, mmio};
use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::registers::model_specific::Msr;

/// Register offsets (Intel SDM vol. 3, "Local APIC Register Address Map").
mod reg {
    pub const ID: u64 = 0x020;
    pub const TPR: u64 = 0x080;
    pub const EOI: u64 = 0x0b0;
    pub const SVR: u64 = 0x0f0;
    pub const ESR: u64 = 0x280;
    pub const ICR_LOW: u64 = 0x300;
    pub const ICR_HIGH: u64 = 0x310;
    pub const LVT_TIMER: u64 = 0x320;
    pub const LVT_LINT0: u64 = 0x350;
    pub const LVT_ERROR: u64 = 0x370;
    pub const TIMER_INITIAL: u64 = 0x380;
    pub const TIMER_CURRENT: u64 = 0x390;
    pub const TIMER_DIVIDE: u64 = 0x3e0;
}

const IA32_APIC_BASE: u32 = 0x1b;
const APIC_BASE_X2APIC: u64 = 1 << 10;
const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

const SVR_ENABLE: u32 = 1 << 8;

/// Interrupt command register fields (Intel SDM vol. 3, "Interrupt Command
/// Register"): delivery mode (bits 8..11), delivery status (bit 12: the
/// previous IPI is still being sent), level (bit 14: assert).
mod icr {
    pub const DELIVERY_INIT: u32 = 0b101 << 8;
    pub const DELIVERY_STARTUP: u32 = 0b110 << 8;
    pub const PENDING: u32 = 1 << 12;
    pub const ASSERT: u32 = 1 << 14;
    /// The destination field (ICR high, bits 24..32): an xAPIC id.
    pub const DEST_SHIFT: u32 = 24;
}
const LVT_MASKED: u32 = 1 << 16;
const LVT_TIMER_PERIODIC: u32 = 1 << 17;

/// The timer's clock divider, and its encoding in the divide register.
pub const TIMER_DIVIDE: u32 = 16;
const TIMER_DIVIDE_BITS: u32 = 0b0011;

/// Bytes of register space.
const REGS_BYTES: u64 = 0x1000;

/// Direct-map address of the registers once `init` ran; 0 before.
static BASE: AtomicU64 = AtomicU64::new(0);

pub struct Lapic {
    pub paddr: u64,
    /// This CPU's APIC id (the xAPIC ID register, bits 24..32).
    pub id: u32,
    base: u64,
}

impl Lapic {
    /// Enables the local APIC whose registers the MADT puts at `paddr`.
    pub fn init(paddr: u64) -> Result<Lapic, PlatformError> {
        // CPUID.1:EDX bit 9: the processor has an on-chip APIC.
        if core::arch::x86_64::__cpuid(1).edx & (1 << 9) == 0 {
            return Err(PlatformError::NoLocalApic("CPUID reports no on-chip APIC"));
        }
        let mut msr = Msr::new(IA32_APIC_BASE);
        // SAFETY: IA32_APIC_BASE exists on every CPU with an APIC (CPUID
        // above); reading it has no side effects.
        let apic_base = unsafe { msr.read() };
        if apic_base & APIC_BASE_X2APIC != 0 {
            return Err(PlatformError::X2ApicMode);
        }
        if apic_base & APIC_BASE_ADDR_MASK != paddr {
            return Err(PlatformError::LapicAddressMismatch { madt: paddr, msr: apic_base & APIC_BASE_ADDR_MASK });
        }
        if apic_base & APIC_BASE_ENABLE == 0 {
            // SAFETY: setting the global enable bit, keeping the base the
            // MADT and the MSR agree on, turns the xAPIC on at that address.
            unsafe { msr.write(apic_base | APIC_BASE_ENABLE) };
        }
        let base = mmio("local APIC", paddr, REGS_BYTES)?;
        let lapic = Lapic { paddr, id: 0, base };
        if lapic.read(reg::SVR) == u32::MAX {
            return Err(PlatformError::DeviceAbsent { what: "local APIC", paddr });
        }
        let lapic = Lapic { id: lapic.read(reg::ID) >> 24, ..lapic };

        lapic.write(reg::LVT_TIMER, LVT_MASKED);
        lapic.write(reg::LVT_LINT0, LVT_MASKED);
        lapic.write(reg::LVT_ERROR, LVT_MASKED);
        // The ESR latches errors; a write re-arms it, the read clears it.
        lapic.write(reg::ESR, 0);
        lapic.read(reg::ESR);
        lapic.write(reg::TPR, 0); // accept every priority class
        lapic.write(reg::SVR, SVR_ENABLE | u32::from(SPURIOUS_VECTOR));
        lapic.eoi(); // drop anything in service the firmware left behind
        BASE.store(base, Ordering::Release);
        Ok(lapic)
    }

    /// Arms the timer as a masked one-shot counting down from `count` (for
    /// calibration: it counts, but raises nothing).
    pub fn start_masked_count(&self, count: u32) {
        self.write(reg::LVT_TIMER, LVT_MASKED);
        self.write(reg::TIMER_DIVIDE, TIMER_DIVIDE_BITS);
        self.write(reg::TIMER_INITIAL, count);
    }

    /// Starts the timer in periodic mode: `vector` every `count` ticks.
    pub fn start_periodic(&self, count: u32, vector: u8) {
        self.write(reg::TIMER_DIVIDE, TIMER_DIVIDE_BITS);
        self.write(reg::LVT_TIMER, LVT_TIMER_PERIODIC | u32::from(vector));
        // Writing the initial count (re)starts the countdown.
        self.write(reg::TIMER_INITIAL, count);
    }

    /// Stops and masks the timer.
    pub fn stop_timer(&self) {
        self.write(reg::LVT_TIMER, LVT_MASKED);
        self.write(reg::TIMER_INITIAL, 0);
    }

    /// Sends an INIT IPI to the CPU with local APIC id `apic_id` (which then
    /// waits for a startup IPI). Returns false if the ICR stayed busy.
    pub fn send_init(&self, apic_id: u32) -> bool {
        self.send_ipi(apic_id, icr::DELIVERY_INIT | icr::ASSERT)
    }

    /// Sends a startup IPI to `apic_id`: it starts in real mode at CS:IP =
    /// `page << 8`:0, i.e. physical address `page << 12`.
    pub fn send_startup(&self, apic_id: u32, page: u8) -> bool {
        self.send_ipi(apic_id, icr::DELIVERY_STARTUP | icr::ASSERT | u32::from(page))
    }

    /// Sends interrupt `vector` (fixed delivery) to `apic_id`: the
    /// reschedule IPI (`sched::RESCHED_VECTOR`).
    pub fn send_fixed(&self, apic_id: u32, vector: u8) -> bool {
        self.send_ipi(apic_id, icr::ASSERT | u32::from(vector))
    }

    /// Writes the ICR (high half first: writing the low half sends) and
    /// waits, bounded, for the delivery status to clear.
    fn send_ipi(&self, apic_id: u32, low: u32) -> bool {
        self.write(reg::ICR_HIGH, apic_id << icr::DEST_SHIFT);
        self.write(reg::ICR_LOW, low);
        (0..1_000_000).any(|_| {
            core::hint::spin_loop();
            self.read(reg::ICR_LOW) & icr::PENDING == 0
        })
    }

    /// The timer's current count.
    pub fn current_count(&self) -> u32 {
        self.read(reg::TIMER_CURRENT)
    }

    fn eoi(&self) {
        self.write(reg::EOI, 0);
    }

    fn read(&self, offset: u64) -> u32 {
        // SAFETY: `base` maps the 4 KiB register page uncached (`mmio`);
        // `offset` is one of the 16-byte-aligned 32-bit registers in it.
        unsafe { ((self.base + offset) as *const u32).read_volatile() }
    }

    fn write(&self, offset: u64, value: u32) {
        // SAFETY: as in `read`; the callers write values the SDM defines
        // for each register.
        unsafe { ((self.base + offset) as *mut u32).write_volatile(value) }
    }
}

/// Signals end of interrupt to the local APIC. Before `platform::init` no
/// LAPIC interrupt can have been delivered, and this does nothing.
pub fn eoi() {
    let base = BASE.load(Ordering::Acquire);
    if base != 0 {
        // SAFETY: `base` is the LAPIC register page `Lapic::init` mapped and
        // published; writing 0 to EOI acknowledges the in-service interrupt.
        unsafe { ((base + reg::EOI) as *mut u32).write_volatile(0) };
    }
}
