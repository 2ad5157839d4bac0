//! Page versions for checkpoint scopes: copy-on-write preservation and
//! rollback by remapping.
//!
//! Opening a scope write-protects every private writable page and marks it
//! `TRACKED` (a software PTE bit). The first write to such a page faults;
//! [`AddressSpace::preserve_on_write`] then copies the page into a fresh
//! frame, maps the *copy* writable, and keeps the *original* frame in the
//! scope's list. Rolling back therefore copies nothing: it maps the
//! originals back and frees the copies — cost per dirty page, not per task
//! page. Committing drops the originals (or, for a nested scope, hands them
//! to the enclosing scope, which needs the oldest version of each page).
//!
//! Pages mapped inside a scope are recorded as "new" (rollback unmaps
//! them); pages unmapped inside a scope keep their frame in the list
//! (rollback maps them back). Shared-region pages carry the `SHARED` bit and
//! are never tracked: they are what the registries protect, not rollback.
//!
//! Kernel writes into task memory (IPC buffers, supervisor writes) go
//! through [`AddressSpace::write`], which preserves a tracked page first, so
//! they are rolled back like the task's own writes.

use crate::mem::frames;
use crate::mem::phys_to_virt;
use crate::mem::space::{AddressSpace, SpaceError};
use abi::layout::PAGE_SIZE;
use alloc::vec::Vec;
use x86_64::PhysAddr;
use x86_64::structures::paging::page_table::PageTableEntry;
use x86_64::structures::paging::{PageTable, PageTableFlags as F, PhysFrame};

/// Software PTE bit: write-protected because a scope is open.
pub const TRACKED: F = F::BIT_9;
/// Software PTE bit: a shared-region page (never tracked or freed with a space).
pub const SHARED: F = F::BIT_10;

/// The version of one page a scope must restore.
#[derive(Clone, Copy, Debug)]
pub struct Preserved {
    pub vaddr: u64,
    /// The frame and flags to map back, or `None` if the page did not exist
    /// when the scope opened (rollback unmaps it).
    pub old: Option<(PhysFrame, F)>,
}

