//! Kernel address-space layout.
//!
//! The boot page tables (see `boot/entry.rs`) map the first 4 GiB of
//! physical memory at [`PHYS_OFFSET`] (the direct map the kernel uses to
//! reach physical memory and MMIO) and the first GiB at [`KERNEL_VMA`] (the
//! image).

/// Base of the direct map of physical memory.
pub const PHYS_OFFSET: u64 = 0xffff_8000_0000_0000;
/// Where the kernel image is linked (physical address + this).
pub const KERNEL_VMA: u64 = 0xffff_ffff_8000_0000;
/// How much physical memory the boot direct map covers.
pub const BOOT_DIRECT_MAP_BYTES: u64 = 4 << 30;

/// Kernel virtual address of physical address `paddr` in the direct map.
pub const fn phys_to_virt(paddr: u64) -> u64 {
    paddr + PHYS_OFFSET
}

/// The bytes of physical range `[paddr, paddr + len)` through the direct map,
/// clipped to what the direct map covers.
pub fn phys_slice(paddr: u64, len: u64) -> &'static [u8] {
    let end = paddr.saturating_add(len).min(BOOT_DIRECT_MAP_BYTES);
    let len = end.saturating_sub(paddr);
    // SAFETY: the range is inside the direct map; callers pass ranges that
    // are reserved from the frame allocator (boot modules), so the bytes are
    // never reused.
    unsafe { core::slice::from_raw_parts(phys_to_virt(paddr) as *const u8, len as usize) }
}

pub mod frames;
pub mod heap;
pub mod region;
pub mod space;
pub mod versions;

/// Sets up physical memory management and the kernel heap.
///
/// `reserved` lists physical ranges that must never be handed out besides
/// the kernel image and the first MiB (boot modules, the start info).
pub fn init(memmap: &[crate::boot::pvh::MemMapEntry], reserved: &[(u64, u64)]) -> frames::Stats {
    let stats = frames::init(memmap, reserved);
    heap::init();
    space::init();
    stats
}
