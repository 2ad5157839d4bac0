//! The kernel heap: `linked_list_allocator` over contiguous frames reached
//! through the direct map. Fixed size: the kernel allocates task control
//! blocks and bookkeeping, never task memory (tasks get whole frames).

use super::{frames, phys_to_virt};
use linked_list_allocator::LockedHeap;

/// Kernel heap size.
pub const HEAP_BYTES: usize = 8 << 20;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

pub fn init() {
    let first = frames::alloc_contiguous(HEAP_BYTES / 4096).expect("8 MiB of contiguous RAM for the kernel heap");
    let base = phys_to_virt(first.start_address().as_u64()) as *mut u8;
    // SAFETY: the frames were just allocated for the heap alone and are
    // mapped (writable) through the direct map for the kernel's lifetime.
    unsafe { HEAP.lock().init(base, HEAP_BYTES) };
}
