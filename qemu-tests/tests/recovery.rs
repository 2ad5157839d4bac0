//! Transactional recovery, task side: checkpoint scopes, the shared
//! `Mutex` and `Arc`, their registries, and the demos built on them
//! (`docs/recovery.md`).
//!
//! Two kinds of boots:
//!
//! * **without a fault server** — images written here, from the demo
//!   binaries' test roles: what libtask does on its own (scopes that commit,
//!   futex wait/wake between two tasks, Arc counts and frees, deferred
//!   releases across scopes) and what the kernel does for a hung lock
//!   holder (a `watchdog` fault). Nothing here depends on releases;
//! * **the demo images** (`images/bank.toml`, `pipeline.toml`,
//!   `hung-lock.toml`), with the fault server: a fault in a checkpoint
//!   scope while holding a mutex and an Arc reference, released from the
//!   registries, rolled back, re-run; the invariants hold.

use abi::exit::GuestExit;
use qemu_tests::{Options, Run, boot_image, boot_with, task_bins};
use serde_json::Value;

/// Packs a manifest written here (`images/` holds the user-facing ones)
/// and boots it.
fn boot_manifest(name: &str, manifest: &str) -> Run {
    let dir = xtask::paths::rewind_dir().join("qemu-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, manifest).unwrap();
    let img = xtask::images::pack_to_file(path.to_str().unwrap(), &task_bins())
        .unwrap_or_else(|e| panic!("{name}: packing: {e:#}"));
    boot_with(name, Options { image: Some(img), ..Options::default() })
}

/// The one check named `name`, which must be ok.
fn ok<'a>(run: &'a Run, name: &str) -> &'a Value {
    let found = run.checks(name);
    assert_eq!(found.len(), 1, "{}: expected one check {name:?}, got {found:#?}\nconsole:\n{}", run.name, run.console);
    assert_eq!(found[0]["ok"], true, "{}: check {name:?} failed: {}\nconsole:\n{}", run.name, found[0], run.console);
    found[0]
}

fn all_ok(run: &Run, name: &str, n: usize) {
    let found = run.checks(name);
    assert_eq!(found.len(), n, "{}: expected {n} checks {name:?}, got {found:#?}\nconsole:\n{}", run.name, run.console);
    assert!(
        found.iter().all(|c| c["ok"] == true),
        "{}: {name:?} failed: {found:#?}\nconsole:\n{}",
        run.name,
        run.console
    );
}

fn no_failed_checks(run: &Run) {
    let failed: Vec<_> = run.events_of("check").into_iter().filter(|c| c["ok"] != true).collect();
    assert!(failed.is_empty(), "{}: failed checks {failed:#?}\nconsole:\n{}", run.name, run.console);
}

const BANK_REGION: &str = "[[region]]\nname = \"bank\"\nsize_kib = 8\n";

#[test]
fn checkpoint_scopes_commit_nest_and_defer_releases() {
    let run = boot_manifest(
        "recovery-checkpoint",
        &format!(
            "description = \"checkpoint self-test\"\n{BANK_REGION}[[task]]\nname = \"selftest\"\nbin = \"bank\"\narg = 300\ncaps = [\"bank:map\"]\n"
        ),
    );
    run.expect_exit(GuestExit::Success);
    // Value, attempt 0, depth back to 0.
    ok(&run, "checkpoint:scope");
    // Nested scopes keep stack and heap writes over 16 pages.
    ok(&run, "checkpoint:nested");
    // MAX_SCOPES open, the next refused.
    assert_eq!(ok(&run, "checkpoint:max-depth")["value"], 8);
    // A guard of an outer scope dropped in an inner one stays locked until
    // the commit; relocking it takes it back; a guard returned from a scope
    // is owned by the parent and unlocks at once there.
    ok(&run, "checkpoint:deferred-unlock");
    ok(&run, "checkpoint:relock-deferred");
    ok(&run, "checkpoint:guard-escapes");
    // `repeat`: runs chained by renews, each a depth-1 scope of the kernel
    // too; a run that drops an earlier run's guard leaves it locked until
    // the renew, which unlocks it (the kernel, `RELEASE_AT_COMMIT`).
    assert_eq!(ok(&run, "checkpoint:repeat")["value"], 5);
    ok(&run, "checkpoint:repeat-deferred");
    no_failed_checks(&run);
    assert!(run.events_of("fault").is_empty(), "no fault expected");
    assert!(run.events_of("task_panic").is_empty(), "no panic expected");
}

#[test]
fn mutex_sleeps_in_the_futex_when_contended_and_not_otherwise() {
    let task = |name: &str, arg: u32| {
        format!("[[task]]\nname = \"{name}\"\nbin = \"bank\"\narg = {arg}\ncaps = [\"bank:map\"]\n")
    };
    let run = boot_manifest(
        "recovery-mutex",
        &format!("description = \"mutex\"\n{BANK_REGION}{}{}", task("holder", 301), task("waiter", 302)),
    );
    run.expect_exit(GuestExit::Success);
    ok(&run, "mutex:holder");
    // The holder keeps it across a 130 ms sleep; the waiter is woken by
    // the unlock's FUTEX_WAKE (not by the end of a 100 ms wait slice, 200).
    let waited = ok(&run, "mutex:contended")["value"].as_u64().unwrap();
    assert!((100..190).contains(&waited), "waited {waited} ms");
    assert_eq!(ok(&run, "mutex:uncontended")["value"], 1000);
    no_failed_checks(&run);
}

