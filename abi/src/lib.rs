//! What the Rewind kernel, its tasks and its host tools agree on.
//!
//! `#![no_std]` and free of target assumptions, so the same definitions are
//! compiled into the kernel, into tasks, and into host tools and tests
//! (`xtask`, `qemu-tests`), which is what keeps them in agreement. The
//! `alloc` feature adds host-side writers (e.g. packing a boot image).
#![no_std]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod bytes;
pub mod checkpoint;
pub mod event;
pub mod exit;
pub mod fault;
pub mod image;
pub mod ipc;
pub mod layout;
pub mod syscall;
pub mod trap;
pub mod typed_msg;
pub mod wire;
