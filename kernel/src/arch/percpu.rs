//! Per-CPU data, reached through GS in ring 0.
//!
//! One [`PerCpu`] block per CPU, in the array `PERCPU` indexed by the
//! kernel's CPU index (0 = the boot CPU, 1.. = the application processors
//! in MADT order that came up; `arch::smp`). While the kernel runs,
//! `IA32_GS_BASE` points at this CPU's block; while a task runs, `swapgs`
//! has exchanged it into `IA32_KERNEL_GS_BASE`. The entry stubs read these
//! fields at fixed offsets, so the layout is part of the assembly contract
//! (checked below). The kernel's own accessors ([`set_save_top`], [`cpu`])
//! are `gs`-relative too: one instruction each, no index computation, so
//! the boot CPU's hot paths cost what they did with a single static block.

use core::mem::offset_of;
use x86_64::structures::tss::TaskStateSegment;

/// Most CPUs the kernel brings up (more in the MADT are reported and left out).
pub const MAX_CPUS: usize = 16;

#[repr(C)]
pub struct PerCpu {
    /// End of the current task's save area (its trap frame): where the
    /// syscall stub builds the frame (the CPU uses TSS.RSP0 for traps).
    pub save_top: u64,
    /// Scratch: the user RSP during syscall entry.
    pub user_rsp: u64,
    /// Top of the kernel stack the handlers run on.
    pub kernel_stack_top: u64,
    /// This CPU's index in `PERCPU`.
    pub cpu: u64,
    /// This CPU's local APIC id.
    pub apic_id: u64,
    /// This CPU's TSS, inside its block so that `gdt::set_rsp0` is one
    /// `gs`-relative store, as cheap as the single static TSS it replaced.
    pub tss: TaskStateSegment,
    /// The scheduler's state for this CPU (`sched`), `gs`-relative so that
    /// the single-CPU hot paths cost what the fields of the one scheduler
    /// did: the task this CPU returns to (its index, [`NONE`] if none)...
    pub current: u64,
    /// ... the task whose `running_on` names this CPU (the one whose save
    /// area, CR3 and FPU state this CPU may hold: `sched::switch_to`)...
    pub owned: u64,
    /// ... and the ticks left in the current task's slice.
    pub slice_left: u64,
    /// `arch::fpu`: whose x87/SSE state this CPU's registers hold (a
    /// `*mut FpuState`, 0 for nobody) and whether CR0.TS is set.
    pub fpu_owner: u64,
    pub fpu_ts_set: u64,
}

/// No task (in [`PerCpu::current`] and [`PerCpu::owned`]).
pub const NONE: u64 = u64::MAX;
pub const CURRENT: usize = offset_of!(PerCpu, current);
pub const OWNED: usize = offset_of!(PerCpu, owned);
pub const SLICE_LEFT: usize = offset_of!(PerCpu, slice_left);
pub const FPU_OWNER: usize = offset_of!(PerCpu, fpu_owner);
pub const FPU_TS_SET: usize = offset_of!(PerCpu, fpu_ts_set);

pub const SAVE_TOP: usize = 0;
pub const USER_RSP: usize = 8;
pub const KERNEL_STACK_TOP: usize = 16;
pub const CPU: usize = 24;
pub const TSS: usize = 40;
/// RSP0 inside the TSS (the TSS is packed: offset 4, not 8-aligned).
pub const TSS_RSP0: usize = TSS + 4;
const _: () = assert!(offset_of!(PerCpu, save_top) == SAVE_TOP);
const _: () = assert!(offset_of!(PerCpu, user_rsp) == USER_RSP);
const _: () = assert!(offset_of!(PerCpu, kernel_stack_top) == KERNEL_STACK_TOP);
const _: () = assert!(offset_of!(PerCpu, cpu) == CPU);
const _: () = assert!(offset_of!(PerCpu, tss) == TSS);
const _: () = assert!(offset_of!(TaskStateSegment, privilege_stack_table) == 4);

static mut PERCPU: [PerCpu; MAX_CPUS] = [const {
    PerCpu {
        save_top: 0,
        user_rsp: 0,
        kernel_stack_top: 0,
        cpu: 0,
        apic_id: 0,
        tss: TaskStateSegment::new(),
        current: NONE,
        owned: NONE,
        slice_left: 0,
        fpu_owner: 0,
        fpu_ts_set: 0,
    }
}; MAX_CPUS];

/// TSS `cpu`, for `gdt::init_cpu` to fill and describe in its GDT.
///
/// # Safety
/// Called once per CPU, by that CPU, interrupts off, `cpu < MAX_CPUS`:
/// the reference is the only one until the CPU itself reads the TSS.
pub unsafe fn tss(cpu: usize) -> &'static mut TaskStateSegment {
    // SAFETY: per the contract.
    unsafe { &mut *core::ptr::addr_of_mut!(PERCPU[cpu].tss) }
}

