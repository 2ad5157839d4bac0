//! Task address spaces.
//!
//! Each task has its own PML4. The upper half (slots 256..512: the direct
//! map and the kernel image) is copied from the kernel's PML4, so those
//! entries point at the *same* lower-level tables in every space and carry
//! no USER bit: the kernel is present everywhere and reachable from ring 0
//! only. The lower half belongs to the task; its mappings always carry
//! USER at every level, and NX unless the page is meant to execute.
//!
//! Access to task memory from the kernel never dereferences a user pointer:
//! [`AddressSpace::read`] and [`AddressSpace::write`] translate page by page
//! (checking range, presence, USER and, for writes, WRITABLE) and copy
//! through the direct map. A bad pointer is an `Err`, not a kernel fault,
//! and SMAP can stay on for everything else.
//!
//! ## Quotas
//!
//! Every frame a space holds is charged to it (`frames`): its page tables,
//! its private pages, the page versions its checkpoint scopes keep, its
//! spare frame — everything but shared-region frames, which belong to the
//! region. A space may hold at most `max_frames` (the manifest's
//! `max_memory_kib`, `abi::image::DEFAULT_MAX_FRAMES` by default) and its
//! scopes at most `max_records` page records (`max_scope_records`; a
//! record is kernel heap). Past either, `map` and `unmap` in a scope fail
//! with `OutOfMemory` (`NoMemory` to the task) and a copy-on-write is not
//! served (the task takes the page fault); the kernel never fails an
//! allocation for it. The loader is not held to the quota (an image always
//! loads); the quota applies from the task's first instruction on.

use super::frames;
use super::{PHYS_OFFSET, phys_to_virt};
use crate::recovery::versions::{ARMED_MIN, Preserved, SHARED, ScopeMem, TRACKED};
use abi::layout::{PAGE_SIZE, USER_END, is_user_range};
use alloc::vec::Vec;
use core::mem::MaybeUninit;
use x86_64::registers::control::Cr3;
use x86_64::structures::paging::mapper::MapToError;
use x86_64::structures::paging::{
    FrameAllocator, Mapper, OffsetPageTable, Page, PageTable, PageTableFlags as F, PhysFrame, Size4KiB,
};
use x86_64::{PhysAddr, VirtAddr};

/// Why a memory operation on a task's space failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpaceError {
    /// Outside user space, unmapped, or without the needed permission.
    BadAddress,
    /// The range is (partly) mapped already.
    AlreadyMapped,
    OutOfMemory,
}

/// Which side of [`AddressSpace::copy_between`] was bad.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyError {
    Source,
    Destination,
}

/// Permissions of a user mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perm {
    pub write: bool,
    pub exec: bool,
}

static KERNEL_ROOT: spin::Once<PhysFrame> = spin::Once::new();

/// Remembers the boot PML4 as the kernel's own (call once, at boot).
pub fn init() {
    KERNEL_ROOT.call_once(|| Cr3::read().0);
}

/// The kernel's PML4: the kernel half only.
pub fn kernel_root() -> PhysFrame {
    *KERNEL_ROOT.get().expect("mem::space::init ran")
}

