//! ACPI table discovery with the `acpi` crate, without allocation.
//!
//! The crate's [`Handler`] is [`DirectMap`]: every physical range it asks
//! for is already mapped by the boot direct map (`mem::phys_to_virt`, the
//! first 4 GiB), so "mapping" is an addition and unmapping does nothing.
//!
//! The crate trusts the tables: it follows the RSDP to the RSDT/XSDT without
//! checking their checksums, maps whatever length a header claims, and its
//! MADT iterator loops forever on a zero-length entry. Firmware tables are
//! input, so before handing anything to the crate we check, in order:
//!
//! * the RSDP: signature, the ACPI 1.0 checksum, and for revision 2+ a sane
//!   length and the extended checksum;
//! * the RSDT/XSDT: signature, length, range, checksum;
//! * every table it lists: header and claimed length inside the direct map
//!   (the crate maps each header while searching);
//! * each table we read (MADT, FADT, HPET): checksum, and a length that
//!   covers the fields we read; the MADT's entries are walked once for
//!   structure (each entry at least its type's size, none past the end)
//!   before the crate's typed iterator sees them.
//!
//! Anything wrong is a [`PlatformError`] naming the table and the problem.
//! What we extract is plain data ([`Tables`]); no mapping outlives
//! [`discover`].

use super::{MAX_IOAPICS, PlatformError};
use crate::arch::percpu::MAX_CPUS;
use crate::mem::{BOOT_DIRECT_MAP_BYTES, phys_to_virt};
use ::acpi::address::{AddressSpace, RawGenericAddress};
use ::acpi::rsdp::Rsdp;
use ::acpi::sdt::fadt::Fadt;
use ::acpi::sdt::hpet::HpetTable;
use ::acpi::sdt::madt::{EntryHeader, Madt, MadtEntry};
use ::acpi::sdt::{SdtHeader, Signature};
use ::acpi::{AcpiError, AcpiTable, AcpiTables, Handler, PciAddress, PhysicalMapping};
use core::mem::{align_of, offset_of, size_of};
use core::ptr::NonNull;
use x86_64::instructions::port::{PortRead, PortWrite};

/// Longest RSDT/XSDT we accept (8 KiB = 1000+ tables; QEMU lists < 10).
const MAX_ROOT_TABLE_BYTES: u32 = 8 << 10;
/// Longest table we accept at all (the DSDT of a big server is ~1 MiB).
const MAX_TABLE_BYTES: u32 = 16 << 20;
const HEADER_BYTES: u32 = size_of::<SdtHeader>() as u32;

/// An I/O APIC as the MADT describes it.
#[derive(Clone, Copy, Debug)]
pub struct IoApicEntry {
    pub id: u8,
    pub paddr: u64,
    pub gsi_base: u32,
}

/// The ACPI PM timer as the FADT describes it.
#[derive(Clone, Copy, Debug)]
pub struct PmTimerBlock {
    pub port: u16,
    /// TMR_VAL_EXT: the counter has 32 bits rather than 24.
    pub bits32: bool,
}

/// What the static tables say about interrupt and timer hardware.
pub struct Tables {
    /// ACPI revision from the RSDP (0 = ACPI 1.0, RSDT; 2+ = XSDT).
    pub revision: u8,
    pub lapic_paddr: u64,
    /// Enabled processors (MADT local APIC and local x2APIC entries).
    pub cpus: u32,
    /// Their local APIC ids, in MADT order (at most `MAX_CPUS`; an x2APIC
    /// id too large for the xAPIC is kept, and bring-up leaves it out).
    pub apic_ids: heapless::Vec<u32, MAX_CPUS>,
    pub ioapics: heapless::Vec<IoApicEntry, MAX_IOAPICS>,
    /// `None` when there is no FADT or it has no port-I/O PM timer.
    pub pm_timer: Option<PmTimerBlock>,
    /// Physical address of the HPET registers; `None` without an HPET table.
    pub hpet_paddr: Option<u64>,
}

