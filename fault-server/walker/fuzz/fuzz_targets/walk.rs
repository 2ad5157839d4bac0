//! Fuzz target: hostile `.eh_frame`, `.eh_frame_hdr`, registers and stack.
//!
//! Input layout: `mode u8 | eh_len u16 | hdr_len u16 | 17 registers u64 |
//! eh_frame | eh_frame_hdr | stack`. The stack is mapped at `rsp & !0xfff`.
//! `mode` picks the lookup (hdr, caller table, built table, scan). Checked:
//! no panic (any panic is a crash), termination within the depth bound, and
//! determinism — a second walk with warm caches and a walk without the row
//! cache produce exactly the same frames and stop reason.
#![no_main]

use libfuzzer_sys::fuzz_target;
use walker::{FdeEntry, Image, Regs, SliceMemory, Stop, SymbolTable, Walker};

const DEPTH: usize = 64;

fn collect<'a>(
    w: &mut Walker<'a, 64>,
    image: &Image<'a>,
    regs: Regs,
    mem: &SliceMemory<'_>,
) -> (Vec<(u64, u64)>, Stop) {
    let mut frames = Vec::new();
    let stop = w.walk(image, regs, mem, |f| {
        frames.push((f.pc, f.cfa));
        true
    });
    assert!(frames.len() <= DEPTH);
    (frames, stop)
}

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_first_chunk::<{ 5 + 17 * 8 }>() else {
        return;
    };
    let mode = head[0];
    let eh_len = usize::from(u16::from_le_bytes([head[1], head[2]])).min(rest.len());
    let mut vals = [0u64; 17];
    for (v, c) in vals.iter_mut().zip(head[5..].chunks_exact(8)) {
        *v = u64::from_le_bytes(c.try_into().unwrap());
    }
    let (eh, rest) = rest.split_at(eh_len);
    let hdr_len = usize::from(u16::from_le_bytes([head[3], head[4]])).min(rest.len());
    let (hdr, stack) = rest.split_at(hdr_len);
    let regs = Regs::from_dwarf_array(vals);
    let mem = SliceMemory {
        base: vals[7] & !0xfff,
        bytes: stack,
    };
    let eh_addr = 0x40_0000;
    let hdr_addr = 0x3f_f000;

    let mut storage = [FdeEntry::default(); 64];
    let image = match mode % 4 {
        0 => match Image::from_hdr(hdr, hdr_addr, eh, eh_addr) {
            Ok(i) => i,
            Err(_) => return,
        },
        1 => match walker::build_fde_table_in(eh, eh_addr, &mut storage) {
            Ok(n) => Image::from_table(eh, eh_addr, &storage[..n]).unwrap(),
            Err(_) => return,
        },
        2 => Image::with_built_table(eh, eh_addr),
        _ => Image::scan(eh, eh_addr),
    };

    let mut w: Box<Walker<'_, 64>> = Box::default();
    w.max_depth = DEPTH;
    let first = collect(&mut w, &image, regs, &mem);
    let warm = collect(&mut w, &image, regs, &mem);
    assert_eq!(first, warm, "warm walk differs");
    let mut cold: Box<Walker<'_, 64>> = Box::default();
    cold.max_depth = DEPTH;
    cold.use_row_cache = false;
    assert_eq!(
        first,
        collect(&mut cold, &image, regs, &mem),
        "uncached walk differs"
    );

    // The symbol table reader gets the same hostile bytes.
    if let Some(s) = SymbolTable::new(eh, hdr, 0).lookup(vals[16]) {
        let _ = format!("{:#}", s.demangled());
    }
});