pub struct AddressSpace {
    pml4: PhysFrame,
    /// Per open checkpoint scope, its share of `records` and `armed`
    /// (`recovery/versions.rs`).
    pub(crate) scopes: Vec<ScopeMem>,
    /// The page versions the open scopes must restore, outermost first.
    pub(crate) records: Vec<Preserved>,
    /// Private pages made writable (or `SCOPED`) since the last open; the
    /// open scopes' ranges of the pages their opens protected before them.
    pub(crate) armed: Vec<u64>,
    /// `armed` is squeezed of stale entries when it would grow past this.
    pub(crate) armed_limit: usize,
    /// A frame of this space's own old data (a version an outermost commit
    /// let go), kept for the next open's stack page: that copy needs only
    /// the live part of the page, and the rest may show the task nothing
    /// but its own bytes (`recovery/versions.rs`).
    pub(crate) spare: Option<PhysFrame>,
    /// Frames charged to this space (module header, "Quotas").
    pub(crate) frames: usize,
    /// Most frames it may hold (`usize::MAX` while the loader fills it).
    pub(crate) max_frames: usize,
    /// Most page records its open scopes may hold together.
    pub(crate) max_records: usize,
    /// Bytes of `records` capacity charged to the kernel-wide record budget
    /// (`recovery/versions.rs` `RECORD_BUDGET`), given back on drop.
    pub(crate) records_charged: usize,
    /// The CPU whose CR3 holds this space ([`NOT_LIVE`]: none), with
    /// several CPUs (`sched`). Tasks are single-threaded, so a space is
    /// live on at most the CPU its task runs on, and a CPU that leaves a
    /// task loads another root (flushing the space's TLB entries there):
    /// TLB shootdown reduces to "a space changes only where it is live, or
    /// where it is live nowhere" — a change made from another CPU first
    /// stops the task (`Scheduler::stop_remote`). Checked by
    /// [`Self::assert_changes_here`] on every mapping change and flush.
    pub live_on: u8,
}

/// [`AddressSpace::live_on`] of a space no CPU has loaded.
pub const NOT_LIVE: u8 = u8::MAX;

/// The frame allocator for a space's page tables: each table is charged to
/// the space, and refused past `max` (a map then fails with `OutOfMemory`).
struct Charged<'a> {
    held: &'a mut usize,
    max: usize,
}

// SAFETY: `frames::alloc` returns free, zeroed frames nothing references.
unsafe impl FrameAllocator<Size4KiB> for Charged<'_> {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        if *self.held >= self.max {
            return None;
        }
        let frame = frames::alloc()?;
        *self.held += 1;
        Some(frame)
    }
}

impl AddressSpace {
    /// A new space with the kernel half shared and an empty user half.
    pub fn new() -> Result<AddressSpace, SpaceError> {
        let pml4 = frames::alloc().ok_or(SpaceError::OutOfMemory)?;
        let kernel = kernel_root();
        // SAFETY: both frames are page tables reached through the direct
        // map; the new one is ours alone, the kernel's is only read.
        unsafe {
            let src = &*(phys_to_virt(kernel.start_address().as_u64()) as *const PageTable);
            let dst = &mut *(phys_to_virt(pml4.start_address().as_u64()) as *mut PageTable);
            for i in 256..512 {
                dst[i] = src[i].clone();
            }
        }
        Ok(AddressSpace {
            pml4,
            scopes: Vec::new(),
            records: Vec::new(),
            armed: Vec::new(),
            armed_limit: ARMED_MIN,
            spare: None,
            frames: 1,
            max_frames: usize::MAX,
            max_records: abi::image::DEFAULT_MAX_RECORDS as usize,
            records_charged: 0,
            live_on: NOT_LIVE,
        })
    }

    /// Holds the space to its quotas from now on (`max_frames` frames,
    /// `max_records` page records), after the loader filled it.
    pub fn set_quotas(&mut self, max_frames: usize, max_records: usize) {
        self.max_frames = max_frames;
        self.max_records = max_records;
    }

    /// A frame charged to this space (zeroed, or not if `uninit`), or
    /// `None` past its quota or when memory is out.
    pub(crate) fn alloc_charged(&mut self, uninit: bool) -> Option<PhysFrame> {
        if self.frames >= self.max_frames {
            return None;
        }
        let frame = if uninit { frames::alloc_uninit() } else { frames::alloc() }?;
        self.frames += 1;
        Some(frame)
    }

    /// Frees a frame charged to this space.
    pub(crate) fn free_charged(&mut self, frame: PhysFrame) {
        self.frames -= 1;
        frames::free(frame);
    }

    /// The PML4 frame, for CR3.
    pub fn root(&self) -> PhysFrame {
        self.pml4
    }