/// Reads the tables reachable from the RSDP at `rsdp_paddr`.
pub fn discover(rsdp_paddr: u64) -> Result<Tables, PlatformError> {
    if rsdp_paddr == 0 {
        return Err(PlatformError::NoRsdp);
    }
    let rsdp = check_rsdp(rsdp_paddr)?;
    let revision = rsdp.revision;
    // ACPI 2.0+ has a 64-bit XSDT; fall back to the RSDT if it is absent.
    let (root_paddr, root_sig, entry_rev) = if revision >= 2 && rsdp.xsdt_address != 0 {
        (rsdp.xsdt_address, Signature::XSDT, revision)
    } else {
        (u64::from(rsdp.rsdt_address), Signature::RSDT, 0)
    };
    check_root_table(root_paddr, root_sig)?;
    // SAFETY: the root table is inside the direct map, with a checked
    // signature, length and checksum; `entry_rev` (0: 32-bit entries, else
    // 64-bit) matches its signature.
    let tables = unsafe { AcpiTables::from_rsdt(DirectMap, entry_rev, root_paddr as usize) }
        .map_err(|e| bad_table(root_sig, root_paddr, &e))?;
    check_listed_tables(&tables)?;

    let madt = read_madt(&tables)?;
    Ok(Tables {
        revision,
        lapic_paddr: madt.lapic_paddr,
        cpus: madt.cpus,
        apic_ids: madt.apic_ids,
        ioapics: madt.ioapics,
        pm_timer: read_pm_timer(&tables)?,
        hpet_paddr: read_hpet(&tables)?,
    })
}

/// Validates the RSDP and returns a copy of it.
fn check_rsdp(paddr: u64) -> Result<Rsdp, PlatformError> {
    const V1_BYTES: u64 = 20;
    let bad = |problem| PlatformError::BadRsdp { paddr, problem };
    in_direct_map("RSDP", paddr, size_of::<Rsdp>() as u64)?;
    // SAFETY: 36 bytes at `paddr` are inside the direct map (checked above);
    // `Rsdp` is packed plain data, so any bytes are a valid value.
    let rsdp = unsafe { core::ptr::read_unaligned(phys_to_virt(paddr) as *const Rsdp) };
    if rsdp.signature != *b"RSD PTR " {
        return Err(bad("no \"RSD PTR \" signature"));
    }
    if sum_bytes(paddr, V1_BYTES) != 0 {
        return Err(bad("bad checksum"));
    }
    if rsdp.revision >= 2 {
        let length = rsdp.length;
        if !(size_of::<Rsdp>() as u32..=4096).contains(&length) {
            return Err(bad("implausible length"));
        }
        in_direct_map("RSDP", paddr, u64::from(length))?;
        if sum_bytes(paddr, u64::from(length)) != 0 {
            return Err(bad("bad extended checksum"));
        }
    }
    Ok(rsdp)
}

/// Validates the RSDT or XSDT at `paddr`.
fn check_root_table(paddr: u64, sig: Signature) -> Result<(), PlatformError> {
    let name = table_name(sig);
    let header = read_header(name, paddr)?;
    if header.signature != sig {
        return Err(PlatformError::BadTable { table: name, paddr, problem: "wrong signature" });
    }
    check_length(name, paddr, header.length, MAX_ROOT_TABLE_BYTES)?;
    if sum_bytes(paddr, u64::from(header.length)) != 0 {
        return Err(PlatformError::BadTable { table: name, paddr, problem: "bad checksum" });
    }
    Ok(())
}

/// Checks that every table the root table lists has its header and its
/// claimed length inside the direct map, so the crate's searches only touch
/// mapped memory.
fn check_listed_tables(tables: &AcpiTables<DirectMap>) -> Result<(), PlatformError> {
    for paddr in tables.table_entries() {
        let paddr = paddr as u64;
        let header = read_header("listed in the RSDT/XSDT", paddr)?;
        check_length(table_name(header.signature), paddr, header.length, MAX_TABLE_BYTES)?;
    }
    Ok(())
}

/// Finds the table `T`, and checks its checksum and that it is at least
/// `min_len` bytes long. `None` if the root table does not list it.
fn find_checked<T: AcpiTable>(
    tables: &AcpiTables<DirectMap>,
    min_len: usize,
) -> Result<Option<PhysicalMapping<DirectMap, T>>, PlatformError> {
    let Some(table) = tables.find_table::<T>() else { return Ok(None) };
    let paddr = table.physical_start as u64;
    let name = table_name(T::SIGNATURE);
    if table.region_length < min_len {
        return Err(PlatformError::BadTable { table: name, paddr, problem: "too short for its fields" });
    }
    // `validate` sums the whole table, which `check_listed_tables` put
    // inside the direct map.
    table.get().validate().map_err(|e| bad_table(T::SIGNATURE, paddr, &e))?;
    Ok(Some(table))
}

struct MadtInfo {
    lapic_paddr: u64,
    cpus: u32,
    apic_ids: heapless::Vec<u32, MAX_CPUS>,
    ioapics: heapless::Vec<IoApicEntry, MAX_IOAPICS>,
}

