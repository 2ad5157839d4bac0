//! Page versions for checkpoint scopes: copy-on-write preservation and
//! rollback by remapping.
//!
//! ## Write protection costs what was written, not the task's size
//!
//! The space keeps an **armed list** (`AddressSpace::armed`): the pages
//! that became writable (or `SCOPED`, below) since the last open — mapped
//! writable, or unprotected by a copy-on-write fault. Opening a scope
//! write-protects exactly the entries past the enclosing scope's range
//! ("the tail"), marks them `TRACKED` (a software PTE bit) and makes that
//! stretch of the list the new scope's range: the pages *its* open
//! protected. So an open costs the pages written since the previous open
//! (a few PTE writes and `invlpg`s), never a walk of the page tables, and
//! a task that writes nothing between two scopes opens the second one in
//! O(1). Stale entries (unmapped pages, duplicates after a map/unmap
//! churn) are skipped by the open and squeezed out of the tail when it
//! reaches twice its size after the last squeeze, so the list never holds
//! more than about two entries per mapped private page.
//!
//! The first write to a tracked page faults; [`AddressSpace::preserve_on_write`]
//! copies the page into a fresh frame, maps the *copy* writable, keeps the
//! *original* frame as a record of the innermost scope and arms the page
//! again (the next open must protect it). Rolling back copies nothing: it
//! maps the originals back and frees the copies — cost per dirty page.
//!
//! The invariant everything below leans on, while a scope is open: a
//! present private page is `WRITABLE` or `SCOPED` exactly when the
//! innermost scope holds a record for it (the open protects every armed
//! page, and nothing but a record-making event makes a page writable
//! again), so "does this scope already have a version of this page?" is a
//! look at the PTE, never a search of the records.
//!
//! ## Records
//!
//! All scopes' records live in one vector (`AddressSpace::records`); scope
//! `k` owns the stretch from its start to the next scope's start. Per page
//! a scope holds at most one record with a frame (`old = Some`: the version
//! at its open), and possibly records without (`None`: the page did not
//! exist at the open, rollback unmaps it). Rollback applies a stretch in two
//! passes — first every `None` (unmap), then every `Some` (map the version
//! back) — so the order of records inside a stretch never matters.
//!
//! * Pages mapped inside a scope get a `None` record; a read-only one is
//!   also marked `SCOPED` (a software PTE bit) so that its unmap knows the
//!   record exists. Unmapping a page mapped in the same scope drops its
//!   `None` record when it is among the scope's last few (so a
//!   `loop { MAP; UNMAP }` does not pile records up).
//! * Pages unmapped inside a scope keep their frame in a `Some` record
//!   (rollback maps them back), unless the scope has a record already.
//!   The record keeps the page's flags as they were: a read-only or
//!   executable page comes back exactly so, never `TRACKED` (a tracked page
//!   becomes writable on its first write, so only pages that were writable
//!   may carry the bit: W^X holds through rollback).
//! * Commit of the outermost scope frees its versions; the pages its open
//!   protected stay protected (lazily: the next write to one takes a fault
//!   that only unprotects it). Commit of an inner scope hands its records to
//!   the enclosing scope, which keeps its own (older) version where it has
//!   one: the merged stretch is sorted by page (in place, no allocation) and
//!   deduplicated, O((n + m) log(n + m)) rather than a search per record;
//!   and it unprotects the pages its open protected and the scope did not
//!   write (the enclosing scope has their versions, so the invariant holds
//!   for it again).
//!
//! Every record costs kernel memory, so a space holds at most its
//! `max_records` (the manifest's `max_scope_records`, 16 Ki by default),
//! all spaces together at most [`RECORD_BUDGET`] bytes of record capacity
//! (half the kernel heap, so that many tasks at their quotas cannot
//! exhaust it), and every version is a frame charged to the space's frame
//! quota (`mem/space.rs`, "Quotas"); past any of these (or when the kernel
//! heap cannot grow the vectors) a map or unmap inside a scope fails with
//! `OutOfMemory` and a copy-on-write fault is not resolved (the task takes
//! the page fault) — never a kernel allocation failure.
//!
//! Shared-region pages carry the `SHARED` bit and are never armed or
//! tracked: they are what the registries protect, not rollback.
//!
//! Kernel writes into task memory (IPC buffers, supervisor writes) go
//! through [`AddressSpace::write`], which preserves a tracked page first, so
//! they are rolled back like the task's own writes.

