//! Every function of the kernel, `core` and `alloc` included, has call-frame
//! information: the fault path and the kernel's own backtraces depend on it.

use gimli::{BaseAddresses, CieOrFde, EhFrame, LittleEndian, UnwindSection};
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};

#[test]
fn every_kernel_function_lies_inside_an_fde() {
    let path = qemu_tests::kernel();
    let data = std::fs::read(&path).expect("read the kernel ELF");
    let elf = object::File::parse(&*data).expect("parse the kernel ELF");

    let hdr = elf.section_by_name(".eh_frame_hdr").expect("the kernel has .eh_frame_hdr");
    assert!(hdr.size() > 8, ".eh_frame_hdr is empty");
    let eh = elf.section_by_name(".eh_frame").expect("the kernel has .eh_frame");
    let bases = BaseAddresses::default().set_eh_frame(eh.address()).set_eh_frame_hdr(hdr.address());
    let section = EhFrame::new(eh.data().unwrap(), LittleEndian);

    let mut ranges = Vec::new();
    let mut entries = section.entries(&bases);
    while let Some(entry) = entries.next().expect("well-formed .eh_frame") {
        if let CieOrFde::Fde(partial) = entry {
            let fde = partial.parse(EhFrame::cie_from_offset).expect("FDE parses");
            ranges.push((fde.initial_address(), fde.end_address()));
        }
    }
    ranges.sort();
    assert!(ranges.len() > 100, "suspiciously few FDEs: {}", ranges.len());

    let mut functions = 0;
    let mut core_functions = 0;
    let mut missing = Vec::new();
    for sym in elf.symbols() {
        if sym.kind() != SymbolKind::Text || sym.size() == 0 {
            continue;
        }
        functions += 1;
        let name = sym.name().unwrap_or("?");
        if name.contains("core") {
            core_functions += 1;
        }
        let addr = sym.address();
        let i = ranges.partition_point(|r| r.0 <= addr);
        let covered = i > 0 && addr < ranges[i - 1].1;
        if !covered {
            missing.push(format!("{addr:#x} {name}"));
        }
    }
    assert!(functions > 100, "suspiciously few function symbols: {functions}");
    assert!(core_functions > 10, "no core functions found: is core built from source?");
    assert!(missing.is_empty(), "{} of {functions} functions have no FDE:\n{}", missing.len(), missing.join("\n"));
}