fn read_madt(tables: &AcpiTables<DirectMap>) -> Result<MadtInfo, PlatformError> {
    let madt = find_checked::<Madt>(tables, size_of::<Madt>())?.ok_or(PlatformError::MissingTable("APIC (MADT)"))?;
    let paddr = madt.physical_start as u64;
    check_madt_entries(paddr, madt.region_length)?;

    let mut info = MadtInfo {
        lapic_paddr: u64::from(madt.get().local_apic_address),
        cpus: 0,
        apic_ids: heapless::Vec::new(),
        ioapics: heapless::Vec::new(),
    };
    let mut processors = 0;
    for entry in madt.get().entries() {
        match entry {
            MadtEntry::LocalApic(e) => {
                processors += 1;
                // Bit 0: enabled. (Bit 1, online capable, is for hot plug.)
                if { e.flags } & 1 != 0 {
                    info.cpus += 1;
                    // Beyond MAX_CPUS: counted, not started.
                    let _ = info.apic_ids.push(u32::from(e.apic_id));
                }
            }
            MadtEntry::LocalX2Apic(e) => {
                processors += 1;
                if { e.flags } & 1 != 0 {
                    info.cpus += 1;
                    let _ = info.apic_ids.push(e.x2apic_id);
                }
            }
            MadtEntry::LocalApicAddressOverride(e) => info.lapic_paddr = e.local_apic_address,
            MadtEntry::IoApic(e) => {
                let ioapic = IoApicEntry {
                    id: e.io_apic_id,
                    paddr: u64::from(e.io_apic_address),
                    gsi_base: e.global_system_interrupt_base,
                };
                info.ioapics.push(ioapic).map_err(|_| PlatformError::TooManyIoApics)?;
            }
            _ => {}
        }
    }
    if processors == 0 {
        return Err(PlatformError::NoLocalApic("the MADT lists no processor"));
    }
    if info.ioapics.is_empty() {
        return Err(PlatformError::NoIoApic);
    }
    Ok(info)
}

/// Walks the MADT's entries once for structure: each has a header, is at
/// least as long as the crate's type for it, and ends inside the table.
fn check_madt_entries(paddr: u64, table_len: usize) -> Result<(), PlatformError> {
    let bad = |problem| PlatformError::BadTable { table: "APIC (MADT)", paddr, problem };
    let mut offset = size_of::<Madt>();
    while offset < table_len {
        if table_len - offset < size_of::<EntryHeader>() {
            return Err(bad("truncated entry header"));
        }
        // SAFETY: the header's two bytes lie inside the table (checked just
        // above), which is inside the direct map.
        let header = unsafe { core::ptr::read_unaligned(phys_to_virt(paddr + offset as u64) as *const EntryHeader) };
        let len = usize::from(header.length);
        let min = match header.entry_type {
            0x0 => size_of::<::acpi::sdt::madt::LocalApicEntry>(),
            0x1 => size_of::<::acpi::sdt::madt::IoApicEntry>(),
            0x2 => size_of::<::acpi::sdt::madt::InterruptSourceOverrideEntry>(),
            0x3 => size_of::<::acpi::sdt::madt::NmiSourceEntry>(),
            0x4 => size_of::<::acpi::sdt::madt::LocalApicNmiEntry>(),
            0x5 => size_of::<::acpi::sdt::madt::LocalApicAddressOverrideEntry>(),
            0x9 => size_of::<::acpi::sdt::madt::LocalX2ApicEntry>(),
            0xa => size_of::<::acpi::sdt::madt::X2ApicNmiEntry>(),
            _ => size_of::<EntryHeader>(),
        };
        if len < min {
            return Err(bad("an entry is shorter than its type"));
        }
        if len > table_len - offset {
            return Err(bad("an entry runs past the end of the table"));
        }
        offset += len;
    }
    Ok(())
}

fn read_pm_timer(tables: &AcpiTables<DirectMap>) -> Result<Option<PmTimerBlock>, PlatformError> {
    // ACPI 1.0 ends after `flags`; revision 2+ has the 64-bit blocks we read.
    let Some(fadt) = find_checked::<Fadt>(tables, offset_of!(Fadt, flags) + 4)? else { return Ok(None) };
    let paddr = fadt.physical_start as u64;
    let extended_len = offset_of!(Fadt, x_pm_timer_block) + size_of::<RawGenericAddress>();
    if fadt.header.revision >= 2 && fadt.region_length < extended_len {
        return Err(PlatformError::BadTable { table: "FACP (FADT)", paddr, problem: "too short for its revision" });
    }
    let block = fadt.pm_timer_block().map_err(|e| bad_table(Signature::FADT, paddr, &e))?;
    Ok(match block {
        Some(gas) if gas.address_space == AddressSpace::SystemIo && gas.address <= 0xfffc => {
            Some(PmTimerBlock { port: gas.address as u16, bits32: { fadt.flags }.pm_timer_is_32_bit() })
        }
        // No timer, or one in memory space (rare; then we use the HPET).
        _ => None,
    })
}

