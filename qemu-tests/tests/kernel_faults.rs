//! A ring-0 fault or panic ends in a clear report and a distinct status.

use abi::exit::GuestExit;
use qemu_tests::{Run, Symbols, boot, hex};

/// The functions of the kernel backtrace in `run`'s events, innermost first,
/// named with the kernel ELF's symbols (the guest has none).
fn frame_names(run: &Run) -> Vec<String> {
    let symbols = Symbols::of(&qemu_tests::kernel()).unwrap();
    run.events_of("backtrace_frame").iter().map(|f| symbols.name(hex(&f["pc"])).unwrap_or("?").to_string()).collect()
}

#[test]
fn kernel_page_fault_is_reported_with_cr2_and_registers() {
    let run = boot("kfault-page-fault", "test=page-fault");
    run.expect_exit(GuestExit::KernelFault);
    let ev = run.event("kernel_fault");
    assert_eq!(ev["vector"], 14);
    assert_eq!(ev["name"], "page_fault");
    assert_eq!(hex(&ev["cr2"]), 0xdead000, "CR2 is the address the selftest read");
    // A supervisor read of a non-present page: error code P=0, W=0, U=0.
    assert_eq!(hex(&ev["error_code"]) & 0b111, 0);
    let regs = &ev["regs"];
    assert_eq!(hex(&regs["rip"]), hex(&ev["rip"]));
    assert_eq!(hex(&regs["cs"]) & 3, 0, "ring 0");
    for reg in [
        "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rsp",
        "rflags", "ss", "fs_base", "gs_base",
    ] {
        assert!(regs.get(reg).is_some(), "register {reg} missing from the report");
    }
    assert!(run.console.contains("KERNEL FAULT: page_fault (vector 14)"), "console:\n{}", run.console);
    assert!(run.console.contains("cr2 0x000000000dead000"), "console:\n{}", run.console);
    assert_eq!(run.event("shutdown")["reason"], "kernel_fault");

    // The backtrace, walked in the guest with the kernel's own .eh_frame,
    // names the path from the entry point to the fault.
    let frames = frame_names(&run);
    for expected in ["kernel::selftest::run", "kmain", "kernel_entry64"] {
        assert!(frames.iter().any(|f| f == expected), "no frame {expected} in {frames:?}");
    }
    assert_eq!(
        frames.last().map(String::as_str),
        Some("kernel_entry64"),
        "the walk ends at the entry point: {frames:?}"
    );
    assert!(run.console.contains("Outermost"), "the walk ended cleanly:\n{}", run.console);
}

#[test]
fn kernel_invalid_opcode_is_reported() {
    let run = boot("kfault-invalid-opcode", "test=invalid-opcode");
    run.expect_exit(GuestExit::KernelFault);
    let ev = run.event("kernel_fault");
    assert_eq!(ev["vector"], 6);
    assert!(run.console.contains("KERNEL FAULT: invalid_opcode"));
}

#[test]
fn kernel_divide_error_is_reported() {
    let run = boot("kfault-divide-error", "test=divide-error");
    run.expect_exit(GuestExit::KernelFault);
    assert_eq!(run.event("kernel_fault")["vector"], 0);
}

#[test]
fn kernel_panic_is_reported_with_message_and_location() {
    let run = boot("kfault-panic", "test=panic");
    run.expect_exit(GuestExit::KernelPanic);
    let ev = run.event("kernel_panic");
    assert_eq!(ev["message"], "selftest panic requested on the command line");
    assert_eq!(ev["file"], "kernel/src/selftest.rs");
    assert!(run.console.contains("KERNEL PANIC: selftest panic requested"));
    let frames = frame_names(&run);
    assert!(
        frames.iter().any(|f| f.contains("kernel_panic")),
        "the panic backtrace starts in the panic path: {frames:?}"
    );
    assert_eq!(frames.last().map(String::as_str), Some("kernel_entry64"), "{frames:?}");
}
