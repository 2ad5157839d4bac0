//! Fatal paths: a kernel (ring-0) fault and a kernel panic.
//!
//! Both print a report meant for the person debugging the kernel on the
//! console, emit a `kernel_fault` or `kernel_panic` event for tools, and exit
//! QEMU with a distinct status (see `abi::exit`). They never return and
//! never hang: the console and event locks are broken first, since the
//! faulting code may have held them, and a fault *inside* the report (a
//! nested fatal path) skips straight to the exit.

use crate::arch::trap_entry::TrapFrame;
use crate::backtrace;
use crate::events;
use abi::event::Event;
use abi::exit::GuestExit;
use abi::trap::{Registers, exception_name};
use core::sync::atomic::{AtomicBool, Ordering};

static IN_FATAL: AtomicBool = AtomicBool::new(false);

/// Enters the fatal path once; a second entry (a fault while reporting)
/// exits at once with the same status class.
fn enter(code: GuestExit) {
    x86_64::instructions::interrupts::disable();
    if IN_FATAL.swap(true, Ordering::SeqCst) {
        crate::console::write_fmt_fatal(format_args!("\n!!! nested fault while reporting; exiting\n"));
        events::unlock_for_fatal();
        crate::power::exit(code);
    }
    events::unlock_for_fatal();
}

pub fn kernel_trap(frame: &TrapFrame, code: GuestExit) -> ! {
    enter(code);
    let vector = frame.vector as u8;
    let regs = frame.registers();
    let p = crate::console::write_fmt_fatal;
    p(format_args!(
        "\n!!! KERNEL FAULT: {} (vector {}) in ring {}\n    error code {:#x}  cr2 {:#018x}  rip {:#018x}\n",
        exception_name(vector),
        vector,
        frame.cs & 3,
        frame.error_code,
        frame.cr2,
        frame.rip
    ));
    print_registers(&regs);
    events::emit(&Event::KernelFault { vector: vector as u64, error_code: frame.error_code, cr2: frame.cr2, regs });
    report_backtrace(&regs);
    crate::power::exit(code)
}

pub fn kernel_panic(info: &core::panic::PanicInfo) -> ! {
    enter(GuestExit::KernelPanic);
    let regs = backtrace::current_registers();
    let p = crate::console::write_fmt_fatal;
    p(format_args!("\n!!! KERNEL PANIC: {}\n", info.message()));
    let (file, line) = info.location().map(|l| (l.file(), l.line())).unwrap_or(("?", 0));
    p(format_args!("    at {file}:{line}\n"));
    let text = events::text::<512>(format_args!("{}", info.message()));
    let message = info.message().as_str().unwrap_or(&text);
    events::emit(&Event::KernelPanic { message, file, line: line as u64 });
    report_backtrace(&regs);
    crate::power::exit(GuestExit::KernelPanic)
}

fn print_registers(regs: &Registers) {
    let named = regs.named();
    for row in named.chunks(4) {
        let mut line = heapless::String::<128>::new();
        for (name, value) in row {
            let _ = core::fmt::write(&mut line, format_args!("    {name:>7} {value:#018x}"));
        }
        crate::console::write_fmt_fatal(format_args!("{line}\n"));
    }
}

fn report_backtrace(regs: &Registers) {
    let p = crate::console::write_fmt_fatal;
    p(format_args!("    backtrace (from the kernel's .eh_frame):\n"));
    let mut depth = 0u64;
    let end = backtrace::walk(regs, |frame| {
        p(format_args!("    #{:<2} {:#018x} cfa={:#018x}\n", frame.index, frame.pc, frame.cfa));
        events::emit(&Event::BacktraceFrame { index: frame.index as u64, pc: frame.pc, cfa: frame.cfa });
        depth += 1;
    });
    p(format_args!("    end of backtrace after {depth} frames: {end:?}\n"));
    p(format_args!("    (symbolize with: addr2line -fCe <kernel ELF> <pc>; `cargo xtask run` does it for you)\n"));
}
