//! Synthetic images and stacks for the walker's tests.
//!
//! Design note: real binaries only exercise what compilers emit; the cases that
//! matter most (a call as a function's last instruction, a signal frame over an
//! interrupted first instruction, an explicit rsp rule across stacks, cycles,
//! expression loops) are built here exactly, with gimli's CFI writer, so each
//! test states its expected frames by construction.
#![allow(dead_code)]

use gimli::write::{
    Address, CallFrameInstruction as I, CieId, CommonInformationEntry, EhFrame, EndianVec, Expression,
    FrameDescriptionEntry, FrameTable,
};
use gimli::{Encoding, Format, LittleEndian, Register};

pub const RSP: Register = Register(7);
pub const RBP: Register = Register(6);
pub const RIP: Register = Register(16);
pub const EH_FRAME_ADDR: u64 = 0x40_0000;

pub fn encoding() -> Encoding {
    Encoding { format: Format::Dwarf32, version: 1, address_size: 8 }
}

/// A CFI table under construction: one normal CIE, one signal CIE.
pub struct Cfi {
    pub table: FrameTable,
    pub normal: CieId,
    pub signal: CieId,
}

impl Cfi {
    pub fn new() -> Self {
        let mut table = FrameTable::default();
        let mut cie = CommonInformationEntry::new(encoding(), 1, -8, RIP);
        cie.add_instruction(I::Cfa(RSP, 8));
        cie.add_instruction(I::Offset(RIP, -8));
        let normal = table.add_cie(cie);
        let mut sig = CommonInformationEntry::new(encoding(), 1, -8, RIP);
        sig.signal_trampoline = true;
        let signal = table.add_cie(sig);
        Cfi { table, normal, signal }
    }

    /// Adds an FDE for [start, start+len) with (code offset, instruction) pairs.
    pub fn fde(&mut self, signal: bool, start: u64, len: u32, insts: Vec<(u32, I)>) {
        let mut fde = FrameDescriptionEntry::new(Address::Constant(start), len);
        for (off, i) in insts {
            fde.add_instruction(off, i);
        }
        self.table.add_fde(if signal { self.signal } else { self.normal }, fde);
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut eh = EhFrame(EndianVec::new(LittleEndian));
        self.table.write_eh_frame(&mut eh).unwrap();
        let mut v = eh.0.into_vec();
        v.extend_from_slice(&[0, 0, 0, 0]); // terminator
        v
    }
}

/// `DW_OP_breg7 off` (+ `DW_OP_deref` if `deref`).
pub fn breg_rsp(off: i64, deref: bool) -> Expression {
    let mut e = Expression::new();
    e.op_breg(RSP, off);
    if deref {
        e.op_deref();
    }
    e
}

/// Builds an `.eh_frame_hdr` (pcrel eh_frame_ptr, udata4 count, datarel sdata4
/// table) for `eh_frame` at `eh_addr`, placing the header at `hdr_addr`.
pub fn make_hdr(eh_frame: &[u8], eh_addr: u64, hdr_addr: u64, count_override: Option<u32>) -> Vec<u8> {
    let mut table = vec![walker::FdeEntry::default(); 256];
    let n = walker::build_fde_table_in(eh_frame, eh_addr, &mut table).unwrap();
    let mut h = vec![1u8, 0x1b, 0x03, 0x3b];
    let rel = (eh_addr as i64 - (hdr_addr as i64 + 4)) as i32;
    h.extend_from_slice(&rel.to_le_bytes());
    h.extend_from_slice(&count_override.unwrap_or(n as u32).to_le_bytes());
    for e in &table[..n] {
        h.extend_from_slice(&((e.start as i64 - hdr_addr as i64) as i32).to_le_bytes());
        let fde_addr = eh_addr + e.offset as u64;
        h.extend_from_slice(&((fde_addr as i64 - hdr_addr as i64) as i32).to_le_bytes());
    }
    h
}

/// A sparse little-endian stack image.
pub struct Stack {
    pub base: u64,
    pub bytes: Vec<u8>,
}

impl Stack {
    pub fn new(base: u64, len: usize) -> Self {
        Stack { base, bytes: vec![0; len] }
    }
    pub fn put(&mut self, addr: u64, v: u64) {
        let o = (addr - self.base) as usize;
        self.bytes[o..o + 8].copy_from_slice(&v.to_le_bytes());
    }
    pub fn mem(&self) -> walker::SliceMemory<'_> {
        walker::SliceMemory { base: self.base, bytes: &self.bytes }
    }
}

