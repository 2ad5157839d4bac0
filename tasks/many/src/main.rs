//! `many`: a small task to run many of (32 in `images/many.toml`): each
//! instance computes a checksum of its task id, reports it as the check
//! `checksum` (ok, value = the checksum) and exits 0. A test recomputes the
//! checksum from the task id stamped on the event, so a task that ran with
//! another's memory or registers is caught.
//!
//! checksum(id) = Σ_{i=1}^{10000} (i XOR id) · i, in wrapping u64 arithmetic.
//!
//! The terms are pushed one by one onto a heap `Vec`, which doubles its way
//! up to 128 KiB: every instance maps a first heap and then grows it, so 32
//! instances exercise the allocator and the kernel's `MAP` 32 times over.
#![no_std]
#![no_main]

extern crate alloc;

use alloc::vec::Vec;
use libtask::{Start, println, report};

libtask::entry!(main);

fn main(start: Start) {
    let mut terms = Vec::new();
    for i in 1..=10_000u64 {
        terms.push((i ^ start.id).wrapping_mul(i));
    }
    let checksum = terms.iter().fold(0u64, |sum, t| sum.wrapping_add(*t));
    println!("many: task {} checksum {:#x}", start.id, checksum);
    report("checksum", true, checksum);
}
