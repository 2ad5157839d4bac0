//! The legacy 8259 PIC pair.
//!
//! The firmware leaves it delivering IRQ 0 at vector 8, which is the double
//! fault vector: the first timer tick after `sti` would look like a double
//! fault. We move it to vectors 32..48 and mask every line; the kernel uses
//! the local APIC for its timer.

use x86_64::instructions::port::Port;

/// First vector of the remapped PIC lines (master), +8 for the slave.
pub const PIC_VECTOR_BASE: u8 = 32;

pub fn remap_and_mask() {
    let mut master_cmd: Port<u8> = Port::new(0x20);
    let mut master_data: Port<u8> = Port::new(0x21);
    let mut slave_cmd: Port<u8> = Port::new(0xa0);
    let mut slave_data: Port<u8> = Port::new(0xa1);
    // SAFETY: ports 0x20/0x21/0xa0/0xa1 are the PIC pair on the PC platform;
    // the ICW1..ICW4 sequence below is the documented initialisation.
    unsafe {
        master_cmd.write(0x11); // ICW1: init, expect ICW4
        slave_cmd.write(0x11);
        master_data.write(PIC_VECTOR_BASE); // ICW2: vector offsets
        slave_data.write(PIC_VECTOR_BASE + 8);
        master_data.write(4); // ICW3: slave on IRQ2
        slave_data.write(2);
        master_data.write(0x01); // ICW4: 8086 mode
        slave_data.write(0x01);
        master_data.write(0xff); // mask everything
        slave_data.write(0xff);
    }
}
