//! Application-processor bring-up: INIT–SIPI–SIPI, a real-mode trampoline,
//! and each AP's own CPU tables. The APs then wait for the tasks to be
//! loaded and run them (`sched`: one scheduler under one lock, per-CPU
//! current task; per-CPU run queues and finer locks are the next step).
//!
//! # Sequence ([`start`], on the boot CPU, interrupts off, before any task)
//!
//! 1. Pick a free 4 KiB page below 1 MiB for the trampoline (a startup IPI
//!    can only name a page `VV000`): RAM in the memory map, not page 0
//!    (real-mode IVT, BIOS data), not under the PVH start info's own
//!    structures. The frame allocator never hands out the first MiB, so the
//!    page stays ours. Copy the trampoline there and build its page tables:
//!    a PML4 whose slots 256 (direct map) and 511 (kernel image) are the
//!    kernel's, and whose slot 0 identity-maps the first 2 MiB (one 2 MiB
//!    page) so the trampoline keeps running when paging comes on.
//! 2. For each enabled MADT processor other than the boot CPU, one at a
//!    time: give it a CPU index, a 16 KiB kernel stack and three 16 KiB IST
//!    stacks (frames, through the direct map), write them into the
//!    trampoline's data block, send INIT, wait 10 ms, send a startup IPI,
//!    wait 200 µs, and if it is not online yet a second one (the MP spec's
//!    sequence). Then wait up to [`ONLINE_TIMEOUT_MS`] for it to report.
//! 3. A CPU that does not report in time gets INIT again (back to
//!    wait-for-SIPI, so a late start cannot run a trampoline already
//!    rewritten for the next CPU), a `cpu_failed` event, and is left out;
//!    its index goes to the next CPU. Bring-up never waits unboundedly.
//! 4. One `smp` event: the MADT's count and how many CPUs are online.
//!
//! Each AP, in [`ap_main`]: its own GDT and TSS (IST stacks), the shared
//! IDT, its `PerCpu` block in GS, the `syscall` MSRs, SMEP/SMAP and the
//! FPU control bits, its local APIC (same setup as the boot CPU's, checked
//! against the APIC id it was started as); then it marks itself online and
//! halts until the boot CPU has loaded the tasks ([`wake_all`]), and
//! enters the scheduler (`sched::start_ap`: its own LAPIC timer, idle
//! loop and current task). An AP whose LAPIC is wrong parks for good.
//!
//! # The trampoline's register contract
//!
//! Entered by the startup IPI in real mode at CS:IP = `VV00:0000` (the
//! page's physical address P = `VV000`), interrupts off, all else
//! undefined. It uses EBX = P throughout (computed from CS) and clobbers
//! EAX, ECX, EDX; it reads only its data block ([`TrampolineData`], at
//! offset [`DATA_OFFSET`] of the page, filled by the boot CPU):
//!
//! * 16-bit: DS = CS; `lgdt` the block's temporary GDT (null, 32-bit code
//!   0x08, data 0x10, 64-bit code 0x18); CR0.PE; far jump to 32-bit code.
//! * 32-bit: data segments 0x10; CR4.PAE; CR3 = the trampoline PML4 (below
//!   4 GiB); EFER.LME|NXE; CR0.PG|WP; far jump to 0x18:64-bit code, still
//!   in the identity-mapped page.
//! * 64-bit: RSP = the AP's kernel stack top, RDI = its CPU index, RSI =
//!   the kernel's CR3, then jump to `ap_entry64` in the higher half, which
//!   loads CR3 (the kernel's own page tables from then on) and calls
//!   [`ap_main`]`(cpu)`; it never returns (`ud2` after the call).
//!
//! The boot CPU waits for one AP to come online before rewriting the data
//! block for the next, and an online AP no longer touches the page.

use super::percpu::{self, MAX_CPUS};
use super::{gdt, idt, syscall_entry};
use crate::boot::pvh::{MEMMAP_RAM, StartInfo};
use crate::events;
use crate::kprintln;
use crate::mem::{frames, phys_to_virt};
use crate::platform::Platform;
use abi::event::Event;
use core::mem::offset_of;
use core::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

/// How long an AP may take to report online after its startup IPIs.
pub const ONLINE_TIMEOUT_MS: u64 = 1000;

/// Where the data block sits in the trampoline page (after `cli; jmp`).
const DATA_OFFSET: usize = 8;

