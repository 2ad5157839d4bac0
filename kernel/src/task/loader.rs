//! Loading a task image (a static ELF64 executable) into a new address space.
//!
//! The image comes from the boot module and is treated as hostile: every
//! header field is checked before it is used, with a reason the kernel puts
//! in a `task_rejected` event. Rules:
//!
//! * ELF64, little-endian, x86_64, `ET_EXEC` (static, no interpreter);
//! * each `PT_LOAD`: `filesz <= memsz`, file range inside the file, memory
//!   range inside `[USER_IMAGE_BASE, USER_MAP_BASE)`, no two segments
//!   sharing a page, not writable and executable at once (W^X);
//! * total memory at most `MAX_SEGMENT_BYTES`; the entry point inside an
//!   executable segment.
//!
//! Only then is anything mapped: text and rodata are filled through the
//! kernel's direct map and stay read-only to the task; data is writable and
//! no-execute. The stack goes below `USER_STACK_TOP` with an unmapped guard
//! page under it.

use crate::mem::space::{AddressSpace, Perm, SpaceError};
use abi::image::TaskSpec;
use abi::layout::{MAX_SEGMENT_BYTES, PAGE_SIZE, USER_IMAGE_BASE, USER_MAP_BASE, USER_STACK_TOP};
use object::LittleEndian as LE;
use object::elf::{EM_X86_64, ET_EXEC, FileHeader64, PF_W, PF_X, PT_GNU_EH_FRAME, PT_LOAD};
use object::read::elf::{FileHeader, ProgramHeader};

/// Why an image was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadError {
    NotElf,
    NotX86_64,
    NotExecutable,
    BadProgramHeaders,
    Truncated,
    NoLoadSegments,
    TooManySegments,
    SegmentOutsideFile,
    FileSizeAboveMemSize,
    SegmentOutsideUserImage,
    SegmentsOverlap,
    WritableAndExecutable,
    TooLarge,
    EntryNotExecutable,
    OutOfMemory,
}

impl LoadError {
    pub const fn reason(self) -> &'static str {
        match self {
            LoadError::NotElf => "not an ELF64 little-endian file (bad magic, class or truncated header)",
            LoadError::NotX86_64 => "not an x86_64 executable",
            LoadError::NotExecutable => "not a static executable (ET_EXEC)",
            LoadError::BadProgramHeaders => "program headers lie outside the file",
            LoadError::Truncated => "section headers lie outside the file (truncated?)",
            LoadError::NoLoadSegments => "no loadable segment",
            LoadError::TooManySegments => "too many loadable segments",
            LoadError::SegmentOutsideFile => "a segment's bytes lie outside the file (truncated?)",
            LoadError::FileSizeAboveMemSize => "a segment's file size exceeds its memory size",
            LoadError::SegmentOutsideUserImage => "a segment lies outside the user image range (kernel addresses?)",
            LoadError::SegmentsOverlap => "segments overlap",
            LoadError::WritableAndExecutable => "a segment is writable and executable",
            LoadError::TooLarge => "segments too large",
            LoadError::EntryNotExecutable => "entry point outside every executable segment",
            LoadError::OutOfMemory => "out of memory",
        }
    }
}

const MAX_SEGMENTS: usize = 16;

#[derive(Clone, Copy)]
struct Segment {
    vaddr: u64,
    memsz: u64,
    offset: u64,
    filesz: u64,
    write: bool,
    exec: bool,
}

impl Segment {
    fn first_page(&self) -> u64 {
        self.vaddr & !(PAGE_SIZE - 1)
    }
    fn end_page(&self) -> u64 {
        (self.vaddr + self.memsz).div_ceil(PAGE_SIZE) * PAGE_SIZE
    }
}

/// A loaded image.
pub struct Loaded {
    pub space: AddressSpace,
    pub entry: u64,
    /// Where `.eh_frame_hdr` is in the task's memory (0 if absent).
    pub eh_frame_hdr: u64,
}

