//! The Rewind stack walker: a `no_std`, allocation-free CFI stack walker.
//!
//! Design note: the fault server must name every frame of a faulted task from
//! the faulting instruction up to its checkpoint, and the kernel wants the same
//! for its own backtraces. Both run without an allocator, on input they cannot
//! trust (the task's image and stack). So this crate:
//! - walks from *any* instruction using `.eh_frame` (async-precise CFI),
//!   including signal/trap frames and CFI expressions ([`walk`]);
//! - finds FDEs through `.eh_frame_hdr` or a sorted table built once per image
//!   ([`image`], [`hdr`], [`table`]), and caches parsed CIEs and unwind rows
//!   across walks (`cache`), optionally behind rows compiled lazily per FDE
//!   (`lazy`);
//! - reads memory only through a fallible [`Memory`];
//! - ends every walk with a typed [`Stop`], never a panic, within a depth bound.
//!
//! With the `std` feature, [`host`] adds ELF and core-file loading for host
//! tools (`cargo xtask stack`) and tests.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

mod cache;
pub mod expr;
pub mod hdr;
pub mod image;
mod lazy;
pub mod memory;
pub mod regs;
pub mod row;
#[cfg(feature = "alloc")]
pub mod rowtable;
pub mod symbols;
pub mod table;
pub mod walk;

#[cfg(feature = "std")]
pub mod host;

pub use cache::CIE_SLOTS;
pub use expr::{ExprError, MAX_EXPR_STEPS};
pub use image::{Image, ImageError};
pub use lazy::LazyStats;
pub use memory::{Memory, NoMemory, SliceMemory};
pub use regs::{NUM_REGS, Regs, dwarf};
#[cfg(feature = "alloc")]
pub use rowtable::{RowTable, TableError, TableStats};
pub use symbols::{Symbol, SymbolTable};
#[cfg(feature = "alloc")]
pub use table::build_fde_table;
pub use table::{FdeEntry, build_fde_table_in};
pub use walk::{DEFAULT_MAX_DEPTH, Frame, Stats, Stop, WalkState, Walker};
