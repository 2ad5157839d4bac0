//! The Rewind kernel.
//!
//! Ring 0 has one job per module:
//!
//! | module      | job |
//! |-------------|-----|
//! | `boot`      | PVH entry (assembly) into long mode and the higher half; start info |
//! | `arch`      | GDT/TSS, IDT, trap entry stubs (assembly), legacy PIC, per-CPU data, AP bring-up (`smp`) |
//! | `trap`      | where every exception lands; decides what it means |
//! | `fatal`     | kernel fault and panic reports; never returns |
//! | `backtrace` | walks the kernel's own stack with its `.eh_frame` |
//! | `console`   | COM1 for people, and the `log` backend |
//! | `events`    | COM2 JSON-lines event stream for tools (`docs/events.md`) |
//! | `mem`       | frames, kernel heap, task address spaces |
//! | `task`      | tasks, their save areas, ELF loading, the boot image |
//! | `sched`     | priorities, round robin, ticks, idle, shutdown when all are done |
//! | `syscall`   | system call handlers (ABI in `abi::syscall`) |
//! | `ipc`       | endpoints, notifications, futexes |
//! | `recovery`  | the fault path top-down: fault delivery, supervision (`TASK_CTL`), checkpoints, page versions, restarts |
//! | `platform`  | ACPI discovery, local/I-O APIC, timer calibration |
//! | `inject`    | the fault injector: plans, the control channel, injections |
//! | `selftest`  | test hooks chosen on the kernel command line |
//! | `power`     | the `shutdown` event and QEMU exit |
//!
//! Boot order (`kmain`): console and event stream first, so that anything
//! after them can report; then CPU tables, so that a fault is caught and
//! reported rather than triple-faulting; then the start info, memory, the
//! platform (ACPI, APICs, timers), then the application processors (started
//! and waiting: `arch::smp`), then the tasks, which every CPU then runs
//! (`sched::start`, `sched::start_ap`).
#![no_std]
#![no_main]

mod arch;
mod backtrace;
mod boot;
mod console;
mod events;
mod fatal;
mod inject;
mod ipc;
mod mem;
mod platform;
mod power;
mod recovery;
mod sched;
mod selftest;
mod syscall;
mod task;
mod trap;
mod uart;

extern crate alloc;

use abi::event::Event;
use abi::exit::GuestExit;

/// The version reported in the banner and the `boot` event.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Entered from `boot/entry.rs` on the boot stack, interrupts off.
#[unsafe(no_mangle)]
extern "C" fn kmain(start_info_paddr: u64) -> ! {
    console::init();
    events::init();
    arch::init();
    // SAFETY: the boot CPU, once, interrupts off, before anything reads GS.
    unsafe { arch::percpu::init(0, 0, boot::boot_stack_top()) };
    arch::syscall_entry::init();
    let protections = arch::enable_protections();
    drop_identity_map();

    // SAFETY: `start_info_paddr` is the EBX value QEMU passed to the PVH entry.
    let info = match unsafe { boot::pvh::StartInfo::from_phys(start_info_paddr) } {
        Ok(info) => info,
        Err(e) => {
            kprintln!("rewind: unusable PVH start info: {e}");
            events::emit(&Event::BootError { error: &events::text::<256>(format_args!("{e}")) });
            power::exit(GuestExit::BootError);
        }
    };

    // The boot modules (the task image) must survive frame allocation.
    let mut reserved: heapless::Vec<(u64, u64), 16> = heapless::Vec::new();
    for m in info.modules {
        let _ = reserved.push((m.paddr, m.paddr.saturating_add(m.size)));
    }
    let frames = mem::init(info.memmap, &reserved);

    let ram = info.ram_bytes();
    kprintln!("Rewind {VERSION} — tasks that survive their own faults");
    kprintln!("  {} MiB RAM in {} regions, RSDP at {:#x}", ram >> 20, info.memmap.len(), info.rsdp_paddr);
    if !info.cmdline.is_empty() {
        kprintln!("  command line: {}", info.cmdline);
    }
    events::emit(&Event::Boot {
        version: VERSION,
        mem_bytes: ram,
        memmap_entries: info.memmap.len() as u64,
        rsdp: info.rsdp_paddr,
        cmdline: info.cmdline,
        pvh_version: info.version as u64,
        free_frames: frames.free_frames as u64,
        ram_above_4g_ignored: frames.ignored_bytes,
        smep: protections.smep,
        smap: protections.smap,
    });

    let platform = match platform::init(info.rsdp_paddr) {
        Ok(platform) => platform,
        Err(e) => {
            kprintln!("rewind: platform discovery failed: {e}");
            events::emit(&Event::BootError { error: &events::text::<256>(format_args!("{e}")) });
            power::exit(GuestExit::BootError);
        }
    };

    arch::smp::start(platform, &info);

    selftest::arm_probes(info.cmdline);
    if let Some(code) = selftest::run(info.cmdline) {
        power::exit(code);
    }

    let Some(module) = info.modules.first() else {
        kprintln!("no boot image: nothing to run");
        power::exit(GuestExit::Success);
    };
    let image = mem::phys_slice(module.paddr, module.size);
    let started = task::boot_image::start_tasks(image);
    kprintln!("started {started} tasks");
    if let Some(plan) = abi::image::parse(image).ok().and_then(|i| abi::image::plan(image, i.size())) {
        kprintln!("fault injection plan: {} lines", plan.lines().count());
        inject::load_plan(&mut sched::SCHED.lock(), plan);
    }
    platform.start_timer(sched::TICK_HZ);
    sched::start()
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