use crate::mem::phys_to_virt;
use crate::mem::space::{AddressSpace, SpaceError};
use abi::layout::{PAGE_SIZE, USER_END};
use core::sync::atomic::{AtomicUsize, Ordering};
use x86_64::PhysAddr;
use x86_64::registers::control::Cr3;
use x86_64::structures::paging::page_table::PageTableEntry;
use x86_64::structures::paging::{PageTable, PageTableFlags as F, PhysFrame};

/// Bytes of page-record capacity all spaces hold together at most (a
/// half of the kernel heap): see `AddressSpace::grow_records`.
pub const RECORD_BUDGET: usize = crate::mem::heap::HEAP_BYTES / 2;
/// Bytes of page-record capacity held now, over all spaces.
static RECORD_BYTES: AtomicUsize = AtomicUsize::new(0);

/// A space's record capacity goes back to the budget (the space is gone).
pub(crate) fn uncharge_records(bytes: usize) {
    RECORD_BYTES.fetch_sub(bytes, Ordering::Relaxed);
}

/// Software PTE bit: write-protected because a scope is open.
pub const TRACKED: F = F::BIT_9;
/// Software PTE bit: a shared-region page (never tracked or freed with a space).
pub const SHARED: F = F::BIT_10;
/// Software PTE bit: a read-only page mapped inside the innermost open
/// scope (which holds its `None` record).
pub const SCOPED: F = F::BIT_11;

/// The armed list's tail is squeezed when it reaches this, at the least.
pub(crate) const ARMED_MIN: usize = 64;
/// Above this many pages, an open reloads CR3 instead of `invlpg` per page.
const FLUSH_ALL_ABOVE: usize = 32;
/// How far back an unmap looks for the `None` record of its page.
const DROP_WINDOW: usize = 32;
/// Low bit of an entry in a scope's range: its open cleared `SCOPED`
/// (rather than `WRITABLE`) on the page.
const WAS_SCOPED: u64 = 1;

/// The version of one page a scope must restore.
#[derive(Clone, Copy, Debug)]
pub struct Preserved {
    pub vaddr: u64,
    /// The frame and flags to map back, or `None` if the page did not exist
    /// when the scope opened (rollback unmaps it).
    pub old: Option<(PhysFrame, F)>,
}

/// One open scope's share of the space's lists.
#[derive(Clone, Copy, Debug)]
pub struct ScopeMem {
    /// Its first record in `AddressSpace::records`.
    records: usize,
    /// `armed[armed..armed_end]`: the pages its open protected.
    armed: usize,
    armed_end: usize,
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

    /// Like [`Self::leaf`], remembering the last page table reached in
    /// `cache`: a rollback's pages are mostly neighbours, so most lookups
    /// skip three of the four levels. `cache` is only valid while no page
    /// table of this space is freed or replaced (one rollback).
    fn leaf_cached(&self, cache: &mut Option<(u64, u64)>, addr: u64) -> Option<&'static mut PageTableEntry> {
        let region = addr >> 21;
        let table = match *cache {
            Some((r, table)) if r == region => table,
            _ => {
                let mut table = phys_to_virt(self.root().start_address().as_u64()) as *mut PageTable;
                for level in (2..=4).rev() {
                    let index = ((addr >> (12 + 9 * (level - 1))) & 0x1ff) as usize;
                    // SAFETY: as in `leaf`.
                    let entry = unsafe { &(&*table)[index] };
                    if !entry.flags().contains(F::PRESENT) {
                        return None;
                    }
                    table = phys_to_virt(entry.addr().as_u64()) as *mut PageTable;
                }
                *cache = Some((region, table as u64));
                table as u64
            }
        };
        // SAFETY: `table` is a level-1 table of this space reached through
        // present entries (now or earlier in this rollback, which frees no
        // table), in the direct map.
        let entry = unsafe { &mut (&mut *(table as *mut PageTable))[((addr >> 12) & 0x1ff) as usize] };
        entry.flags().contains(F::PRESENT).then_some(entry)
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

