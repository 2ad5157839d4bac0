//! Tasks: the unit of isolation, scheduling and (later) recovery.
//!
//! A task owns an address space, a name and priority from its manifest
//! entry, and a *save area*: its trap frame, which is where the CPU and the
//! entry stubs put its registers whenever it enters the kernel (TSS.RSP0
//! points at the end of the current task's save area). So switching tasks is
//! choosing which save area to return through; nothing is copied. Tasks are
//! boxed so save areas never move.

pub mod boot_image;
pub mod loader;

use crate::arch::syscall_entry::{USER_CS, USER_SS};
use crate::arch::trap_entry::TrapFrame;
use crate::mem::space::AddressSpace;
use abi::image::TaskSpec;
use abi::layout::{USER_MAP_BASE, USER_STACK_TOP};

pub type TaskId = u32;

/// Where a task is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Runnable,
    Sleeping { until_tick: u64 },
    Exited { code: i64 },
    /// Stopped by a fault it could not survive (until the fault server exists).
    Faulted { vector: u8 },
}

impl State {
    pub fn is_alive(self) -> bool {
        matches!(self, State::Runnable | State::Sleeping { .. })
    }
}

/// The trap frame, placed so that its end is 16-byte aligned: in 64-bit
/// mode the CPU aligns RSP0 down to 16 before pushing, and the pushed
/// hardware frame must land exactly in `frame.ss ..= frame.rip`.
#[repr(C, align(16))]
pub struct SaveArea {
    _pad: u64,
    pub frame: TrapFrame,
}

const _: () = assert!((core::mem::offset_of!(SaveArea, frame) + core::mem::size_of::<TrapFrame>()) % 16 == 0);

pub struct Task {
    pub save: SaveArea,
    pub id: TaskId,
    pub name: heapless::String<{ abi::image::NAME_LEN }>,
    pub priority: u8,
    pub state: State,
    pub space: Option<AddressSpace>,
    /// Next address `map` hands out when the task gives no hint.
    pub map_next: u64,
    /// The manifest entry it was loaded from (to restart it from its image).
    pub spec: TaskSpec<'static>,
}

impl Task {
    /// A runnable task at `entry` in `space`, with the start contract of
    /// `docs/first-task.md`: RSP at the stack top, RDI = id, RSI = arg.
    pub fn new(id: TaskId, spec: TaskSpec<'static>, space: AddressSpace, entry: u64) -> Task {
        let mut name = heapless::String::new();
        let _ = name.push_str(spec.name);
        let mut task = Task {
            // SAFETY: TrapFrame is plain integers; all-zero is a valid value.
            save: SaveArea { _pad: 0, frame: unsafe { core::mem::zeroed() } },
            id,
            name,
            priority: spec.priority,
            state: State::Runnable,
            space: Some(space),
            map_next: USER_MAP_BASE,
            spec,
        };
        let f = &mut task.save.frame;
        f.rip = entry;
        f.cs = USER_CS;
        f.rflags = 0x202; // IF
        f.rsp = USER_STACK_TOP;
        f.ss = USER_SS;
        f.rdi = id as u64;
        f.rsi = spec.arg;
        task
    }

    /// The address TSS.RSP0 must hold while this task runs.
    pub fn save_top(&self) -> u64 {
        let frame = &self.save.frame as *const TrapFrame as u64;
        frame + core::mem::size_of::<TrapFrame>() as u64
    }

    pub fn frame_ptr(&mut self) -> *mut TrapFrame {
        &mut self.save.frame
    }
}
