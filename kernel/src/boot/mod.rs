//! Boot: the PVH entry (assembly) and the start information QEMU hands us.

mod entry;
pub mod pvh;

pub use entry::boot_stack_top;
