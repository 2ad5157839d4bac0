//! A standard ELF core file: registers from `NT_PRSTATUS`, memory from
//! `PT_LOAD` segments, the entry point from `NT_AUXV`.
//!
//! Design note: a core (from the kernel or gdb's `gcore`) is the walker's test
//! oracle input: the same registers and memory gdb saw. Reads are served from
//! the segments' file contents; bytes a segment does not have in the file
//! (`p_filesz < p_memsz`, or no segment) are unreadable, which is exactly what
//! [`Memory`] can express.

use std::format;
use std::path::Path;
use std::string::ToString;
use std::vec::Vec;

use object::read::elf::{FileHeader, ProgramHeader};
use object::{LittleEndian as LE, elf};

use super::{Executable, HostError, err};
use crate::{Memory, Regs};

/// A parsed core file.
pub struct CoreFile {
    data: Vec<u8>,
    /// (vaddr, file offset, file size), sorted by vaddr.
    segs: Vec<(u64, usize, usize)>,
    /// Registers of each thread, in note order (the first is the current one).
    pub threads: Vec<Regs>,
    /// `AT_ENTRY` from the auxiliary vector, if present.
    pub at_entry: Option<u64>,
}

/// `AT_ENTRY`: the program entry point in the auxiliary vector.
const AT_ENTRY: u64 = 9;
/// Offset of `pr_reg` in the x86_64 `elf_prstatus`.
const PR_REG: usize = 112;
/// `user_regs_struct` field order (index into the 27 words) for DWARF 0..=16.
const USER_REGS: [usize; 17] = [10, 12, 11, 5, 13, 14, 4, 19, 9, 8, 7, 6, 3, 2, 1, 0, 16];

fn word(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at.checked_add(8)?)?.try_into().ok()?))
}

impl CoreFile {
    /// Reads and parses the core file at `path`.
    pub fn open(path: &Path) -> Result<Self, HostError> {
        let data =
            std::fs::read(path).map_err(|e| HostError(format!("cannot read core file {}: {e}", path.display())))?;
        Self::parse(data, &path.display().to_string())
    }

