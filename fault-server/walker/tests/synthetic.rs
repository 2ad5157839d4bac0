//! Walks over synthetic CFI and stacks whose frames are known by construction.

mod common;

use common::*;
use gimli::write::CallFrameInstruction as I;
use walker::{Image, ImageError, Stop, Walker};

const BASE: u64 = 0x7000_0000;

/// leaf 0x1000, mid 0x1100 (push rbp; mov rbp,rsp; ...; pop rbp; ret),
/// top 0x1200 (calls mid as its last instruction), other 0x1210, start 0x1300.
fn chain_cfi() -> Vec<u8> {
    let mut c = Cfi::new();
    c.fde(false, 0x1000, 0x10, vec![]);
    c.fde(
        false,
        0x1100,
        0x40,
        vec![(1, I::CfaOffset(16)), (1, I::Offset(RBP, -16)), (4, I::CfaRegister(RBP)), (0x39, I::Cfa(RSP, 8))],
    );
    c.fde(false, 0x1200, 0x10, vec![(4, I::CfaOffset(32))]);
    c.fde(false, 0x1210, 0x10, vec![(0, I::CfaOffset(64))]);
    c.fde(false, 0x1300, 0x20, vec![(0, I::Undefined(RIP))]);
    c.bytes()
}

/// The leaf -> mid -> top -> start stack. Returns (stack, regs, expected).
fn chain_stack() -> (Stack, walker::Regs, Vec<(u64, u64)>) {
    let mut s = Stack::new(BASE, 0x1000);
    let s0 = BASE + 0x100;
    s.put(s0, 0x1135);
    let b1 = s0 + 24;
    s.put(b1, 0x5555);
    s.put(b1 + 8, 0x1210);
    let cfa1 = b1 + 16;
    let cfa2 = cfa1 + 32;
    s.put(cfa2 - 8, 0x1315);
    let expected = vec![(0x1004, s0 + 8), (0x1135, cfa1), (0x1210, cfa2), (0x1315, cfa2 + 8)];
    (s, regs(0x1004, s0, Some(b1)), expected)
}

fn all_images<'a>(eh: &'a [u8], hdr: &'a [u8], table: &'a [walker::FdeEntry]) -> Vec<Image<'a>> {
    vec![
        Image::from_hdr(hdr, EH_FRAME_ADDR - 0x1000, eh, EH_FRAME_ADDR).unwrap(),
        Image::from_table(eh, EH_FRAME_ADDR, table).unwrap(),
        Image::with_built_table(eh, EH_FRAME_ADDR),
        Image::scan(eh, EH_FRAME_ADDR),
    ]
}

#[test]
fn chain_walks_identically_with_every_index() {
    let eh = chain_cfi();
    let hdr = make_hdr(&eh, EH_FRAME_ADDR, EH_FRAME_ADDR - 0x1000, None);
    let mut table = vec![walker::FdeEntry::default(); 8];
    let n = walker::build_fde_table_in(&eh, EH_FRAME_ADDR, &mut table).unwrap();
    assert_eq!(n, 5);
    let (s, r, expected) = chain_stack();
    let kinds: Vec<_> = all_images(&eh, &hdr, &table[..n]).iter().map(|i| i.index_kind()).collect();
    assert_eq!(kinds, ["eh_frame_hdr", "table", "table", "scan"]);
    for image in all_images(&eh, &hdr, &table[..n]) {
        let (frames, stop) = walk(&image, r, &s.mem());
        assert_eq!(frames, expected, "index {}", image.index_kind());
        assert_eq!(stop, Stop::Outermost);
    }
}

#[test]
fn return_address_at_function_end_is_looked_up_minus_one() {
    // top's call to mid is its last instruction: the return address 0x1210 is
    // the first byte of `other` (CFA rsp+64). Looking it up as is would give a
    // CFA 32 bytes too high.
    let eh = chain_cfi();
    let image = Image::with_built_table(&eh, EH_FRAME_ADDR);
    let (s, r, expected) = chain_stack();
    let (frames, _) = walk(&image, r, &s.mem());
    assert_eq!(frames[2], expected[2]);
    assert_ne!(frames[2].1, expected[1].1 + 64);
}

