//! Symbolizing pcs from the event stream with an ELF's symbol table
//! (kernel backtraces are walked in the guest, which has no symbols).

/// Function symbols of an ELF file, for symbolizing pcs from events.
pub struct Symbols {
    /// (start, end, demangled name), sorted by start.
    ranges: Vec<(u64, u64, String)>,
}

impl Symbols {
    pub fn of(elf: &std::path::Path) -> anyhow::Result<Symbols> {
        use anyhow::Context;
        let data = std::fs::read(elf).with_context(|| format!("reading {}", elf.display()))?;
        Symbols::from_elf(&data).with_context(|| format!("parsing {} as ELF", elf.display()))
    }

    /// The function symbols of the ELF file `data`.
    pub fn from_elf(data: &[u8]) -> anyhow::Result<Symbols> {
        use object::{Object, ObjectSymbol, SymbolKind};
        let file = object::File::parse(data)?;
        let mut ranges: Vec<(u64, u64, String)> = file
            .symbols()
            .filter(|s| s.kind() == SymbolKind::Text)
            .filter_map(|s| {
                let name = s.name().ok()?;
                let end = s.address() + s.size().max(1);
                Some((s.address(), end, format!("{:#}", rustc_demangle::demangle(name))))
            })
            .collect();
        ranges.sort();
        Ok(Symbols { ranges })
    }

    /// The function containing `pc`, if any.
    pub fn name(&self, pc: u64) -> Option<&str> {
        let i = self.ranges.partition_point(|r| r.0 <= pc);
        let r = self.ranges.get(i.checked_sub(1)?)?;
        (pc < r.1).then_some(r.2.as_str())
    }
}
