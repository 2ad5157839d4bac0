//! `many`: a small task to run many of (32 in `images/many.toml`): each
//! instance computes a checksum of its task id, reports it as the check
//! `checksum` (ok, value = the checksum) and exits 0. A test recomputes the
//! checksum from the task id stamped on the event, so a task that ran with
//! another's memory or registers is caught.
//!
//! checksum(id) = Σ_{i=1}^{10000} (i XOR id) · i, in wrapping u64 arithmetic.
//!
//! The terms go through a heap `Vec` (80 KB, more than the allocator's
//! first 64 KiB step, so every instance also grows its heap once).
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use libtask::{Start, println, report};

libtask::entry!(main);

fn main(start: Start) {
    let terms: Vec<u64> = (1..=10_000u64).map(|i| (i ^ start.id).wrapping_mul(i)).collect();
    let checksum = terms.iter().fold(0u64, |sum, t| sum.wrapping_add(*t));
    println!("many: task {} checksum {:#x}", start.id, checksum);
    report("checksum", true, checksum);
}
