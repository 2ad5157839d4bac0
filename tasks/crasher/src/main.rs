//! `crasher`: dies at start, to exercise the fault server's restarts.
//!
//! Each run first reports the check `crasher-run` (value = the restart
//! count the fault server wrote, `libtask::supervise::restart_count()`),
//! so a test sees every run start from the beginning. Then, by `arg`:
//!
//! | arg | what it does |
//! |---|---|
//! | 1 | reads address 0 on **every** run: the server restarts it with growing delays, then stops it (restart storm) |
//! | 2 | panics on its first run (a fault of kind `panic` with the message); exits 0 on the next |
//! | 3 | reads address 0 on its first run; exits 0 on the next (the demo's) |
//!
//! An unknown `arg` reports `crasher-arg` (ok = false) and exits 2.
#![no_std]
#![no_main]

use libtask::{Start, println, report, supervise};

libtask::entry!(main);

fn null_read() -> ! {
    // SAFETY: reading address 0 faults (the null page is never mapped); the
    // read never completes, so nothing observes its value.
    unsafe { core::ptr::read_volatile(core::ptr::null::<u64>()) };
    unreachable!("reading address 0 did not fault")
}

fn main(start: Start) -> u64 {
    let run = supervise::restart_count();
    report("crasher-run", true, run);
    match (start.arg, run) {
        (1, _) | (3, 0) => {
            println!("crasher {}: run {run}, reading address 0", start.id);
            null_read()
        }
        (2, 0) => panic!("crasher {} panics on purpose (run {run})", start.id),
        (2 | 3, _) => {
            println!("crasher {}: run {run} after a restart, exiting cleanly", start.id);
            0
        }
        (arg, _) => {
            report("crasher-arg", false, arg);
            2
        }
    }
}
