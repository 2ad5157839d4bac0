//! Typed shared state (issue 13 items 2 and 3), booted from
//! `images/arcs.toml` (tasks/arcs): an `Arc<Mutex<T>>` whose holder faults
//! holding its lock is released exactly — the mutex inside the Arc's slot
//! poisoned and unlocked, the reference given back, the count exact, the
//! slot freed once by its last holder; an Arc passed to another task as
//! one value over typed IPC, with malformed messages, wrong reply types and
//! stale tokens refused by error values; instance indices for a manifest
//! entry with `count > 1`; one typed view of a region per task and across
//! tasks (`TypeMismatch`).

use abi::exit::GuestExit;
use qemu_tests::{Options, Run, boot_image, boot_with, task_bins};
use serde_json::Value;

/// Packs `manifest` (the `images/*.toml` format) and boots it.
fn boot_manifest(name: &str, manifest: &str) -> Run {
    let dir = xtask::paths::rewind_dir().join("qemu-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, manifest).unwrap();
    let img = xtask::images::pack_to_file(path.to_str().unwrap(), &task_bins())
        .unwrap_or_else(|e| panic!("{name}: packing: {e:#}"));
    boot_with(name, Options { image: Some(img), ..Options::default() })
}

/// The one check named `name`; it must be ok.
fn ok<'a>(run: &'a Run, name: &str) -> &'a Value {
    let found = run.checks(name);
    assert_eq!(found.len(), 1, "{}: expected one check {name:?}, got {found:#?}\nconsole:\n{}", run.name, run.console);
    assert_eq!(found[0]["ok"], true, "{}: check {name:?} failed: {}\nconsole:\n{}", run.name, found[0], run.console);
    found[0]
}

fn no_failed_checks(run: &Run) {
    let failed: Vec<_> = run.events_of("check").into_iter().filter(|c| c["ok"] != true).collect();
    assert!(failed.is_empty(), "{}: failed checks {failed:#?}\nconsole:\n{}", run.name, run.console);
}

const SERVER: &str = "endpoints = [\"faults\", \"acct\"]\n\n[[task]]\nname = \"fault-server\"\nbin = \"fault-server\"\npriority = 0\nstack_kib = 128\ncaps = [\"faults:recv\", \"supervisor\"]\n";

fn task(name: &str, arg: u64, caps: &str) -> String {
    format!("\n[[task]]\nname = \"{name}\"\nbin = \"arcs\"\narg = {arg}\ncaps = [{caps}]\n")
}

#[test]
fn an_arc_mutex_held_at_a_fault_is_poisoned_released_and_counted_exactly() {
    let manifest = format!(
        "description = \"Arc<Mutex<T>> held at a fault\"\n{SERVER}\n[[region]]\nname = \"held\"\nsize_kib = 8\n{}{}",
        task("owner", 1, "\"held:map\""),
        task("faulter", 2, "\"held:map\""),
    );
    let run = boot_manifest("typed-arc-mutex-fault", &manifest);
    run.expect_exit(GuestExit::Success);
    let faults = run.task_events("fault", "faulter");
    assert_eq!(faults.len(), 1, "{}: {faults:#?}", run.console);
    let seq = &faults[0]["seq"];
    // The fault server's releases for that fault: the mutex inside the
    // Arc's slot (poisoned and unlocked), then the reference.
    let releases: Vec<&Value> =
        run.events_of("release").into_iter().filter(|r| &r["seq"] == seq && r.get("by").is_some()).collect();
    let kinds: Vec<&str> = releases.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["mutex", "arc"], "{releases:#?}");
    assert_eq!(releases[0]["outcome"].as_str(), Some("released"), "{}", releases[0]);
    // Given back: the owner's reference still counted.
    assert_eq!(
        (releases[1]["outcome"].as_str(), releases[1]["count"].as_u64()),
        (Some("decremented"), Some(1)),
        "{}",
        releases[1]
    );
    let restart: Vec<&Value> = run.events_of("restart").into_iter().filter(|r| &r["seq"] == seq).collect();
    assert_eq!(restart.len(), 1);
    assert_eq!((restart[0]["from"].as_str(), restart[0]["attempt"].as_u64()), (Some("checkpoint"), Some(1)));
    // The retry found the mutex poisoned, and 2 holders (not 3).
    assert_eq!(ok(&run, "arcs:poisoned-on-retry")["value"], 1);
    assert_eq!(ok(&run, "arcs:count-on-retry")["value"], 2);
    // Afterwards: 1 holder, unlocked, repaired; the owner's drop freed the
    // slot, once.
    assert_eq!(ok(&run, "arcs:owner-after-fault")["value"], 1);
    assert_eq!(ok(&run, "arcs:freed-once")["value"], 1);
    no_failed_checks(&run);
}

