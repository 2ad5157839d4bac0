//! GDT and TSS.
//!
//! Segment order follows what `syscall`/`sysret` require (kernel code, kernel
//! data, then user data before user code), so the ring-3 work can use them as
//! they are. The TSS gives the CPU its ring-0 stack (RSP0, set per task once
//! tasks exist) and three IST stacks for the traps that must not trust the
//! current stack: double fault, NMI and machine check.
//!
//! Every CPU has its own GDT and TSS (slot `cpu` of `GDTS` and `TSS`; a TSS
//! descriptor is marked busy when loaded, and each CPU needs its own RSP0
//! and IST stacks). All GDTs have the same layout, so the selectors are the
//! same on every CPU. The boot CPU's IST stacks are static; an application
//! processor's come from `arch::smp`.

use super::percpu::MAX_CPUS;
use spin::Once;
use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable, SegmentSelector};
use x86_64::structures::tss::TaskStateSegment;

/// IST slots (1-based in the IDT, 0-based in the TSS array).
pub const IST_DOUBLE_FAULT: u8 = 1;
pub const IST_NMI: u8 = 2;
pub const IST_MACHINE_CHECK: u8 = 3;

const IST_STACK_SIZE: usize = 16 * 1024;

#[repr(C, align(16))]
struct IstStack([u8; IST_STACK_SIZE]);

static mut IST_STACKS: [IstStack; 3] = [const { IstStack([0; IST_STACK_SIZE]) }; 3];

pub struct Selectors {
    pub kernel_code: SegmentSelector,
    pub kernel_data: SegmentSelector,
    pub user_data: SegmentSelector,
    pub user_code: SegmentSelector,
    pub tss: SegmentSelector,
}

// The TSSes, one per CPU, live in the per-CPU blocks (`percpu::tss`).
// Mutable because RSP0 changes at every switch to a task; only
// [`set_rsp0`] writes one after `init`, with interrupts disabled, on the
// CPU it belongs to.
static GDTS: [Once<(GlobalDescriptorTable, Selectors)>; MAX_CPUS] = [const { Once::new() }; MAX_CPUS];

fn ist_top(index: usize) -> u64 {
    // SAFETY: only the address is taken; the stacks are used by the CPU alone.
    let base = unsafe { core::ptr::addr_of!(IST_STACKS[index]) } as u64;
    base + IST_STACK_SIZE as u64
}

/// Sets up and loads the boot CPU's GDT and TSS (CPU 0, static IST stacks).
pub fn init() {
    // SAFETY: boot, interrupts off, only CPU 0 runs; the stacks are static.
    unsafe { init_cpu(0, [ist_top(0), ist_top(1), ist_top(2)]) }
}

/// Sets up and loads GDT and TSS `cpu` on the calling CPU, with the IST
/// stacks ending at `ist_tops` (double fault, NMI, machine check).
///
/// # Safety
/// Called once per CPU index, by the CPU it belongs to, interrupts off;
/// `cpu < MAX_CPUS`; the stacks are the calling CPU's alone, for good.
pub unsafe fn init_cpu(cpu: usize, ist_tops: [u64; 3]) {
    // SAFETY: per the contract nothing else uses TSS `cpu` yet. After this,
    // the CPU reads it and only `set_rsp0` (on this CPU) writes it.
    let tss: &'static TaskStateSegment = unsafe {
        let tss = super::percpu::tss(cpu);
        tss.interrupt_stack_table[(IST_DOUBLE_FAULT - 1) as usize] = VirtAddr::new(ist_tops[0]);
        tss.interrupt_stack_table[(IST_NMI - 1) as usize] = VirtAddr::new(ist_tops[1]);
        tss.interrupt_stack_table[(IST_MACHINE_CHECK - 1) as usize] = VirtAddr::new(ist_tops[2]);
        // Until a task runs, a privilege change cannot happen; RSP0 points
        // at the double-fault stack so a stray one still has a valid stack.
        tss.privilege_stack_table[0] = VirtAddr::new(ist_tops[0]);
        tss
    };
    let (gdt, sel) = GDTS[cpu].call_once(|| {
        let mut gdt = GlobalDescriptorTable::new();
        let kernel_code = gdt.append(Descriptor::kernel_code_segment());
        let kernel_data = gdt.append(Descriptor::kernel_data_segment());
        let user_data = gdt.append(Descriptor::user_data_segment());
        let user_code = gdt.append(Descriptor::user_code_segment());
        let tss = gdt.append(Descriptor::tss_segment(tss));
        (gdt, Selectors { kernel_code, kernel_data, user_data, user_code, tss })
    });
    gdt.load();
    // SAFETY: the selectors index descriptors of the GDT just loaded, which
    // lives in a static for the kernel's lifetime.
    unsafe {
        CS::set_reg(sel.kernel_code);
        SS::set_reg(sel.kernel_data);
        DS::set_reg(sel.kernel_data);
        ES::set_reg(sel.kernel_data);
        load_tss(sel.tss);
    }
}

/// Sets the stack the CPU switches to on a trap from ring 3: the end of the
/// next task's save area, so the hardware frame lands in its trap frame.
/// Writes the calling CPU's TSS. Called with interrupts disabled.
#[inline(always)]
pub fn set_rsp0(top: u64) {
    // One `gs`-relative store into this CPU's TSS (in its per-CPU block).
    // `top` is a kernel address (canonical), stored as it is: `VirtAddr` is
    // a transparent `u64`, and re-canonicalising it cost two instructions on
    // every task switch.
    super::percpu::set_rsp0(top);
}

/// The selectors (the same in every CPU's GDT), once `init` has run.
pub fn selectors() -> &'static Selectors {
    &GDTS[0].get().expect("gdt::init ran").1
}
