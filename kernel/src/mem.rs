//! Kernel address-space layout.
//!
//! The boot page tables (see `boot/entry.rs`) map the first GiB of physical
//! memory three times: identity, at [`PHYS_OFFSET`] (the direct map the
//! kernel uses to reach physical memory) and at [`KERNEL_VMA`] (the image).

/// Base of the direct map of physical memory.
pub const PHYS_OFFSET: u64 = 0xffff_8000_0000_0000;
/// Where the kernel image is linked (physical address + this).
pub const KERNEL_VMA: u64 = 0xffff_ffff_8000_0000;
/// How much physical memory the boot direct map covers.
pub const BOOT_DIRECT_MAP_BYTES: u64 = 1 << 30;

/// Kernel virtual address of physical address `paddr` in the direct map.
pub const fn phys_to_virt(paddr: u64) -> u64 {
    paddr + PHYS_OFFSET
}