    fn mapper(&self) -> OffsetPageTable<'static> {
        // SAFETY: the PML4 frame belongs to this space and lives as long as
        // it; the direct map at PHYS_OFFSET covers every page-table frame.
        unsafe {
            let table = &mut *(phys_to_virt(self.pml4.start_address().as_u64()) as *mut PageTable);
            OffsetPageTable::new(table, VirtAddr::new(PHYS_OFFSET))
        }
    }

    /// Maps `[addr, addr + len)` (page-aligned) to fresh zeroed frames.
    pub fn map_zeroed(&mut self, addr: u64, len: u64, perm: Perm) -> Result<(), SpaceError> {
        if addr % PAGE_SIZE != 0 || len == 0 || !is_user_range(addr, len) {
            return Err(SpaceError::BadAddress);
        }
        let pages = len.div_ceil(PAGE_SIZE);
        for i in 0..pages {
            if self.translate(addr + i * PAGE_SIZE).is_some() {
                return Err(SpaceError::AlreadyMapped);
            }
        }
        let mut flags = F::PRESENT | F::USER_ACCESSIBLE;
        if perm.write {
            flags |= F::WRITABLE;
        }
        if !perm.exec {
            flags |= F::NO_EXECUTE;
        }
        // Room for the pages' records and armed entries first: a map in a
        // scope fails cleanly at the records' limit, never in the middle;
        // and a map past the frame quota fails before it maps anything.
        if self.frames.saturating_add(pages as usize) > self.max_frames {
            return Err(SpaceError::OutOfMemory);
        }
        self.reserve_new_pages(pages as usize)?;
        let flags = self.new_page_flags(flags);
        for i in 0..pages {
            let frame = self.alloc_charged(false).ok_or(SpaceError::OutOfMemory)?;
            if let Err(e) = self.map_frame(addr + i * PAGE_SIZE, frame, flags) {
                self.free_charged(frame);
                return Err(e);
            }
            self.note_new_page(addr + i * PAGE_SIZE, flags);
        }
        Ok(())
    }

    /// Maps one page at `vaddr` to `frame` with `flags`.
    pub(crate) fn map_frame(&mut self, vaddr: u64, frame: PhysFrame, flags: F) -> Result<(), SpaceError> {
        let parent = F::PRESENT | F::WRITABLE | F::USER_ACCESSIBLE;
        let page = Page::<Size4KiB>::containing_address(VirtAddr::new(vaddr));
        let mut mapper = self.mapper();
        let mut tables = Charged { held: &mut self.frames, max: self.max_frames };
        // SAFETY: the page is in the user half (callers check) and unmapped;
        // the frame belongs to this space from now on.
        match unsafe { mapper.map_to_with_table_flags(page, frame, flags, parent, &mut tables) } {
            Ok(flush) => {
                self.assert_changes_here();
                flush.flush();
                Ok(())
            }
            Err(MapToError::FrameAllocationFailed) => Err(SpaceError::OutOfMemory),
            Err(_) => Err(SpaceError::AlreadyMapped),
        }
    }

    /// Maps `pages` frames of a shared region from `first` at `addr`. Shared
    /// pages are never tracked by checkpoints nor freed with the space.
    pub fn map_shared(&mut self, addr: u64, first: PhysFrame, pages: u64) -> Result<(), SpaceError> {
        if addr % PAGE_SIZE != 0 || !is_user_range(addr, pages * PAGE_SIZE) {
            return Err(SpaceError::BadAddress);
        }
        let flags = F::PRESENT | F::USER_ACCESSIBLE | F::WRITABLE | F::NO_EXECUTE | SHARED;
        for i in 0..pages {
            let frame = PhysFrame::containing_address(first.start_address() + i * PAGE_SIZE);
            self.map_frame(addr + i * PAGE_SIZE, frame, flags)?;
        }
        Ok(())
    }

    /// Maps the shared hang page (`abi::layout::USER_HANG_PAGE`, `jmp $`),
    /// read-only and executable.
    pub fn map_hang_page(&mut self) -> Result<(), SpaceError> {
        let flags = F::PRESENT | F::USER_ACCESSIBLE | SHARED;
        self.map_frame(abi::layout::USER_HANG_PAGE, super::hang_frame(), flags)
    }

    /// Unmaps one page (nothing mapped there is fine); frees its frame
    /// unless a scope keeps it or it is shared. `OutOfMemory` (and nothing
    /// unmapped) if the scope would need a record it has no room for.
    pub(crate) fn unmap_page(&mut self, vaddr: u64) -> Result<(), SpaceError> {
        let Some(flags) = self.leaf(vaddr).map(|e| e.flags()) else { return Ok(()) };
        if self.unmap_needs_record(flags) && !self.reserve_record() {
            return Err(SpaceError::OutOfMemory);
        }
        let page = Page::<Size4KiB>::containing_address(VirtAddr::new(vaddr));
        let Ok((frame, flush)) = self.mapper().unmap(page) else { return Ok(()) };
        self.assert_changes_here();
        flush.flush();
        if !flags.contains(SHARED) && !self.keep_unmapped(vaddr, frame, flags) {
            self.free_charged(frame);
        }
        Ok(())
    }

    /// Unmaps one page and frees its frame (unless shared), bypassing the
    /// scopes (used by rollback itself).
    pub(crate) fn discard_page(&mut self, vaddr: u64) {
        let Some(flags) = self.leaf(vaddr).map(|e| e.flags()) else { return };
        let page = Page::<Size4KiB>::containing_address(VirtAddr::new(vaddr));
        if let Ok((frame, flush)) = self.mapper().unmap(page) {
            self.assert_changes_here();
            flush.flush();
            if !flags.contains(SHARED) {
                self.free_charged(frame);
            }
        }
    }

    /// A mapping of this space changes on this CPU: the space must be live
    /// here or nowhere (see [`Self::live_on`]), or another CPU's TLB could
    /// keep the old translation (there is no shootdown IPI to send: the
    /// design makes it unnecessary, and this proves it in debug builds).
    #[inline(always)]
    pub(crate) fn assert_changes_here(&self) {
        debug_assert!(
            self.live_on == NOT_LIVE || self.live_on as usize == crate::arch::percpu::cpu(),
            "a mapping of a space live on CPU {} changes on CPU {}",
            self.live_on,
            crate::arch::percpu::cpu()
        );
    }

    /// Flushes this space's TLB entries (if it is the current space).
    pub(crate) fn flush(&self) {
        self.assert_changes_here();
        let (current, flags) = Cr3::read();
        if current == self.pml4 {
            // SAFETY: reloading the same root only drops stale translations.
            unsafe { Cr3::write(current, flags) };
        }
    }

    pub(crate) fn flush_page(&self, vaddr: u64) {
        self.assert_changes_here();
        x86_64::instructions::tlb::flush(VirtAddr::new(vaddr));
    }

    /// Unmaps whatever is mapped in `[addr, addr + len)` and frees the
    /// frames. Inside a checkpoint scope this can stop with `OutOfMemory`
    /// (the pages before the one it names are unmapped, the rest not).
    pub fn unmap(&mut self, addr: u64, len: u64) -> Result<(), SpaceError> {
        if addr % PAGE_SIZE != 0 || !is_user_range(addr, len) {
            return Err(SpaceError::BadAddress);
        }
        for i in 0..len.div_ceil(PAGE_SIZE) {
            self.unmap_page(addr + i * PAGE_SIZE)?;
        }
        Ok(())
    }

    /// The physical address and flags behind user address `addr`. A plain
    /// four-level walk (`leaf`): user mappings are 4 KiB pages only, and
    /// this is on every path that touches task memory.
    pub fn translate(&self, addr: u64) -> Option<(PhysAddr, F)> {
        if addr >= USER_END {
            return None;
        }
        let e = self.leaf(addr)?;
        Some((e.addr() + (addr & (PAGE_SIZE - 1)), e.flags()))
    }

    fn check_range(&self, addr: u64, len: u64, write: bool) -> Result<(), SpaceError> {
        if !is_user_range(addr, len) {
            return Err(SpaceError::BadAddress);
        }
        let mut at = addr;
        while at < addr + len {
            let (_, flags) = self.translate(at).ok_or(SpaceError::BadAddress)?;
            let writable = flags.intersects(F::WRITABLE | TRACKED);
            if !flags.contains(F::USER_ACCESSIBLE) || (write && !writable) {
                return Err(SpaceError::BadAddress);
            }
            at = (at & !(PAGE_SIZE - 1)) + PAGE_SIZE;
        }
        Ok(())
    }

    /// Checks that `[addr, addr+len)` is user memory with the given access,
    /// and calls `each` with the direct-map pointer and length of each piece.
    fn for_each_piece(
        &self,
        addr: u64,
        len: u64,
        write: bool,
        mut each: impl FnMut(*mut u8, usize),
    ) -> Result<(), SpaceError> {
        // The common case, a range inside one page: one walk, check and go.
        if len > 0 && (addr & (PAGE_SIZE - 1)) + len <= PAGE_SIZE && is_user_range(addr, len) {
            let (phys, flags) = self.translate(addr).ok_or(SpaceError::BadAddress)?;
            let writable = flags.intersects(F::WRITABLE | TRACKED);
            if !flags.contains(F::USER_ACCESSIBLE) || (write && !writable) {
                return Err(SpaceError::BadAddress);
            }
            each(phys_to_virt(phys.as_u64()) as *mut u8, len as usize);
            return Ok(());
        }
        // Check everything first, so a failed write changes nothing.
        self.check_range(addr, len, write)?;
        let mut at = addr;
        while at < addr + len {
            let (phys, _) = self.translate(at).ok_or(SpaceError::BadAddress)?;
            let piece = ((at & !(PAGE_SIZE - 1)) + PAGE_SIZE).min(addr + len) - at;
            each(phys_to_virt(phys.as_u64()) as *mut u8, piece as usize);
            at += piece;
        }
        Ok(())
    }

    /// Checks that `[addr, addr+len)` is readable user memory.
    pub fn check_readable(&self, addr: u64, len: u64) -> Result<(), SpaceError> {
        self.check_range(addr, len, false)
    }

    /// Checks that `[addr, addr+len)` is writable user memory (tracked pages
    /// count: a write preserves them first).
    pub fn check_writable(&self, addr: u64, len: u64) -> Result<(), SpaceError> {
        self.check_range(addr, len, true)
    }

    /// Copies task memory at `addr` into `buf`.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), SpaceError> {
        let mut done = 0;
        self.for_each_piece(addr, buf.len() as u64, false, |src, n| {
            // SAFETY: `src` is a direct-map pointer to `n` bytes of a frame
            // mapped in this space (checked above); `buf` has room.
            unsafe { core::ptr::copy_nonoverlapping(src, buf[done..].as_mut_ptr(), n) };
            done += n;
        })
    }

    /// Like [`read`](Self::read), into a buffer that need not be
    /// initialised (no zeroing of a bounce buffer first); returns the
    /// buffer, now filled.
    pub fn read_uninit<'b>(&self, addr: u64, buf: &'b mut [MaybeUninit<u8>]) -> Result<&'b mut [u8], SpaceError> {
        let (base, len) = (buf.as_mut_ptr() as *mut u8, buf.len());
        let mut done = 0;
        self.for_each_piece(addr, len as u64, false, |src, n| {
            // SAFETY: `src` is a direct-map pointer to `n` bytes of a frame
            // mapped in this space (checked); the pieces cover `[0, len)` of
            // `buf` in order, so `base + done .. + n` is inside it.
            unsafe { core::ptr::copy_nonoverlapping(src, base.add(done), n) };
            done += n;
        })?;
        // SAFETY: `for_each_piece` succeeded, so its pieces covered the whole
        // range: every byte of `buf` has been written.
        Ok(unsafe { core::slice::from_raw_parts_mut(base, len) })
    }

    /// Calls `each` with every piece (at most a page, in order) of the
    /// readable task memory `[addr, addr + len)`, seen through the direct
    /// map: no copy. The whole range is checked first, so on error `each`
    /// was never called.
    pub fn read_pieces(&self, addr: u64, len: u64, mut each: impl FnMut(&[u8])) -> Result<(), SpaceError> {
        self.for_each_piece(addr, len, false, |src, n| {
            // SAFETY: `src` points at `n` bytes of a frame mapped in this
            // space (checked), through the direct map. The kernel is not
            // preemptible and runs on one CPU, so nothing writes the frame
            // while `each` holds the slice.
            each(unsafe { core::slice::from_raw_parts(src, n) })
        })
    }

    /// Copies `len` bytes from `src` at `src_addr` to `dst` at `dst_addr`,
    /// piece by piece between the two direct-map views (a piece ends at a
    /// page boundary of either side): no bounce buffer. Both ranges are
    /// checked first, so on error nothing was copied; tracked destination
    /// pages are preserved first, like [`write`](Self::write) does. If both
    /// ranges reach the same frames (a shared region), each piece is copied
    /// as by `memmove`.
    pub fn copy_between(
        src: &AddressSpace,
        src_addr: u64,
        dst: &mut AddressSpace,
        dst_addr: u64,
        len: u64,
    ) -> Result<(), CopyError> {
        src.check_range(src_addr, len, false).map_err(|_| CopyError::Source)?;
        dst.check_range(dst_addr, len, true).map_err(|_| CopyError::Destination)?;
        if !dst.scopes.is_empty() {
            let mut page = dst_addr & !(PAGE_SIZE - 1);
            while page < dst_addr + len {
                dst.preserve_on_write(page);
                page += PAGE_SIZE;
            }
        }
        let mut done = 0;
        while done < len {
            let (s_at, d_at) = (src_addr + done, dst_addr + done);
            let (s_phys, _) = src.translate(s_at).ok_or(CopyError::Source)?;
            let (d_phys, _) = dst.translate(d_at).ok_or(CopyError::Destination)?;
            let to_page_end = |at: u64| PAGE_SIZE - (at & (PAGE_SIZE - 1));
            let piece = (len - done).min(to_page_end(s_at)).min(to_page_end(d_at));
            // SAFETY: both addresses are direct-map views of frames mapped
            // in their spaces (checked above, translated just now), and
            // `piece` stays within one page on each side. `copy` tolerates
            // overlap.
            unsafe {
                core::ptr::copy(
                    phys_to_virt(s_phys.as_u64()) as *const u8,
                    phys_to_virt(d_phys.as_u64()) as *mut u8,
                    piece as usize,
                )
            };
            done += piece;
        }
        Ok(())
    }

    /// Copies `data` into task memory at `addr` (must be user-writable).
    pub fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), SpaceError> {
        self.write_as_kernel(addr, data, true)
    }

    /// Like `write`, but `check_writable = false` also fills read-only pages
    /// (used by the loader to fill text and rodata). A tracked page is
    /// preserved first, so the write is rolled back with the scope.
    pub fn write_as_kernel(&mut self, addr: u64, data: &[u8], check_writable: bool) -> Result<(), SpaceError> {
        if !self.scopes.is_empty() && is_user_range(addr, data.len() as u64) {
            let mut page = addr & !(PAGE_SIZE - 1);
            while page < addr + data.len() as u64 {
                let tracked = self.leaf(page).is_some_and(|e| e.flags().contains(TRACKED));
                // A tracked page that cannot be preserved must not be
                // written: the scope could not undo the write.
                if tracked
                    && !self.preserve_on_write(page)
                    && self.leaf(page).is_some_and(|e| !e.flags().contains(F::WRITABLE))
                {
                    return Err(SpaceError::OutOfMemory);
                }
                page += PAGE_SIZE;
            }
        }
        let mut done = 0;
        self.for_each_piece(addr, data.len() as u64, check_writable, |dst, n| {
            // SAFETY: as in `read`, with the roles swapped.
            unsafe { core::ptr::copy_nonoverlapping(data[done..].as_ptr(), dst, n) };
            done += n;
        })
    }
}