    /// A private writable page chosen by `rand` (fault injection; walks
    /// the page tables, which only the injector may afford).
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

    /// Where the armed list's tail starts (what the next open protects).
    fn armed_mark(&self) -> usize {
        self.scopes.last().map_or(0, |s| s.armed_end)
    }

    /// Makes room for one more armed entry; false if the kernel heap has
    /// none.
    #[inline]
    pub(crate) fn reserve_armed(&mut self, n: usize) -> bool {
        let len = self.armed.len();
        if len + n <= self.armed_limit && len + n <= self.armed.capacity() {
            return true;
        }
        if len + n > self.armed_limit {
            self.squeeze_armed();
        }
        self.armed.try_reserve(n).is_ok()
    }

    /// Notes that `vaddr` became writable or `SCOPED` (room reserved with
    /// [`Self::reserve_armed`]).
    pub(crate) fn arm(&mut self, vaddr: u64) {
        debug_assert!(self.armed.len() < self.armed.capacity());
        self.armed.push(vaddr);
    }

    /// Drops stale and duplicate entries from the armed tail.
    fn squeeze_armed(&mut self) {
        let mark = self.armed_mark();
        let mut keep = mark;
        for i in mark..self.armed.len() {
            let va = self.armed[i];
            let live = self.leaf(va).is_some_and(|e| {
                let f = e.flags();
                f.intersects(F::WRITABLE | SCOPED) && !f.contains(SHARED)
            });
            if live {
                self.armed[keep] = va;
                keep += 1;
            }
        }
        self.armed.truncate(keep);
        self.armed[mark..].sort_unstable();
        let mut w = mark;
        for r in mark..self.armed.len() {
            if w == mark || self.armed[r] != self.armed[w - 1] {
                self.armed[w] = self.armed[r];
                w += 1;
            }
        }
        self.armed.truncate(w);
        self.armed_limit = (2 * (w - mark) + mark).max(mark + ARMED_MIN);
    }

    /// Opens a scope: write-protects the pages armed since the last open,
    /// then preserves the stack page below `rsp` (the task's stack pointer
    /// at the open) right away: the scope writes it as good as always (the
    /// call into its body), and preserving it here costs the copy without
    /// the fault.
    pub fn open_scope(&mut self, rsp: u64) -> Result<(), SpaceError> {
        self.scopes.try_reserve(1).map_err(|_| SpaceError::OutOfMemory)?;
        let from = self.armed_mark();
        let end = self.armed.len();
        let per_page = end - from <= FLUSH_ALL_ABOVE && self.is_current();
        let mut keep = from;
        for i in from..end {
            let va = self.armed[i];
            let Some(e) = self.leaf(va) else { continue };
            let f = e.flags();
            if f.contains(SHARED) {
                continue;
            }
            if f.contains(F::WRITABLE) {
                e.set_flags((f - F::WRITABLE) | TRACKED);
                if per_page {
                    self.flush_page(va);
                }
                self.armed[keep] = va;
                keep += 1;
            } else if f.contains(SCOPED) {
                // A software bit: no TLB entry holds it.
                e.set_flags(f - SCOPED);
                self.armed[keep] = va | WAS_SCOPED;
                keep += 1;
            }
        }
        self.armed.truncate(keep);
        if !per_page {
            self.flush();
        }
        self.armed_limit = self.armed_limit.max(keep + ARMED_MIN);
        self.scopes.push(ScopeMem { records: self.records.len(), armed: from, armed_end: keep });
        // Not preserved (out of room, not tracked): the write will fault.
        self.preserve(rsp.wrapping_sub(8), Some(rsp));
        Ok(())
    }