/// Each AP's kernel stack and IST stacks: 16 KiB each.
const AP_STACK_BYTES: u64 = 16 * 1024;
/// Frames per AP: kernel stack + 3 IST stacks.
const AP_FRAMES: usize = 4 * (AP_STACK_BYTES as usize / 4096);

/// The trampoline's data block, filled by the boot CPU (offsets in asm).
#[repr(C, packed)]
struct TrampolineData {
    /// Temporary GDT: null, 32-bit code, data, 64-bit code.
    gdt: [u64; 4],
    gdtr_limit: u16,
    gdtr_base: u32,
    /// `ljmpl` target into 32-bit code (m16:32).
    far32_offset: u32,
    far32_selector: u16,
    /// `ljmpl` target into 64-bit code (m16:32).
    far64_offset: u32,
    far64_selector: u16,
    /// Physical address of the trampoline PML4 (below 4 GiB).
    pml4: u32,
    /// The kernel's CR3.
    kernel_cr3: u64,
    stack_top: u64,
    cpu: u64,
    /// `ap_entry64`'s (higher-half) address.
    entry: u64,
}

const D_GDTR: usize = DATA_OFFSET + offset_of!(TrampolineData, gdtr_limit);
const D_FAR32: usize = DATA_OFFSET + offset_of!(TrampolineData, far32_offset);
const D_FAR64: usize = DATA_OFFSET + offset_of!(TrampolineData, far64_offset);
const D_PML4: usize = DATA_OFFSET + offset_of!(TrampolineData, pml4);
const D_CR3: usize = DATA_OFFSET + offset_of!(TrampolineData, kernel_cr3);
const D_STACK: usize = DATA_OFFSET + offset_of!(TrampolineData, stack_top);
const D_CPU: usize = DATA_OFFSET + offset_of!(TrampolineData, cpu);
const D_ENTRY: usize = DATA_OFFSET + offset_of!(TrampolineData, entry);

core::arch::global_asm!(
    r#"
    .section .text.ap_trampoline, "ax"
    .global ap_trampoline_start
    .global ap_trampoline_32
    .global ap_trampoline_64
    .global ap_trampoline_data
    .global ap_trampoline_end
    .code16
ap_trampoline_start:
    cli
    jmp 1f
    .p2align 3
ap_trampoline_data:
    .skip {data_size}
1:
    cld
    movw %cs, %ax
    movw %ax, %ds
    movzwl %ax, %ebx
    shll $4, %ebx                         /* EBX = P, the page's physical address */
    lgdtl ({gdtr})
    movl %cr0, %eax
    orl $1, %eax                          /* PE */
    movl %eax, %cr0
    ljmpl *({far32})

    .code32
ap_trampoline_32:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    movl %cr4, %eax
    orl $(1 << 5), %eax                   /* PAE */
    movl %eax, %cr4
    movl {pml4}(%ebx), %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx                /* EFER */
    rdmsr
    orl $((1 << 8) | (1 << 11)), %eax     /* LME | NXE */
    wrmsr
    movl %cr0, %eax
    orl $0x80010001, %eax                 /* PG | WP | PE */
    movl %eax, %cr0
    ljmpl *{far64}(%ebx)

    .code64
ap_trampoline_64:
    movl %ebx, %ebx                       /* zero-extend P */
    movq {stack}(%rbx), %rsp
    movq {cpu}(%rbx), %rdi
    movq {cr3}(%rbx), %rsi
    movq {entry}(%rbx), %rax
    jmp *%rax
ap_trampoline_end:

    .section .text.ap_entry64, "ax"
    .global ap_entry64
    .type ap_entry64, @function
ap_entry64:
    .cfi_startproc
    .cfi_undefined rip
    movq %rsi, %cr3                       /* the kernel's page tables */
    xorl %ebp, %ebp
    call {ap_main}
    ud2
    .cfi_endproc
    .size ap_entry64, . - ap_entry64
    "#,
    data_size = const core::mem::size_of::<TrampolineData>(),
    gdtr = const D_GDTR,
    far32 = const D_FAR32,
    far64 = const D_FAR64,
    pml4 = const D_PML4,
    stack = const D_STACK,
    cpu = const D_CPU,
    cr3 = const D_CR3,
    entry = const D_ENTRY,
    ap_main = sym ap_main,
    options(att_syntax)
);

