//! Shared memory regions.
//!
//! A region is a run of contiguous frames allocated once at boot, mapped
//! into every task that holds a capability for it, at the same address in
//! each (`abi::layout::SHARED_BASE + index * SHARED_STRIDE`), so pointers
//! into it mean the same in every task. Its pages carry the `SHARED` PTE
//! bit: checkpoints never track or roll them back, and dropping a task's
//! address space never frees them.

use super::frames;
use abi::layout::{PAGE_SIZE, SHARED_BASE, SHARED_STRIDE};
use x86_64::structures::paging::PhysFrame;

pub struct Region {
    pub name: heapless::String<{ abi::image::NAME_LEN }>,
    pub first: PhysFrame,
    pub pages: u64,
    /// Its address in every task.
    pub base: u64,
}

impl Region {
    /// Allocates region number `index` of `size` bytes (zeroed).
    pub fn new(index: usize, name: &str, size: u64) -> Option<Region> {
        let pages = size.div_ceil(PAGE_SIZE);
        if size > SHARED_STRIDE {
            return None;
        }
        // An empty region (a placeholder for a rejected one) maps nothing.
        let first = if pages == 0 {
            PhysFrame::containing_address(x86_64::PhysAddr::new(0))
        } else {
            frames::alloc_contiguous(pages as usize)?
        };
        let mut n = heapless::String::new();
        let _ = n.push_str(name);
        Some(Region { name: n, first, pages, base: SHARED_BASE + index as u64 * SHARED_STRIDE })
    }

    pub fn size(&self) -> u64 {
        self.pages * PAGE_SIZE
    }
}
