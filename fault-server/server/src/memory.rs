//! A faulted task's memory, for the stack walker.
//!
//! `walker::Memory` reads one word at a time; each `TASK_CTL READ_MEM` is a
//! system call, and a walk reads several words per frame, mostly from the
//! same one or two stack pages. So reads go through a small cache of whole
//! pages (the task is held while it is walked: its memory cannot change
//! under us). A page that cannot be read (unmapped) is remembered as such,
//! and the read is `None` — the walker then ends with `Stop::Unreadable`.

use alloc::boxed::Box;
use core::cell::RefCell;
use libtask::abi::layout::PAGE_SIZE;
use libtask::supervise::{self, TaskId};

/// Pages kept.
const SLOTS: usize = 4;

struct Slot {
    page: u64,
    /// `None`: the page is not readable.
    bytes: Option<Box<[u8; PAGE_SIZE as usize]>>,
}

pub struct TaskMemory {
    task: TaskId,
    slots: RefCell<([Option<Slot>; SLOTS], usize)>,
    /// Pages fetched (system calls made), for the curious.
    pub fetched: core::cell::Cell<u64>,
}

impl TaskMemory {
    pub fn new(task: TaskId) -> TaskMemory {
        TaskMemory { task, slots: RefCell::new((Default::default(), 0)), fetched: Default::default() }
    }

    fn byte_page(&self, page: u64, f: &mut dyn FnMut(&[u8; PAGE_SIZE as usize])) -> bool {
        let mut guard = self.slots.borrow_mut();
        let (slots, next) = &mut *guard;
        if let Some(slot) = slots.iter().flatten().find(|s| s.page == page) {
            return match &slot.bytes {
                Some(b) => {
                    f(b);
                    true
                }
                None => false,
            };
        }
        let mut bytes = Box::new([0u8; PAGE_SIZE as usize]);
        self.fetched.set(self.fetched.get() + 1);
        let ok = supervise::read_mem(self.task, page, &mut bytes[..]).is_ok();
        if ok {
            f(&bytes);
        }
        slots[*next] = Some(Slot { page, bytes: ok.then_some(bytes) });
        *next = (*next + 1) % SLOTS;
        ok
    }
}

impl walker::Memory for TaskMemory {
    fn read_u64(&self, addr: u64) -> Option<u64> {
        let mut out = [0u8; 8];
        let off = (addr & (PAGE_SIZE - 1)) as usize;
        if off <= PAGE_SIZE as usize - 8 {
            // The common case: the word lies in one page.
            let ok = self.byte_page(addr - off as u64, &mut |p| out.copy_from_slice(&p[off..off + 8]));
            return ok.then(|| u64::from_le_bytes(out));
        }
        for (i, b) in out.iter_mut().enumerate() {
            let a = addr.checked_add(i as u64)?;
            let (page, off) = (a & !(PAGE_SIZE - 1), (a & (PAGE_SIZE - 1)) as usize);
            if !self.byte_page(page, &mut |p| *b = p[off]) {
                return None;
            }
        }
        Some(u64::from_le_bytes(out))
    }
}

/// The faulted task's memory as the fault message shows it: the stack
/// bytes the kernel copied at the fault (`FaultMessage::stack_base`, up to
/// `STACK_WINDOW` bytes), read in place, and [`TaskMemory`] for anything
/// outside them. The copy is what the task's stack was at the fault, so a
/// walk from it stays right after the task was rolled back and runs again
/// (the deferred backtrace relies on that); reads outside it see the
/// task's memory as it is when read.
///
/// A read inside the copy is the walk's most frequent operation (two or
/// three per frame), so it is one subtraction, one comparison and one
/// load: `fit` is the number of offsets at which a whole word lies in the
/// copy.
pub struct WindowMemory<'a> {
    base: u64,
    bytes: &'a [u8],
    /// `bytes.len() - 7` (0 if shorter than a word): `off < fit` means
    /// `off + 8 <= bytes.len()`.
    fit: u64,
    outside: TaskMemory,
}

impl<'a> WindowMemory<'a> {
    pub fn new(task: TaskId, base: u64, bytes: &'a [u8]) -> WindowMemory<'a> {
        WindowMemory { base, bytes, fit: bytes.len().saturating_sub(7) as u64, outside: TaskMemory::new(task) }
    }

    /// Pages read outside the window (system calls made).
    pub fn pages_read(&self) -> u64 {
        self.outside.fetched.get()
    }

    #[cold]
    #[inline(never)]
    fn read_outside(&self, addr: u64) -> Option<u64> {
        walker::Memory::read_u64(&self.outside, addr)
    }
}

impl walker::Memory for WindowMemory<'_> {
    // Always: both walks (recovery, report) read the stack copy word by
    // word, and whether LLVM inlined a plain `#[inline]` here changed with
    // unrelated edits elsewhere in the crate (~350 instructions a walk).
    #[inline(always)]
    fn read_u64(&self, addr: u64) -> Option<u64> {
        match self.read_u64_fast(addr) {
            Some(v) => Some(v),
            None => self.read_outside(addr),
        }
    }

    #[inline(always)]
    fn read_u64_fast(&self, addr: u64) -> Option<u64> {
        // An address below `base` wraps to an offset beyond any window.
        let off = addr.wrapping_sub(self.base);
        if off < self.fit {
            // SAFETY: `off < fit = bytes.len() - 7`, so the 8 bytes at
            // `off` lie inside `bytes` (and `off` fits a `usize`); they are
            // initialised, any bit pattern is a valid `u64`, and
            // `read_unaligned` has no alignment requirement.
            let word = unsafe { core::ptr::read_unaligned(self.bytes.as_ptr().add(off as usize) as *const u64) };
            return Some(u64::from_le(word));
        }
        None
    }
}
