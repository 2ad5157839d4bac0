//! GDT and TSS.
//!
//! Segment order follows what `syscall`/`sysret` require (kernel code, kernel
//! data, then user data before user code), so the ring-3 work can use them as
//! they are. The TSS gives the CPU its ring-0 stack (RSP0, set per task once
//! tasks exist) and three IST stacks for the traps that must not trust the
//! current stack: double fault, NMI and machine check.

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

/// The TSS. Mutable because RSP0 changes at every switch to a task; only
/// [`set_rsp0`] writes it after `init`, with interrupts disabled.
static mut TSS: TaskStateSegment = TaskStateSegment::new();
static GDT: Once<(GlobalDescriptorTable, Selectors)> = Once::new();

fn ist_top(index: usize) -> VirtAddr {
    // SAFETY: only the address is taken; the stacks are used by the CPU alone.
    let base = unsafe { core::ptr::addr_of!(IST_STACKS[index]) } as u64;
    VirtAddr::new(base + IST_STACK_SIZE as u64)
}

pub fn init() {
    // SAFETY: single-threaded boot, interrupts off: nothing else uses the
    // TSS yet. After this, the CPU reads it and only `set_rsp0` writes it.
    let tss: &'static TaskStateSegment = unsafe {
        let tss = &mut *core::ptr::addr_of_mut!(TSS);
        tss.interrupt_stack_table[(IST_DOUBLE_FAULT - 1) as usize] = ist_top(0);
        tss.interrupt_stack_table[(IST_NMI - 1) as usize] = ist_top(1);
        tss.interrupt_stack_table[(IST_MACHINE_CHECK - 1) as usize] = ist_top(2);
        // Until a task runs, a privilege change cannot happen; RSP0 points
        // at the double-fault stack so a stray one still has a valid stack.
        tss.privilege_stack_table[0] = ist_top(0);
        &*core::ptr::addr_of!(TSS)
    };
    let (gdt, sel) = GDT.call_once(|| {
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
pub fn set_rsp0(top: u64) {
    // SAFETY: called with interrupts disabled on the only CPU; the CPU reads
    // RSP0 only when it takes a trap from ring 3, which cannot happen now.
    unsafe {
        let slot = core::ptr::addr_of_mut!(TSS.privilege_stack_table[0]);
        // The TSS is packed: RSP0 sits at offset 4, not 8-aligned. `top` is
        // a kernel address (canonical), stored as it is: `VirtAddr` is a
        // transparent `u64`, and re-canonicalising it cost two instructions
        // on every task switch.
        slot.cast::<u64>().write_unaligned(top);
    }
}

/// The selectors, once `init` has run.
pub fn selectors() -> &'static Selectors {
    &GDT.get().expect("gdt::init ran").1
}