#[test]
fn mid_function_at_entry_prologue_body_and_epilogue() {
    let eh = chain_cfi();
    let image = Image::with_built_table(&eh, EH_FRAME_ADDR);
    let r0 = BASE + 0x300; // rsp at mid's entry: holds the return address
    let mut s = Stack::new(BASE, 0x1000);
    s.put(r0, 0x1210);
    s.put(r0 - 8, 0x7777); // saved rbp
    s.put(r0 + 8 + 32 - 8, 0x1315);
    let cases = [
        (0x1100, r0, None),                  // entry, before push rbp
        (0x1101, r0 - 8, None),              // after push rbp
        (0x1104, r0 - 8 - 16, Some(r0 - 8)), // body, CFA = rbp + 16
        (0x1137, r0 - 8, Some(r0 - 8)),      // epilogue: leave done, before pop
        (0x1139, r0, Some(0x7777)),          // at ret
    ];
    for (pc, sp, bp) in cases {
        let (frames, stop) = walk(&image, regs(pc, sp, bp), &s.mem());
        let want = vec![(pc, r0 + 8), (0x1210, r0 + 8 + 32), (0x1315, r0 + 8 + 32 + 8)];
        // 0x1137 is still inside the rbp-based row: rsp is below the CFA by
        // the saved rbp only, and rbp = r0 - 8, so rbp+16 = r0 + 8 as well.
        assert_eq!(frames, want, "pc {pc:#x}");
        assert_eq!(stop, Stop::Outermost);
    }
}

#[test]
fn recovered_registers() {
    let eh = chain_cfi();
    let image = Image::with_built_table(&eh, EH_FRAME_ADDR);
    let (s, mut r, _) = chain_stack();
    r.set(3, Some(0x3333)); // rbx: callee-saved, unmentioned: kept
    r.set(0, Some(0x1111)); // rax: caller-saved: lost in callers
    let mut w: Box<Walker<'_>> = Box::default();
    let mut frames = Vec::new();
    w.walk(&image, r, &s.mem(), |f| {
        frames.push(*f);
        true
    });
    assert_eq!(frames[0].regs.get(0), Some(0x1111));
    assert_eq!(frames[1].regs.get(0), None);
    assert_eq!(frames[1].regs.get(3), Some(0x3333));
    assert_eq!(frames[2].regs.get(6), Some(0x5555)); // rbp restored from mid's frame
    assert_eq!(frames[2].regs.sp(), Some(frames[1].cfa));
    assert!(frames[0].exact_pc && !frames[1].exact_pc);
}

#[test]
fn signal_frame_over_interrupted_first_instruction() {
    let mut c = Cfi::new();
    c.fde(false, 0x2000, 0x10, vec![]); // handler (leaf)
    c.fde(
        true,
        0x20ff, // like glibc: one byte before __restore_rt
        0x11,
        vec![
            (0, I::CfaExpression(breg_rsp(160, true))),
            (0, I::Expression(RBP, breg_rsp(120, false))),
            (0, I::Expression(gimli::Register(3), breg_rsp(128, false))),
            (0, I::Expression(RIP, breg_rsp(168, false))),
        ],
    );
    c.fde(false, 0x21f0, 0x10, vec![(0, I::CfaOffset(48))]); // victimprev
    c.fde(false, 0x2200, 0x20, vec![]); // victim, interrupted at its first byte
    c.fde(false, 0x2300, 0x20, vec![(0, I::CfaOffset(16)), (0, I::Undefined(RIP))]); // outer
    let eh = c.bytes();
    let image = Image::with_built_table(&eh, EH_FRAME_ADDR);
    let mut s = Stack::new(BASE, 0x1000);
    let h = BASE + 0x100;
    let uc = h + 8;
    let v = BASE + 0x400;
    s.put(h, 0x2100);
    s.put(uc + 160, v);
    s.put(uc + 168, 0x2200);
    s.put(uc + 120, 0xb0b0);
    s.put(uc + 128, 0xb1b1);
    s.put(v, 0x2310);
    let mut w: Box<Walker<'_>> = Box::default();
    let mut frames = Vec::new();
    let stop = w.walk(&image, regs(0x2004, h, None), &s.mem(), |f| {
        frames.push(*f);
        true
    });
    let got: Vec<_> = frames.iter().map(|f| (f.pc, f.cfa)).collect();
    assert_eq!(got, [(0x2004, h + 8), (0x2100, v), (0x2200, v + 8), (0x2310, v + 24)]);
    assert_eq!(stop, Stop::Outermost);
    assert!(frames[1].signal && !frames[1].exact_pc);
    assert!(frames[2].exact_pc, "interrupted pc must be looked up as is");
    assert_eq!(frames[2].regs.get(3), Some(0xb1b1));
    assert_eq!(frames[2].regs.get(6), Some(0xb0b0));
}