    /// Parses core bytes; `name` is used in error messages.
    pub fn parse(data: Vec<u8>, name: &str) -> Result<Self, HostError> {
        let bad = |what: &str| HostError(format!("{name} is not a valid x86_64 ELF core file: {what}"));
        let hdr = elf::FileHeader64::<LE>::parse(&*data).map_err(|e| bad(&e.to_string()))?;
        if hdr.e_type(LE) != elf::ET_CORE {
            return Err(bad(&format!("e_type is {:#x}, not ET_CORE ({:#x})", hdr.e_type(LE), elf::ET_CORE)));
        }
        if hdr.e_machine(LE) != elf::EM_X86_64 {
            return Err(bad(&format!("e_machine is {:#x}, not EM_X86_64 ({:#x})", hdr.e_machine(LE), elf::EM_X86_64)));
        }
        let phdrs = hdr.program_headers(LE, &*data).map_err(|e| bad(&e.to_string()))?;
        let mut segs = Vec::new();
        let mut threads = Vec::new();
        let mut at_entry = None;
        for ph in phdrs {
            match ph.p_type(LE) {
                elf::PT_LOAD => {
                    let (off, size) = (ph.p_offset(LE), ph.p_filesz(LE));
                    let beyond = || {
                        bad(&format!(
                            "the PT_LOAD segment at {:#x} (file offset {off:#x}, {size:#x} bytes) lies beyond the \
                             end of the file ({:#x} bytes; truncated?)",
                            ph.p_vaddr(LE),
                            data.len()
                        ))
                    };
                    let off = usize::try_from(off).map_err(|_| beyond())?;
                    let size = usize::try_from(size).map_err(|_| beyond())?;
                    if off.checked_add(size).is_none_or(|end| end > data.len()) {
                        return Err(beyond());
                    }
                    segs.push((ph.p_vaddr(LE), off, size));
                }
                elf::PT_NOTE => {
                    let Some(mut notes) = ph.notes(LE, &*data).map_err(|e| bad(&e.to_string()))? else {
                        continue;
                    };
                    while let Some(note) = notes.next().map_err(|e| bad(&e.to_string()))? {
                        if note.name() != b"CORE" {
                            continue;
                        }
                        let desc = note.desc();
                        match note.n_type(LE) {
                            elf::NT_PRSTATUS => {
                                let mut vals = [0u64; 17];
                                for (v, idx) in vals.iter_mut().zip(USER_REGS) {
                                    *v = word(desc, PR_REG + idx * 8).ok_or_else(|| {
                                        bad(&format!(
                                            "NT_PRSTATUS of {} bytes, too short for its registers ({} bytes)",
                                            desc.len(),
                                            PR_REG + 27 * 8
                                        ))
                                    })?;
                                }
                                threads.push(Regs::from_dwarf_array(vals));
                            }
                            elf::NT_AUXV => {
                                at_entry = desc
                                    .chunks_exact(16)
                                    .filter_map(|c| Some((word(c, 0)?, word(c, 8)?)))
                                    .find(|&(k, _)| k == AT_ENTRY)
                                    .map(|(_, v)| v);
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if threads.is_empty() {
            return Err(bad("no NT_PRSTATUS note (no registers)"));
        }
        segs.sort_unstable_by_key(|s| s.0);
        Ok(CoreFile { data, segs, threads, at_entry })
    }

    /// Registers of the current (first) thread.
    pub fn regs(&self) -> Regs {
        self.threads.first().copied().unwrap_or_default()
    }

    /// `len` bytes at `addr`, if the core has all of them in one segment.
    pub fn bytes(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let i = self.segs.partition_point(|s| s.0 <= addr).checked_sub(1)?;
        let &(vaddr, off, size) = self.segs.get(i)?;
        let rel = usize::try_from(addr - vaddr).ok()?;
        if rel.checked_add(len)? > size {
            return None;
        }
        self.data.get(off + rel..off + rel + len)
    }

    /// The load bias of `exe` in this core, checking that they belong together:
    /// the bias must be page-aligned, and the executable's ELF header, where
    /// the core has it, must be byte-identical.
    pub fn bias_for(&self, exe: &Executable) -> Result<u64, HostError> {
        let bias = self.at_entry.map_or(0, |at| at.wrapping_sub(exe.entry));
        let mismatch = |why: &str| err(format!("executable {} does not match the core: {why}", exe.name()));
        if !bias.is_multiple_of(4096) {
            let at = self.at_entry.unwrap_or(0);
            return mismatch(&format!(
                "its entry point {:#x} and the core's AT_ENTRY {at:#x} differ by {bias:#x}, not a multiple of the page size",
                exe.entry
            ));
        }
        if let Some(&(vaddr, 0, _, _)) = exe.loads.iter().find(|l| l.1 == 0) {
            let n = exe.bytes().len().min(4096);
            if let (Some(mem), Some(file)) = (self.bytes(vaddr.wrapping_add(bias), n), exe.bytes().get(..n))
                && mem != file
            {
                let at = vaddr.wrapping_add(bias);
                return mismatch(&format!("the ELF header in the core's memory at {at:#x} ({n:#x} bytes) differs"));
            }
        }
        let pc = self.regs().pc().unwrap_or(0);
        let in_exe = exe.loads.iter().any(|&(v, _, _, x)| x && pc.wrapping_sub(v.wrapping_add(bias)) < 1 << 32);
        if self.at_entry.is_none() && !in_exe {
            return mismatch(&format!(
                "the core's pc {pc:#x} is in none of its executable segments and the core has no AT_ENTRY"
            ));
        }
        Ok(bias)
    }
}

impl Memory for CoreFile {
    fn read_u64(&self, addr: u64) -> Option<u64> {
        word(self.bytes(addr, 8)?, 0)
    }
}