/// Registers with only rip, rsp and rbp set.
pub fn regs(pc: u64, sp: u64, bp: Option<u64>) -> walker::Regs {
    let mut r = walker::Regs::new();
    r.set(16, Some(pc));
    r.set(7, Some(sp));
    r.set(6, bp);
    r
}

/// Walks and returns (pc, cfa) pairs and the stop reason.
pub fn walk(image: &walker::Image<'_>, r: walker::Regs, mem: &dyn walker::Memory) -> (Vec<(u64, u64)>, walker::Stop) {
    let mut w: Box<walker::Walker<'_>> = Box::default();
    let out = walk_with(&mut w, image, r, mem);
    walks_agree(image, r, mem);
    out
}

type Visit<'v> = &'v mut dyn FnMut(&walker::Frame) -> bool;

/// Every frame (registers included) and the stop of a walk.
fn full(w: &mut dyn FnMut(Visit<'_>) -> walker::Stop) -> (Vec<walker::Frame>, walker::Stop) {
    let mut frames = Vec::new();
    let stop = w(&mut |f| {
        frames.push(*f);
        true
    });
    (frames, stop)
}

/// Requires every way of walking to give exactly the frames (registers
/// included) and the stop of a walk through a plain `Walker`: walkers
/// with lazily compiled rows (roomy, and so small that they flush and cut
/// FDEs short), cold and warm; walks resumed at each frame
/// (`WalkState::at` + `walk_from`); the walker without its caches; and a
/// precompiled [`walker::RowTable`] of `image` (if it can be built), whose
/// `walk_until` must find the same frames.
pub fn walks_agree(image: &walker::Image<'_>, r: walker::Regs, mem: &dyn walker::Memory) {
    let mut w: Box<walker::Walker<'_>> = Box::default();
    let want = full(&mut |v| w.walk(image, r, mem, v));
    let mut lazy: Box<walker::Walker<'_, 64, 16, 128>> = Box::default();
    let mut tiny: Box<walker::Walker<'_, 2, 1, 3>> = Box::default();
    for round in ["cold", "warm"] {
        assert_eq!(full(&mut |v| lazy.walk(image, r, mem, v)), want, "lazy walker, {round}: {:?}", lazy.stats);
        assert_eq!(full(&mut |v| tiny.walk(image, r, mem, v)), want, "tiny lazy walker, {round}: {:?}", tiny.stats);
    }
    let mut bare: Box<walker::Walker<'_>> = Box::default();
    bare.use_row_cache = false;
    assert_eq!(full(&mut |v| bare.walk(image, r, mem, v)), want, "walker without caches");
    for (i, f) in want.0.iter().enumerate() {
        let from = walker::WalkState::at(f);
        let (frames, stop) = full(&mut |v| lazy.walk_from(image, &from, mem, v));
        assert_eq!((&frames[..], stop), (&want.0[i..], want.1), "walk resumed at frame {i}");
    }
    let table = match walker::RowTable::build(image) {
        Ok(t) => t,
        Err(e) => {
            assert_eq!(image.index_kind(), "scan", "table refused: {e}");
            return;
        }
    };
    let got = full(&mut |v| table.walk(image, r, mem, walker::DEFAULT_MAX_DEPTH, v));
    assert_eq!(got, want, "table walk differs from the walker's ({:?})", table.stats());
    for (i, f) in want.0.iter().enumerate() {
        let found = table.walk_until(image, r, mem, walker::DEFAULT_MAX_DEPTH, |g| g.cfa >= f.cfa && g.pc == f.pc);
        let (j, g) = found.expect("walk_until finds a frame of the walk");
        assert!(j <= i && g.cfa == f.cfa, "walk_until found frame {j}, not {i}");
    }
}

pub fn walk_with<'a>(
    w: &mut walker::Walker<'a>,
    image: &walker::Image<'a>,
    r: walker::Regs,
    mem: &dyn walker::Memory,
) -> (Vec<(u64, u64)>, walker::Stop) {
    let mut out = Vec::new();
    let stop = w.walk(image, r, mem, |f| {
        out.push((f.pc, f.cfa));
        true
    });
    (out, stop)
}
