//! Issue 13 item 3, std-like sync: `RwLock`, `Condvar` and `Once`/`OnceLock`
//! in shared memory, with holders that fault (`tasks/rwlock`).
//!
//! * the demo image (`images/rwlock.toml`): a writer faults mid-move
//!   holding the write lock, a reader holding an outer and an inner
//!   scope's read (and later one read), a consumer right after its
//!   `Condvar` wait, an initializer inside the `OnceLock` closure. The
//!   releases are the right kinds and counts (the inner read only: the
//!   outer one survives), every invariant holds, nothing is left held;
//! * a hung write-lock holder: the watchdog faults it, the fault server
//!   releases the write lock poisoned to the waiter;
//! * the crash-window sweep (`faults/rwlock-sweep.toml`): a #UD at every
//!   instruction of read/write lock and unlock and of `Once` init, in
//!   their callers' scopes: 0 silent corruption, 0 hangs, 0 leaked locks;
//!   and kills at random times (`faults/rwlock-kills.toml`).

use abi::exit::GuestExit;
use qemu_tests::{Options, Run, boot_image, boot_with, task_bins};
use serde_json::Value;
use xtask::inject::{Options as InjectOptions, Outcome, run_script};

fn ok<'a>(run: &'a Run, name: &str) -> &'a Value {
    let found = run.checks(name);
    assert_eq!(found.len(), 1, "{}: expected one check {name:?}, got {found:#?}\nconsole:\n{}", run.name, run.console);
    assert_eq!(found[0]["ok"], true, "{}: check {name:?} failed: {}\nconsole:\n{}", run.name, found[0], run.console);
    found[0]
}

fn all_ok<'a>(run: &'a Run, name: &str, n: usize) -> Vec<&'a Value> {
    let found = run.checks(name);
    assert_eq!(found.len(), n, "{}: expected {n} checks {name:?}, got {found:#?}\nconsole:\n{}", run.name, run.console);
    assert!(
        found.iter().all(|c| c["ok"] == true),
        "{}: {name:?} failed: {found:#?}\nconsole:\n{}",
        run.name,
        run.console
    );
    found
}

/// The releases made for the fault(s) of task `task`: `(kind, outcome, count)`.
fn releases_of(run: &Run, task: &str) -> Vec<(String, String, Option<u64>)> {
    let seqs: Vec<Value> = run.task_events("fault", task).iter().map(|f| f["seq"].clone()).collect();
    assert!(!seqs.is_empty(), "{task} never faulted:\n{}", run.console);
    run.events_of("release")
        .into_iter()
        .filter(|r| seqs.contains(&r["seq"]))
        .map(|r| {
            (r["kind"].as_str().unwrap().to_string(), r["outcome"].as_str().unwrap().to_string(), r["count"].as_u64())
        })
        .collect()
}

#[test]
fn rwlock_condvar_and_once_users_fault_and_nothing_leaks() {
    let run = boot_image("sync-rwlock", "rwlock");
    run.expect_exit(GuestExit::Success);
    // The writer's fault: its write lock, poisoned and released; a writer
    // then undid the torn move.
    let w = releases_of(&run, "writer-faulty");
    assert_eq!(w, [("rwlock_write".into(), "released".into(), None)], "{}", run.console);
    assert!(run.events_of("release").iter().any(|r| r["kind"] == "rwlock_write" && r["poisoned"] == true));
    assert!(!run.checks("rwlock:repaired").is_empty(), "nobody repaired the torn move:\n{}", run.console);
    // The reader faulted twice: holding an outer and an inner scope's
    // read (rolled back to the inner scope: one read given back, the
    // outer one kept), then holding one read (rolled back to the outer
    // scope: that read given back).
    let r = releases_of(&run, "reader-faulty");
    assert_eq!(
        r,
        [("rwlock_read".into(), "released".into(), Some(1)), ("rwlock_read".into(), "released".into(), Some(1))],
        "{}",
        run.console
    );
    let scopes: Vec<_> = run.task_events("restart", "reader-faulty").iter().map(|e| e["scope"].clone()).collect();
    assert_eq!(scopes, [Value::from(2), Value::from(1)], "{}", run.console);
    // The consumer held the mutex after its wait; the initializer ran the
    // Once, which was reset for a re-run.
    assert_eq!(releases_of(&run, "consumer-faulty"), [("mutex".into(), "released".into(), None)]);
    assert_eq!(releases_of(&run, "init-faulty"), [("once".into(), "released".into(), None)]);
    // Invariants: no torn table seen, every move exactly once, every item
    // consumed once, one config (the closure ran twice: once faulted).
    for c in all_ok(&run, "rwlock:reader-done", 2) {
        assert_eq!(c["value"], 0, "torn tables seen");
    }
    all_ok(&run, "rwlock:writer-done", 2);
    all_ok(&run, "rwlock:consumer-done", 2);
    all_ok(&run, "rwlock:once", 3);
    assert_eq!(ok(&run, "rwlock:workers-done")["value"], 10);
    assert_eq!(ok(&run, "rwlock:total")["value"], 10_000);
    assert_eq!(ok(&run, "rwlock:writes")["value"], 120);
    assert_eq!(ok(&run, "rwlock:items")["value"], 40);
    assert_eq!(ok(&run, "rwlock:once-runs")["value"], 2);
    // Nothing held at the end: no read slot, no writer, the queue free.
    assert_eq!(ok(&run, "rwlock:locks-released")["value"], 0);
    let failed: Vec<_> = run.events_of("check").into_iter().filter(|c| c["ok"] != true).collect();
    assert!(failed.is_empty(), "failed checks {failed:#?}\n{}", run.console);
}

