//! The PVH `hvm_start_info` structure and its memory map.
//!
//! Layout from Xen's `arch-x86/hvm/start_info.h` (version 1). QEMU passes the
//! physical address in EBX; the boot code forwards it to `kmain`. We copy
//! what we need out of guest-physical memory through the direct map and
//! validate it before use: a bad magic or an absurd entry count is a clear
//! boot error, not a wild read.

use crate::mem::phys_to_virt;

/// `hvm_start_info.magic`.
pub const START_INFO_MAGIC: u32 = 0x336e_c578;

/// Upper bound on memory-map entries we accept (QEMU gives a handful).
pub const MAX_MEMMAP_ENTRIES: usize = 128;

#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct RawStartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}

/// One `hvm_memmap_table_entry`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MemMapEntry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
    reserved: u32,
}

/// Memory-map entry type for usable RAM (E820 numbering).
pub const MEMMAP_RAM: u32 = 1;

/// One `hvm_modlist_entry`: a boot module (QEMU's `-initrd`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct Module {
    pub paddr: u64,
    pub size: u64,
    pub cmdline_paddr: u64,
    reserved: u64,
}

/// What the kernel learns from the PVH start info.
#[derive(Debug)]
pub struct StartInfo {
    pub version: u32,
    pub rsdp_paddr: u64,
    pub cmdline: &'static str,
    pub memmap: &'static [MemMapEntry],
    pub modules: &'static [Module],
    /// Physical ranges `[start, end)` the start info's own structures
    /// occupy (itself, the memory map, the module list, the command line):
    /// memory the loader used that the memory map may still call RAM, so
    /// that `arch::smp` does not put its trampoline over them.
    pub structures: [(u64, u64); 4],
}

#[derive(Debug)]
pub enum StartInfoError {
    BadMagic(u32),
    TooManyMemMapEntries(u32),
    NoMemMap,
}

impl core::fmt::Display for StartInfoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StartInfoError::BadMagic(m) => write!(f, "bad start-info magic {m:#x} (expected {START_INFO_MAGIC:#x})"),
            StartInfoError::TooManyMemMapEntries(n) => {
                write!(f, "{n} memory-map entries (at most {MAX_MEMMAP_ENTRIES})")
            }
            StartInfoError::NoMemMap => write!(f, "no memory map (PVH start info version 0?)"),
        }
    }
}

impl StartInfo {
    /// Reads and validates the start info at physical address `paddr`.
    ///
    /// # Safety
    /// `paddr` must be the address QEMU passed in EBX, and the boot direct map
    /// must cover it (it does: QEMU places it in the first MiB).
    pub unsafe fn from_phys(paddr: u64) -> Result<Self, StartInfoError> {
        // SAFETY: per the contract, `paddr` points at a start-info structure
        // mapped through the direct map; the structure is plain old data.
        let raw = unsafe { core::ptr::read_unaligned(phys_to_virt(paddr) as *const RawStartInfo) };
        if raw.magic != START_INFO_MAGIC {
            return Err(StartInfoError::BadMagic(raw.magic));
        }
        if raw.version < 1 || raw.memmap_paddr == 0 || raw.memmap_entries == 0 {
            return Err(StartInfoError::NoMemMap);
        }
        if raw.memmap_entries as usize > MAX_MEMMAP_ENTRIES {
            return Err(StartInfoError::TooManyMemMapEntries(raw.memmap_entries));
        }
        // SAFETY: QEMU wrote `memmap_entries` entries at `memmap_paddr`
        // (count bounded above); the memory stays reserved for the kernel's
        // lifetime because the allocator never hands out the first MiB.
        let memmap = unsafe {
            core::slice::from_raw_parts(
                phys_to_virt(raw.memmap_paddr) as *const MemMapEntry,
                raw.memmap_entries as usize,
            )
        };
        let modules = if raw.nr_modules == 0 || raw.modlist_paddr == 0 {
            &[][..]
        } else {
            // SAFETY: as above, for the module list QEMU built.
            unsafe {
                core::slice::from_raw_parts(
                    phys_to_virt(raw.modlist_paddr) as *const Module,
                    (raw.nr_modules as usize).min(16),
                )
            }
        };
        // SAFETY: QEMU writes a NUL-terminated command line (or none).
        let cmdline = unsafe { c_str_at(raw.cmdline_paddr) };
        let structures = [
            (paddr, paddr + core::mem::size_of::<RawStartInfo>() as u64),
            (raw.memmap_paddr, raw.memmap_paddr + core::mem::size_of_val(memmap) as u64),
            (raw.modlist_paddr, raw.modlist_paddr + core::mem::size_of_val(modules) as u64),
            (raw.cmdline_paddr, raw.cmdline_paddr + cmdline.len() as u64 + 1),
        ];
        Ok(StartInfo { version: raw.version, rsdp_paddr: raw.rsdp_paddr, cmdline, memmap, modules, structures })
    }

    /// Total bytes of usable RAM in the memory map.
    pub fn ram_bytes(&self) -> u64 {
        self.memmap.iter().filter(|e| e.kind == MEMMAP_RAM).map(|e| e.size).sum()
    }
}

/// Reads a NUL-terminated string of at most 4 KiB; non-UTF-8 yields "".
///
/// # Safety
/// `paddr` is 0 or the physical address of a readable, direct-mapped string.
unsafe fn c_str_at(paddr: u64) -> &'static str {
    if paddr == 0 {
        return "";
    }
    let base = phys_to_virt(paddr) as *const u8;
    let mut len = 0;
    // SAFETY: the caller guarantees readable memory up to the terminator; we
    // stop at 4 KiB regardless.
    while len < 4096 && unsafe { *base.add(len) } != 0 {
        len += 1;
    }
    // SAFETY: `len` bytes were just read from the same mapping.
    let bytes = unsafe { core::slice::from_raw_parts(base, len) };
    core::str::from_utf8(bytes).unwrap_or("")
}
