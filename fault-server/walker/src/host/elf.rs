//! An executable's unwind sections, symbols and load segments.
//!
//! Design note: the file is read once into memory and kept; an [`Image`] and a
//! [`SymbolTable`] borrow from it. Images without `.eh_frame_hdr` (static glibc
//! programs) get their sorted FDE table built here, once.

use std::format;
use std::path::Path;
use std::string::String;
use std::string::ToString;
use std::vec::Vec;

use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
use object::{Object, ObjectSection};

use super::{HostError, err};
use crate::{Image, SymbolTable};

/// A loaded ELF executable.
pub struct Executable {
    data: Vec<u8>,
    name: String,
    eh_frame: Option<(usize, usize, u64)>,
    eh_frame_hdr: Option<(usize, usize, u64)>,
    symtab: Option<(usize, usize)>,
    strtab: Option<(usize, usize)>,
    /// `e_entry`.
    pub entry: u64,
    /// `PT_LOAD` segments: (vaddr, file offset, file size, executable).
    pub loads: Vec<(u64, u64, u64, bool)>,
}

fn range(data: &[u8], sub: &[u8]) -> (usize, usize) {
    let start = (sub.as_ptr() as usize).wrapping_sub(data.as_ptr() as usize);
    (start, sub.len())
}

impl Executable {
    /// Reads and parses the executable at `path`.
    pub fn open(path: &Path) -> Result<Self, HostError> {
        let data =
            std::fs::read(path).map_err(|e| HostError(format!("cannot read executable {}: {e}", path.display())))?;
        Self::parse(data, &path.display().to_string())
    }

    /// Parses executable bytes; `name` is used in error messages.
    pub fn parse(data: Vec<u8>, name: &str) -> Result<Self, HostError> {
        let file = ElfFile64::<object::LittleEndian>::parse(&*data)
            .map_err(|e| HostError(format!("{name} is not an x86_64 ELF file: {e}")))?;
        if file.elf_header().e_machine(object::LittleEndian) != object::elf::EM_X86_64 {
            return err(format!("{name} is not an x86_64 ELF file"));
        }
        if file.elf_header().e_type(object::LittleEndian) == object::elf::ET_CORE {
            return err(format!("{name} is a core file, not an executable"));
        }
        let sect = |n: &str| -> Option<(usize, usize, u64)> {
            let s = file.section_by_name(n)?;
            let d = s.data().ok()?;
            let (o, l) = range(&data, d);
            Some((o, l, s.address()))
        };
        let eh_frame = sect(".eh_frame");
        let eh_frame_hdr = sect(".eh_frame_hdr");
        let symtab = sect(".symtab").map(|(o, l, _)| (o, l));
        let strtab = sect(".strtab").map(|(o, l, _)| (o, l));
        let e = object::LittleEndian;
        let loads = file
            .elf_program_headers()
            .iter()
            .filter(|p| p.p_type(e) == object::elf::PT_LOAD)
            .map(|p| (p.p_vaddr(e), p.p_offset(e), p.p_filesz(e), p.p_flags(e).0 & object::elf::PF_X.0 != 0))
            .collect();
        let entry = file.entry();
        if eh_frame.is_none() {
            return err(format!("{name} has no .eh_frame section"));
        }
        Ok(Executable { name: name.into(), eh_frame, eh_frame_hdr, symtab, strtab, entry, loads, data })
    }

    /// The file name given at load.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    fn slice(&self, (o, l): (usize, usize)) -> &[u8] {
        self.data.get(o..o.saturating_add(l)).unwrap_or(&[])
    }

    /// `.eh_frame` contents and link address.
    pub fn eh_frame(&self) -> (&[u8], u64) {
        let (o, l, a) = self.eh_frame.unwrap_or((0, 0, 0));
        (self.slice((o, l)), a)
    }

    /// `.eh_frame_hdr` contents and link address, if present.
    pub fn eh_frame_hdr(&self) -> Option<(&[u8], u64)> {
        self.eh_frame_hdr.map(|(o, l, a)| (self.slice((o, l)), a))
    }

    /// The unwind image loaded at `bias`: through `.eh_frame_hdr` if there
    /// is a usable one, else through a sorted FDE table built now.
    pub fn image(&self, bias: u64) -> Image<'_> {
        let (eh, eh_addr) = self.eh_frame();
        let eh_addr = eh_addr.wrapping_add(bias);
        if let Some((hdr, hdr_addr)) = self.eh_frame_hdr()
            && let Ok(img) = Image::from_hdr(hdr, hdr_addr.wrapping_add(bias), eh, eh_addr)
            && img.index_kind() == "eh_frame_hdr"
        {
            return img;
        }
        Image::with_built_table(eh, eh_addr)
    }

    /// The symbol table, with symbol values moved by `bias`.
    pub fn symbols(&self, bias: u64) -> SymbolTable<'_> {
        let symtab = self.symtab.map(|r| self.slice(r)).unwrap_or(&[]);
        let strtab = self.strtab.map(|r| self.slice(r)).unwrap_or(&[]);
        SymbolTable::new(symtab, strtab, bias)
    }

    /// `symbol+0xoff` for `pc` (demangled, without Rust hash), or `??`.
    pub fn symbolize(&self, pc: u64, bias: u64) -> String {
        match self.symbols(bias).lookup(pc) {
            Some(s) => format!("{:#}+{:#x}", s.demangled(), s.offset),
            None => String::from("??"),
        }
    }
}