#[test]
fn trap_stub_with_explicit_rsp_rule_crosses_to_a_lower_stack() {
    let mut c = Cfi::new();
    c.fde(true, 0x3000, 0x40, vec![(0, I::Cfa(RSP, 40)), (0, I::Offset(RIP, -40)), (0, I::Offset(RSP, -16))]);
    c.fde(false, 0x3100, 0x10, vec![]);
    c.fde(false, 0x3200, 0x20, vec![(0, I::Undefined(RIP))]);
    let eh = c.bytes();
    let image = Image::with_built_table(&eh, EH_FRAME_ADDR);
    let mut s = Stack::new(BASE, 0x1000);
    let k = BASE + 0x800;
    let u = BASE + 0x200;
    s.put(k, 0x3100);
    s.put(k + 24, u);
    s.put(u, 0x3210);
    let (frames, stop) = walk(&image, regs(0x3010, k, None), &s.mem());
    assert_eq!(frames, [(0x3010, k + 40), (0x3100, u + 8), (0x3210, u + 16)]);
    assert_eq!(stop, Stop::Outermost);
}

#[test]
fn typed_stops() {
    let eh = chain_cfi();
    let image = Image::with_built_table(&eh, EH_FRAME_ADDR);
    let (s, r, expected) = chain_stack();

    // No FDE for the first pc.
    let (f, stop) = walk(&image, regs(0x9999, BASE, None), &s.mem());
    assert!(f.is_empty());
    assert_eq!(stop, Stop::NoFde { pc: 0x9999 });

    // The return-address slot is unreadable.
    let short = walker::SliceMemory { base: BASE + 0x200, bytes: &s.bytes[0x200..] };
    let (f, stop) = walk(&image, r, &short);
    assert_eq!(f, expected[..1]);
    assert_eq!(stop, Stop::Unreadable { addr: BASE + 0x100 });

    // Depth limit.
    let mut w: Box<Walker<'_>> = Box::default();
    w.max_depth = 2;
    let (f, stop) = walk_with(&mut w, &image, r, &s.mem());
    assert_eq!(f, expected[..2]);
    assert_eq!(stop, Stop::DepthLimit);

    // A cyclic rbp chain: mid's saved rbp points to itself.
    let mut cyc = Stack::new(BASE, 0x1000);
    let b = BASE + 0x500;
    cyc.put(b, b);
    cyc.put(b + 8, 0x1135);
    let (f, stop) = walk(&image, regs(0x1120, b - 16, Some(b)), &cyc.mem());
    assert_eq!(f, [(0x1120, b + 16)]);
    assert_eq!(stop, Stop::CfaNotIncreasing { cfa: b + 16, prev: b + 16 });

    // A return address of zero ends the walk as outermost.
    let mut z = Stack::new(BASE, 0x1000);
    z.put(BASE + 0x100, 0);
    let (f, stop) = walk(&image, regs(0x1004, BASE + 0x100, None), &z.mem());
    assert_eq!(f.len(), 1);
    assert_eq!(stop, Stop::Outermost);
}

