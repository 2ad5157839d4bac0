//! The register check: does the fault message tell the truth?
//!
//! The kernel's trap stubs must save every register of a faulting task, and
//! the fault message must carry them unchanged. To test that from outside
//! the kernel, the `regcheck` task (`tasks/regcheck`) writes — *before* it
//! faults, into a `#[no_mangle] static` named [`SYMBOL`] — the values it is
//! about to load into all 15 general-purpose registers, the address of the
//! instruction that will fault, its RSP and RFLAGS there, and the vector,
//! error code and CR2 the fault must produce. On a fault of a task whose
//! image has that symbol, the server finds the block through the ELF symbol
//! table (not through anything in the message), reads it with `READ_MEM`,
//! compares it field by field with the message, and emits the result as a
//! `check` event named `regs-match`. So the values compared come from two
//! independent paths: the task's memory and the kernel's saved frame.
//!
//! Block layout (little-endian `u64` words; `tasks/regcheck` writes the
//! same layout — keep the two in step):
//!
//! | word | meaning |
//! |---|---|
//! | 0 | [`MAGIC`] |
//! | 1 | 1 when the values below are set (armed) |
//! | 2..17 | rax rbx rcx rdx rsi rdi rbp r8 .. r15 (`abi::trap::Registers` order) |
//! | 17, 18, 19 | rip, rsp, rflags at the fault |
//! | 20, 21, 22 | vector, error code, cr2 |
//! | 23 | flags: bit 0 = compare CR2 (only page faults define it) |
//!
//! RFLAGS is compared under [`RFLAGS_MASK`] (the arithmetic flags, DF and
//! IF): the CPU may set RF in the saved image of a fault, which is not the
//! task's doing.

use crate::image::TaskImage;
use libtask::abi::fault::FaultMessage;
use libtask::supervise::{self, TaskId};

/// The block's symbol name.
pub const SYMBOL: &str = "REWIND_REGCHECK";
/// Word 0 of an armed block: "REGCHECK".
pub const MAGIC: u64 = 0x5245_4743_4845_434b;
/// Words the server reads.
pub const WORDS: usize = 24;
/// RFLAGS bits compared: CF PF AF ZF SF IF DF OF.
pub const RFLAGS_MASK: u64 = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x200 | 0x400 | 0x800;
const CHECK_CR2: u64 = 1;

/// The outcome of a register check (the `regs-match` check event).
#[derive(Clone, Copy, Debug)]
pub struct Checked {
    pub ok: bool,
    /// `(fields compared, mismatches)` when the block was compared.
    pub compared: Option<(u64, u64)>,
    /// The first field that differed: name, expected, got.
    pub first: Option<(&'static str, u64, u64)>,
    pub error: Option<&'static str>,
}

/// Checks the message of a fault of `task` against its block, if its image
/// has one.
pub fn check(task: TaskId, image: &TaskImage, msg: &FaultMessage) -> Option<Checked> {
    let addr = image.regcheck?;
    let failed = |error| Some(Checked { ok: false, compared: None, first: None, error: Some(error) });
    let mut raw = [0u8; WORDS * 8];
    if supervise::read_mem(task, addr, &mut raw).is_err() {
        return failed("block unreadable");
    }
    let w = |i: usize| u64::from_le_bytes(raw[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
    if w(0) != MAGIC || w(1) != 1 {
        return failed("block not armed");
    }
    let r = &msg.regs;
    let got = [r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15];
    let names = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"];
    let mut fields = Tally::default();
    for (i, (name, value)) in names.iter().zip(got).enumerate() {
        fields.push(name, w(2 + i), value);
    }
    fields.push("rip", w(17), r.rip);
    fields.push("rsp", w(18), r.rsp);
    fields.push("rflags", w(19) & RFLAGS_MASK, r.rflags & RFLAGS_MASK);
    fields.push("vector", w(20), msg.vector);
    fields.push("error_code", w(21), msg.error_code);
    if w(23) & CHECK_CR2 != 0 {
        fields.push("cr2", w(22), msg.cr2);
    }
    Some(Checked {
        ok: fields.mismatches == 0,
        compared: Some((fields.compared, fields.mismatches)),
        first: fields.first,
        error: None,
    })
}

/// Running totals of a comparison.
#[derive(Default)]
struct Tally {
    compared: u64,
    mismatches: u64,
    /// The first field that differed: name, expected, got.
    first: Option<(&'static str, u64, u64)>,
}

impl Tally {
    fn push(&mut self, name: &'static str, expected: u64, got: u64) {
        self.compared += 1;
        if expected != got {
            self.mismatches += 1;
            self.first.get_or_insert((name, expected, got));
        }
    }
}
