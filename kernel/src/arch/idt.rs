//! The interrupt descriptor table.
//!
//! A typed gate array of our own rather than `x86_64`'s IDT type, because
//! every one of the 32 exception vectors (reserved ones included) must point
//! at our assembly stubs, and the stubs are plain addresses, not Rust
//! handler functions. Vectors 32..256 go to the interrupt stubs.

use super::gdt;
use super::trap_entry::{IRQ_STUB_STRIDE, IRQ_STUBS, TRAP_STUBS};
use x86_64::VirtAddr;
use x86_64::instructions::tables::lidt;
use x86_64::structures::DescriptorTablePointer;

/// One 64-bit interrupt gate (Intel SDM vol. 3, 6.14.1).
#[repr(C)]
#[derive(Clone, Copy)]
struct Gate {
    offset_low: u16,
    selector: u16,
    /// Bits 0-2: IST index; 8-11: type; 13-14: DPL; 15: present.
    options: u16,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

const _: () = assert!(core::mem::size_of::<Gate>() == 16);

const GATE_INTERRUPT: u16 = 0xe << 8;
const GATE_PRESENT: u16 = 1 << 15;

impl Gate {
    const MISSING: Gate = Gate { offset_low: 0, selector: 0, options: 0, offset_mid: 0, offset_high: 0, reserved: 0 };

    fn interrupt(handler: u64, selector: u16, ist: u8, dpl: u16) -> Gate {
        Gate {
            offset_low: handler as u16,
            selector,
            options: GATE_PRESENT | GATE_INTERRUPT | (dpl & 3) << 13 | (ist as u16 & 0x7),
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt([Gate; 256]);

static mut IDT: Idt = Idt([Gate::MISSING; 256]);

pub fn init() {
    let cs = gdt::selectors().kernel_code.0;
    // SAFETY: runs once during single-threaded boot with interrupts off, so
    // nothing reads the IDT while it is written; `TRAP_STUBS` is a read-only
    // table of stub addresses emitted by `trap_entry.rs`.
    unsafe {
        let idt = &mut *core::ptr::addr_of_mut!(IDT);
        for (vector, stub) in TRAP_STUBS.iter().enumerate() {
            let ist = match vector {
                2 => gdt::IST_NMI,
                8 => gdt::IST_DOUBLE_FAULT,
                18 => gdt::IST_MACHINE_CHECK,
                _ => 0,
            };
            // `int3` and `into` may be used from ring 3 (they then arrive as
            // ordinary faults); any other `int n` from ring 3 is a #GP.
            let dpl = if matches!(vector, 3 | 4) { 3 } else { 0 };
            idt.0[vector] = Gate::interrupt(*stub, cs, ist, dpl);
        }
        let irq_base = core::ptr::addr_of!(IRQ_STUBS) as u64;
        for vector in 32..256 {
            idt.0[vector] = Gate::interrupt(irq_base + (vector as u64 - 32) * IRQ_STUB_STRIDE, cs, 0, 0);
        }
    }
    load();
}

/// Loads the IDT on the calling CPU (the boot CPU in `init`; each
/// application processor once `init` has run: all CPUs share one IDT).
pub fn load() {
    let pointer = DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: VirtAddr::new(core::ptr::addr_of!(IDT) as u64),
    };
    // SAFETY: the IDT is a static, filled by `init` before any CPU loads it
    // and never written again.
    unsafe { lidt(&pointer) };
}