#[test]
fn unknown_unsupported_and_looping_rules() {
    let mut c = Cfi::new();
    c.fde(false, 0x1000, 0x10, vec![]);
    c.fde(false, 0x1100, 0x10, vec![(0, I::Cfa(gimli::Register(0), 8))]); // CFA = rax + 8
    c.fde(false, 0x1200, 0x10, vec![(0, I::Cfa(gimli::Register(17), 8))]); // xmm0
    let mut lp = gimli::write::Expression::raw(vec![0x2f, 0xfd, 0xff]); // DW_OP_skip -3
    lp.op_deref();
    c.fde(false, 0x1300, 0x10, vec![(0, I::CfaExpression(lp))]);
    let eh = c.bytes();
    let image = Image::with_built_table(&eh, EH_FRAME_ADDR);
    let mut s = Stack::new(BASE, 0x1000);
    s.put(BASE + 0x100, 0x1105);
    let (f, stop) = walk(&image, regs(0x1004, BASE + 0x100, None), &s.mem());
    assert_eq!(f.len(), 1);
    assert_eq!(stop, Stop::UnknownRegister { reg: 0 });
    let (_, stop) = walk(&image, regs(0x1204, BASE + 0x100, None), &s.mem());
    assert_eq!(stop, Stop::UnsupportedRule);
    let (_, stop) = walk(&image, regs(0x1304, BASE + 0x100, None), &s.mem());
    assert_eq!(stop, Stop::Expression(walker::ExprError::Limit));
}

#[test]
fn hostile_hdr_tables() {
    let eh = chain_cfi();
    let hdr_addr = EH_FRAME_ADDR - 0x1000;
    let (s, r, expected) = chain_stack();
    // A huge count is clamped to the rows present.
    let huge = make_hdr(&eh, EH_FRAME_ADDR, hdr_addr, Some(u32::MAX));
    let image = Image::from_hdr(&huge, hdr_addr, &eh, EH_FRAME_ADDR).unwrap();
    assert_eq!(walk(&image, r, &s.mem()).0, expected);
    // A truncated table loses its last rows (start 0x1300): the walk stops there.
    let good = make_hdr(&eh, EH_FRAME_ADDR, hdr_addr, None);
    let cut = &good[..good.len() - 8];
    let image = Image::from_hdr(cut, hdr_addr, &eh, EH_FRAME_ADDR).unwrap();
    let (f, stop) = walk(&image, r, &s.mem());
    assert_eq!(f, expected[..3]);
    assert_eq!(stop, Stop::NoFde { pc: 0x1315 });
    // Wrong .eh_frame address, bad version, too short.
    assert!(matches!(Image::from_hdr(&good, hdr_addr, &eh, EH_FRAME_ADDR + 8), Err(ImageError::HdrMismatch { .. })));
    let mut v2 = good.clone();
    v2[0] = 2;
    assert_eq!(Image::from_hdr(&v2, hdr_addr, &eh, EH_FRAME_ADDR).unwrap_err(), ImageError::BadHdr);
    assert_eq!(Image::from_hdr(&good[..6], hdr_addr, &eh, EH_FRAME_ADDR).unwrap_err(), ImageError::BadHdr);
    // Unsorted caller table is rejected; too-small storage is reported.
    let t = [walker::FdeEntry { start: 2, end: 3, offset: 0 }, walker::FdeEntry { start: 1, end: 2, offset: 0 }];
    assert_eq!(Image::from_table(&eh, EH_FRAME_ADDR, &t).unwrap_err(), ImageError::UnsortedTable);
    let mut small = [walker::FdeEntry::default(); 2];
    assert_eq!(walker::build_fde_table_in(&eh, EH_FRAME_ADDR, &mut small), Err(ImageError::TableFull));
}

#[test]
fn caches_hit_on_warm_walks_and_reset_on_another_image() {
    let eh = chain_cfi();
    let eh2 = eh.clone();
    let image = Image::with_built_table(&eh, EH_FRAME_ADDR);
    let image2 = Image::with_built_table(&eh2, EH_FRAME_ADDR);
    let (s, r, expected) = chain_stack();
    let mut w: Box<Walker<'_>> = Box::default();
    assert_eq!(walk_with(&mut w, &image, r, &s.mem()).0, expected);
    assert_eq!(w.stats, walker::Stats { hits: 0, misses: 4, ..Default::default() });
    assert_eq!(walk_with(&mut w, &image, r, &s.mem()).0, expected);
    assert_eq!(w.stats, walker::Stats { hits: 4, misses: 4, ..Default::default() });
    assert_eq!(walk_with(&mut w, &image2, r, &s.mem()).0, expected);
    assert_eq!(w.stats, walker::Stats { hits: 4, misses: 8, ..Default::default() });
    // walk_into: bounded by the output slice.
    let mut out = [walker::Frame { pc: 0, cfa: 0, regs: walker::Regs::new(), signal: false, exact_pc: false }; 2];
    let (n, stop) = w.walk_into(&image, r, &s.mem(), &mut out);
    assert_eq!((n, stop), (2, Stop::DepthLimit));
    assert_eq!((out[1].pc, out[1].cfa), expected[1]);
}

