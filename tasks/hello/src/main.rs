//! `hello`: the smallest useful task, and the one `docs/first-task.md`
//! builds up to. It prints a greeting with its task id, reports the check
//! `hello` (ok, value = its id) so a test can see it ran, and returns, which
//! exits with code 0.
#![no_std]
#![no_main]

use libtask::{Start, println, report};

libtask::entry!(main);

fn main(start: Start) {
    println!("hello from task {} (arg {})", start.id, start.arg);
    report("hello", true, start.id);
}