impl AddressSpace {
    /// Writes `data` at `addr` *without* preserving a tracked page for the
    /// open scope: the write is not rolled back by a rollback to the
    /// innermost scope. Only for the kernel's own records that it rewrites
    /// at every rollback (the attempt record in the recovery page), where a
    /// page copy per rollback would buy nothing.
    pub fn write_unversioned(&mut self, addr: u64, data: &[u8]) -> Result<(), SpaceError> {
        let mut done = 0;
        self.for_each_piece(addr, data.len() as u64, true, |dst, n| {
            // SAFETY: as in `read`, with the roles swapped.
            unsafe { core::ptr::copy_nonoverlapping(data[done..].as_ptr(), dst, n) };
            done += n;
        })
    }
}

impl AddressSpace {
    /// [`Self::write_unversioned`] of the `u64`s `words` at the 8-aligned
    /// `addr`, inside one page: one translation, plain stores. Falls back
    /// to the byte path otherwise.
    pub fn write_words_unversioned(&mut self, addr: u64, words: &[u64]) -> Result<(), SpaceError> {
        let len = words.len() as u64 * 8;
        if addr.is_multiple_of(8) && (addr & (PAGE_SIZE - 1)) + len <= PAGE_SIZE && is_user_range(addr, len) {
            let (phys, flags) = self.translate(addr).ok_or(SpaceError::BadAddress)?;
            if !flags.contains(F::USER_ACCESSIBLE) || !flags.intersects(F::WRITABLE | TRACKED) {
                return Err(SpaceError::BadAddress);
            }
            let at = phys_to_virt(phys.as_u64()) as *mut u64;
            for (i, &w) in words.iter().enumerate() {
                // SAFETY: `at` is the direct-map view of an 8-aligned
                // range of one present, user page of this space, writable
                // by the task (or tracked: unversioned by contract), long
                // enough for `words` (checked above).
                unsafe { at.add(i).write(w) };
            }
            return Ok(());
        }
        let mut bytes = [0u8; 64];
        let n = len as usize;
        if n > bytes.len() {
            return Err(SpaceError::BadAddress);
        }
        for (i, w) in words.iter().enumerate() {
            bytes[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        self.write_unversioned(addr, &bytes[..n])
    }
}

impl Drop for AddressSpace {
    /// Frees every user frame and page table, then the PML4.
    fn drop(&mut self) {
        self.drop_versions();
        crate::recovery::versions::uncharge_records(core::mem::take(&mut self.records_charged));
        // Never free the tables the CPU is using: fall back to the kernel's.
        let (current, flags) = Cr3::read();
        if current == self.pml4 {
            // SAFETY: the kernel PML4 maps the kernel half like every space.
            unsafe { Cr3::write(kernel_root(), flags) };
        }
        // SAFETY: only the user half (slots 0..256) is walked: this space
        // built those tables alone. The kernel half is shared and untouched.
        unsafe {
            let pml4 = &*(phys_to_virt(self.pml4.start_address().as_u64()) as *const PageTable);
            for entry in pml4.iter().take(256) {
                if entry.flags().contains(F::PRESENT) {
                    free_table(entry.addr(), 3);
                }
            }
        }
        frames::free(self.pml4);
    }
}

/// Frees a user page table at `table` (level 3 = PDPT .. 1 = PT), every
/// table below it and every frame its leaves map.
///
/// # Safety
/// `table` is a page table of a user half that is being destroyed.
unsafe fn free_table(table: PhysAddr, level: u8) {
    // SAFETY: page-table frames are reachable through the direct map.
    let entries = unsafe { &*(phys_to_virt(table.as_u64()) as *const PageTable) };
    for e in entries.iter().filter(|e| e.flags().contains(F::PRESENT)) {
        if level == 1 {
            if !e.flags().contains(SHARED) {
                frames::free(PhysFrame::containing_address(e.addr()));
            }
        } else {
            // SAFETY: one level down in the same user half.
            unsafe { free_table(e.addr(), level - 1) };
        }
    }
    frames::free(PhysFrame::containing_address(table));
}