#[test]
fn lazy_rows_compile_each_fde_once_and_serve_every_pc_of_it() {
    let eh = chain_cfi();
    let hdr = make_hdr(&eh, EH_FRAME_ADDR, EH_FRAME_ADDR - 0x1000, None);
    let image = Image::from_hdr(&hdr, EH_FRAME_ADDR - 0x1000, &eh, EH_FRAME_ADDR).unwrap();
    let (s, r, expected) = chain_stack();
    // A memo of 1 slot: nearly every frame misses it and asks the compiled rows.
    let mut w: Box<Walker<'_, 1, 8, 64>> = Box::default();
    assert_eq!(walk_with_lazy(&mut w, &image, r, &s.mem()), (expected.clone(), Stop::Outermost));
    // leaf, mid, other (0x1210 - 1 is top's), start: four FDEs compiled.
    assert_eq!(w.stats.lazy, walker::LazyStats { compiled: 4, flushes: 0, truncated: 0 });
    assert_eq!(w.stats.misses, 4);
    // Every other pc of mid (entry, prologue, body, epilogue) is served by
    // mid's compiled rows: more misses of the memo, no more compiling.
    let r0 = BASE + 0x300;
    let mut st = Stack::new(BASE, 0x1000);
    st.put(r0, 0x1210);
    st.put(r0 - 8, 0x7777);
    st.put(r0 + 8 + 32 - 8, 0x1315);
    for (pc, sp, bp) in
        [(0x1100, r0, None), (0x1101, r0 - 8, None), (0x1104, r0 - 16, Some(r0 - 8)), (0x1139, r0, None)]
    {
        let (frames, stop) = walk_with_lazy(&mut w, &image, regs(pc, sp, bp), &st.mem());
        assert_eq!(frames[0], (pc, r0 + 8), "pc {pc:#x}");
        assert_eq!(stop, Stop::Outermost);
    }
    assert_eq!(w.stats.lazy.compiled, 4);
    assert!(w.stats.misses > 8, "the 1-slot memo missed: {:?}", w.stats);
    // Another image empties the compiled rows.
    let eh2 = eh.clone();
    let image2 = Image::with_built_table(&eh2, EH_FRAME_ADDR);
    walk_with_lazy(&mut w, &image2, r, &s.mem());
    assert_eq!(w.stats.lazy.compiled, 8);
}

#[test]
fn lazy_rows_when_full_flush_and_cut_long_fdes_short() {
    // One FDE with 12 rows (the CFA grows by 8 every 2 bytes), then the chain.
    let mut c = Cfi::new();
    let steps: Vec<_> = (1..=12u32).map(|k| (2 * (k - 1), I::CfaOffset(8 + 8 * k as i32))).collect();
    c.fde(false, 0x4000, 0x40, steps);
    c.fde(false, 0x4100, 0x10, vec![(0, I::Undefined(RIP))]);
    let eh = c.bytes();
    let image = Image::with_built_table(&eh, EH_FRAME_ADDR);
    let mut s = Stack::new(BASE, 0x1000);
    let sp = BASE + 0x100;
    // At 0x4000 + 2k (k = 0..11) the CFA is rsp + 16 + 8k.
    let case = |k: u64| {
        let cfa = sp + 16 + 8 * k;
        (regs(0x4000 + 2 * k, sp, None), cfa)
    };
    for k in 0..12 {
        s.put(case(k).1 - 8, 0x4105);
    }
    // Room for 2 FDEs and 5 rows: the long FDE keeps its first 3 rows (one
    // slot is kept for the cut) and gimli serves the rest.
    let mut w: Box<Walker<'_, 1, 2, 5>> = Box::default();
    for k in 0..12 {
        let (r, cfa) = case(k);
        let (frames, stop) = walk_with_lazy(&mut w, &image, r, &s.mem());
        assert_eq!(frames, [(0x4000 + 2 * k, cfa), (0x4105, cfa + 8)], "pc {:#x}", 0x4000 + 2 * k);
        assert_eq!(stop, Stop::Outermost);
        walks_agree(&image, r, &s.mem());
    }
    assert!(w.stats.lazy.truncated >= 1, "{:?}", w.stats);
    // Two FDE slots and a third FDE: the cache is emptied and refilled.
    let chain = chain_cfi();
    let image = Image::with_built_table(&chain, EH_FRAME_ADDR);
    let (s, r, expected) = chain_stack();
    let mut w: Box<Walker<'_, 1, 2, 64>> = Box::default();
    for _ in 0..2 {
        assert_eq!(walk_with_lazy(&mut w, &image, r, &s.mem()), (expected.clone(), Stop::Outermost));
    }
    assert!(w.stats.lazy.flushes >= 2, "{:?}", w.stats);
}

