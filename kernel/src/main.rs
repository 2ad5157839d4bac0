//! The Rewind kernel.
//!
//! Ring 0 has one job per module:
//!
//! | module      | job |
//! |-------------|-----|
//! | `boot`      | PVH entry (assembly) into long mode and the higher half; start info |
//! | `arch`      | GDT/TSS, IDT, trap entry stubs (assembly), legacy PIC |
//! | `trap`      | where every exception lands; decides what it means |
//! | `fatal`     | kernel fault and panic reports; never returns |
//! | `backtrace` | walks the kernel's own stack with its `.eh_frame` |
//! | `console`   | COM1 for people, and the `log` backend |
//! | `events`    | COM2 JSON-lines event stream for tools (`docs/events.md`) |
//! | `selftest`  | test hooks chosen on the kernel command line |
//! | `power`     | the `shutdown` event and QEMU exit |
//! | `mem`       | the kernel address-space layout |
//!
//! Boot order (`kmain`): console and event stream first, so that anything
//! after them can report; then CPU tables, so that a fault is caught and
//! reported rather than triple-faulting; then the start info.
#![no_std]
#![no_main]

mod arch;
mod backtrace;
mod boot;
mod console;
mod events;
mod fatal;
mod mem;
mod power;
mod selftest;
mod trap;

use abi::exit::GuestExit;
use events::Event;

/// The version reported in the banner and the `boot` event.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Entered from `boot/entry.rs` on the boot stack, interrupts off.
#[unsafe(no_mangle)]
extern "C" fn kmain(start_info_paddr: u64) -> ! {
    console::init();
    events::init();
    arch::init();
    drop_identity_map();

    // SAFETY: `start_info_paddr` is the EBX value QEMU passed to the PVH entry.
    let info = match unsafe { boot::pvh::StartInfo::from_phys(start_info_paddr) } {
        Ok(info) => info,
        Err(e) => {
            kprintln!("rewind: unusable PVH start info: {e:?}");
            Event::new("boot_error").display("error", format_args!("{e:?}")).emit();
            power::exit(GuestExit::BootError);
        }
    };

    let ram = info.ram_bytes();
    kprintln!("Rewind {VERSION} — tasks that survive their own faults");
    kprintln!("  {} MiB RAM in {} regions, RSDP at {:#x}", ram >> 20, info.memmap.len(), info.rsdp_paddr);
    if !info.cmdline.is_empty() {
        kprintln!("  command line: {}", info.cmdline);
    }
    Event::new("boot")
        .str("version", VERSION)
        .u64("mem_bytes", ram)
        .u64("memmap_entries", info.memmap.len() as u64)
        .hex("rsdp", info.rsdp_paddr)
        .str("cmdline", info.cmdline)
        .emit();

    // Interrupts on: the PIC is remapped and masked, so nothing arrives yet,
    // but a stray one would now be reported instead of mistaken for a fault.
    x86_64::instructions::interrupts::enable();

    let code = selftest::run(info.cmdline);
    x86_64::instructions::interrupts::disable();
    power::exit(code)
}

/// Removes the boot identity map (PML4 slot 0), so that null and other
/// low-address accesses fault from now on.
fn drop_identity_map() {
    use x86_64::registers::control::Cr3;
    let (frame, flags) = Cr3::read();
    let pml4 = mem::phys_to_virt(frame.start_address().as_u64()) as *mut u64;
    // SAFETY: CR3 points at the boot PML4, reachable through the direct map
    // (PML4 slot 256). Slot 0 is the identity map, which nothing uses once we
    // run in the higher half. Reloading CR3 flushes the stale translations.
    unsafe {
        pml4.write_volatile(0);
        Cr3::write(frame, flags);
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    fatal::kernel_panic(info)
}