fn read_hpet(tables: &AcpiTables<DirectMap>) -> Result<Option<u64>, PlatformError> {
    let Some(hpet) = find_checked::<HpetTable>(tables, size_of::<HpetTable>())? else { return Ok(None) };
    let base = hpet.base_address;
    Ok((base.address_space == 0 && base.address != 0).then_some(base.address))
}

/// Reads the SDT header at `paddr` (range-checked).
fn read_header(what: &'static str, paddr: u64) -> Result<SdtHeader, PlatformError> {
    in_direct_map(what, paddr, u64::from(HEADER_BYTES))?;
    // SAFETY: the header's 36 bytes are inside the direct map (checked
    // above); `SdtHeader` is packed plain data.
    Ok(unsafe { core::ptr::read_unaligned(phys_to_virt(paddr) as *const SdtHeader) })
}

fn check_length(table: &'static str, paddr: u64, len: u32, max: u32) -> Result<(), PlatformError> {
    if !(HEADER_BYTES..=max).contains(&len) {
        return Err(PlatformError::BadTable { table, paddr, problem: "implausible length" });
    }
    in_direct_map(table, paddr, u64::from(len))
}

fn in_direct_map(what: &'static str, paddr: u64, len: u64) -> Result<(), PlatformError> {
    match paddr.checked_add(len) {
        Some(end) if end <= BOOT_DIRECT_MAP_BYTES => Ok(()),
        _ => Err(PlatformError::OutsideDirectMap { what, paddr, len }),
    }
}

/// Byte sum of `len` bytes at `paddr` (ACPI checksums make it 0).
fn sum_bytes(paddr: u64, len: u64) -> u8 {
    // SAFETY: callers range-check `paddr..paddr + len` against the direct
    // map first.
    let bytes = unsafe { core::slice::from_raw_parts(phys_to_virt(paddr) as *const u8, len as usize) };
    bytes.iter().fold(0u8, |sum, b| sum.wrapping_add(*b))
}

fn table_name(sig: Signature) -> &'static str {
    match sig {
        Signature::RSDT => "RSDT",
        Signature::XSDT => "XSDT",
        Signature::MADT => "APIC (MADT)",
        Signature::FADT => "FACP (FADT)",
        Signature::HPET => "HPET",
        _ => "listed in the RSDT/XSDT",
    }
}

fn bad_table(sig: Signature, paddr: u64, error: &AcpiError) -> PlatformError {
    let problem = match error {
        AcpiError::SdtInvalidSignature(_) => "wrong signature",
        AcpiError::SdtInvalidOemId(_) => "OEM id is not text",
        AcpiError::SdtInvalidTableId(_) => "OEM table id is not text",
        AcpiError::SdtInvalidCreatorId(_) => "creator id is not text",
        AcpiError::SdtInvalidChecksum(_) => "bad checksum",
        AcpiError::InvalidGenericAddress => "invalid generic address structure",
        AcpiError::InvalidMadt(_) => "invalid MADT entry",
        _ => "rejected by the acpi crate",
    };
    PlatformError::BadTable { table: table_name(sig), paddr, problem }
}

/// The `acpi` crate's view of physical memory: the boot direct map.
///
/// Only `map_physical_region` is used by the table code we call; memory and
/// port I/O are implemented because they are one line each; PCI and time
/// are not (only the AML interpreter, a feature we do not build, needs
/// them) and panic with a message saying so.
#[derive(Clone, Copy, Debug)]
pub struct DirectMap;

impl DirectMap {
    fn read<T: Copy>(address: usize) -> T {
        let ptr = Self::ptr::<T>(address);
        // SAFETY: `ptr` is inside the direct map and aligned (checked by
        // `Self::ptr`); the crate only passes register addresses it found in
        // the tables, which describe this machine.
        unsafe { ptr.read_volatile() }
    }

    fn write<T: Copy>(address: usize, value: T) {
        let ptr = Self::ptr::<T>(address);
        // SAFETY: as in `read`.
        unsafe { ptr.write_volatile(value) }
    }

