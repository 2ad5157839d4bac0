//! The global allocator: `talc` over memory from the `MAP` system call.
//!
//! A task starts with no heap. The first allocation finds `talc` empty, and
//! talc asks its [`Source`] for memory; [`MapSource`] then maps fresh
//! writable pages (`MAP`, flags `WRITE`) and hands them over. Later growth
//! asks the kernel for the pages right after the current heap (`MAP` with
//! that address as hint) so the heap stays one contiguous region and talc
//! can merge free space across the old end; when that spot is taken (the
//! task mapped something there itself) or the kernel chooses another one,
//! the new pages become a separate heap, which talc also supports. Memory
//! is never given back: tasks are short-lived and the kernel reclaims
//! everything at exit.
//!
//! Why `talc`: it is maintained, `no_std`, grows on demand through a
//! `Source` hook that is exactly "call the kernel", and handles
//! non-contiguous heaps. Tasks are single-threaded today, but the allocator
//! sits behind a spin lock anyway (uncontended, it costs one atomic swap),
//! so it stays correct if tasks grow threads. The panic handler never
//! allocates, so a panic inside the allocator cannot deadlock on this lock.

use crate::syscall;
use abi::layout::PAGE_SIZE;
use abi::syscall::MapFlags;
use core::alloc::Layout;
use core::ptr::NonNull;
use talc::base::Talc;
use talc::base::binning::Binning;
use talc::source::Source;

/// Smallest growth step: a few allocations should not cost a `MAP` each.
const GROW_MIN: usize = 64 * 1024;

/// Gets heap memory from the kernel. Addresses are kept as `usize` so the
/// source is `Send` (the allocator is a `static`).
#[derive(Debug)]
pub struct MapSource {
    /// One past the last mapped byte of the newest heap (0: none yet).
    mapped_end: usize,
    /// Talc's end of that heap (from `claim`/`extend`), for `extend`.
    heap_end: usize,
}

impl MapSource {
    pub const fn new() -> Self {
        Self { mapped_end: 0, heap_end: 0 }
    }
}

impl Default for MapSource {
    fn default() -> Self {
        Self::new()
    }
}

/// Bytes to map so that `layout` fits in a new (possibly first) heap.
fn grow_size<B: Binning>(layout: Layout) -> usize {
    let need = layout.size().saturating_add(layout.align()).saturating_add(talc::min_first_heap_size::<B>());
    let step = need.max(GROW_MIN);
    step.saturating_add(PAGE_SIZE as usize - 1) & !(PAGE_SIZE as usize - 1)
}

// SAFETY: `acquire` only makes system calls and calls `claim`/`extend` on the
// `Talc` it is given; it never allocates, prints or touches the global
// allocator.
unsafe impl Source for MapSource {
    fn acquire<B: Binning>(talc: &mut Talc<Self, B>, layout: Layout) -> Result<(), ()> {
        let size = grow_size::<B>(layout);
        let hint = talc.source.mapped_end;
        // Right after the current heap if possible, else anywhere.
        let base = match syscall::map(hint as u64, size as u64, MapFlags::WRITE) {
            Ok(base) => base,
            Err(_) if hint != 0 => syscall::map(0, size as u64, MapFlags::WRITE).map_err(drop)?,
            Err(_) => return Err(()),
        };
        let new_end = base as usize + size;
        let contiguous = hint != 0 && base as usize == hint;
        let heap_end = match NonNull::new(talc.source.heap_end as *mut u8) {
            Some(old_end) if contiguous => {
                // SAFETY: `old_end` is the end of a heap this source claimed,
                // and `[old_end, new_end)` is memory just mapped for it.
                unsafe { talc.extend(old_end, new_end as *mut u8) }
            }
            _ => {
                // SAFETY: `[base, base + size)` was just mapped writable for
                // the heap and is used by nothing else.
                unsafe { talc.claim(base, size) }.ok_or(())?
            }
        };
        talc.source.mapped_end = new_end;
        talc.source.heap_end = heap_end.as_ptr() as usize;
        Ok(())
    }
}

/// The allocator of every task.
#[global_allocator]
static HEAP: talc::TalcLock<spin::Mutex<()>, MapSource> = talc::TalcLock::new(MapSource::new());
