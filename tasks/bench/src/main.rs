//! `bench`: the benchmark task. One binary plays every role of the bench
//! image (`images/bench.toml`); the manifest's `arg` picks the role.
//!
//! Why in the guest, and why these rules: `cargo xtask bench` boots the
//! image under `-icount shift=0,sleep=off`, where the TSC counts guest
//! instructions and a run is reproducible byte for byte. So every figure is
//! a count of guest instructions (kernel and user alike) read with `rdtsc`
//! right here in ring 3, and the same build always gives the same table.
//! Instruction counts are not time — TCG has no caches and no TLB costs —
//! but they are exact, comparable between builds, and what the project's
//! targets (DESIGN.md) are stated in.
//!
//! How a figure is measured (`measure.rs` has the details):
//!
//! * the operation runs in a hand-written asm loop, so the loop itself costs
//!   the same few instructions in every build profile;
//! * the same loop without the operation (the *empty loop*) is timed the
//!   same way and subtracted: what is left is the operation, from its first
//!   instruction (`syscall`, `ud2`) to the task running on after it;
//! * every loop runs in several rounds and the figure is the per-operation
//!   mean of the *best* round. The 1 kHz timer interrupt lands in some
//!   rounds (every 10^6 instructions under icount) and adds its handler to
//!   them; the best round is one it missed.
//!
//! | arg | role | figure reported (check `bench:<figure>`) |
//! |---|---|---|
//! | 1 | `syscall::null`            | `null_syscall` |
//! | 2 | `syscall::switch_measure`  | `context_switch` (yield ping-pong with arg 3) |
//! | 3 | `syscall::switch_partner`  | — |
//! | 4 | `ipc::server`              | — (answers arg 5 with `reply_recv`) |
//! | 5 | `ipc::client`              | `ipc_call_reply` |
//! | 6 | `fault::faulter`           | `fault_to_resume` |
//! | 7 | `fault::supervisor`        | `fault_to_server` |
//!
//! The roles must not disturb each other's loops, so the manifest runs them
//! one after the other by priority: the supervisor (0) waits in `recv` and
//! only runs when a fault arrives; then the null syscall (1), the yield pair
//! (2), the IPC pair (3) and the faulter (4), each phase starting when the
//! previous one's tasks have exited. A role that finds something wrong
//! (a call failing, a message it did not expect) reports its figure with
//! `ok = false`, which `cargo xtask bench` turns into an error.
#![no_std]
#![no_main]

mod fault;
mod ipc;
mod measure;
mod syscall;

use libtask::{Start, report};

libtask::entry!(main);

fn main(start: Start) {
    match start.arg {
        1 => syscall::null(),
        2 => syscall::switch_measure(),
        3 => syscall::switch_partner(),
        4 => ipc::server(),
        5 => ipc::client(),
        6 => fault::faulter(),
        7 => fault::supervisor(),
        other => report("bench:unknown_role", false, other),
    }
}