    /// Closes the innermost scope, keeping its effects.
    pub fn commit_scope(&mut self) -> Result<(), SpaceError> {
        let inner = self.scopes.pop().ok_or(SpaceError::BadAddress)?;
        let Some(parent) = self.scopes.last().copied() else {
            // The outermost scope: nothing can be rolled back any more.
            // One version is kept as the spare frame of the next open.
            let mut records = core::mem::take(&mut self.records);
            for p in records.drain(..) {
                if let Some((frame, _)) = p.old {
                    match self.spare {
                        None => self.spare = Some(frame),
                        Some(_) => self.free_charged(frame),
                    }
                }
            }
            self.records = records; // empty, its capacity kept
            // What its open protected stays protected (lazily unprotected
            // by the next write); what it armed is the next open's tail.
            self.armed.drain(inner.armed..inner.armed_end);
            self.armed_limit = (2 * self.armed.len()).max(ARMED_MIN);
            return Ok(());
        };
        // Unprotect what the open protected and the scope left alone: the
        // enclosing scope holds versions of those pages.
        let per_page = inner.armed_end - inner.armed <= FLUSH_ALL_ABOVE && self.is_current();
        for i in inner.armed..inner.armed_end {
            let entry = self.armed[i];
            let va = entry & !WAS_SCOPED;
            self.armed[i] = va;
            let Some(e) = self.leaf(va) else { continue };
            let f = e.flags();
            if entry & WAS_SCOPED == 0 {
                if f.contains(TRACKED) && !f.contains(F::WRITABLE) {
                    e.set_flags((f - TRACKED) | F::WRITABLE);
                    if per_page {
                        self.flush_page(va);
                    }
                }
            } else if !f.intersects(F::WRITABLE | TRACKED | SHARED) {
                e.set_flags(f | SCOPED);
            }
        }
        if !per_page {
            self.flush();
        }
        self.merge_records(parent.records, inner.records);
        Ok(())
    }

    /// Makes `records[parent..inner]` and `records[inner..]` one stretch
    /// with at most one record per page, the parent's where it has one.
    fn merge_records(&mut self, parent: usize, inner: usize) {
        if parent == inner || inner == self.records.len() {
            return; // one side is empty: nothing to resolve
        }
        // The page is aligned: bit 0 marks the inner scope's records, so
        // they sort after the parent's; within one scope, a version before
        // a `None` (the version is what the page was at the open).
        for p in &mut self.records[inner..] {
            p.vaddr |= 1;
        }
        self.records[parent..].sort_unstable_by_key(|p| (p.vaddr, p.old.is_none()));
        let mut w = parent;
        for r in parent..self.records.len() {
            let p = self.records[r];
            let page = p.vaddr & !(PAGE_SIZE - 1);
            if w > parent && self.records[w - 1].vaddr == page {
                if let Some((frame, _)) = p.old {
                    self.free_charged(frame);
                }
                continue;
            }
            self.records[w] = Preserved { vaddr: page, old: p.old };
            w += 1;
        }
        self.records.truncate(w);
    }

    /// Rolls back to scope `depth` (1 = outermost), which stays open and
    /// empty; deeper scopes are closed. Returns the records applied and
    /// whether the stack page was kept writable (below).
    ///
    /// `stack` is the target scope's saved stack pointer: the re-run writes
    /// the stack just below it at once (as at the open), so that page is
    /// left writable *and* recorded, as a copy-on-write fault would leave
    /// it — without the fault, and without a fresh frame: when the scope
    /// holds the page's version, the frame the failed attempt wrote is
    /// kept and only the live part of the version (from `stack` less the
    /// 128-byte red zone up to the page end) is copied back into it. What
    /// lies below that is dead by the ABI (any interrupt or signal could
    /// have clobbered it), holds only the task's own bytes, and is never
    /// read before it is written.
    pub fn rollback_to(&mut self, depth: usize, stack: u64) -> Result<(usize, bool), SpaceError> {
        if depth == 0 || depth > self.scopes.len() {
            return Err(SpaceError::BadAddress);
        }
        let target = self.scopes[depth - 1];
        let below = stack.wrapping_sub(8);
        let stack_page = below & !(PAGE_SIZE - 1);
        // The kept page needs an armed entry (the next open protects it).
        let may_keep = stack_page < USER_END && self.armed.try_reserve(1).is_ok();
        let mut kept = None;
        let mut pages = 0;
        let mut cache = None;
        // Innermost first, each stretch from its end: an outer scope's
        // version is the older one, and within a stretch a page's version
        // comes before its `None`s (see the module header).
        let mut end = self.records.len();
        for k in (depth - 1..self.scopes.len()).rev() {
            let start = self.scopes[k].records;
            for i in (start..end).rev() {
                let p = self.records[i];
                if may_keep && k == depth - 1 && p.vaddr == stack_page && kept.is_none() {
                    if let Some(record) = self.keep_stack_page(&mut cache, p, below) {
                        kept = Some(record);
                        continue;
                    }
                }
                self.restore(&mut cache, p);
            }
            pages += end - start;
            end = start;
        }
        self.records.truncate(end);
        self.scopes.truncate(depth);
        // Everything armed since the target's open is restored now:
        // protected again, or gone — but the kept stack page, writable.
        self.armed.truncate(target.armed_end);
        if let Some(record) = kept {
            // Both pushes fit: `records` only shrank above, `armed` has
            // room reserved.
            self.records.push(record);
            self.arm(record.vaddr);
        }
        self.flush();
        Ok((pages, kept.is_some()))
    }