/// Points this CPU's GS at block `cpu`; `kernel_stack_top` is where its
/// handlers run.
///
/// # Safety
/// Called once per CPU, by that CPU, with interrupts off, before anything
/// on it reads GS; no other CPU touches block `cpu`; `cpu < MAX_CPUS`.
pub unsafe fn init(cpu: usize, apic_id: u32, kernel_stack_top: u64) {
    // SAFETY: per the contract, block `cpu` is this CPU's alone. The MSR
    // writes make GS reach it in ring 0 and zero the user's GS.
    unsafe {
        let p = &mut *core::ptr::addr_of_mut!(PERCPU[cpu]);
        p.kernel_stack_top = kernel_stack_top;
        p.cpu = cpu as u64;
        p.apic_id = u64::from(apic_id);
        x86_64::registers::model_specific::GsBase::write(x86_64::VirtAddr::new(p as *mut PerCpu as u64));
        x86_64::registers::model_specific::KernelGsBase::write(x86_64::VirtAddr::new(0));
    }
}

/// Records where the next task's save area ends (in this CPU's block).
#[inline(always)]
pub fn set_save_top(top: u64) {
    // SAFETY: in the kernel GS_BASE is this CPU's block (`init`; the entry
    // stubs `swapgs` back before any Rust runs). Interrupts are disabled in
    // the kernel, and the stubs read this field only on entry from ring 3,
    // which cannot happen concurrently on this CPU.
    unsafe {
        core::arch::asm!("mov qword ptr gs:[{off}], {top}", off = const SAVE_TOP, top = in(reg) top,
            options(nostack, preserves_flags));
    }
}

/// The index of the CPU this runs on.
#[inline(always)]
pub fn cpu() -> usize {
    let cpu: u64;
    // SAFETY: as in `set_save_top`: GS reaches this CPU's block in the kernel.
    unsafe {
        core::arch::asm!("mov {}, qword ptr gs:[{off}]", out(reg) cpu, off = const CPU,
            options(nostack, preserves_flags, readonly));
    }
    cpu as usize
}

/// Sets RSP0 in this CPU's TSS (see `gdt::set_rsp0`).
#[inline(always)]
pub fn set_rsp0(top: u64) {
    // SAFETY: as in `set_save_top`; the CPU reads RSP0 only when it takes a
    // trap from ring 3, which cannot happen while the kernel runs here.
    unsafe {
        core::arch::asm!("mov qword ptr gs:[{off}], {top}", off = const TSS_RSP0, top = in(reg) top,
            options(nostack, preserves_flags));
    }
}

/// Reads this CPU's per-CPU word at byte offset `OFF` (one of the consts
/// above: `CURRENT`, `OWNED`, `SLICE_LEFT`, `FPU_OWNER`, `FPU_TS_SET`).
///
/// Those fields are read and written only through [`get`] and [`set`]
/// (never through a Rust reference to the block), so both can say
/// `nomem`: to the compiler they touch no memory it knows, and a write
/// here does not make it reload everything else (which cost the IPC round
/// trip 24 instructions). Neither is `pure`, so each runs where written
/// and in order with the other.
#[inline(always)]
pub fn get<const OFF: usize>() -> u64 {
    let v: u64;
    // SAFETY: as in `set_save_top`: GS reaches this CPU's block in the
    // kernel; `OFF` is the offset of a `u64` field of it.
    unsafe {
        core::arch::asm!("mov {}, qword ptr gs:[{off}]", out(reg) v, off = const OFF,
            options(nostack, preserves_flags, nomem));
    }
    v
}

/// Writes this CPU's per-CPU word at byte offset `OFF`.
#[inline(always)]
pub fn set<const OFF: usize>(v: u64) {
    // SAFETY: as in `get`; only this CPU writes its own block (with
    // interrupts off in the kernel), so the store races with nothing.
    unsafe {
        core::arch::asm!("mov qword ptr gs:[{off}], {v}", off = const OFF, v = in(reg) v,
            options(nostack, preserves_flags, nomem));
    }
}

/// Writes the constant `V` into this CPU's per-CPU word at byte offset
/// `OFF`: one store of an immediate (as [`set`], without the register).
#[inline(always)]
pub fn set_const<const OFF: usize, const V: i32>() {
    // SAFETY: as in `set`.
    unsafe {
        core::arch::asm!("mov qword ptr gs:[{off}], {v}", off = const OFF, v = const V,
            options(nostack, preserves_flags, nomem));
    }
}

/// CPU `cpu`'s local APIC id (0 for a CPU never brought up).
pub fn apic_id_of(cpu: usize) -> u32 {
    // SAFETY: a plain read of a word written once by `init` on that CPU
    // before it reported online (`smp::start` waits for that report).
    unsafe { core::ptr::addr_of!(PERCPU[cpu % MAX_CPUS].apic_id).read_volatile() as u32 }
}
