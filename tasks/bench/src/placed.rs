//! The two-CPU rows: the IPC round trip and fault → checkpoint with the
//! two parties on the same CPU and on different CPUs
//! (`images/bench-smp.toml`, booted by `cargo xtask bench` with
//! `--cpus 2`; every task pinned with the manifest's `cpu`).
//!
//! The measurements are those of the one-CPU rows, unchanged:
//! [`crate::ipc`]'s asm `call` loop against a `reply_recv` server, and
//! [`crate::recover`]'s main round (8 dirty pages, 10 frames, two mutexes
//! and an Arc, the real fault server). Only the placement differs.
//!
//! What a figure counts with two CPUs. Under `-icount` QEMU runs both
//! vCPUs round-robin on one host thread, and the virtual clock the TSC
//! reads advances with the instructions of *whichever* vCPU runs: a TSC
//! difference is the sum of the guest instructions both CPUs executed in
//! between. QEMU switches to the other vCPU when the running one halts
//! (or at a timer deadline), not when it sends an IPI (in round-robin mode
//! the sender and the target share a thread, so the IPI only marks the
//! target's interrupt pending). So:
//!
//! * a cross-CPU IPC round trip is serialised exactly as its critical
//!   path: the client's CPU sends the reschedule IPI and halts (the client
//!   is blocked, nothing else is runnable there), the server's CPU leaves
//!   `hlt`, runs the server, IPIs back and halts. The figure is the whole
//!   work of the round trip on both CPUs, the IPIs and both exits from
//!   `hlt` included, nothing counted twice;
//! * a fault with the fault server on the other CPU: the faulting CPU
//!   halts after delivering (so delivery, walk, plan and `RECOVER` are the
//!   critical path), but the server's CPU then does *not* halt: the server
//!   goes on with its deferred report (with one CPU the recovered task
//!   runs first and the report waits; here the task's CPU is another),
//!   and the task's CPU runs only when the server's halts. So the TSC
//!   difference the task reads includes the report (~18,000
//!   instructions), which a real machine would overlap. The second figure
//!   of each fault row, fault → rolled back (`RECOVER` done), is read off
//!   the best round's `fault_report` phases by xtask: the recovery's own
//!   cost, comparable between the two placements.
//!
//! These counts are not comparable with the one-CPU rows: with several
//! CPUs the kernel takes the general IPC path (the fastpath is one-CPU
//! only; DESIGN.md, SMP), so even the same-CPU IPC row measures another
//! path. Anything else running would add its instructions too, so the
//! phases run strictly one after the other: each measuring role waits on
//! a notification the previous one signals when it is done (`turn1` ..
//! `turn3`), and every other task is blocked meanwhile. The timer ticks
//! of both CPUs still land in some rounds; the best round misses them.
//!
//! | arg | role | figure |
//! |---|---|---|
//! | 9 | IPC server (CPU 0): `reply_recv` until two callers said STOP | — |
//! | 10 | IPC client, CPU 0, signals `turn1` | `ipc_call_reply_same_cpu` |
//! | 11 | IPC client, CPU 1, waits `turn1`, signals `turn2` | `ipc_call_reply_cross_cpu` |
//! | 12 | faults in its scope, CPU 0 (the fault server's), waits `turn2`, signals `turn3` | `fault_to_checkpoint_same_cpu` |
//! | 13 | the same on CPU 1, waits `turn3` | `fault_to_checkpoint_cross_cpu` |
//!
//! `cargo xtask bench` checks from the events that each pair really ran
//! where the row says (`task_start`'s `cpu` of the reporting task and of
//! its peer, and the faults' `cpu`).

use libtask::ipc::{Timeout, cap, signal, wait};
use libtask::report;

/// Roles 9 to 13 (and any unknown role: `bench:unknown_role`, not ok).
#[inline(never)]
pub fn role(arg: u64) {
    match arg {
        9 => crate::ipc::server_for(2),
        10 => ipc_client("bench:ipc_call_reply_same_cpu", None, Some("turn1")),
        11 => ipc_client("bench:ipc_call_reply_cross_cpu", Some("turn1"), Some("turn2")),
        12 => recover(
            "bench:fault_to_checkpoint_same_cpu",
            "bench:fault_to_checkpoint_same_cpu_seq",
            Some("turn2"),
            Some("turn3"),
        ),
        13 => recover(
            "bench:fault_to_checkpoint_cross_cpu",
            "bench:fault_to_checkpoint_cross_cpu_seq",
            Some("turn3"),
            None,
        ),
        other => report("bench:unknown_role", false, other),
    }
}

/// Waits for notification `name` (the previous phase is over), if given.
fn wait_turn(name: Option<&str>) -> bool {
    match name {
        None => true,
        Some(n) => cap(n).and_then(|c| wait(c, Timeout::Forever)).is_ok(),
    }
}

/// Lets the next phase start, if there is one.
fn pass_turn(name: Option<&str>) {
    if let Some(n) = name
        && let Err(e) = cap(n).and_then(|c| signal(c, 1))
    {
        report("bench:turn", false, e as u64);
    }
}

/// Roles 10 and 11.
pub fn ipc_client(figure: &str, after: Option<&str>, next: Option<&str>) {
    if !wait_turn(after) {
        return report(figure, false, 0);
    }
    crate::ipc::client_only(figure);
    pass_turn(next);
}

/// Roles 12 and 13: `figure`, and the `seq` of its best round's fault as
/// `seq_name`.
pub fn recover(figure: &str, seq_name: &str, after: Option<&str>, next: Option<&str>) {
    if !wait_turn(after) {
        return report(figure, false, 0);
    }
    crate::recover::measure_main(figure, seq_name);
    pass_turn(next);
}