    /// The stack page's version `p` at the target scope's open, the page's
    /// current frame a copy the failed attempt wrote: copies the version's
    /// live bytes (from `below` less the red zone) into that frame, maps it
    /// writable and returns the record to keep. `None` (nothing changed) if
    /// the page is not in that state.
    fn keep_stack_page(&mut self, cache: &mut Option<(u64, u64)>, p: Preserved, below: u64) -> Option<Preserved> {
        const RED_ZONE: u64 = 128;
        let (old, flags) = p.old?;
        if !flags.contains(TRACKED | F::NO_EXECUTE) || flags.intersects(F::WRITABLE | SHARED) {
            return None;
        }
        let e = self.leaf_cached(cache, p.vaddr)?;
        let now = e.addr();
        if !e.flags().contains(F::WRITABLE) || e.flags().contains(SHARED) || now == old.start_address() {
            return None;
        }
        let from = below.saturating_sub(RED_ZONE).max(p.vaddr) & !7;
        let offset = (from - p.vaddr) as usize;
        // SAFETY: both frames are private frames of this space in the
        // direct map: `old` is the scope's version (no mapping writes it),
        // `now` the page's current frame; the range stays inside the page.
        unsafe {
            core::ptr::copy_nonoverlapping(
                (phys_to_virt(old.start_address().as_u64()) as *const u8).add(offset),
                (phys_to_virt(now.as_u64()) as *mut u8).add(offset),
                PAGE_SIZE as usize - offset,
            )
        };
        e.set_flags((flags - TRACKED) | F::WRITABLE);
        Some(p)
    }

    fn restore(&mut self, cache: &mut Option<(u64, u64)>, p: Preserved) {
        let Some(e) = self.leaf_cached(cache, p.vaddr) else {
            if let Some((frame, flags)) = p.old {
                // Unmapped inside the scope: map the original back (which
                // may add page tables; none is freed in a rollback).
                if self.map_frame(p.vaddr, frame, flags).is_err() {
                    self.free_charged(frame);
                }
            }
            return;
        };
        match p.old {
            Some((frame, flags)) => {
                let now = e.addr();
                e.set_addr(frame.start_address(), flags);
                if now != frame.start_address() {
                    self.free_charged(PhysFrame::containing_address(now));
                }
            }
            // Not through `unmap_page`: no scope may keep this frame.
            None => self.discard_page(p.vaddr),
        }
    }

    /// The write fault on a tracked page at `addr`: preserve and map a
    /// writable copy. Returns false if the page is not tracked (a real
    /// fault), or if the scope's records or the kernel are out of memory.
    pub fn preserve_on_write(&mut self, addr: u64) -> bool {
        self.preserve(addr, None)
    }