#[test]
fn an_arc_passed_over_typed_ipc_is_one_value_and_bad_messages_are_errors() {
    let manifest = format!(
        "description = \"typed IPC\"\n{SERVER}\n[[region]]\nname = \"accts\"\nsize_kib = 8\n{}{}",
        task("server", 3, "\"accts:map\", \"acct:recv\""),
        task("client", 4, "\"accts:map\", \"acct:send\""),
    );
    let run = boot_manifest("typed-ipc-arc", &manifest);
    run.expect_exit(GuestExit::Success);
    // Ten deposits through the server, each with 2 holders while it
    // worked; the client's the only one after.
    assert_eq!(ok(&run, "arcs:ipc")["value"], 50);
    ok(&run, "arcs:malformed-refused");
    ok(&run, "arcs:bad-reply-detected");
    ok(&run, "arcs:stale-refused");
    ok(&run, "arcs:ipc-again");
    assert_eq!(ok(&run, "arcs:server")["value"], 13);
    assert_eq!(ok(&run, "arcs:server-malformed")["value"], 1);
    let ms = ok(&run, "arcs:instant")["value"].as_u64().unwrap();
    assert!(ms >= 20, "slept 20 ms, measured {ms}");
    assert!(run.events_of("fault").is_empty(), "no task faulted: {}", run.console);
    no_failed_checks(&run);
}

#[test]
fn the_arcs_image_runs_clean_and_instances_know_their_index() {
    let run = boot_image("typed-arcs-image", "arcs");
    run.expect_exit(GuestExit::Success);
    no_failed_checks(&run);
    let mut instances: Vec<(String, u64)> = run
        .checks("arcs:instance")
        .iter()
        .map(|c| (c["task_name"].as_str().unwrap().to_string(), c["value"].as_u64().unwrap()))
        .collect();
    instances.sort();
    assert_eq!(
        instances,
        [("inst-0".to_string(), 0), ("inst-1".to_string(), 1), ("inst-2".to_string(), 2)],
        "{}",
        run.console
    );
    assert_eq!(run.checks("arcs:freed-once").len(), 1);
    assert_eq!(run.checks("arcs:ipc").len(), 1);
}

#[test]
fn a_region_has_one_typed_view_in_a_task_and_across_tasks() {
    let manifest = format!(
        "description = \"typed views\"\n{SERVER}\n[[region]]\nname = \"views\"\nsize_kib = 4\n{}{}",
        task("views", 8, "\"views:map\""),
        task("other-view", 9, "\"views:map\""),
    );
    let run = boot_manifest("typed-views", &manifest);
    run.expect_exit(GuestExit::Success);
    // Opened again as the same types: the same statics.
    ok(&run, "arcs:same-view");
    // As another statics type of the same size, and with another slot
    // type: TypeMismatch, in the task that opened it first...
    assert_eq!(ok(&run, "arcs:other-view-refused")["value"], 2);
    // ... and in another task, from the header's type fingerprints.
    ok(&run, "arcs:other-task-view-refused");
    no_failed_checks(&run);
}