unsafe extern "C" {
    static ap_trampoline_start: u8;
    static ap_trampoline_32: u8;
    static ap_trampoline_64: u8;
    static ap_trampoline_data: u8;
    static ap_trampoline_end: u8;
    static ap_entry64: u8;
}

/// An AP's state, as it reports it.
const STARTING: u8 = 0;
const ONLINE: u8 = 1;
/// Its local APIC did not come up, or has another id than it was started as.
const BAD_LAPIC: u8 = 2;

/// What the boot CPU hands an AP (written before its IPIs, read by it
/// once), and what the AP reports back (`state`).
struct ApSlot {
    state: AtomicU8,
    apic_id: AtomicU32,
    stack_top: AtomicU64,
    /// IST stack tops: double fault, NMI, machine check.
    ist_tops: [AtomicU64; 3],
}

static SLOTS: [ApSlot; MAX_CPUS] = [const {
    ApSlot {
        state: AtomicU8::new(STARTING),
        apic_id: AtomicU32::new(0),
        stack_top: AtomicU64::new(0),
        ist_tops: [const { AtomicU64::new(0) }; 3],
    }
}; MAX_CPUS];

/// CPUs online, the boot CPU included.
static ONLINE_CPUS: AtomicU32 = AtomicU32::new(1);

/// How many CPUs are online (1 until [`start`] has run).
pub fn cpus_online() -> u32 {
    ONLINE_CPUS.load(Ordering::Acquire)
}

/// Starts every enabled MADT processor but the boot CPU and parks it;
/// reports `cpu_failed` for each one left out and then one `smp` event.
/// Call once, on the boot CPU, interrupts off, before any task runs.
pub fn start(platform: &'static Platform, info: &StartInfo) {
    let bsp = platform.apic_id();
    let others: heapless::Vec<u32, MAX_CPUS> = platform.apic_ids.iter().copied().filter(|&id| id != bsp).collect();
    // A test hook: `smp.nosipi=ID` sends that CPU INIT but no startup IPI,
    // so it never reports (the timeout path, `qemu-tests/tests/smp.rs`).
    let no_sipi: Option<u32> =
        info.cmdline.split_whitespace().find_map(|w| w.strip_prefix("smp.nosipi=")).and_then(|v| v.parse().ok());
    let mut trampoline = 0;
    if !others.is_empty() || platform.cpus as usize > platform.apic_ids.len() {
        match prepare(info) {
            Some(page) => {
                trampoline = page;
                let mut next = 1;
                for &id in &others {
                    if next >= MAX_CPUS {
                        failed(id, "max_cpus");
                        continue;
                    }
                    match start_one(platform, page, next, id, no_sipi == Some(id)) {
                        Ok(()) => next += 1,
                        Err(reason) => failed(id, reason),
                    }
                }
            }
            None => others.iter().for_each(|&id| failed(id, "no_low_page")),
        }
        // MADT processors beyond the first MAX_CPUS have no APIC id kept.
        for _ in platform.apic_ids.len()..platform.cpus as usize {
            failed(u32::MAX, "max_cpus");
        }
    }
    let online = cpus_online();
    kprintln!("  SMP: {online} of {} CPU(s) online (trampoline at {trampoline:#x})", platform.cpus);
    events::emit(&Event::Smp { cpus: u64::from(platform.cpus), cpus_online: u64::from(online), trampoline });
}

fn failed(apic_id: u32, reason: &'static str) {
    kprintln!("  SMP: CPU with APIC id {apic_id} left out: {reason}");
    events::emit(&Event::CpuFailed { apic_id: u64::from(apic_id), reason });
}

