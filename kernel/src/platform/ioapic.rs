//! I/O APICs: found in the MADT, every redirection entry masked.
//!
//! An I/O APIC has two MMIO registers, a selector (IOREGSEL, +0x00) and a
//! window (IOWIN, +0x10) onto its indirect registers: the version register
//! (its bits 16..24 are the highest redirection entry) and two 32-bit halves
//! per redirection entry. Each entry routes one global system interrupt
//! (GSI `gsi_base + pin`) to a vector. At boot nothing is routed: we write
//! every entry as masked with vector 0, so no device interrupt reaches the
//! CPU until a driver programs its line.

use super::acpi::IoApicEntry;
use super::{PlatformError, mmio};

const IOREGSEL: u64 = 0x00;
const IOWIN: u64 = 0x10;
const REG_VERSION: u32 = 0x01;
const REG_REDIRECTION: u32 = 0x10;
const REDIRECTION_MASKED: u32 = 1 << 16;

/// Bytes of register space we touch.
const REGS_BYTES: u64 = 0x20;

pub struct IoApic {
    pub id: u8,
    pub paddr: u64,
    pub gsi_base: u32,
    /// Redirection entries (input pins); GSIs `gsi_base..gsi_base + pins`.
    pub pins: u32,
    base: u64,
}

impl IoApic {
    /// Finds the I/O APIC the MADT `entry` describes and masks all its
    /// redirection entries.
    pub fn init_masked(entry: &IoApicEntry) -> Result<IoApic, PlatformError> {
        let base = mmio("I/O APIC", entry.paddr, REGS_BYTES)?;
        let mut ioapic = IoApic { id: entry.id, paddr: entry.paddr, gsi_base: entry.gsi_base, pins: 0, base };
        let version = ioapic.read(REG_VERSION);
        if version == u32::MAX {
            return Err(PlatformError::DeviceAbsent { what: "I/O APIC", paddr: entry.paddr });
        }
        ioapic.pins = ((version >> 16) & 0xff) + 1;
        for pin in 0..ioapic.pins {
            // Low half first: masking before the destination changes means
            // the entry is never live half-written.
            ioapic.write(REG_REDIRECTION + 2 * pin, REDIRECTION_MASKED);
            ioapic.write(REG_REDIRECTION + 2 * pin + 1, 0);
        }
        Ok(ioapic)
    }

    fn read(&self, reg: u32) -> u32 {
        // SAFETY: `base` maps the I/O APIC's registers uncached (`mmio`);
        // selecting an indirect register and reading the window has no other
        // effect. Interrupts are off and this CPU is the only one running, so
        // nothing else uses the selector in between.
        unsafe {
            ((self.base + IOREGSEL) as *mut u32).write_volatile(reg);
            ((self.base + IOWIN) as *const u32).read_volatile()
        }
    }

    fn write(&self, reg: u32, value: u32) {
        // SAFETY: as in `read`; the only registers written are redirection
        // entries, with a masked (inert) value.
        unsafe {
            ((self.base + IOREGSEL) as *mut u32).write_volatile(reg);
            ((self.base + IOWIN) as *mut u32).write_volatile(value);
        }
    }
}
