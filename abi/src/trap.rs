//! CPU exception vectors and the saved register file.

/// The integer register file as saved by the kernel's trap entry stubs.
///
/// This is the register part of a fault message and of a kernel fault
/// report: all 15 general-purpose registers, the interrupted RIP, RSP,
/// RFLAGS, CS and SS, and the FS and GS bases.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Registers {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rsp: u64,
    pub rflags: u64,
    pub cs: u64,
    pub ss: u64,
    pub fs_base: u64,
    pub gs_base: u64,
}

/// Number of registers in [`Registers`].
pub const REGISTER_COUNT: usize = 22;
/// Size of [`Registers`] as little-endian bytes.
pub const REGISTERS_BYTES: usize = REGISTER_COUNT * 8;

impl Registers {
    /// The registers as little-endian bytes, in [`Registers::named`] order.
    pub fn to_bytes(&self) -> [u8; REGISTERS_BYTES] {
        let mut out = [0u8; REGISTERS_BYTES];
        for (i, (_, v)) in self.named().iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Parses [`Registers::to_bytes`]'s format; `None` if too short.
    pub fn from_bytes(b: &[u8]) -> Option<Registers> {
        if b.len() < REGISTERS_BYTES {
            return None;
        }
        let w = |i: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&b[i * 8..i * 8 + 8]);
            u64::from_le_bytes(word)
        };
        Some(Registers {
            rax: w(0),
            rbx: w(1),
            rcx: w(2),
            rdx: w(3),
            rsi: w(4),
            rdi: w(5),
            rbp: w(6),
            r8: w(7),
            r9: w(8),
            r10: w(9),
            r11: w(10),
            r12: w(11),
            r13: w(12),
            r14: w(13),
            r15: w(14),
            rip: w(15),
            rsp: w(16),
            rflags: w(17),
            cs: w(18),
            ss: w(19),
            fs_base: w(20),
            gs_base: w(21),
        })
    }

    /// Name/value pairs in a fixed order, for reports and events.
    pub fn named(&self) -> [(&'static str, u64); REGISTER_COUNT] {
        [
            ("rax", self.rax),
            ("rbx", self.rbx),
            ("rcx", self.rcx),
            ("rdx", self.rdx),
            ("rsi", self.rsi),
            ("rdi", self.rdi),
            ("rbp", self.rbp),
            ("r8", self.r8),
            ("r9", self.r9),
            ("r10", self.r10),
            ("r11", self.r11),
            ("r12", self.r12),
            ("r13", self.r13),
            ("r14", self.r14),
            ("r15", self.r15),
            ("rip", self.rip),
            ("rsp", self.rsp),
            ("rflags", self.rflags),
            ("cs", self.cs),
            ("ss", self.ss),
            ("fs_base", self.fs_base),
            ("gs_base", self.gs_base),
        ]
    }
}

/// Exception vectors that push an error code.
pub const fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10 | 11 | 12 | 13 | 14 | 17 | 21 | 29 | 30)
}

/// Architectural name of exception vector `vector` (0..32).
pub const fn exception_name(vector: u8) -> &'static str {
    match vector {
        0 => "divide_error",
        1 => "debug",
        2 => "nmi",
        3 => "breakpoint",
        4 => "overflow",
        5 => "bound_range",
        6 => "invalid_opcode",
        7 => "device_not_available",
        8 => "double_fault",
        9 => "coprocessor_segment_overrun",
        10 => "invalid_tss",
        11 => "segment_not_present",
        12 => "stack_segment",
        13 => "general_protection",
        14 => "page_fault",
        16 => "x87_floating_point",
        17 => "alignment_check",
        18 => "machine_check",
        19 => "simd_floating_point",
        20 => "virtualization",
        21 => "control_protection",
        28 => "hypervisor_injection",
        29 => "vmm_communication",
        30 => "security",
        0..=31 => "reserved",
        _ => "interrupt",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_round_trip_through_bytes() {
        let mut r = Registers::default();
        for (i, v) in [&mut r.rax, &mut r.r15, &mut r.rip, &mut r.gs_base].into_iter().enumerate() {
            *v = 0x1111 * (i as u64 + 1);
        }
        assert_eq!(Registers::from_bytes(&r.to_bytes()), Some(r));
        assert_eq!(Registers::from_bytes(&[0; 8]), None);
    }

    #[test]
    fn names_cover_the_common_faults() {
        assert_eq!(exception_name(14), "page_fault");
        assert_eq!(exception_name(6), "invalid_opcode");
        assert_eq!(exception_name(15), "reserved");
        assert!(has_error_code(14) && !has_error_code(6));
    }
}