    /// [`Self::preserve_on_write`]; with `stack = Some(rsp)` (an open
    /// preserving the page below the task's stack pointer), the copy may be
    /// made into the space's spare frame, and then only the bytes from
    /// `rsp` less the 128-byte red zone to the page end are copied: below
    /// that the stack is dead by the ABI, and the spare holds only this
    /// task's own old bytes there (a fresh frame could show another task's).
    fn preserve(&mut self, addr: u64, stack: Option<u64>) -> bool {
        const RED_ZONE: u64 = 128;
        if addr >= USER_END {
            return false;
        }
        let vaddr = addr & !(PAGE_SIZE - 1);
        let Some(e) = self.leaf(vaddr) else { return false };
        let flags = e.flags();
        // Only a writable, non-executable private page is ever tracked;
        // checking again keeps W^X whatever a record said.
        if !flags.contains(TRACKED | F::NO_EXECUTE) || flags.intersects(F::WRITABLE | SHARED) {
            return false;
        }
        if !self.reserve_armed(1) {
            return false;
        }
        let writable = (flags - TRACKED) | F::WRITABLE;
        if self.scopes.is_empty() {
            // No scope is open any more: just unprotect (commit is lazy).
            e.set_flags(writable);
            self.flush_page(vaddr);
            self.arm(vaddr);
            return true;
        }
        if !self.reserve_record() {
            return false;
        }
        let (copy, from) = match (stack, self.spare) {
            (Some(rsp), Some(spare)) if rsp.wrapping_sub(8) & !(PAGE_SIZE - 1) == vaddr => {
                self.spare = None;
                (spare, (rsp.wrapping_sub(8).saturating_sub(RED_ZONE).max(vaddr) & !7) - vaddr)
            }
            // Past the space's frame quota (or out of memory): not served,
            // the task takes the page fault.
            _ => match self.alloc_charged(true) {
                Some(frame) => (frame, 0),
                None => return false,
            },
        };
        let old = PhysFrame::containing_address(e.addr());
        // SAFETY: both frames are in the direct map; `copy` is fresh or
        // the space's spare, exclusively ours either way; `old` is the
        // page's current contents; `from < PAGE_SIZE`.
        unsafe {
            core::ptr::copy_nonoverlapping(
                (phys_to_virt(old.start_address().as_u64()) as *const u8).add(from as usize),
                (phys_to_virt(copy.start_address().as_u64()) as *mut u8).add(from as usize),
                (PAGE_SIZE - from) as usize,
            )
        };
        e.set_addr(copy.start_address(), writable);
        self.flush_page(vaddr);
        self.records.push(Preserved { vaddr, old: Some((old, flags)) });
        self.arm(vaddr);
        true
    }

    /// Makes the tracked page at `addr` writable again when no scope is
    /// open (what the next write would do, without its fault).
    pub fn unprotect(&mut self, addr: u64) {
        if self.scopes.is_empty() {
            self.preserve_on_write(addr);
        }
    }

    /// Writes each `(addr, word)` of `words` — 8-aligned addresses, all in
    /// the page at `page` — into private memory that is user-writable or
    /// tracked, preserving a tracked page first (so the innermost open
    /// scope, if any, undoes the writes): one page-table lookup instead of
    /// [`AddressSpace::write`]'s checks per call.
    pub fn write_words(&mut self, page: u64, words: &[(u64, u64)]) -> Result<(), SpaceError> {
        if !page.is_multiple_of(PAGE_SIZE)
            || page >= USER_END
            || words.iter().any(|&(a, _)| a % 8 != 0 || a & !(PAGE_SIZE - 1) != page)
        {
            return Err(SpaceError::BadAddress);
        }
        let flags = self.leaf(page).ok_or(SpaceError::BadAddress)?.flags();
        if !flags.contains(F::USER_ACCESSIBLE) || flags.contains(SHARED) || !flags.intersects(F::WRITABLE | TRACKED) {
            return Err(SpaceError::BadAddress);
        }
        if !flags.contains(F::WRITABLE) && !self.scopes.is_empty() && !self.preserve_on_write(page) {
            return Err(SpaceError::OutOfMemory);
        }
        let base = phys_to_virt(self.leaf(page).ok_or(SpaceError::BadAddress)?.addr().as_u64());
        for &(addr, w) in words {
            // SAFETY: the direct-map address of `addr`, an aligned word of
            // a user page of this space checked above.
            unsafe { ((base + addr % PAGE_SIZE) as *mut u64).write(w) };
        }
        Ok(())
    }

    /// Makes room for `pages` new pages mapped inside the current scope
    /// (their records and armed entries), before any is mapped.
    pub(crate) fn reserve_new_pages(&mut self, pages: usize) -> Result<(), SpaceError> {
        if !self.reserve_armed(pages) {
            return Err(SpaceError::OutOfMemory);
        }
        if self.scopes.is_empty() {
            return Ok(());
        }
        if self.records.len() + pages > self.max_records || !self.grow_records(pages) {
            return Err(SpaceError::OutOfMemory);
        }
        Ok(())
    }

