//! `resumer`: asks its fault server to resume it past a `ud2`, [`ROUNDS`]
//! times, and checks that it continued correctly.
//!
//! The resume convention (`abi::fault::RESUME_REQUEST`): `ud2` with `rax`
//! equal to the request makes the fault server set `rip += 2` and
//! `rax = 0` and resume the task. Each round loads distinctive values into
//! twelve other registers around the `ud2`; after it, `rax` must be 0 and
//! every other register unchanged (the server rewrote the saved registers,
//! and the kernel restored all of them). Checks: `resumed` per round (ok,
//! value = round), then `resume-all` (ok when every round was right,
//! value = rounds done); exits 0. If the server restarted the task instead
//! of resuming it, the second run reports `resumer-restarted` (ok = false).
#![no_std]
#![no_main]

use libtask::abi::fault::RESUME_REQUEST;
use libtask::{Start, println, report, supervise};

libtask::entry!(main);

const ROUNDS: u64 = 3;

/// One `ud2` resume request; returns whether `rax` came back 0 and the
/// other registers unchanged.
fn request(round: u64) -> bool {
    let v = |i: u64| 0x5e5e_0000_0000_0000 | (round << 32) | (i * 0x1111);
    let input = [v(1), v(2), v(3), v(4), v(5), v(6), v(7), v(8), v(9), v(10), v(11), v(12)];
    let mut out = input;
    let rax: u64;
    // SAFETY: `ud2` traps to the kernel, which holds the task until the
    // fault server resumes it after the instruction with rax = 0; the
    // declared registers are the only ones the round trip may change (rbx
    // and rbp are left alone: Rust asm cannot name them). No memory or
    // stack is touched.
    unsafe {
        core::arch::asm!(
            "ud2",
            inout("rax") RESUME_REQUEST => rax,
            inout("rcx") out[0], inout("rdx") out[1], inout("rsi") out[2], inout("rdi") out[3],
            inout("r8") out[4], inout("r9") out[5], inout("r10") out[6], inout("r11") out[7],
            inout("r12") out[8], inout("r13") out[9], inout("r14") out[10], inout("r15") out[11],
            options(nostack, nomem),
        );
    }
    rax == 0 && out == input
}

fn main(start: Start) -> u64 {
    if supervise::restart_count() > 0 {
        report("resumer-restarted", false, supervise::restart_count());
        return 1;
    }
    let mut good = 0;
    for round in 1..=ROUNDS {
        let ok = request(round);
        println!("resumer {}: round {round} resumed, registers {}", start.id, if ok { "intact" } else { "WRONG" });
        report("resumed", ok, round);
        good += ok as u64;
    }
    report("resume-all", good == ROUNDS, good);
    if good == ROUNDS { 0 } else { 1 }
}
