//! A faulted task's ELF file, as much of it as the server needs.
//!
//! The server finds symbols (the regcheck block, the restart counter) and
//! the unwind tables of a task in its ELF file, read with `TASK_CTL
//! READ_IMAGE`. Task binaries carry megabytes of DWARF debug info the
//! server never looks at, so it does not copy the whole file: it reads the
//! ELF header, the section headers and their names, and then only
//! `.symtab`, `.strtab`, `.eh_frame` and `.eh_frame_hdr` — tens of KiB.
//! The structures are `object`'s (`object::elf`), read in place.
//!
//! The file is the task's own, so it is hostile input: every offset, count
//! and size is checked (and bounded by [`MAX_SECTION`]) and a bad file is
//! an `Err` with a reason, never a panic.

use alloc::boxed::Box;
use alloc::vec::Vec;
use libtask::supervise::{self, TaskId};
use object::LittleEndian as LE;
use object::elf::{FileHeader64, SHT_NOBITS, SectionHeader64, Sym64};
use object::read::elf::{FileHeader, SectionHeader, Sym};

/// Largest section the server copies.
const MAX_SECTION: u64 = 2 << 20;
/// Most section headers it accepts.
const MAX_SECTIONS: usize = 256;
const SYM_SIZE: usize = core::mem::size_of::<Sym64<LE>>();

/// A section's bytes and its address in the task (0 for non-alloc ones).
#[derive(Default)]
pub struct Section {
    pub addr: u64,
    pub data: Vec<u8>,
}

/// The parts of a task image the server uses, and what it looks up in
/// them once at load, so that no fault pays for a name search.
#[derive(Default)]
pub struct TaskImage {
    pub symtab: Section,
    pub strtab: Section,
    pub eh_frame: Section,
    pub eh_frame_hdr: Section,
    /// `REWIND_REGCHECK` (the register-check block), if the task has one.
    pub regcheck: Option<u64>,
    /// `REWIND_RESTARTS` (the restart counter), if the task has one, 8 bytes.
    pub restarts: Option<u64>,
    /// `[start, end)` of the scope functions (`is_checkpoint_symbol`: the
    /// asm function and every `scope_body` instance), sorted: the recovery's walk must end in one of
    /// these frames (`recover::walk_to_scope`). Empty for a stripped image.
    pub checkpoints: Vec<(u64, u64)>,
}

/// Whether `name` is the symbol of a scope's frame: an instance of
/// `libtask::checkpoint::scope_body` — the function libtask's
/// `__rewind_checkpoint_scope` calls right after the open or a renew, whose
/// CFA is the stack pointer the kernel recorded there — or that asm function itself
/// (the frame of a fault in it: its own `rsp` is the recorded one). Mangled
/// v0 (`_RINvNtCs<hash>_7libtask10checkpoint10scope_body...` for a generic
/// instance) or legacy (`_ZN7libtask10checkpoint10scope_body17h...`); a
/// closure or another item *inside* it is not the function.
pub fn is_checkpoint_symbol(name: &[u8]) -> bool {
    const PATH: &[u8] = b"7libtask10checkpoint10scope_body";
    if name == b"__rewind_checkpoint_scope" {
        return true;
    }
    if let Some(rest) = name.strip_prefix(b"_ZN".as_slice()) {
        return rest.strip_prefix(PATH).is_some_and(|r| r.starts_with(b"17h"));
    }
    let Some(rest) = name.strip_prefix(b"_RINvNtCs".as_slice()).or_else(|| name.strip_prefix(b"_RNvNtCs".as_slice()))
    else {
        return false;
    };
    // The crate's disambiguator: base-62 digits, then `_`.
    match rest.iter().position(|&c| c == b'_') {
        Some(i) => rest[i + 1..].starts_with(PATH),
        None => false,
    }
}

fn read_exact(task: TaskId, offset: u64, len: u64) -> Result<Vec<u8>, &'static str> {
    if len > MAX_SECTION {
        return Err("section too large");
    }
    // Fallible: a task's file must not be able to make the server's
    // allocation fail (and so the server panic).
    let mut buf = Vec::new();
    buf.try_reserve_exact(len as usize).map_err(|_| "out of memory reading the image")?;
    buf.resize(len as usize, 0);
    let n = supervise::read_image(task, offset, &mut buf).map_err(|_| "READ_IMAGE failed")?;
    if n != buf.len() {
        return Err("section lies beyond the end of the file");
    }
    Ok(buf)
}

