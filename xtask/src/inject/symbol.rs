//! Finding a function of a task's ELF by name, for pc-triggered injections
//! and sweeps.
//!
//! Why by name: addresses change with every build, names do not, so a
//! script says `symbol = "spinner::spin"` and the runner looks the address
//! and size up in the binary it is about to boot. Names are compared
//! demangled and without the hash; a name that is not exact may be a
//! substring, as long as it picks out one function — otherwise the error
//! lists the candidates, so the script can be made precise.
//!
//! The other way round, [`Functions::name_at`] names the function a pc lies
//! in, for the report's histogram of where injections landed.

use anyhow::{Context, Result, bail};
use std::path::Path;

/// A function: its entry and size in bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    pub name: String,
    pub addr: u64,
    pub size: u64,
}

/// Looks `wanted` up in the ELF at `elf`.
pub fn resolve(elf: &Path, wanted: &str) -> Result<Function> {
    use object::{Object, ObjectSymbol, SymbolKind};
    let data = std::fs::read(elf).with_context(|| format!("reading {}", elf.display()))?;
    let file = object::File::parse(&*data).with_context(|| format!("parsing {} as ELF", elf.display()))?;
    let mut all: Vec<Function> = file
        .symbols()
        .filter(|s| s.kind() == SymbolKind::Text && s.size() > 0)
        .filter_map(|s| {
            let name = format!("{:#}", rustc_demangle::demangle(s.name().ok()?));
            Some(Function { name, addr: s.address(), size: s.size() })
        })
        .collect();
    all.sort_by(|a, b| (a.addr, &a.name).cmp(&(b.addr, &b.name)));
    all.dedup_by(|a, b| a.addr == b.addr);
    let exact: Vec<&Function> = all.iter().filter(|f| f.name == wanted).collect();
    let found = if exact.is_empty() { all.iter().filter(|f| f.name.contains(wanted)).collect() } else { exact };
    match found.as_slice() {
        [one] => Ok((*one).clone()),
        [] => bail!("no function named {wanted:?} in {}", elf.display()),
        many => {
            let list: Vec<String> = many.iter().take(10).map(|f| format!("  {:#x} {}", f.addr, f.name)).collect();
            bail!(
                "{} functions in {} match {wanted:?}; name one exactly:\n{}{}",
                many.len(),
                elf.display(),
                list.join("\n"),
                if many.len() > 10 { "\n  ..." } else { "" }
            )
        }
    }
}

/// Every function of a task's ELF, by address: names the function an
/// injection landed in (the report's `where` histogram).
#[derive(Clone, Debug, Default)]
pub struct Functions {
    sorted: Vec<Function>,
}

impl Functions {
    /// The functions of the ELF at `elf` (none if it cannot be read: the
    /// histogram then says `?`).
    pub fn load(elf: &Path) -> Functions {
        use object::{Object, ObjectSymbol, SymbolKind};
        let Ok(data) = std::fs::read(elf) else { return Functions::default() };
        let Ok(file) = object::File::parse(&*data) else { return Functions::default() };
        let mut sorted: Vec<Function> = file
            .symbols()
            .filter(|s| s.kind() == SymbolKind::Text && s.size() > 0)
            .filter_map(|s| {
                let name = format!("{:#}", rustc_demangle::demangle(s.name().ok()?));
                Some(Function { name, addr: s.address(), size: s.size() })
            })
            .collect();
        sorted.sort_by(|a, b| (a.addr, &a.name).cmp(&(b.addr, &b.name)));
        sorted.dedup_by(|a, b| a.addr == b.addr);
        Functions { sorted }
    }

    /// The function `pc` lies in.
    pub fn name_at(&self, pc: u64) -> Option<&str> {
        let i = self.sorted.partition_point(|f| f.addr <= pc);
        let f = self.sorted.get(i.checked_sub(1)?)?;
        (pc < f.addr + f.size).then_some(f.name.as_str())
    }
}

#[cfg(test)]
mod where_tests {
    use super::*;

    #[test]
    fn a_pc_is_named_by_the_function_around_it_and_none_outside() {
        let f = Functions {
            sorted: vec![
                Function { name: "a".into(), addr: 0x1000, size: 0x10 },
                Function { name: "b".into(), addr: 0x1020, size: 0x10 },
            ],
        };
        assert_eq!(f.name_at(0x1000), Some("a"));
        assert_eq!(f.name_at(0x100f), Some("a"));
        assert_eq!(f.name_at(0x1010), None);
        assert_eq!(f.name_at(0x102f), Some("b"));
        assert_eq!(f.name_at(0xfff), None);
    }
}
