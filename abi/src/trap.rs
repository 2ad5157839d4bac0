//! CPU exception vectors and the saved register file.

/// The integer register file as saved by the kernel's trap entry stubs.
///
/// This is the register part of a fault message and of a kernel fault
/// report: all 15 general-purpose registers, the interrupted RIP, RSP,
/// RFLAGS, CS and SS, and the FS and GS bases.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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

impl Registers {
    /// Name/value pairs in a fixed order, for reports and events.
    pub fn named(&self) -> [(&'static str, u64); 22] {
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
    fn names_cover_the_common_faults() {
        assert_eq!(exception_name(14), "page_fault");
        assert_eq!(exception_name(6), "invalid_opcode");
        assert_eq!(exception_name(15), "reserved");
        assert!(has_error_code(14) && !has_error_code(6));
    }
}