    fn ptr<T>(address: usize) -> *mut T {
        let end = (address as u64).checked_add(size_of::<T>() as u64);
        assert!(end.is_some_and(|e| e <= BOOT_DIRECT_MAP_BYTES), "acpi: {address:#x} is outside the direct map");
        assert!(address.is_multiple_of(align_of::<T>()), "acpi: unaligned access at {address:#x}");
        phys_to_virt(address as u64) as *mut T
    }

    fn in_port<T: PortRead>(port: u16) -> T {
        // SAFETY: port I/O has no memory effects; the ports come from the
        // firmware's tables, which describe this machine.
        unsafe { T::read_from_port(port) }
    }

    fn out_port<T: PortWrite>(port: u16, value: T) {
        // SAFETY: as in `in_port`.
        unsafe { T::write_to_port(port, value) }
    }
}

impl Handler for DirectMap {
    unsafe fn map_physical_region<T>(&self, physical_address: usize, size: usize) -> PhysicalMapping<Self, T> {
        let end = (physical_address as u64).checked_add(size as u64);
        // Unreachable for the tables `discover` checked; a backstop.
        assert!(
            end.is_some_and(|e| e <= BOOT_DIRECT_MAP_BYTES),
            "acpi: {size:#x} bytes at {physical_address:#x} are outside the direct map"
        );
        let virtual_start =
            NonNull::new(phys_to_virt(physical_address as u64) as *mut T).expect("direct-map addresses are never null");
        PhysicalMapping {
            physical_start: physical_address,
            virtual_start,
            region_length: size,
            mapped_length: size,
            handler: *self,
        }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}

    fn read_u8(&self, address: usize) -> u8 {
        Self::read(address)
    }
    fn read_u16(&self, address: usize) -> u16 {
        Self::read(address)
    }
    fn read_u32(&self, address: usize) -> u32 {
        Self::read(address)
    }
    fn read_u64(&self, address: usize) -> u64 {
        Self::read(address)
    }
    fn write_u8(&self, address: usize, value: u8) {
        Self::write(address, value)
    }
    fn write_u16(&self, address: usize, value: u16) {
        Self::write(address, value)
    }
    fn write_u32(&self, address: usize, value: u32) {
        Self::write(address, value)
    }
    fn write_u64(&self, address: usize, value: u64) {
        Self::write(address, value)
    }

    fn read_io_u8(&self, port: u16) -> u8 {
        Self::in_port(port)
    }
    fn read_io_u16(&self, port: u16) -> u16 {
        Self::in_port(port)
    }
    fn read_io_u32(&self, port: u16) -> u32 {
        Self::in_port(port)
    }
    fn write_io_u8(&self, port: u16, value: u8) {
        Self::out_port(port, value)
    }
    fn write_io_u16(&self, port: u16, value: u16) {
        Self::out_port(port, value)
    }
    fn write_io_u32(&self, port: u16, value: u32) {
        Self::out_port(port, value)
    }

    fn read_pci_u8(&self, _: PciAddress, _: u16) -> u8 {
        unimplemented!("acpi: PCI configuration access (only the AML interpreter needs it)")
    }
    fn read_pci_u16(&self, _: PciAddress, _: u16) -> u16 {
        unimplemented!("acpi: PCI configuration access (only the AML interpreter needs it)")
    }
    fn read_pci_u32(&self, _: PciAddress, _: u16) -> u32 {
        unimplemented!("acpi: PCI configuration access (only the AML interpreter needs it)")
    }
    fn write_pci_u8(&self, _: PciAddress, _: u16, _: u8) {
        unimplemented!("acpi: PCI configuration access (only the AML interpreter needs it)")
    }
    fn write_pci_u16(&self, _: PciAddress, _: u16, _: u16) {
        unimplemented!("acpi: PCI configuration access (only the AML interpreter needs it)")
    }
    fn write_pci_u32(&self, _: PciAddress, _: u16, _: u32) {
        unimplemented!("acpi: PCI configuration access (only the AML interpreter needs it)")
    }
    fn nanos_since_boot(&self) -> u64 {
        unimplemented!("acpi: time source (only the AML interpreter needs it)")
    }
    fn stall(&self, _microseconds: u64) {
        unimplemented!("acpi: stall (only the AML interpreter needs it)")
    }
    fn sleep(&self, _milliseconds: u64) {
        unimplemented!("acpi: sleep (only the AML interpreter needs it)")
    }
}
