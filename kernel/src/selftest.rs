//! Kernel test hooks, chosen with `test=NAME` on the kernel command line
//! (`cargo xtask run -- -append test=NAME`). The QEMU integration tests use
//! them to exercise the fatal paths; a normal boot runs none.
//!
//! Probes, armed with `probe=NAME`, run alongside a normal boot:
//!
//! * `probe=smap`: on every kernel entry from ring 3 whose interrupted
//!   RFLAGS has AC set (a task did `popf` with AC), the kernel tries to read
//!   8 bytes at the task's stack pointer *directly* — the one thing the
//!   kernel never does — and emits the check `smap_probe` (`value`: the
//!   entry's vector, 0x100 for `syscall`): ok when the read was refused
//!   (SMAP on, AC clear in ring 0: the page fault it takes is caught by the
//!   fixup in `trap::kernel_entry`) and the kernel's own RFLAGS.AC is clear.
//!   If an entry path forgot `clac`, or CR4.SMAP were off, the read
//!   succeeds and the check fails.

use crate::arch::trap_entry::TrapFrame;
use abi::exit::GuestExit;
use core::sync::atomic::{AtomicBool, Ordering};

/// `probe=smap` is on the command line.
pub static SMAP_PROBE: AtomicBool = AtomicBool::new(false);

/// Arms the probes named on the command line.
pub fn arm_probes(cmdline: &str) {
    if cmdline.split_whitespace().any(|w| w == "probe=smap") {
        crate::kprintln!("selftest: SMAP probe armed");
        SMAP_PROBE.store(true, Ordering::Relaxed);
    }
}

unsafe extern "C" {
    /// Reads the `u64` at `addr` from ring 0; returns 0 if it could, 1 if
    /// the read faulted (and was skipped by the fixup).
    fn rewind_smap_read(addr: u64) -> u64;
    static rewind_smap_read_load: u8;
    static rewind_smap_read_done: u8;
}

// Register contract: RDI = the address; RAX = 0, or 1 when the load at
// `rewind_smap_read_load` faulted and `smap_fixup` resumed at
// `rewind_smap_read_done` with RAX = 1; RCX clobbered (the value read).
core::arch::global_asm!(
    r#"
    .section .text.rewind_smap_read, "ax"
    .global rewind_smap_read
    .global rewind_smap_read_load
    .global rewind_smap_read_done
    .type rewind_smap_read, @function
rewind_smap_read:
    .cfi_startproc
    xor eax, eax
rewind_smap_read_load:
    mov rcx, qword ptr [rdi]
rewind_smap_read_done:
    ret
    .cfi_endproc
    .size rewind_smap_read, . - rewind_smap_read
    "#
);

/// The fixup for the probe's load: a ring-0 page fault at it resumes after
/// it with RAX = 1. Returns whether `f` was that fault.
pub fn smap_fixup(f: &mut TrapFrame) -> bool {
    let (load, done) =
        (core::ptr::addr_of!(rewind_smap_read_load) as u64, core::ptr::addr_of!(rewind_smap_read_done) as u64);
    if f.vector != 14 || f.rip != load {
        return false;
    }
    f.rip = done;
    f.rax = 1;
    true
}

/// The SMAP probe (module header) for an entry from ring 3 with AC set in
/// the interrupted RFLAGS, frame `f`.
#[cold]
#[inline(never)]
pub fn smap_probe(f: &TrapFrame) {
    let kernel_ac = crate::arch::rflags() & crate::arch::RFLAGS_AC != 0;
    let s = crate::sched::SCHED.lock();
    let Some(me) = s.current_index() else { return };
    let t = &s.tasks[me];
    // Only a present user page: an unmapped one would fault either way.
    let mapped = t
        .space
        .as_ref()
        .and_then(|sp| sp.translate(f.rsp))
        .is_some_and(|(_, fl)| fl.contains(x86_64::structures::paging::PageTableFlags::USER_ACCESSIBLE));
    if !mapped || f.rsp % 8 != 0 {
        return;
    }
    // SAFETY: reads 8 aligned bytes of a present user page of the current
    // address space (CR3 is the task's); under SMAP the read faults and the
    // fixup (`smap_fixup`) skips it. Nothing is written.
    let blocked = unsafe { rewind_smap_read(f.rsp) } != 0;
    let error = match (blocked, kernel_ac) {
        (true, false) => None,
        (_, true) => Some("RFLAGS.AC set in ring 0 after entry"),
        (false, false) => Some("ring 0 read user memory: SMAP off"),
    };
    crate::events::emit(&abi::event::Event::Check {
        task: Some(t.id as u64),
        task_name: Some(&t.name),
        name: "smap_probe",
        ok: error.is_none(),
        value: Some(f.vector),
        error,
    });
}

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