#[test]
fn lazy_rows_leave_rows_of_other_shapes_to_gimli() {
    // The signal frame of `signal_frame_over_interrupted_first_instruction`:
    // its rows are CFI expressions, which no compiled row holds.
    let mut c = Cfi::new();
    c.fde(false, 0x2000, 0x10, vec![]);
    c.fde(
        true,
        0x20ff,
        0x11,
        vec![
            (0, I::CfaExpression(breg_rsp(160, true))),
            (0, I::Expression(RBP, breg_rsp(120, false))),
            (0, I::Expression(RIP, breg_rsp(168, false))),
        ],
    );
    c.fde(false, 0x2200, 0x20, vec![(0, I::CfaOffset(16)), (0, I::Undefined(RIP))]);
    let eh = c.bytes();
    let image = Image::with_built_table(&eh, EH_FRAME_ADDR);
    let mut s = Stack::new(BASE, 0x1000);
    let h = BASE + 0x100;
    let v = BASE + 0x400;
    s.put(h, 0x2100);
    s.put(h + 8 + 160, v);
    s.put(h + 8 + 168, 0x2204);
    s.put(h + 8 + 120, 0xb0b0);
    let r = regs(0x2004, h, None);
    let want = vec![(0x2004, h + 8), (0x2100, v), (0x2204, v + 16)];
    let mut w: Box<Walker<'_, 8, 8, 64>> = Box::default();
    for _ in 0..2 {
        assert_eq!(walk_with_lazy(&mut w, &image, r, &s.mem()), (want.clone(), Stop::Outermost));
    }
    // Three FDEs compiled; the trampoline's row went to gimli once and is
    // memoized as a general row.
    assert_eq!(w.stats.lazy.compiled, 3);
    assert_eq!((w.stats.misses, w.stats.hits), (3, 3));
    walks_agree(&image, r, &s.mem());
}

/// [`walk_with`] for a walker with lazily compiled rows.
fn walk_with_lazy<'a, const R: usize, const F: usize, const L: usize>(
    w: &mut Walker<'a, R, F, L>,
    image: &Image<'a>,
    r: walker::Regs,
    mem: &dyn walker::Memory,
) -> (Vec<(u64, u64)>, Stop) {
    let mut out = Vec::new();
    let stop = w.walk(image, r, mem, |f| {
        out.push((f.pc, f.cfa));
        true
    });
    (out, stop)
}

#[test]
fn symbols_are_found_and_demangled() {
    // Two function symbols; one Rust-mangled (legacy scheme).
    let mangled = "_ZN4core9panicking5panic17h0123456789abcdefE";
    let mut strtab = vec![0u8];
    let n1 = strtab.len() as u32;
    strtab.extend_from_slice(b"main\0");
    let n2 = strtab.len() as u32;
    strtab.extend_from_slice(mangled.as_bytes());
    strtab.push(0);
    let sym = |name: u32, info: u8, shndx: u16, value: u64, size: u64| {
        let mut e = Vec::new();
        e.extend_from_slice(&name.to_le_bytes());
        e.push(info);
        e.push(0);
        e.extend_from_slice(&shndx.to_le_bytes());
        e.extend_from_slice(&value.to_le_bytes());
        e.extend_from_slice(&size.to_le_bytes());
        e
    };
    let mut symtab = vec![0u8; 24];
    symtab.extend(sym(n1, 0x12, 1, 0x1000, 0x40));
    symtab.extend(sym(n2, 0x12, 1, 0x1040, 0x20));
    symtab.extend(sym(n1, 0x12, 0, 0x1000, 0x100)); // undefined: ignored
    let t = walker::SymbolTable::new(&symtab, &strtab, 0x10_0000);
    let s = t.lookup(0x10_1010).unwrap();
    assert_eq!((s.name, s.offset), ("main", 0x10));
    let s = t.lookup(0x10_1045).unwrap();
    assert_eq!(format!("{:#}+{:#x}", s.demangled(), s.offset), "core::panicking::panic+0x5");
    assert!(t.lookup(0x10_1060).is_none());
    assert!(walker::SymbolTable::new(&symtab[..30], &strtab, 0).lookup(0x1010).is_none());
}

