//! Kernel test hooks, chosen with `test=NAME` on the kernel command line
//! (`cargo xtask run -- -append test=NAME`). The QEMU integration tests use
//! them to exercise the fatal paths; a normal boot runs none.

use abi::exit::GuestExit;

/// Runs the test named on the command line, if any; returns the exit code.
pub fn run(cmdline: &str) -> Option<GuestExit> {
    let name = cmdline.split_whitespace().find_map(|w| w.strip_prefix("test="))?;
    crate::kprintln!("selftest: {name}");
    Some(match name {
        "page-fault" => page_fault(),
        "invalid-opcode" => {
            // SAFETY: deliberately raises #UD to test the fatal trap path.
            unsafe { core::arch::asm!("ud2") };
            GuestExit::CheckFailed
        }
        "divide-error" => divide_error(),
        "panic" => panic!("selftest panic requested on the command line"),
        other => {
            crate::kprintln!("selftest: unknown test {other:?}");
            let error = crate::events::text::<300>(format_args!("unknown test {other:?}"));
            crate::events::emit(&abi::event::Event::Check {
                task: None,
                task_name: None,
                name: "selftest",
                ok: false,
                value: None,
                error: Some(&error),
            });
            GuestExit::CheckFailed
        }
    })
}

#[inline(never)]
fn page_fault() -> GuestExit {
    // An address in the lower half, unmapped since the identity map is gone.
    let p = core::hint::black_box(0x0000_0dea_d000u64) as *const u64;
    // SAFETY: none; this read is meant to fault and end in the fatal report.
    let v = unsafe { core::ptr::read_volatile(p) };
    core::hint::black_box(v);
    GuestExit::CheckFailed
}

#[inline(never)]
fn divide_error() -> GuestExit {
    let zero = core::hint::black_box(0u64);
    let q: u64;
    // SAFETY: deliberately divides by zero to raise #DE; only registers change.
    unsafe { core::arch::asm!("div {0}", in(reg) zero, inout("rax") 1u64 => q, inout("rdx") 0u64 => _) };
    core::hint::black_box(q);
    GuestExit::CheckFailed
}
