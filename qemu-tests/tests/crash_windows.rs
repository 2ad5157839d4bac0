//! Issue 11, "no crash windows in libtask": `skip` and `regflip` at every
//! instruction of `checkpoint`'s open and of its commit, in the bank's
//! tellers (`faults/checkpoint-sweep.toml`). The script's `[expect]`
//! asks for 0 silent corruption (golden-run diff), 0 hangs, no leaked
//! lock, the total, and `bank:depth`: each teller ends with the recovery
//! page's depth and the kernel's (`CHECKPOINT_DEPTH`) both 0. The tests
//! also check the sweeps reached the code: some injections manifested
//! and were rolled back, and every teller reported its depth check.
//!
//! Both sweeps also run with 4 CPUs (issue 14; ignored: long).
//!
//! Issue 13: a #UD at every instruction of the typed Arc's `from_token`,
//! `clone` and `drop` (`faults/arc-sweep.toml`, tasks/arcs sweepers on one
//! `Arc<Mutex<Account>>`): 0 hangs, 0 silent corruption, and the count,
//! the balance and the single free exact after every boot.

use std::path::PathBuf;
use xtask::inject::{Options, Outcome, run_script};

fn dir() -> PathBuf {
    let d = xtask::paths::rewind_dir().join("qemu-tests").join("crash-windows");
    std::fs::create_dir_all(&d).expect("create the test folder");
    d
}

fn options(out: &str, cpus: Option<u32>) -> Options {
    Options {
        kernel: Some(qemu_tests::kernel()),
        bins: Some(qemu_tests::task_bins()),
        out_dir: Some(dir().join(out)),
        jobs: Some(1),
        cpus,
        ..Options::default()
    }
}

fn check(path: &std::path::Path, out: &str) {
    check_on(path, out, None)
}

fn check_on(path: &std::path::Path, out: &str, cpus: Option<u32>) {
    let done = run_script(path, &options(out, cpus)).expect("the runner runs");
    let count = |o: Outcome| done.report.injections.iter().filter(|e| e.verdict.outcome == o).count();
    assert_eq!(count(Outcome::SilentCorruption), 0, "{:?}", done.failures());
    assert_eq!(count(Outcome::Hang), 0, "{:?}", done.failures());
    assert!(count(Outcome::Recovered) > 0, "no injection was rolled back: the sweep missed the code");
    assert!(done.report.passed, "{:?}", done.failures());
}

#[test]
fn checkpoint_sweep_short() {
    check(&xtask::paths::root().join("faults").join("checkpoint-sweep.toml"), "short");
}

#[test]
fn arc_sweep() {
    check(&xtask::paths::root().join("faults").join("arc-sweep.toml"), "arc");
}

/// Issue 14: the same two sweeps with 4 CPUs (`--cpus 4`): the fault server,
/// the swept task and the other holders of its mutexes and Arcs on
/// different CPUs at once. The same expectations. Long (about 7 minutes
/// here: four vCPUs share one host thread under icount), so ignored: after
/// `cargo xtask build`, `cargo test -p qemu-tests --test crash_windows --
/// --ignored crash_window_sweeps_on_four_cpus` with `REWIND_KERNEL` and
/// `REWIND_TASK_BINS` set as `cargo xtask test` sets them (or
/// `cargo xtask inject faults/checkpoint-sweep.toml --cpus 4`). Passed on
/// the tree that added it (406 s).
#[test]
#[ignore]
fn crash_window_sweeps_on_four_cpus() {
    let faults = xtask::paths::root().join("faults");
    check_on(&faults.join("checkpoint-sweep.toml"), "short-cpus4", Some(4));
    check_on(&faults.join("arc-sweep.toml"), "arc-cpus4", Some(4));
}

/// Every register the injector flips (the 15 GPRs, rip, rsp, rflags; a low
/// and a high bit) at 60 steps of the open and the commit, and `skip` of
/// 1..3 bytes. Long (thousands of boots):
/// after `cargo xtask build`, `cargo test -p qemu-tests --test crash_windows
/// -- --ignored checkpoint_sweep_long` with `REWIND_KERNEL` and
/// `REWIND_TASK_BINS` set as `cargo xtask test` sets them. Not run yet.
#[test]
#[ignore]
fn checkpoint_sweep_long() {
    let short =
        std::fs::read_to_string(xtask::paths::root().join("faults").join("checkpoint-sweep.toml")).expect("script");
    let head = &short[..short.find("[[sweep]]").expect("a sweep")];
    let tail = &short[short.find("[checks]").expect("checks")..];
    let mut sweeps = String::new();
    let regs = [
        "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip",
        "rsp", "rflags",
    ];
    for symbol in ["scope_body::<libtask::checkpoint::Repeat<bank::teller", "libtask::checkpoint::precommit"] {
        let common = format!(
            "[[sweep]]\ntargets = [\"teller-0\", \"teller-1\", \"teller-faulty\"]\nsymbol = \"{symbol}\"\nsteps = [0, 59]\n"
        );
        for len in 1..=3 {
            sweeps += &format!("{common}kind = \"skip\"\nlen = {len}\n\n");
        }
        for reg in regs {
            for bit in [0, 40] {
                let bit = if reg == "rflags" && bit == 40 { 10 } else { bit };
                sweeps += &format!("{common}kind = \"regflip\"\nreg = \"{reg}\"\nbit = {bit}\n\n");
            }
        }
    }
    let path = dir().join("checkpoint-sweep-long.toml");
    std::fs::write(&path, format!("{head}{sweeps}{tail}")).expect("write the script");
    check(&path, "long");
}
