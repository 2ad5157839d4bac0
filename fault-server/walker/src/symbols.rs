//! Symbolization from an ELF symbol table, without allocation.
//!
//! Design note: the kernel and the fault server name frames in fault reports,
//! and neither can allocate on that path. So the table is read in place: the
//! raw `.symtab` (24-byte `Elf64_Sym` entries) and `.strtab` bytes, scanned
//! linearly per lookup (a report symbolizes a handful of frames; a hot-path
//! user can build an index on top). Names are demangled lazily by
//! `rustc-demangle`, whose `Display` needs no allocation; non-Rust names print
//! as they are. Every field is bounds-checked: a corrupt table yields no
//! symbol, never a panic.

/// An ELF64 symbol table read in place.
#[derive(Clone, Copy, Debug)]
pub struct SymbolTable<'a> {
    symtab: &'a [u8],
    strtab: &'a [u8],
    bias: u64,
}

/// A symbol found for an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Symbol<'a> {
    /// The raw (mangled) name.
    pub name: &'a str,
    /// The symbol's runtime address.
    pub addr: u64,
    /// Its size (0 if unknown).
    pub size: u64,
    /// The looked-up address minus `addr`.
    pub offset: u64,
}

impl<'a> Symbol<'a> {
    /// The demangled name; format it with `{:#}` to omit Rust's hash suffix.
    pub fn demangled(&self) -> rustc_demangle::Demangle<'a> {
        rustc_demangle::demangle(self.name)
    }
}

const SYM_SIZE: usize = 24;
const STT_NOTYPE: u8 = 0;
const STT_FUNC: u8 = 2;

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

impl<'a> SymbolTable<'a> {
    /// A table from raw `.symtab` and `.strtab` contents; `bias` is added to
    /// every symbol value (the load bias of a PIE).
    pub fn new(symtab: &'a [u8], strtab: &'a [u8], bias: u64) -> Self {
        SymbolTable { symtab, strtab, bias }
    }

    fn name(&self, off: u32) -> Option<&'a str> {
        let rest = self.strtab.get(usize::try_from(off).ok()?..)?;
        let end = rest.iter().position(|&c| c == 0)?;
        core::str::from_utf8(rest.get(..end)?).ok()
    }

    /// The function symbol containing `addr`, or failing that the closest
    /// preceding sized-0 code symbol.
    pub fn lookup(&self, addr: u64) -> Option<Symbol<'a>> {
        let mut best: Option<(u64, u64, u32, bool)> = None;
        for ent in self.symtab.chunks_exact(SYM_SIZE) {
            let Some(name) = u32_at(ent, 0) else { continue };
            let info = ent.get(4).copied().unwrap_or(0);
            let shndx = u16::from_le_bytes([ent.get(6).copied().unwrap_or(0), ent.get(7).copied().unwrap_or(0)]);
            let (Some(value), Some(size)) = (u64_at(ent, 8), u64_at(ent, 16)) else {
                continue;
            };
            let kind = info & 0xf;
            if shndx == 0 || name == 0 || !(kind == STT_FUNC || kind == STT_NOTYPE) {
                continue;
            }
            let start = value.wrapping_add(self.bias);
            if start > addr {
                continue;
            }
            let contains = size != 0 && addr - start < size;
            if size != 0 && !contains {
                continue;
            }
            // Prefer a containing sized symbol, then the highest start.
            let better = match best {
                None => true,
                Some((bs, _, _, bc)) => (contains && !bc) || (contains == bc && start > bs),
            };
            if better {
                best = Some((start, size, name, contains));
            }
        }
        let (start, size, name, _) = best?;
        Some(Symbol { name: self.name(name)?, addr: start, size, offset: addr - start })
    }
}
