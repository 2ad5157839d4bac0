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

/// Sets up physical memory management and the kernel heap.
///
/// `reserved` lists physical ranges that must never be handed out besides
/// the kernel image and the first MiB (boot modules, the start info).
pub fn init(memmap: &[crate::boot::pvh::MemMapEntry], reserved: &[(u64, u64)]) -> frames::Stats {
    let stats = frames::init(memmap, reserved);
    heap::init();
    space::init();
    HANG_FRAME.call_once(|| {
        let frame = frames::alloc().expect("a frame for the hang page");
        let page = phys_to_virt(frame.start_address().as_u64()) as *mut u8;
        // SAFETY: a fresh frame, ours alone, in the direct map. `jmp $`
        // (EB FE) at the start; the rest `int3`, which faults if reached.
        unsafe {
            core::ptr::write_bytes(page, 0xcc, 4096);
            page.write(0xeb);
            page.add(1).write(0xfe);
        }
        frame
    });
    stats
}

static HANG_FRAME: spin::Once<x86_64::structures::paging::PhysFrame> = spin::Once::new();

/// The frame of the hang page (see `abi::layout::USER_HANG_PAGE`).
pub fn hang_frame() -> x86_64::structures::paging::PhysFrame {
    *HANG_FRAME.get().expect("mem::init ran")
}
