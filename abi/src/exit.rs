//! How the guest tells the host it is done.
//!
//! The kernel writes a [`GuestExit`] code to QEMU's `isa-debug-exit` device
//! at [`DEBUG_EXIT_PORT`]; QEMU then exits with status `(code << 1) | 1`.
//! A QEMU status of 0 therefore never comes from the kernel: it means the
//! machine reset itself (a triple fault, with `-no-reboot`).

/// I/O port of QEMU's `isa-debug-exit` device (`iobase=0xf4,iosize=0x04`).
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// Codes the kernel writes to the debug-exit port. Each maps to a distinct
/// QEMU (and `cargo xtask run`) exit status.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestExit {
    /// Clean shutdown: every check passed.
    Success = 0,
    /// A kernel self-test or invariant check failed.
    CheckFailed = 1,
    /// Rust panic in the kernel.
    KernelPanic = 2,
    /// CPU exception in ring 0 (a kernel bug).
    KernelFault = 3,
    /// Double fault, NMI or machine check: the kernel cannot continue.
    FatalTrap = 4,
    /// The boot information was unusable.
    BootError = 5,
}

impl GuestExit {
    pub const ALL: [GuestExit; 6] = [
        GuestExit::Success,
        GuestExit::CheckFailed,
        GuestExit::KernelPanic,
        GuestExit::KernelFault,
        GuestExit::FatalTrap,
        GuestExit::BootError,
    ];

    /// QEMU's process exit status for this code.
    pub const fn qemu_status(self) -> i32 {
        ((self as i32) << 1) | 1
    }

    /// The guest code behind a QEMU exit status, if the kernel wrote one.
    pub fn from_qemu_status(status: i32) -> Option<GuestExit> {
        Self::ALL.into_iter().find(|e| e.qemu_status() == status)
    }

    /// Short name used in events and reports.
    pub const fn name(self) -> &'static str {
        match self {
            GuestExit::Success => "success",
            GuestExit::CheckFailed => "check_failed",
            GuestExit::KernelPanic => "kernel_panic",
            GuestExit::KernelFault => "kernel_fault",
            GuestExit::FatalTrap => "fatal_trap",
            GuestExit::BootError => "boot_error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_distinct_odd_and_round_trip() {
        for (i, a) in GuestExit::ALL.iter().enumerate() {
            assert_eq!(a.qemu_status() & 1, 1);
            assert_eq!(GuestExit::from_qemu_status(a.qemu_status()), Some(*a));
            for b in &GuestExit::ALL[i + 1..] {
                assert_ne!(a.qemu_status(), b.qemu_status());
            }
        }
        assert_eq!(GuestExit::from_qemu_status(0), None);
    }
}