impl AddressSpace {
    /// The leaf PTE for `addr`, if every level is present.
    pub(crate) fn leaf(&self, addr: u64) -> Option<&'static mut PageTableEntry> {
        let mut table = phys_to_virt(self.root().start_address().as_u64()) as *mut PageTable;
        for level in (1..=4).rev() {
            let index = ((addr >> (12 + 9 * (level - 1))) & 0x1ff) as usize;
            // SAFETY: `table` is a page table of this space (the root, then
            // tables reached through present entries), in the direct map.
            let entry = unsafe { &mut (&mut *table)[index] };
            if !entry.flags().contains(F::PRESENT) {
                return None;
            }
            if level == 1 {
                return Some(entry);
            }
            table = phys_to_virt(entry.addr().as_u64()) as *mut PageTable;
        }
        None
    }

    /// Calls `each` with every present leaf PTE of the user half.
    fn for_each_leaf(&mut self, mut each: impl FnMut(u64, &mut PageTableEntry)) {
        fn walk(table: PhysAddr, level: u8, base: u64, each: &mut dyn FnMut(u64, &mut PageTableEntry)) {
            // SAFETY: a page table of this space, reached through the direct map.
            let entries = unsafe { &mut *(phys_to_virt(table.as_u64()) as *mut PageTable) };
            let top = if level == 4 { 256 } else { 512 };
            for (i, e) in entries.iter_mut().enumerate().take(top) {
                if !e.flags().contains(F::PRESENT) {
                    continue;
                }
                let va = base | ((i as u64) << (12 + 9 * (level as u64 - 1)));
                if level == 1 {
                    each(va, e);
                } else {
                    walk(e.addr(), level - 1, va, each);
                }
            }
        }
        walk(self.root().start_address(), 4, 0, &mut each);
    }

    /// A private writable page chosen by `rand` (fault injection).
    pub fn private_writable_page(&mut self, rand: u64) -> Option<u64> {
        let mut count = 0u64;
        let mut pick = None;
        self.for_each_leaf(|_, e| {
            let f = e.flags();
            if f.contains(F::USER_ACCESSIBLE) && f.intersects(F::WRITABLE | TRACKED) && !f.contains(SHARED) {
                count += 1;
            }
        });
        if count == 0 {
            return None;
        }
        let mut k = rand % count;
        self.for_each_leaf(|va, e| {
            let f = e.flags();
            if f.contains(F::USER_ACCESSIBLE) && f.intersects(F::WRITABLE | TRACKED) && !f.contains(SHARED) {
                if k == 0 && pick.is_none() {
                    pick = Some(va);
                }
                k = k.wrapping_sub(1);
            }
        });
        pick
    }

    /// Opens a scope: write-protects every private writable page.
    pub fn open_scope(&mut self) {
        self.versions.push(Vec::new());
        self.for_each_leaf(|_, e| {
            let f = e.flags();
            if f.contains(F::USER_ACCESSIBLE | F::WRITABLE) && !f.contains(SHARED) {
                e.set_flags((f - F::WRITABLE) | TRACKED);
            }
        });
        self.flush();
    }

    /// Closes the innermost scope, keeping its effects.
    pub fn commit_scope(&mut self) -> Result<(), SpaceError> {
        let inner = self.versions.pop().ok_or(SpaceError::BadAddress)?;
        match self.versions.last_mut() {
            Some(parent) => {
                for p in inner {
                    if parent.iter().any(|q| q.vaddr == p.vaddr) {
                        // The parent already holds an older version.
                        if let Some((frame, _)) = p.old {
                            frames::free(frame);
                        }
                    } else {
                        parent.push(p);
                    }
                }
            }
            None => {
                for p in inner {
                    if let Some((frame, _)) = p.old {
                        frames::free(frame);
                    }
                }
            }
        }
        Ok(())
    }

    /// Rolls back to scope `depth` (1 = outermost), which stays open and
    /// empty; deeper scopes are closed. Returns the pages restored.
    pub fn rollback_to(&mut self, depth: usize) -> Result<usize, SpaceError> {
        if depth == 0 || depth > self.versions.len() {
            return Err(SpaceError::BadAddress);
        }
        let mut pages = 0;
        while self.versions.len() >= depth {
            let list = if self.versions.len() > depth {
                self.versions.pop().unwrap_or_default()
            } else {
                core::mem::take(self.versions.last_mut().expect("depth >= 1"))
            };
            for p in list.into_iter().rev() {
                self.restore(p);
                pages += 1;
            }
            if self.versions.len() == depth {
                break;
            }
        }
        self.flush();
        Ok(pages)
    }

    fn restore(&mut self, p: Preserved) {
        let current = self.leaf(p.vaddr).map(|e| (e.addr(), e.flags()));
        match (p.old, current) {
            (Some((frame, flags)), Some((now, _))) => {
                if let Some(e) = self.leaf(p.vaddr) {
                    e.set_addr(frame.start_address(), flags);
                }
                if now != frame.start_address() {
                    frames::free(PhysFrame::containing_address(now));
                }
            }
            (Some((frame, flags)), None) => {
                // Unmapped inside the scope: map the original back.
                if self.map_frame(p.vaddr, frame, flags).is_err() {
                    frames::free(frame);
                }
            }
            (None, Some(_)) => {
                // Not through `unmap_page`: no scope may keep this frame.
                self.discard_page(p.vaddr);
            }
            (None, None) => {}
        }
    }

    /// The write fault on a tracked page at `addr`: preserve and map a
    /// writable copy. Returns false if the page is not tracked (a real fault).
    pub fn preserve_on_write(&mut self, addr: u64) -> bool {
        let vaddr = addr & !(PAGE_SIZE - 1);
        let Some(e) = self.leaf(vaddr) else { return false };
        let flags = e.flags();
        if !flags.contains(TRACKED) || flags.contains(F::WRITABLE) {
            return false;
        }
        let writable = (flags - TRACKED) | F::WRITABLE;
        if self.versions.is_empty() {
            // No scope is open any more: just untrack (commit is lazy).
            e.set_flags(writable);
            self.flush_page(vaddr);
            return true;
        }
        let Some(copy) = frames::alloc_uninit() else { return false };
        let old = PhysFrame::containing_address(e.addr());
        // SAFETY: both frames are in the direct map; `copy` is fresh and
        // exclusively ours, `old` is the page's current contents.
        unsafe {
            core::ptr::copy_nonoverlapping(
                phys_to_virt(old.start_address().as_u64()) as *const u8,
                phys_to_virt(copy.start_address().as_u64()) as *mut u8,
                PAGE_SIZE as usize,
            )
        };
        e.set_addr(copy.start_address(), writable);
        self.flush_page(vaddr);
        if let Some(list) = self.versions.last_mut() {
            list.push(Preserved { vaddr, old: Some((old, flags)) });
        }
        true
    }

    /// Records that `vaddr` was mapped inside the current scope.
    pub(crate) fn note_new_page(&mut self, vaddr: u64) {
        if let Some(list) = self.versions.last_mut() {
            list.push(Preserved { vaddr, old: None });
        }
    }

    /// Called instead of freeing the frame of a page unmapped while a scope
    /// is open: returns true if the scope keeps the frame.
    pub(crate) fn keep_unmapped(&mut self, vaddr: u64, frame: PhysFrame, flags: F) -> bool {
        let Some(list) = self.versions.last_mut() else { return false };
        if list.iter().any(|p| p.vaddr == vaddr) {
            return false; // the scope already has the version to restore
        }
        list.push(Preserved { vaddr, old: Some((frame, (flags - F::WRITABLE) | TRACKED)) });
        true
    }

    /// Frees the frames every open scope holds (the space is going away).
    pub(crate) fn drop_versions(&mut self) {
        for list in self.versions.drain(..) {
            for p in list {
                if let Some((frame, _)) = p.old {
                    frames::free(frame);
                }
            }
        }
    }
}
