//! Kernel backtraces from the kernel's own `.eh_frame`.
//!
//! The fatal paths walk the kernel stack with the same CFI walker the fault
//! server uses (`fault-server/walker`), over the kernel's `.eh_frame_hdr` and
//! `.eh_frame` (every function has an FDE: build-std with unwind tables).
//! The walk reads memory only inside the kernel image (where the boot and
//! IST stacks live), so a corrupt stack pointer ends the walk with a reason
//! instead of faulting again. The kernel has no symbol table loaded, so
//! frames are printed as addresses; `cargo xtask run` and the tests
//! symbolize the `backtrace_frame` events with the kernel ELF afterwards.

use abi::trap::Registers;
use walker::{Image, Memory, Regs, Stop, Walker};

/// One frame of a walk.
pub struct Frame {
    pub index: usize,
    pub pc: u64,
    pub cfa: u64,
}

unsafe extern "C" {
    static __eh_frame_hdr_start: u8;
    static __eh_frame_hdr_end: u8;
    static __eh_frame_start: u8;
    static __eh_frame_end: u8;
    static __text_start: u8;
    static __kernel_end: u8;
}

/// `[start, end)` of a linker-script section.
fn section(start: *const u8, end: *const u8) -> &'static [u8] {
    let len = (end as usize).saturating_sub(start as usize);
    // SAFETY: the linker script defines both symbols around a loaded,
    // read-only section of the kernel image, mapped for the kernel's lifetime.
    unsafe { core::slice::from_raw_parts(start, len) }
}

/// Reads inside the kernel image only (its stacks are there).
struct KernelMemory {
    start: u64,
    end: u64,
}

impl Memory for KernelMemory {
    fn read_u64(&self, addr: u64) -> Option<u64> {
        if addr % 8 != 0 || addr < self.start || addr.checked_add(8)? > self.end {
            return None;
        }
        // SAFETY: the address is 8-aligned and inside the kernel image,
        // which is mapped readable for the kernel's lifetime.
        Some(unsafe { core::ptr::read_volatile(addr as *const u64) })
    }
}

/// The registers of the caller, at the point of the call (for panics).
#[inline(always)]
pub fn current_registers() -> Registers {
    let (rip, rsp, rbp): (u64, u64, u64);
    // SAFETY: reads RIP (via LEA), RSP and RBP into general registers; no
    // memory is touched and the stack is not changed.
    unsafe {
        core::arch::asm!("lea {0}, [rip]", "mov {1}, rsp", "mov {2}, rbp", out(reg) rip, out(reg) rsp, out(reg) rbp, options(nomem, nostack, preserves_flags));
    }
    Registers { rip, rsp, rbp, ..Registers::default() }
}

fn dwarf(r: &Registers) -> Regs {
    Regs::from_dwarf_array([
        r.rax, r.rdx, r.rcx, r.rbx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15,
        r.rip,
    ])
}

/// Walks the kernel stack from `regs`, calling `visit` per frame; returns
/// why the walk stopped.
pub fn walk(regs: &Registers, mut visit: impl FnMut(&Frame)) -> Stop {
    let (hdr, eh, text, end) = (
        core::ptr::addr_of!(__eh_frame_hdr_start),
        core::ptr::addr_of!(__eh_frame_start),
        core::ptr::addr_of!(__text_start) as u64,
        core::ptr::addr_of!(__kernel_end) as u64,
    );
    let hdr_bytes = section(hdr, core::ptr::addr_of!(__eh_frame_hdr_end));
    let eh_bytes = section(eh, core::ptr::addr_of!(__eh_frame_end));
    let image = match Image::from_hdr(hdr_bytes, hdr as u64, eh_bytes, eh as u64) {
        Ok(image) => image,
        Err(_) => Image::scan(eh_bytes, eh as u64),
    };
    let memory = KernelMemory { start: text, end };
    let mut walker: Walker<'_, 8> = Walker::new();
    walker.max_depth = 64;
    let mut index = 0;
    walker.walk(&image, dwarf(regs), &memory, |f| {
        visit(&Frame { index, pc: f.pc, cfa: f.cfa });
        index += 1;
        true
    })
}