    /// Makes room for `n` more records within the kernel-wide budget
    /// ([`RECORD_BUDGET`]): each space's quota bounds its own records, the
    /// budget bounds their sum, so that many tasks at their quotas cannot
    /// fill the kernel heap (whose infallible allocations would then fail).
    /// False (nothing allocated) past either.
    fn grow_records(&mut self, n: usize) -> bool {
        let (len, cap) = (self.records.len(), self.records.capacity());
        if len + n <= cap {
            return true;
        }
        let want = (cap * 2).max(len + n).max(16).min(self.max_records.max(len + n));
        let bytes = (want - cap) * core::mem::size_of::<Preserved>();
        let charged = RECORD_BYTES.fetch_add(bytes, Ordering::Relaxed);
        if charged + bytes > RECORD_BUDGET || self.records.try_reserve_exact(want - len).is_err() {
            RECORD_BYTES.fetch_sub(bytes, Ordering::Relaxed);
            return false;
        }
        // What the allocator gave beyond `want` is charged too.
        let extra = (self.records.capacity() - want) * core::mem::size_of::<Preserved>();
        RECORD_BYTES.fetch_add(extra, Ordering::Relaxed);
        self.records_charged += bytes + extra;
        true
    }

    /// The flags a new private page is mapped with: `SCOPED` added if it
    /// is read-only and a scope is open.
    pub(crate) fn new_page_flags(&self, flags: F) -> F {
        if self.scopes.is_empty() || flags.contains(F::WRITABLE) { flags } else { flags | SCOPED }
    }

    /// Records that `vaddr` was just mapped with `flags` (from
    /// [`Self::new_page_flags`]; room reserved with
    /// [`Self::reserve_new_pages`]).
    pub(crate) fn note_new_page(&mut self, vaddr: u64, flags: F) {
        if flags.intersects(F::WRITABLE | SCOPED) {
            self.arm(vaddr);
        }
        if !self.scopes.is_empty() {
            self.records.push(Preserved { vaddr, old: None });
        }
    }

    /// Makes room for one record; false if the space has its
    /// `max_records` or the kernel heap is out of memory.
    #[inline]
    pub(crate) fn reserve_record(&mut self) -> bool {
        let len = self.records.len();
        len < self.max_records && self.grow_records(1)
    }

    /// Whether unmapping a page with `flags` needs a new record (and so
    /// room for one): a private page the innermost scope has no record of.
    pub(crate) fn unmap_needs_record(&self, flags: F) -> bool {
        !self.scopes.is_empty() && !flags.intersects(F::WRITABLE | SCOPED | SHARED)
    }

    /// Called instead of freeing the frame of a page unmapped while a scope
    /// is open: returns true if the scope keeps the frame. Room for the
    /// record was made before the page was unmapped (`unmap_needs_record`).
    pub(crate) fn keep_unmapped(&mut self, vaddr: u64, frame: PhysFrame, flags: F) -> bool {
        let Some(scope) = self.scopes.last().copied() else { return false };
        if flags.intersects(F::WRITABLE | SCOPED) {
            // The scope has its record already. If that is the `None` of a
            // page mapped in this scope, it is moot now: drop it when it is
            // close at hand (records of a scope are unordered).
            let lo = scope.records.max(self.records.len().saturating_sub(DROP_WINDOW));
            if let Some(i) = (lo..self.records.len()).rev().find(|&i| {
                let p = self.records[i];
                p.vaddr == vaddr && p.old.is_none()
            }) {
                // `remove`, not `swap_remove`: the order matters (below).
                self.records.remove(i);
            }
            return false;
        }
        // The flags as they were: `TRACKED` only if the page was writable.
        self.records.push(Preserved { vaddr, old: Some((frame, flags)) });
        true
    }

    /// Frees the frames every open scope holds (the space is going away).
    pub(crate) fn drop_versions(&mut self) {
        self.scopes.clear();
        if let Some(frame) = self.spare.take() {
            self.free_charged(frame);
        }
        while let Some(p) = self.records.pop() {
            if let Some((frame, _)) = p.old {
                self.free_charged(frame);
            }
        }
    }

    /// Whether this space is the one in CR3.
    fn is_current(&self) -> bool {
        Cr3::read().0 == self.root()
    }
}