#[test]
fn a_hung_write_lock_holder_is_released_poisoned_by_the_watchdog_path() {
    let dir = xtask::paths::rewind_dir().join("qemu-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sync-rwlock-hung.toml");
    let task = |name: &str, arg: u32, extra: &str| {
        format!("[[task]]\nname = \"{name}\"\nbin = \"rwlock\"\narg = {arg}\ncaps = [\"rw:map\"]\n{extra}")
    };
    let manifest = format!(
        "description = \"a task hangs holding an RwLock write lock\"\nendpoints = [\"faults\"]\n\
         [[region]]\nname = \"rw\"\nsize_kib = 8\n\
         [[task]]\nname = \"fault-server\"\nbin = \"fault-server\"\npriority = 0\nstack_kib = 128\n\
         caps = [\"faults:recv\", \"supervisor\"]\n{}{}",
        task("hanger", 6, "watchdog_ms = 200\n"),
        task("waiter", 7, "")
    );
    std::fs::write(&path, manifest).unwrap();
    let img = xtask::images::pack_to_file(path.to_str().unwrap(), &task_bins()).expect("packing");
    let run = boot_with("sync-rwlock-hung", Options { image: Some(img), ..Options::default() });
    run.expect_exit(GuestExit::Success);
    let faults = run.task_events("fault", "hanger");
    assert_eq!(faults.len(), 1, "{}", run.console);
    assert_eq!(faults[0]["kind"], "watchdog");
    assert_eq!(releases_of(&run, "hanger"), [("rwlock_write".into(), "released".into(), None)]);
    assert_eq!(ok(&run, "rwlock:hung-released")["value"], 1, "got it, poisoned");
    ok(&run, "rwlock:hanger-restarted");
}

fn sweep(script: &str, out: &str) {
    let dir = xtask::paths::rewind_dir().join("qemu-tests").join("sync-sweeps");
    std::fs::create_dir_all(&dir).expect("create the test folder");
    let options = InjectOptions {
        kernel: Some(qemu_tests::kernel()),
        bins: Some(task_bins()),
        out_dir: Some(dir.join(out)),
        jobs: Some(1),
        ..InjectOptions::default()
    };
    let path = xtask::paths::root().join("faults").join(script);
    let done = run_script(&path, &options).expect("the runner runs");
    let count = |o: Outcome| done.report.injections.iter().filter(|e| e.verdict.outcome == o).count();
    assert_eq!(count(Outcome::SilentCorruption), 0, "{:?}", done.failures());
    assert_eq!(count(Outcome::Hang), 0, "{:?}", done.failures());
    assert!(count(Outcome::Recovered) > 0, "no injection was rolled back: the sweep missed the code");
    assert!(done.report.passed, "{:?}", done.failures());
}

/// A #UD at each of the first instructions of `RwLock` read and write
/// lock, the read guard's drop and `Once` init (short form: a few steps
/// each, spread over the path; the full one is `rwlock_sweep_long`).
#[test]
fn rwlock_and_once_crash_window_sweep_short() {
    sweep("rwlock-sweep.toml", "short");
}

/// Kills (mostly) and #UDs at random times in every kind of user, the
/// consumers asleep on the Condvar included (`faults/rwlock-kills.toml`).
#[test]
fn rwlock_users_killed_at_random_times() {
    sweep("rwlock-kills.toml", "kills");
}

/// Every instruction boundary of the four paths (0..150 each): hundreds of
/// boots. After `cargo xtask build`: `cargo test -p qemu-tests --test
/// sync_primitives -- --ignored rwlock_sweep_long` with `REWIND_KERNEL`
/// and `REWIND_TASK_BINS` set as `cargo xtask test` sets them; or `cargo
/// xtask inject faults/rwlock-sweep-long.toml`.
#[test]
#[ignore]
fn rwlock_sweep_long() {
    sweep("rwlock-sweep-long.toml", "long");
}
