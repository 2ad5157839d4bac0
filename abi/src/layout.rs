//! The address space of a task.
//!
//! ```text
//! 0x0000_0000_0000_0000  unmapped (null page and below USER_IMAGE_BASE)
//! 0x0000_0000_0040_0000  USER_IMAGE_BASE: the task's ELF segments (targets/task.ld)
//! 0x0000_1000_0000_0000  USER_MAP_BASE: anonymous memory (`map`), growing up
//! 0x0000_2000_0000_0000  SHARED_BASE: shared regions, 1 GiB apart
//! 0x0000_7fff_ff00_0000  stack region: guard page, then the stack below USER_STACK_TOP
//! 0x0000_7fff_ff80_0000  USER_HANG_PAGE: `jmp $` (fault injection's hang)
//! 0x0000_8000_0000_0000  USER_END: the canonical hole, then the kernel
//! ```

/// Lowest address a task image may load at.
pub const USER_IMAGE_BASE: u64 = 0x40_0000;
/// Where the kernel places `map` requests without a hint.
pub const USER_MAP_BASE: u64 = 0x0000_1000_0000_0000;
/// Where shared regions are mapped: region `i` at `SHARED_BASE + i * SHARED_STRIDE`,
/// the same address in every task that holds it.
pub const SHARED_BASE: u64 = 0x0000_2000_0000_0000;
pub const SHARED_STRIDE: u64 = 1 << 30;
/// The initial stack pointer of a task (the stack grows down from here).
pub const USER_STACK_TOP: u64 = 0x0000_7fff_ff00_0000;
/// A page the kernel maps into every task, read-only and executable,
/// holding `jmp $`: where a `hang` injection sends a task.
pub const USER_HANG_PAGE: u64 = 0x0000_7fff_ff80_0000;
/// One past the highest user address.
pub const USER_END: u64 = 0x0000_8000_0000_0000;
/// Page size.
pub const PAGE_SIZE: u64 = 4096;

/// Largest task image (file) the kernel accepts.
pub const MAX_IMAGE_BYTES: u64 = 16 << 20;
/// Largest total memory size of a task image's segments.
pub const MAX_SEGMENT_BYTES: u64 = 64 << 20;
/// Largest stack a manifest may ask for.
pub const MAX_STACK_BYTES: u64 = 8 << 20;

/// Whether `[addr, addr + len)` lies entirely in user space (no overflow).
pub const fn is_user_range(addr: u64, len: u64) -> bool {
    match addr.checked_add(len) {
        Some(end) => end <= USER_END,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_range_rejects_kernel_and_overflow() {
        assert!(is_user_range(USER_IMAGE_BASE, 4096));
        assert!(is_user_range(USER_END - 8, 8));
        assert!(!is_user_range(USER_END - 8, 9));
        assert!(!is_user_range(0xffff_8000_0000_0000, 8));
        assert!(!is_user_range(u64::MAX - 2, 8));
    }
}