impl TaskImage {
    /// Reads the image of `task`.
    pub fn load(task: TaskId) -> Result<TaskImage, &'static str> {
        let head = read_exact(task, 0, core::mem::size_of::<FileHeader64<LE>>() as u64)?;
        let header = FileHeader64::<LE>::parse(&head[..]).map_err(|_| "not an ELF64 little-endian file")?;
        let e = LE;
        let (shoff, shnum, shentsize) =
            (header.e_shoff.get(e), header.e_shnum.get(e) as usize, header.e_shentsize.get(e) as usize);
        if shentsize != core::mem::size_of::<SectionHeader64<LE>>() || shnum == 0 || shnum > MAX_SECTIONS {
            return Err("bad section header table");
        }
        let table = read_exact(task, shoff, (shnum * shentsize) as u64)?;
        let sections: &[SectionHeader64<LE>] =
            object::pod::slice_from_bytes(&table, shnum).map_err(|_| "bad section header table")?.0;
        let shstrndx = header.e_shstrndx(e).index().ok_or("no section name table")? as usize;
        let names = sections.get(shstrndx).ok_or("bad section name table index")?;
        let names = read_exact(task, names.sh_offset(e), names.sh_size(e))?;
        let read = |s: &SectionHeader64<LE>| -> Result<Section, &'static str> {
            if s.sh_type(e) == SHT_NOBITS {
                return Err("section has no bytes");
            }
            Ok(Section { addr: s.sh_addr(e), data: read_exact(task, s.sh_offset(e), s.sh_size(e))? })
        };
        let mut image = TaskImage::default();
        for s in sections {
            let name =
                object::read::StringTable::new(&names[..], 0, names.len() as u64).get(s.sh_name(e)).unwrap_or(&[]);
            match name {
                b".symtab" => {
                    image.symtab = read(s)?;
                    let link = sections.get(s.sh_link(e) as usize).ok_or("bad .symtab link")?;
                    image.strtab = read(link)?;
                }
                b".eh_frame" => image.eh_frame = read(s)?,
                b".eh_frame_hdr" => image.eh_frame_hdr = read(s)?,
                _ => {}
            }
        }
        image.index();
        Ok(image)
    }

    /// The lookups done once per image (see the fields).
    fn index(&mut self) {
        self.regcheck = self.symbol(crate::regcheck::SYMBOL).map(|(a, _)| a);
        self.restarts = self.symbol(crate::RESTARTS_SYMBOL).filter(|&(_, size)| size == 8).map(|(a, _)| a);
        self.checkpoints = self.checkpoint_ranges();
    }

    /// The ranges of the checkpoint function's instances (see the field).
    fn checkpoint_ranges(&self) -> Vec<(u64, u64)> {
        let e = LE;
        let count = self.symtab.data.len() / SYM_SIZE;
        let Ok((syms, _)) = object::pod::slice_from_bytes::<Sym64<LE>>(&self.symtab.data, count) else {
            return Vec::new();
        };
        let strings = object::read::StringTable::new(&self.strtab.data[..], 0, self.strtab.data.len() as u64);
        let mut out: Vec<(u64, u64)> = syms
            .iter()
            .filter(|s| s.st_type() == object::elf::STT_FUNC && s.st_size(e) > 0 && !s.st_shndx(e).is_special())
            .filter(|s| strings.get(s.st_name(e)).is_ok_and(is_checkpoint_symbol))
            .filter_map(|s| Some((s.st_value(e), s.st_value(e).checked_add(s.st_size(e))?)))
            .collect();
        out.sort_unstable();
        out
    }

    /// Whether `pc` lies in an instance of the checkpoint function.
    pub fn in_checkpoint(&self, pc: u64) -> bool {
        let i = self.checkpoints.partition_point(|&(start, _)| start <= pc);
        i > 0 && pc < self.checkpoints[i - 1].1
    }

    /// The address and size of the symbol named `name` (exact, unmangled
    /// names: `#[no_mangle]` statics).
    pub fn symbol(&self, name: &str) -> Option<(u64, u64)> {
        let e = LE;
        let count = self.symtab.data.len() / SYM_SIZE;
        let syms: &[Sym64<LE>] = object::pod::slice_from_bytes(&self.symtab.data, count).ok()?.0;
        let strings = object::read::StringTable::new(&self.strtab.data[..], 0, self.strtab.data.len() as u64);
        syms.iter()
            .find(|s| !s.st_shndx(e).is_special() && strings.get(s.st_name(e)) == Ok(name.as_bytes()))
            .map(|s| (s.st_value(e), s.st_size(e)))
    }

    /// The unwind tables, for the walker.
    pub fn unwind(&self) -> Result<walker::Image<'_>, &'static str> {
        walker::Image::from_hdr(
            &self.eh_frame_hdr.data,
            self.eh_frame_hdr.addr,
            &self.eh_frame.data,
            self.eh_frame.addr,
        )
        .map_err(|_| "no unwind tables")
    }
}