#[test]
fn memory_read_sized() {
    use walker::Memory;
    let bytes: Vec<u8> = (0u8..32).collect();
    let m = walker::SliceMemory { base: 0x1000, bytes: &bytes };
    assert_eq!(m.read_u64(0x1000), Some(u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7])));
    assert_eq!(m.read_sized(0x1006, 4), Some(u32::from_le_bytes([6, 7, 8, 9]) as u64));
    assert_eq!(m.read_sized(0x1003, 1), Some(3));
    assert_eq!(m.read_sized(0x1019, 8), None); // crosses the end
    assert_eq!(m.read_u64(u64::MAX - 3), None);
    assert_eq!(m.read_sized(0x1000, 9), None);
}

/// Writes the fuzz seed corpus (fuzz/corpus/walk) from the synthetic cases
/// above. Run with `WALKER_WRITE_SEEDS=1 cargo test -p rewind-walker --test
/// synthetic write_fuzz_seeds`; it does nothing otherwise.
#[test]
fn write_fuzz_seeds() {
    if std::env::var_os("WALKER_WRITE_SEEDS").is_none() {
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/walk");
    std::fs::create_dir_all(&dir).unwrap();
    let seed = |name: &str, mode: u8, eh: &[u8], hdr: &[u8], r: walker::Regs, stack: &[u8]| {
        let mut v = vec![mode];
        v.extend_from_slice(&(eh.len() as u16).to_le_bytes());
        v.extend_from_slice(&(hdr.len() as u16).to_le_bytes());
        for x in r.as_array() {
            v.extend_from_slice(&x.unwrap_or(0).to_le_bytes());
        }
        v.extend_from_slice(eh);
        v.extend_from_slice(hdr);
        v.extend_from_slice(stack);
        std::fs::write(dir.join(name), v).unwrap();
    };
    let eh = chain_cfi();
    let hdr = make_hdr(&eh, EH_FRAME_ADDR, EH_FRAME_ADDR - 0x1000, None);
    let (s, r, _) = chain_stack();
    for mode in 0..4u8 {
        seed(&format!("chain-{mode}"), mode, &eh, &hdr, r, &s.bytes[..0x200]);
    }
    // Signal frame with expressions.
    let mut c = Cfi::new();
    c.fde(false, 0x2000, 0x10, vec![]);
    c.fde(
        true,
        0x20ff,
        0x11,
        vec![
            (0, I::CfaExpression(breg_rsp(160, true))),
            (0, I::Expression(RBP, breg_rsp(120, false))),
            (0, I::Expression(RIP, breg_rsp(168, false))),
        ],
    );
    c.fde(false, 0x2200, 0x20, vec![(0, I::RememberState), (4, I::CfaOffset(24)), (8, I::RestoreState)]);
    let eh = c.bytes();
    let hdr = make_hdr(&eh, EH_FRAME_ADDR, EH_FRAME_ADDR - 0x1000, None);
    let mut st = Stack::new(BASE, 0x300);
    st.put(BASE + 0x100, 0x2100);
    st.put(BASE + 0x108 + 160, BASE + 0x280);
    st.put(BASE + 0x108 + 168, 0x2200);
    st.put(BASE + 0x280, 0x2004);
    for mode in 0..4u8 {
        seed(&format!("signal-{mode}"), mode, &eh, &hdr, regs(0x2004, BASE + 0x100, None), &st.bytes);
    }
}
