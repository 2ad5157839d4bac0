//! Moving the fault message's bytes between two tasks: one page-table walk
//! per page on each side, not per copy.
//!
//! The message is written in a handful of pieces — the panic text, the
//! live parts of the recovery page, the stack from `rsp` up, the struct
//! last — into the fault server's receive buffer (a few pages), from the
//! faulted task's pages. `AddressSpace::write` and `read` check and walk
//! the page tables again for every call; on the recovery path those walks
//! were a fifth of the delivery. A [`Dest`] remembers the destination page
//! it last translated (and checked writable), a [`Source`] the source page:
//! a piece that stays on the page costs a compare.
//!
//! Both sides are checked exactly as `AddressSpace::read`/`write` check
//! them: user, present, and for the destination writable (a page a scope
//! tracks is preserved first, so the write is rolled back with the scope —
//! the fault server opens none, but nothing here assumes it). Nothing is
//! trusted about the addresses: the buffer (`r14`/`r15`) and the recovery
//! page address are the tasks' own values.

use crate::mem::phys_to_virt;
use crate::mem::space::AddressSpace;
use crate::recovery::versions::{SHARED, TRACKED};
use abi::layout::{PAGE_SIZE, USER_END};
use x86_64::structures::paging::PageTableFlags as F;

/// The last page translated: `(page, its direct-map address)`.
type Cached = Option<(u64, u64)>;

/// A task buffer `[base, base + cap)` being written.
pub struct Dest<'a> {
    space: &'a mut AddressSpace,
    base: u64,
    cap: usize,
    page: Cached,
}

impl<'a> Dest<'a> {
    pub fn new(space: &'a mut AddressSpace, base: u64, cap: usize) -> Dest<'a> {
        Dest { space, base, cap, page: None }
    }

    /// The direct-map address of the writable user page holding `addr`.
    fn page(&mut self, addr: u64) -> Option<u64> {
        let page = addr & !(PAGE_SIZE - 1);
        if let Some((p, virt)) = self.page
            && p == page
        {
            return Some(virt);
        }
        if page >= USER_END {
            return None;
        }
        let mut flags = self.space.leaf(page)?.flags();
        if flags.contains(TRACKED) && !flags.contains(SHARED) {
            self.space.preserve_on_write(page);
            flags = self.space.leaf(page)?.flags();
        }
        if !flags.contains(F::PRESENT | F::USER_ACCESSIBLE | F::WRITABLE) {
            return None;
        }
        let virt = phys_to_virt(self.space.leaf(page)?.addr().as_u64());
        self.page = Some((page, virt));
        Some(virt)
    }

    /// Bytes `at .. at + len` of the buffer, seen in place through the
    /// direct map, if they lie in one writable page (and the buffer's
    /// capacity). Only bytes that no other piece of this delivery writes
    /// may be asked for: the slice aliases the page `put` writes.
    pub fn in_place(&mut self, at: usize, len: usize) -> Option<&'static mut [u8]> {
        if at.checked_add(len)? > self.cap {
            return None;
        }
        let addr = self.base.checked_add(at as u64)?;
        let off = (addr & (PAGE_SIZE - 1)) as usize;
        if off + len > PAGE_SIZE as usize {
            return None;
        }
        let virt = self.page(addr)?;
        // SAFETY: `virt + off .. + len` lies in one present, user,
        // writable page of the destination space (checked in `page`), in
        // the direct map; the caller keeps it apart from what `put` writes
        // (see above), and nothing else runs during the delivery.
        Some(unsafe { core::slice::from_raw_parts_mut((virt as *mut u8).add(off), len) })
    }

    /// Writes `bytes` at offset `at` of the buffer, cut at its capacity
    /// and at the first page that cannot be written. Returns the bytes
    /// written.
    pub fn put(&mut self, at: usize, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.cap.saturating_sub(at));
        let mut done = 0;
        while done < n {
            let addr = self.base.wrapping_add((at + done) as u64);
            let Some(virt) = self.page(addr) else { break };
            let off = (addr & (PAGE_SIZE - 1)) as usize;
            let piece = (n - done).min(PAGE_SIZE as usize - off);
            // SAFETY: `virt` is the direct-map view of a present, user,
            // writable page of the destination space (checked in `page`);
            // `off + piece` stays inside it. `copy`, not
            // `copy_nonoverlapping`: a source slice from `Source` could be
            // the same frame if both tasks mapped one shared region.
            unsafe { core::ptr::copy(bytes[done..].as_ptr(), (virt as *mut u8).add(off), piece) };
            done += piece;
        }
        done
    }
}

/// A task's memory being read.
pub struct Source<'a> {
    space: &'a AddressSpace,
    page: Cached,
}

impl<'a> Source<'a> {
    pub fn new(space: &'a AddressSpace) -> Source<'a> {
        Source { space, page: None }
    }

    /// The readable bytes from `addr` to the end of its page (`None` if
    /// that page is not present user memory).
    fn piece(&mut self, addr: u64) -> Option<&'a [u8]> {
        let page = addr & !(PAGE_SIZE - 1);
        let virt = match self.page {
            Some((p, virt)) if p == page => virt,
            _ => {
                if page >= USER_END {
                    return None;
                }
                let e = self.space.leaf(page)?;
                if !e.flags().contains(F::PRESENT | F::USER_ACCESSIBLE) {
                    return None;
                }
                let virt = phys_to_virt(e.addr().as_u64());
                self.page = Some((page, virt));
                virt
            }
        };
        let off = (addr & (PAGE_SIZE - 1)) as usize;
        // SAFETY: a present user page of the source space in the direct
        // map; the kernel runs with interrupts off on one CPU, so it is
        // neither unmapped nor written while the slice lives (the copy
        // that uses it).
        Some(unsafe { core::slice::from_raw_parts((virt as *const u8).add(off), PAGE_SIZE as usize - off) })
    }

    /// The `u64` at the 8-aligned `addr` (0 if unreadable or unaligned).
    pub fn u64_at(&mut self, addr: u64) -> u64 {
        if !addr.is_multiple_of(8) {
            return 0;
        }
        self.piece(addr).and_then(|b| b.first_chunk::<8>()).map_or(0, |b| u64::from_le_bytes(*b))
    }

    /// Copies `len` bytes from `from` to offset `at` of `dst`; stops at
    /// the first unreadable source page or unwritable destination page.
    /// Returns the bytes copied.
    pub fn copy_to(&mut self, from: u64, len: usize, dst: &mut Dest<'_>, at: usize) -> usize {
        let mut done = 0;
        while done < len {
            let Some(piece) = self.piece(from.wrapping_add(done as u64)) else { break };
            let piece = &piece[..piece.len().min(len - done)];
            let put = dst.put(at + done, piece);
            done += put;
            if put < piece.len() {
                break;
            }
        }
        done
    }
}
