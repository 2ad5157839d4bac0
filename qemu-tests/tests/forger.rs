//! Forger tasks against the fault server (`images/forger.toml`,
//! `tasks/forger/`): forged registry entries naming the wrong kind of
//! shared object, and stack pointers that are not the scope's. Each attack
//! must end in a fresh start of its task — an `escalate` event whose
//! reason names the check that refused it, a `restart` from the image, no
//! rollback — and the shared words the forged entry named must be as the
//! task left them (the task checks them on its second run). The kernel and
//! the fault server stay up, and the spinner finishes.

use abi::exit::GuestExit;
use qemu_tests::{Run, boot_image};
use serde_json::Value;
use std::sync::OnceLock;

fn run() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| {
        let run = boot_image("forger", "forger");
        run.expect_exit(GuestExit::Success);
        run
    })
}

fn task_id(run: &Run, name: &str) -> u64 {
    let starts = run.task_events("task_start", name);
    assert_eq!(starts.len(), 1, "expected one task_start for {name}");
    starts[0]["task"].as_u64().unwrap()
}

fn of_task<'r>(run: &'r Run, ev: &str, id: u64) -> Vec<&'r Value> {
    run.events_of(ev).into_iter().filter(|e| e["task"] == id).collect()
}

/// The attack of task `name` ended in one fresh start, escalated for a
/// reason containing `reason`, and its second run's check `check` is ok.
fn fresh_start_for(name: &str, reason: &str, check: &str) {
    let run = run();
    let id = task_id(run, name);
    let faults = of_task(run, "fault", id);
    assert_eq!(faults.len(), 1, "{name}: one fault: {faults:#?}\nconsole:\n{}", run.console);
    let seq = &faults[0]["seq"];
    let restarts = of_task(run, "restart", id);
    assert_eq!(restarts.len(), 1, "{name}: {restarts:#?}");
    assert_eq!(restarts[0]["from"], "image", "{name}: a fresh start, not a rollback: {restarts:#?}");
    assert_eq!(&restarts[0]["seq"], seq);
    let escalations = of_task(run, "escalate", id);
    assert!(
        escalations
            .iter()
            .any(|e| e["action"] == "fresh_start" && e["reason"].as_str().is_some_and(|r| r.contains(reason))),
        "{name}: no fresh_start escalation for {reason:?}: {escalations:#?}"
    );
    // Nothing was released for the forged page.
    assert!(of_task(run, "release", id).is_empty(), "{name}: {:#?}", of_task(run, "release", id));
    let checks: Vec<&Value> = run.checks(check).into_iter().filter(|c| c["task"] == id).collect();
    assert!(checks.len() == 1 && checks[0]["ok"] == true, "{name}: {checks:#?}\nconsole:\n{}", run.console);
    assert!(run.checks("forger:rolled-back").is_empty(), "a forger scope was rolled back");
    let exits = run.task_events("task_exit", name);
    assert!(exits.len() == 1 && exits[0]["code"] == 0, "{name}: {exits:#?}");
}

#[test]
fn an_arc_entry_naming_a_mutex_releases_nothing() {
    fresh_start_for("arc-on-mutex", "arc entry not at an arc slot start", "forger:arc-on-mutex");
}

#[test]
fn a_mutex_entry_naming_an_arc_slot_releases_nothing() {
    fresh_start_for(
        "mutex-on-slot",
        "mutex entry outside the region's statics area and Arc payloads",
        "forger:mutex-on-slot",
    );
}

#[test]
fn a_kernel_stack_pointer_is_not_the_scope_frame() {
    fresh_start_for("kernel-rsp", "not the scope's", "forger:kernel-rsp");
}

#[test]
fn a_stack_pointer_into_the_callers_frame_is_not_the_scope_frame() {
    fresh_start_for("caller-rsp", "not the scope's", "forger:caller-rsp");
}

#[test]
fn the_fault_server_and_the_bystander_survive() {
    let run = run();
    let server = task_id(run, "fault-server");
    assert!(of_task(run, "fault", server).is_empty(), "the fault server faulted");
    assert!(of_task(run, "task_panic", server).is_empty(), "the fault server panicked");
    assert!(run.task_events("task_exit", "fault-server").is_empty(), "the fault server exited");
    // It answered all four attacks.
    assert_eq!(run.events_of("fault_report").len(), 4);
    let exits = run.task_events("task_exit", "spinner");
    assert!(exits.len() == 1 && exits[0]["code"] == 0, "spinner: {exits:#?}");
}
