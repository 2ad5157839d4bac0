//! Ending the machine: the `shutdown` event, then QEMU's debug-exit port.

use abi::exit::{DEBUG_EXIT_PORT, GuestExit};
use x86_64::instructions::port::Port;

/// Emits `shutdown` and exits QEMU with `code`. If the debug-exit device is
/// absent (QEMU started by hand without it), says so and halts.
pub fn exit(code: GuestExit) -> ! {
    crate::events::emit(&abi::event::Event::Shutdown { code: code as u64 });
    let mut port: Port<u32> = Port::new(DEBUG_EXIT_PORT);
    // SAFETY: writing to the isa-debug-exit port has no effect on memory; on
    // QEMU with the device it ends the process, elsewhere it is ignored.
    unsafe { port.write(code as u32) };
    crate::kprintln!(
        "rewind: halted ({}); add -device isa-debug-exit,iobase=0xf4,iosize=0x04 to let QEMU exit",
        code.name()
    );
    crate::arch::halt_forever()
}
