//! x86_64 CPU setup: segmentation and TSS, the IDT, trap entry, the legacy
//! PIC, SMEP/SMAP, the tasks' x87/SSE state (`fpu`), per-CPU data
//! (`percpu`) and application-processor bring-up (`smp`).

pub mod fpu;
pub mod gdt;
pub mod idt;
pub mod percpu;
pub mod pic;
pub mod smp;
pub mod syscall_entry;
pub mod trap_entry;

/// Reads the time stamp counter (under `-icount shift=0`: guest instructions).
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no memory effects; CR4.TSD is clear, so it is allowed.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Sets up the GDT/TSS, the IDT and the PIC. Interrupts stay disabled.
pub fn init() {
    gdt::init();
    idt::init();
    pic::remap_and_mask();
}

/// Which CPU protections are on.
pub struct Protections {
    pub smep: bool,
    pub smap: bool,
}

/// Whether CR4.SMAP is on: `trap_common` then executes `clac` on entry
/// (`clac` is an invalid opcode on a CPU without SMAP, and without SMAP
/// RFLAGS.AC means nothing in ring 0). Written once at boot, before
/// interrupts are enabled or any task runs; read by the trap stub.
#[unsafe(no_mangle)]
pub static mut REWIND_SMAP_ON: u8 = 0;

/// RFLAGS.AC: with SMAP on, ring 0 may touch user pages while it is set.
pub const RFLAGS_AC: u64 = 1 << 18;

/// The kernel's own RFLAGS right now.
pub fn rflags() -> u64 {
    x86_64::registers::rflags::read_raw()
}

/// Turns on SMEP (no kernel execution of user pages) and SMAP (no kernel
/// access to user pages; the kernel reaches task memory only through the
/// direct map) when the CPU has them (`-cpu max` does, and xtask always
/// boots QEMU with it; the `boot` event says which are on). Every kernel
/// entry runs with RFLAGS.AC clear, whatever ring 3 set with `popf`: the
/// `syscall` entry through `IA32_FMASK`, the exception and interrupt
/// stubs with `clac` (`trap_entry.rs`); a supervisor cannot set AC for a
/// task (`recovery/supervise.rs` `sanitize`) — not that it would matter,
/// AC in ring 3 only enables alignment checks there.
pub fn enable_protections() -> Protections {
    let p = set_protection_bits();
    // SAFETY: one CPU, interrupts off, no task has run yet: nothing reads
    // the flag concurrently.
    unsafe { REWIND_SMAP_ON = p.smap as u8 };
    fpu::init();
    p
}

/// An application processor's share of [`enable_protections`]: the same
/// CR4 bits and FPU control bits on this CPU (the shared flags were set by
/// the boot CPU, and all CPUs of a machine report the same features).
pub fn enable_protections_this_cpu() {
    set_protection_bits();
    fpu::init_this_cpu();
}

fn set_protection_bits() -> Protections {
    // CPUID leaf 7 (structured extended features): EBX bit 7 SMEP, bit 20 SMAP.
    let ebx = core::arch::x86_64::__cpuid_count(7, 0).ebx;
    let p = Protections { smep: ebx & (1 << 7) != 0, smap: ebx & (1 << 20) != 0 };
    use x86_64::registers::control::{Cr4, Cr4Flags};
    // SAFETY: setting SMEP/SMAP only restricts ring 0's access to user
    // pages, which the kernel never touches directly.
    unsafe {
        Cr4::update(|f| {
            f.set(Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION, p.smep);
            f.set(Cr4Flags::SUPERVISOR_MODE_ACCESS_PREVENTION, p.smap);
        })
    };
    p
}

/// Halts forever with interrupts disabled.
pub fn halt_forever() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}