/// The stack walker the server keeps per task image: a 64-slot row memo
/// (the task's hot frames, across faults) in front of up to 32 FDEs of
/// lazily compiled rows (256 rows in all: a memo miss in a function seen
/// before is two binary searches, not a CFI run; when full, the rows are
/// emptied and refilled — see `walker::lazy`). About 13 KB per image.
pub type TaskWalker<'a> = walker::Walker<'a, 64, 32, 256>;

/// How the server walks one task image's stacks, built once per image: the
/// unwind tables parsed once, and one walker, whose caches serve the
/// recoveries' walks and the reports' backtraces alike. A report's
/// backtrace walks only the frames past the scope's frame, which the
/// recovery's walk reached (`recover::ScopeWalk`), so both together walk
/// each frame once. (`walker::RowTable`, rows precompiled for the whole
/// image, costs ~445k guest instructions per image: not worth it here.)
pub struct Unwinder {
    image: &'static TaskImage,
    eh: Result<walker::Image<'static>, &'static str>,
    walker: core::cell::RefCell<Box<TaskWalker<'static>>>,
}

impl Unwinder {
    pub fn new(image: &'static TaskImage) -> Result<Unwinder, &'static str> {
        let walker = Box::try_new(TaskWalker::default()).map_err(|_| "out of memory")?;
        Ok(Unwinder { image, eh: image.unwind(), walker: core::cell::RefCell::new(walker) })
    }

    /// Whether `pc` lies in an instance of `libtask::checkpoint::checkpoint`
    /// (`None`: the image names none — stripped — so no pc can be checked).
    pub fn in_checkpoint(&self, pc: u64) -> Option<bool> {
        (!self.image.checkpoints.is_empty()).then(|| self.image.in_checkpoint(pc))
    }

    /// A walk from `regs` (the fault): at most `max` frames, `visit` each.
    pub fn walk<M, F>(&self, regs: walker::Regs, mem: &M, max: usize, visit: F) -> Result<walker::Stop, &'static str>
    where
        M: walker::Memory + ?Sized,
        F: FnMut(&walker::Frame) -> bool,
    {
        let eh = self.eh.as_ref().map_err(|e| *e)?;
        let mut w = self.walker.borrow_mut();
        w.max_depth = max;
        Ok(w.walk(eh, regs, mem, visit))
    }

    /// The walk to a scope's frame: from `regs` (the fault) to the first
    /// frame whose CFA is at least `at_least`, at most `max` frames,
    /// recording the frames before it (see `walker::Walker::walk_to_cfa`).
    #[allow(clippy::type_complexity)]
    pub fn walk_to_cfa<M>(
        &self,
        regs: walker::Regs,
        mem: &M,
        max: usize,
        at_least: u64,
        record: &mut [(u64, bool)],
    ) -> Result<Result<(usize, u64, bool, u64, walker::WalkState), walker::Stop>, &'static str>
    where
        M: walker::Memory + ?Sized,
    {
        let eh = self.eh.as_ref().map_err(|e| *e)?;
        let mut w = self.walker.borrow_mut();
        w.max_depth = max;
        Ok(w.walk_to_cfa(eh, regs, mem, at_least, record))
    }

    /// A walk resumed at a frame an earlier walk showed (`from`): that
    /// frame and its callers, at most `max` frames, `visit` each.
    pub fn walk_from<M, F>(
        &self,
        from: &walker::WalkState,
        mem: &M,
        max: usize,
        visit: F,
    ) -> Result<walker::Stop, &'static str>
    where
        M: walker::Memory + ?Sized,
        F: FnMut(&walker::Frame) -> bool,
    {
        let eh = self.eh.as_ref().map_err(|e| *e)?;
        let mut w = self.walker.borrow_mut();
        w.max_depth = max;
        Ok(w.walk_from(eh, from, mem, visit))
    }
}