#[test]
fn arc_buffers_are_allocated_and_freed_exactly_once() {
    let task = |name: &str, arg: u32| {
        format!("[[task]]\nname = \"{name}\"\nbin = \"pipeline\"\narg = {arg}\ncaps = [\"pipe:map\"]\n")
    };
    let run = boot_manifest(
        "recovery-arc",
        &format!(
            "description = \"arc\"\n[[region]]\nname = \"pipe\"\nsize_kib = 8\n{}{}{}",
            task("producer", 1),
            task("consumer-even", 2),
            task("consumer-odd", 3)
        ),
    );
    run.expect_exit(GuestExit::Success);
    assert_eq!(ok(&run, "pipeline:produced")["value"], 200);
    all_ok(&run, "pipeline:consumed", 2);
    all_ok(&run, "pipeline:checksums", 2);
    let shares: u64 = run.checks("pipeline:consumed").iter().map(|c| c["value"].as_u64().unwrap()).sum();
    assert_eq!(shares, 200);
    // All 200 consumed, no double free, no slot still counted — including
    // the references dropped inside a nested scope (deferred).
    assert_eq!(ok(&run, "pipeline:freed-once")["value"], 200);
    no_failed_checks(&run);
}

#[test]
fn a_hung_lock_holder_becomes_a_watchdog_fault() {
    let task = |name: &str, arg: u32, extra: &str| {
        format!("[[task]]\nname = \"{name}\"\nbin = \"hung-lock\"\narg = {arg}\ncaps = [\"hung:map\"]\n{extra}")
    };
    let run = boot_manifest(
        "recovery-hung",
        &format!(
            "description = \"hung\"\n[[region]]\nname = \"hung\"\nsize_kib = 4\n{}{}{}",
            task("hanger", 1, "watchdog_ms = 200\n"),
            task("waiter", 2, ""),
            task("bystander", 3, "")
        ),
    );
    run.expect_exit(GuestExit::Success);
    let faults = run.task_events("fault", "hanger");
    assert_eq!(faults.len(), 1, "{}: {faults:#?}", run.console);
    assert_eq!(faults[0]["kind"], "watchdog");
    // The others go on while it spins.
    ok(&run, "hung-lock:bystander");
    // Without a fault server nobody releases the lock: the waiter gives up
    // (value 0). The demo image, with the server, gets it poisoned.
    let released = run.checks("hung-lock:released");
    assert_eq!(released.len(), 1, "the waiter must report: {}", run.console);
    assert_eq!((released[0]["ok"].clone(), released[0]["value"].clone()), (Value::Bool(false), Value::from(0)));
}

// ---- the demo images, with the fault server ----

#[test]
fn bank_total_is_conserved_through_a_fault_mid_transfer() {
    let run = boot_image("recovery-bank", "bank");
    run.expect_exit(GuestExit::Success);
    all_ok(&run, "bank:teller-done", 3);
    assert_eq!(ok(&run, "bank:tellers-done")["value"], 3);
    assert_eq!(ok(&run, "bank:total")["value"], 8000);
    // The faulty teller's mutex was released from its registry and its
    // scope re-run; someone repaired the torn transfer.
    let faults = run.task_events("fault", "teller-faulty");
    assert_eq!(faults.len(), 1, "{}", run.console);
    let seq = &faults[0]["seq"];
    let releases: Vec<_> = run.events_of("release").into_iter().filter(|r| &r["seq"] == seq).collect();
    assert_eq!(releases.len(), 1, "{releases:#?}");
    assert_eq!((releases[0]["kind"].as_str(), releases[0]["outcome"].as_str()), (Some("mutex"), Some("released")));
    assert_eq!(&ok(&run, "bank:retried")["value"], seq);
    assert_eq!(ok(&run, "bank:repaired")["value"], 1);
    no_failed_checks(&run);
}

#[test]
fn pipeline_frees_every_buffer_once_through_a_fault_holding_one() {
    let run = boot_image("recovery-pipeline", "pipeline");
    run.expect_exit(GuestExit::Success);
    let faults = run.task_events("fault", "consumer-faulty");
    assert_eq!(faults.len(), 1, "{}", run.console);
    let seq = &faults[0]["seq"];
    let kinds: Vec<_> = run
        .events_of("release")
        .into_iter()
        .filter(|r| &r["seq"] == seq)
        .map(|r| r["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["mutex", "arc"], "the queue lock, then the buffer reference");
    ok(&run, "pipeline:retried");
    assert_eq!(ok(&run, "pipeline:freed-once")["value"], 200);
    all_ok(&run, "pipeline:checksums", 2);
    no_failed_checks(&run);
}

#[test]
fn hung_lock_is_released_poisoned_to_the_waiter() {
    let run = boot_image("recovery-hung-lock", "hung-lock");
    run.expect_exit(GuestExit::Success);
    let faults = run.task_events("fault", "hanger");
    assert_eq!(faults.len(), 1, "{}", run.console);
    assert_eq!(faults[0]["kind"], "watchdog");
    let seq = &faults[0]["seq"];
    assert!(
        run.events_of("release").iter().any(|r| &r["seq"] == seq && r["kind"] == "mutex" && r["outcome"] == "released")
    );
    assert_eq!(ok(&run, "hung-lock:released")["value"], 1, "got it, poisoned");
    ok(&run, "hung-lock:bystander");
    no_failed_checks(&run);
}
