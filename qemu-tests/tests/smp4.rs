//! The representative suites again, on 4 CPUs (issue 14): recovery
//! acceptance, IPC, the task suite (isolation among it) and the IPC-under-
//! faults rows, included here as modules. A boot whose test names no CPU
//! count gets `qemu_tests::default_cpus()`, which is 4 in this binary (its
//! name starts with `smp4`); the runs' files go to `<run name>-cpus4`. The
//! injection smoke campaign on 4 CPUs is `inject::smoke_cpus4`
//! (`cargo xtask test`).
//!
//! What differs with several CPUs, and why these still hold: tasks run on
//! any CPU, the fault server may run on another than the faulted task, and
//! a task made runnable may start on an idle CPU before the task that woke
//! it runs again. The tests assert on outcomes (checks, releases, rollbacks,
//! exit codes), which the kernel keeps exact whichever CPU does what.

#[path = "recovery_acceptance.rs"]
mod recovery_acceptance;

#[path = "ipc.rs"]
mod ipc;

#[path = "tasks.rs"]
mod tasks;

#[test]
fn this_binary_boots_four_cpus() {
    assert_eq!(qemu_tests::default_cpus(), 4);
}