/// Checks `spec.elf` and builds its address space.
pub fn load(spec: &TaskSpec<'_>) -> Result<Loaded, LoadError> {
    let data = spec.elf;
    let header = FileHeader64::<LE>::parse(data).map_err(|_| LoadError::NotElf)?;
    let endian = header.endian().map_err(|_| LoadError::NotElf)?;
    if header.e_machine(endian) != EM_X86_64 {
        return Err(LoadError::NotX86_64);
    }
    if header.e_type(endian) != ET_EXEC {
        return Err(LoadError::NotExecutable);
    }
    let phdrs = header.program_headers(endian, data).map_err(|_| LoadError::BadProgramHeaders)?;
    // The loader needs no sections, but section headers past the end of the
    // file mean the file was cut short: refuse it rather than run a torso.
    header.section_headers(endian, data).map_err(|_| LoadError::Truncated)?;

    let mut segs: heapless::Vec<Segment, MAX_SEGMENTS> = heapless::Vec::new();
    let eh_frame_hdr = phdrs.iter().find(|ph| ph.p_type(endian) == PT_GNU_EH_FRAME).map_or(0, |ph| ph.p_vaddr(endian));
    let mut total = 0u64;
    for ph in phdrs.iter().filter(|ph| ph.p_type(endian) == PT_LOAD) {
        let s = Segment {
            vaddr: ph.p_vaddr(endian),
            memsz: ph.p_memsz(endian),
            offset: ph.p_offset(endian),
            filesz: ph.p_filesz(endian),
            write: ph.p_flags(endian).0 & PF_W.0 != 0,
            exec: ph.p_flags(endian).0 & PF_X.0 != 0,
        };
        if s.memsz == 0 {
            continue;
        }
        if s.filesz > s.memsz {
            return Err(LoadError::FileSizeAboveMemSize);
        }
        match s.offset.checked_add(s.filesz) {
            Some(end) if end <= data.len() as u64 => {}
            _ => return Err(LoadError::SegmentOutsideFile),
        }
        match s.vaddr.checked_add(s.memsz) {
            Some(end) if s.vaddr >= USER_IMAGE_BASE && end <= USER_MAP_BASE => {}
            _ => return Err(LoadError::SegmentOutsideUserImage),
        }
        if s.write && s.exec {
            return Err(LoadError::WritableAndExecutable);
        }
        total = total.saturating_add(s.end_page() - s.first_page());
        if total > MAX_SEGMENT_BYTES {
            return Err(LoadError::TooLarge);
        }
        if segs.iter().any(|o| s.first_page() < o.end_page() && o.first_page() < s.end_page()) {
            return Err(LoadError::SegmentsOverlap);
        }
        segs.push(s).map_err(|_| LoadError::TooManySegments)?;
    }
    if segs.is_empty() {
        return Err(LoadError::NoLoadSegments);
    }
    let entry = header.e_entry(endian);
    if !segs.iter().any(|s| s.exec && entry >= s.vaddr && entry < s.vaddr + s.memsz) {
        return Err(LoadError::EntryNotExecutable);
    }
    if spec.stack_bytes == 0 {
        return Err(LoadError::TooLarge);
    }

    let oom = |_: SpaceError| LoadError::OutOfMemory;
    let mut space = AddressSpace::new().map_err(oom)?;
    for s in &segs {
        space
            .map_zeroed(s.first_page(), s.end_page() - s.first_page(), Perm { write: s.write, exec: s.exec })
            .map_err(oom)?;
        let bytes = &data[s.offset as usize..(s.offset + s.filesz) as usize];
        space.write_as_kernel(s.vaddr, bytes, false).map_err(oom)?;
    }
    let stack_base = USER_STACK_TOP - spec.stack_bytes;
    space.map_zeroed(stack_base, spec.stack_bytes, Perm { write: true, exec: false }).map_err(oom)?;
    space.map_hang_page().map_err(oom)?;
    // The task's quotas hold from its first instruction (the image itself
    // is charged but never refused).
    space.set_quotas(spec.frame_quota(), spec.record_quota());
    // Only trust the hdr address if it lies inside a loaded segment.
    let eh_frame_hdr =
        if segs.iter().any(|s| eh_frame_hdr >= s.vaddr && eh_frame_hdr < s.vaddr + s.memsz) { eh_frame_hdr } else { 0 };
    Ok(Loaded { space, entry, eh_frame_hdr })
}
