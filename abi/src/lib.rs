//! What the Rewind kernel, its tasks and its host tools agree on.
//!
//! `#![no_std]` and free of target assumptions, so the same definitions are
//! compiled into the kernel, into tasks, and into host tools and tests
//! (`xtask`, `qemu-tests`), which is what keeps them in agreement.
#![no_std]

pub mod exit;
pub mod trap;
