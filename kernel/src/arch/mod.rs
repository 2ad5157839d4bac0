//! x86_64 CPU setup: segmentation and TSS, the IDT, trap entry, the legacy PIC.

pub mod gdt;
pub mod idt;
pub mod pic;
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

/// Halts forever with interrupts disabled.
pub fn halt_forever() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}
