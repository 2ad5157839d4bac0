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
//! | 1 | `syscall::null`, then `tick::measure` | `null_syscall`, `timer_tick` |
//! | 2 | `syscall::switch_measure`  | `context_switch` (yield ping-pong with arg 3) |
//! | 3 | `syscall::switch_partner`  | — |
//! | 4 | `ipc::server`              | — (answers arg 5 with `reply_recv`, then request-scoped) |
//! | 5 | `ipc::client`              | `ipc_call_reply`, `ipc_request_in_scope` |
//! | 6 | `fault::faulter`           | `fault_to_resume` |
//! | 7 | `fault::supervisor`        | `fault_to_server` |
//! | 8 | `scope::measure`, then `lock::measure`, then `recover::measure` | `checkpoint_open_commit`, `checkpoint_pages`, `first_write_in_scope`; `lock_unlock_spin`, `lock_unlock_mutex`, `registry_cost`; `fault_to_checkpoint` (and `_cold`, `_64_pages`, `_20_frames`, `_40_frames`), `rollback_per_page`, `walk_per_frame` |
//! | 9–13 | `placed.rs`: the two-CPU rows (`images/bench-smp.toml`) | `ipc_call_reply_same_cpu`, `ipc_call_reply_cross_cpu`, `fault_to_checkpoint_same_cpu`, `fault_to_checkpoint_cross_cpu` |
//!
//! Role 8 is one task for three groups of figures because every task of an
//! image costs the others: the scheduler's pick scans the whole task table
//! on every switch, so each task added to the image adds to the context
//! switch and IPC figures (this one and the real fault server, added
//! together, moved them from 395 to 424 and from 1,248 to 1,435). It runs its
//! groups in that order — the empty scopes first, while its address space
//! holds only its image and stack (`checkpoint_pages`) — and uses region
//! `shared` (`shared.rs`: the mutexes, the spinlock, the Arc slots, the
//! word that carries a TSC across a rollback). Its faults go to the *real*
//! fault server (`fault-server`, endpoint `faults`), whose recovery path is
//! what `recover.rs` measures; every other role sends any fault to the
//! benchmark supervisor (arg 7, endpoint `bench-faults`), for which each
//! fault but the faulter's `ud2` is a failure.
//!
//! The roles must not disturb each other's loops, so the manifest runs them
//! one after the other by priority: the two fault servers (0) wait in
//! `recv` and only run when a fault arrives; then the null syscall (1), the
//! yield pair (2), the IPC pair (3), the faulter (4) and role 8 (5), each
//! phase starting when the previous one's tasks have exited. A role that
//! finds something wrong (a call failing, a message it did not expect)
//! reports its figure with `ok = false`, which `cargo xtask bench` turns
//! into an error.
#![no_std]
#![no_main]

mod fault;
mod ipc;
mod lock;
mod measure;
mod placed;
mod recover;
mod scope;
mod shared;
mod syscall;
mod tick;

use libtask::Start;

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
        8 => {
            scope::measure();
            lock::measure(start.id);
            recover::measure();
        }
        // The two-CPU rows, out of line: the roles above keep the
        // stack and code they were measured with.
        other => placed::role(other),
    }
}