/// Picks the trampoline page, copies the trampoline there and fills the
/// fixed part of its data block. Returns the page's physical address.
fn prepare(info: &StartInfo) -> Option<u64> {
    let page = (1..0xa0u64).map(|n| n << 12).find(|&p| {
        let end = p + 4096;
        let ram = info.memmap.iter().any(|e| e.kind == MEMMAP_RAM && e.addr <= p && end <= e.addr + e.size);
        let used = info.structures.iter().any(|&(s, e)| s < end && p < e)
            || info.modules.iter().any(|m| m.paddr < end && p < m.paddr + m.size);
        ram && !used
    })?;
    // Trampoline PML4, and the PDPT and PD of its identity slot 0.
    let tables = frames::alloc_contiguous(3)?.start_address().as_u64();
    let (pml4, pdpt, pd) = (tables, tables + 4096, tables + 8192);
    let (kernel_pml4_frame, _) = x86_64::registers::control::Cr3::read();
    let kernel_cr3 = kernel_pml4_frame.start_address().as_u64();

    // Symbols of the global_asm block above: only their addresses are taken.
    let (start, t32, t64, data, end, entry) = {
        (
            core::ptr::addr_of!(ap_trampoline_start) as u64,
            core::ptr::addr_of!(ap_trampoline_32) as u64,
            core::ptr::addr_of!(ap_trampoline_64) as u64,
            core::ptr::addr_of!(ap_trampoline_data) as u64,
            core::ptr::addr_of!(ap_trampoline_end) as u64,
            core::ptr::addr_of!(ap_entry64) as u64,
        )
    };
    assert_eq!(data - start, DATA_OFFSET as u64, "trampoline data block moved");
    let len = (end - start) as usize;
    assert!(len <= 4096);
    const PRESENT_WRITABLE: u64 = 0x3;
    const HUGE: u64 = 0x80;
    // SAFETY: `page` is free RAM below 1 MiB (checked above; the frame
    // allocator never hands out the first MiB) and the three table frames
    // were just allocated: nothing else uses any of them. The direct map
    // covers both; the kernel PML4 is read through it, not changed.
    unsafe {
        core::ptr::copy_nonoverlapping(start as *const u8, phys_to_virt(page) as *mut u8, len);
        let kernel = phys_to_virt(kernel_cr3) as *const u64;
        let ours = phys_to_virt(pml4) as *mut u64;
        for slot in [256, 511] {
            ours.add(slot).write(kernel.add(slot).read());
        }
        ours.write(pdpt | PRESENT_WRITABLE);
        (phys_to_virt(pdpt) as *mut u64).write(pd | PRESENT_WRITABLE);
        (phys_to_virt(pd) as *mut u64).write(PRESENT_WRITABLE | HUGE); // 0..2 MiB, identity
        let d = (phys_to_virt(page) + DATA_OFFSET as u64) as *mut TrampolineData;
        d.write(TrampolineData {
            gdt: [0, 0x00cf_9a00_0000_ffff, 0x00cf_9200_0000_ffff, 0x00af_9a00_0000_ffff],
            gdtr_limit: 4 * 8 - 1,
            gdtr_base: (page + DATA_OFFSET as u64) as u32,
            far32_offset: (page + (t32 - start)) as u32,
            far32_selector: 0x08,
            far64_offset: (page + (t64 - start)) as u32,
            far64_selector: 0x18,
            pml4: pml4 as u32,
            kernel_cr3,
            stack_top: 0,
            cpu: 0,
            entry,
        });
    }
    Some(page)
}

/// Starts the CPU with APIC id `apic_id` as CPU `cpu` and waits for it.
fn start_one(platform: &Platform, page: u64, cpu: usize, apic_id: u32, no_sipi: bool) -> Result<(), &'static str> {
    let Ok(apic_id_u8) = u8::try_from(apic_id) else { return Err("x2apic_id") };
    let stacks = frames::alloc_contiguous(AP_FRAMES).ok_or("no_memory")?;
    let base = phys_to_virt(stacks.start_address().as_u64());
    let top = |i: u64| base + (i + 1) * AP_STACK_BYTES;
    let slot = &SLOTS[cpu];
    slot.state.store(STARTING, Ordering::Relaxed);
    slot.apic_id.store(u32::from(apic_id_u8), Ordering::Relaxed);
    slot.stack_top.store(top(0), Ordering::Relaxed);
    for (i, t) in slot.ist_tops.iter().enumerate() {
        t.store(top(1 + i as u64), Ordering::Relaxed);
    }
    let d = (phys_to_virt(page) + DATA_OFFSET as u64) as *mut TrampolineData;
    // SAFETY: the data block of the trampoline page `prepare` set up; no AP
    // reads it now (the previous one is online or back in INIT).
    unsafe {
        core::ptr::addr_of_mut!((*d).stack_top).write_unaligned(top(0));
        core::ptr::addr_of_mut!((*d).cpu).write_unaligned(cpu as u64);
    }
    // Publish the block and the slot before the IPIs.
    core::sync::atomic::fence(Ordering::SeqCst);

    let hz = platform.tsc_hz();
    let vector = (page >> 12) as u8;
    if !platform.send_init(apic_id) {
        return Err("ipi_not_accepted");
    }
    delay_us(hz, 10_000);
    if !no_sipi {
        if !platform.send_startup(apic_id, vector) {
            return Err("ipi_not_accepted");
        }
        if !wait_state(hz, slot, 200) {
            platform.send_startup(apic_id, vector);
        }
    }
    let ok = wait_state(hz, slot, ONLINE_TIMEOUT_MS * 1000);
    match slot.state.load(Ordering::Acquire) {
        ONLINE if ok => {
            ONLINE_CPUS.fetch_add(1, Ordering::AcqRel);
            Ok(())
        }
        state => {
            // Back to wait-for-SIPI: it must not wake later into a data
            // block rewritten for the next CPU.
            platform.send_init(apic_id);
            Err(if state == BAD_LAPIC { "lapic" } else { "timeout" })
        }
    }
}

