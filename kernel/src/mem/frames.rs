//! The physical frame allocator.
//!
//! A bitmap over the RAM the direct map reaches (the first 4 GiB), one bit
//! per 4 KiB frame, set = in use. Built from the PVH memory map: only RAM
//! entries become free, then the first MiB, the kernel image and the
//! caller's reserved ranges (boot modules) are marked used again.
//!
//! Allocation is next-fit from a cursor, so it is O(1) amortised while
//! memory is plentiful, and deterministic: the same boot hands out the same
//! frames, which keeps `-icount` runs reproducible. Frames are zeroed on
//! allocation: nothing of one task ever leaks into another through a frame.

use super::{BOOT_DIRECT_MAP_BYTES, phys_to_virt};
use crate::boot::pvh::{MEMMAP_RAM, MemMapEntry};
use spin::Mutex;
use x86_64::PhysAddr;
use x86_64::structures::paging::PhysFrame;

const FRAME: u64 = 4096;
const MAX_FRAMES: usize = (BOOT_DIRECT_MAP_BYTES / FRAME) as usize;

struct Bitmap {
    used: [u64; MAX_FRAMES / 64],
    /// One past the highest frame that is RAM.
    limit: usize,
    cursor: usize,
    free: usize,
}

static FRAMES: Mutex<Bitmap> = Mutex::new(Bitmap { used: [u64::MAX; MAX_FRAMES / 64], limit: 0, cursor: 0, free: 0 });

#[derive(Clone, Copy, Debug)]
pub struct Stats {
    pub free_frames: usize,
    pub ignored_bytes: u64,
}

unsafe extern "C" {
    static __kernel_phys_start: u8;
    static __kernel_end: u8;
}

impl Bitmap {
    fn is_used(&self, i: usize) -> bool {
        self.used[i / 64] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, i: usize, used: bool) {
        let was = self.is_used(i);
        if used {
            self.used[i / 64] |= 1 << (i % 64);
        } else {
            self.used[i / 64] &= !(1 << (i % 64));
        }
        match (was, used) {
            (true, false) => self.free += 1,
            (false, true) => self.free -= 1,
            _ => {}
        }
    }

    /// Marks `[start, end)` (bytes) as used or free, clipped to the bitmap.
    fn mark(&mut self, start: u64, end: u64, used: bool) {
        let first = if used { start / FRAME } else { start.div_ceil(FRAME) };
        let last = if used { end.div_ceil(FRAME) } else { end / FRAME };
        for i in first..last.min(MAX_FRAMES as u64) {
            self.set(i as usize, used);
        }
    }
}

pub fn init(memmap: &[MemMapEntry], reserved: &[(u64, u64)]) -> Stats {
    let mut bm = FRAMES.lock();
    let mut ignored = 0;
    for e in memmap.iter().filter(|e| e.kind == MEMMAP_RAM) {
        let end = e.addr.saturating_add(e.size);
        if end > BOOT_DIRECT_MAP_BYTES {
            ignored += end - e.addr.max(BOOT_DIRECT_MAP_BYTES);
        }
        bm.mark(e.addr, end.min(BOOT_DIRECT_MAP_BYTES), false);
        bm.limit = bm.limit.max((end.min(BOOT_DIRECT_MAP_BYTES) / FRAME) as usize);
    }
    bm.mark(0, 1 << 20, true);
    // Linker-script symbols: only their addresses are used.
    let (kstart, kend) =
        (core::ptr::addr_of!(__kernel_phys_start) as u64, core::ptr::addr_of!(__kernel_end) as u64 - super::KERNEL_VMA);
    bm.mark(kstart, kend, true);
    for &(start, end) in reserved {
        bm.mark(start, end, true);
    }
    Stats { free_frames: bm.free, ignored_bytes: ignored }
}

/// Allocates one zeroed frame.
pub fn alloc() -> Option<PhysFrame> {
    alloc_contiguous(1)
}

/// Allocates one frame without zeroing it (the caller overwrites it whole).
pub fn alloc_uninit() -> Option<PhysFrame> {
    take(1)
}

/// Allocates `count` physically contiguous zeroed frames; returns the first.
pub fn alloc_contiguous(count: usize) -> Option<PhysFrame> {
    let first = take(count)?;
    let addr = first.start_address().as_u64();
    // SAFETY: the frames were free, so nothing references them; the direct
    // map covers them (limit <= 4 GiB).
    unsafe { core::ptr::write_bytes(phys_to_virt(addr) as *mut u8, 0, count * FRAME as usize) };
    Some(first)
}

/// Marks `count` contiguous free frames used; returns the first.
fn take(count: usize) -> Option<PhysFrame> {
    let mut bm = FRAMES.lock();
    if count == 0 || bm.free < count {
        return None;
    }
    let limit = bm.limit;
    let mut start = bm.cursor;
    let mut scanned = 0;
    while scanned < limit {
        if start + count > limit {
            scanned += limit - start;
            start = 0;
            continue;
        }
        match (start..start + count).find(|&i| bm.is_used(i)) {
            Some(busy) => {
                scanned += busy + 1 - start;
                start = busy + 1;
            }
            None => {
                for i in start..start + count {
                    bm.set(i, true);
                }
                bm.cursor = start + count;
                return Some(PhysFrame::containing_address(PhysAddr::new(start as u64 * FRAME)));
            }
        }
    }
    None
}

/// Returns a frame to the allocator.
pub fn free(frame: PhysFrame) {
    let i = (frame.start_address().as_u64() / FRAME) as usize;
    let mut bm = FRAMES.lock();
    if i < bm.limit && bm.is_used(i) {
        bm.set(i, false);
    }
}

/// Frames currently free.
pub fn free_count() -> usize {
    FRAMES.lock().free
}