/// Spins until `slot` leaves STARTING or `us` microseconds of TSC pass.
fn wait_state(tsc_hz: u64, slot: &ApSlot, us: u64) -> bool {
    let deadline = super::rdtsc() + tsc_hz / 1_000_000 * us;
    loop {
        if slot.state.load(Ordering::Acquire) != STARTING {
            return true;
        }
        if super::rdtsc() >= deadline {
            return false;
        }
        core::hint::spin_loop();
    }
}

fn delay_us(tsc_hz: u64, us: u64) {
    let deadline = super::rdtsc() + tsc_hz / 1_000_000 * us;
    while super::rdtsc() < deadline {
        core::hint::spin_loop();
    }
}

/// The AP's Rust entry (from `ap_entry64`, on its own kernel stack, on the
/// kernel's page tables, interrupts off). Sets up its CPU tables, reports,
/// parks.
extern "C" fn ap_main(cpu: u64) -> ! {
    let cpu = cpu as usize;
    let slot = &SLOTS[cpu];
    let ist_tops = [0, 1, 2].map(|i| slot.ist_tops[i].load(Ordering::Relaxed));
    // SAFETY: this CPU was started as `cpu` (the boot CPU gives each index
    // to one CPU at a time, and only after the previous holder failed and
    // got INIT); the IST stacks were allocated for it alone.
    unsafe { gdt::init_cpu(cpu, ist_tops) };
    idt::load();
    let stack_top = slot.stack_top.load(Ordering::Relaxed);
    let expected = slot.apic_id.load(Ordering::Relaxed);
    // SAFETY: once, on this CPU, interrupts off, before anything reads GS;
    // block `cpu` is this CPU's alone (as above).
    unsafe { percpu::init(cpu, expected, stack_top) };
    syscall_entry::init();
    super::enable_protections_this_cpu();
    // Online: its LAPIC answers with the id it was started as, and GS
    // reaches its own per-CPU block.
    let state = match crate::platform::get().map(|p| p.init_ap_lapic()) {
        Some(Ok(id)) if id == expected && percpu::cpu() == cpu => ONLINE,
        _ => BAD_LAPIC,
    };
    slot.state.store(state, Ordering::Release);
    if state != ONLINE {
        park();
    }
    // Halted until the boot CPU has loaded the tasks (it sends every AP
    // the reschedule IPI then: `wake_all`), then into the scheduler.
    while !crate::sched::started() {
        // SAFETY: `sti; hlt` is atomic (STI's shadow), so an IPI sent
        // after the check above ends the `hlt`; the handler it runs
        // (`trap::kernel_entry`) only acknowledges it.
        unsafe { core::arch::asm!("sti", "hlt", "cli", options(nomem, nostack)) };
    }
    crate::sched::start_ap()
}

/// Sends every other online CPU `vector` (the boot CPU, when the tasks
/// are loaded: the APs leave their wait for the scheduler).
pub fn wake_all(vector: u8) {
    let Some(p) = crate::platform::get() else { return };
    for cpu in 1..cpus_online() as usize {
        p.send_fixed(percpu::apic_id_of(cpu), vector);
    }
}

/// Interrupts off, `hlt` forever: only INIT or NMI wakes this CPU.
fn park() -> ! {
    loop {
        x86_64::instructions::interrupts::disable();
        x86_64::instructions::hlt();
    }
}
