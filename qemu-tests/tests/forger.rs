//! Forger tasks against the fault server (`images/forger.toml`,
//! `tasks/forger/`): forged registry entries naming the wrong kind of
//! shared object, and stack pointers that are not the scope's. Each forged
//! registry entry names no object of its kind, so it must be left out — a
//! `release` event with outcome `ignored` whose `error` names the check,
//! no release done — and the task rolled back, and the shared words the
//! forged entry named must be as the task left them (the task checks them
//! on its re-run). A forged
//! stack pointer must end in a rollback all the same (the rollback does not
//! rest on the stack), with the scope's frame reported as unknown. The
//! kernel and the fault server stay up, and the spinner finishes.

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

/// The attack of task `name` ended in one rollback of scope 1 with its
/// forged entry of registry `origin` left out for a reason containing
/// `reason` (and nothing released, nothing escalated), and the re-run's
/// check `check` is ok: the named shared words are untouched.
fn left_out_for(name: &str, origin: &str, reason: &str, check: &str) {
    let run = run();
    let id = task_id(run, name);
    let faults = of_task(run, "fault", id);
    assert_eq!(faults.len(), 1, "{name}: one fault: {faults:#?}\nconsole:\n{}", run.console);
    let seq = &faults[0]["seq"];
    let restarts = of_task(run, "restart", id);
    assert_eq!(restarts.len(), 1, "{name}: {restarts:#?}");
    assert_eq!(restarts[0]["from"], "checkpoint", "{name}: a rollback, not a fresh start: {restarts:#?}");
    assert_eq!(&restarts[0]["seq"], seq);
    assert!(of_task(run, "escalate", id).is_empty(), "{name}: {:#?}", of_task(run, "escalate", id));
    // One `release` event: the forged entry, ignored, with the reason.
    let releases = of_task(run, "release", id);
    assert_eq!(releases.len(), 1, "{name}: {releases:#?}");
    let r = releases[0];
    assert_eq!((&r["outcome"], &r["origin"], &r["seq"]), (&"ignored".into(), &origin.into(), seq), "{name}: {r:#?}");
    assert!(r["error"].as_str().is_some_and(|e| e.contains(reason)), "{name}: {r:#?}");
    let checks: Vec<&Value> = run.checks(check).into_iter().filter(|c| c["task"] == id).collect();
    assert!(checks.len() == 1 && checks[0]["ok"] == true, "{name}: {checks:#?}\nconsole:\n{}", run.console);
    let exits = run.task_events("task_exit", name);
    assert!(exits.len() == 1 && exits[0]["code"] == 0, "{name}: {exits:#?}");
}

#[test]
fn an_arc_entry_naming_a_mutex_is_left_out_and_releases_nothing() {
    left_out_for("arc-on-mutex", "arc_registry", "arc entry not at an arc slot start", "forger:arc-on-mutex");
}

#[test]
fn a_mutex_entry_naming_an_arc_slot_is_left_out_and_releases_nothing() {
    left_out_for(
        "mutex-on-slot",
        "mutex_registry",
        "mutex entry outside the region's statics area and Arc payloads",
        "forger:mutex-on-slot",
    );
}

/// Attack 7: a mutex whose word names no task (a stray write) is not
/// waited on for ever — `lock` panics inside the scope, the scope is
/// rolled back, and the re-run (word repaired) locks it.
#[test]
fn a_mutex_word_naming_no_task_faults_instead_of_waiting_for_ever() {
    let run = run();
    let id = task_id(run, "not-a-mutex");
    let faults = of_task(run, "fault", id);
    assert_eq!(faults.len(), 1, "{faults:#?}\nconsole:\n{}", run.console);
    assert_eq!(faults[0]["kind"], "panic", "{faults:#?}");
    let panics = of_task(run, "task_panic", id);
    assert!(
        panics.len() == 1 && panics[0]["message"].as_str().is_some_and(|m| m.contains("names no task")),
        "{panics:#?}"
    );
    let restarts = of_task(run, "restart", id);
    assert!(restarts.len() == 1 && restarts[0]["from"] == "checkpoint", "{restarts:#?}");
    let checks: Vec<&Value> = run.checks("forger:not-a-mutex").into_iter().filter(|c| c["task"] == id).collect();
    assert!(checks.len() == 1 && checks[0]["ok"] == true && checks[0]["value"] == 1, "{checks:#?}");
    let exits = run.task_events("task_exit", "not-a-mutex");
    assert!(exits.len() == 1 && exits[0]["code"] == 0, "{exits:#?}");
}

/// The attack of task `name` (a smashed stack pointer in its scope) ended
/// in one rollback of scope 1, with nothing released and the scope's frame
/// reported as unknown (the walk could not reach it), and the re-run's
/// check `check` is ok.
fn rolled_back_for(name: &str, check: &str) {
    let run = run();
    let id = task_id(run, name);
    let faults = of_task(run, "fault", id);
    assert_eq!(faults.len(), 1, "{name}: one fault: {faults:#?}\nconsole:\n{}", run.console);
    let restarts = of_task(run, "restart", id);
    assert_eq!(restarts.len(), 1, "{name}: {restarts:#?}");
    assert_eq!(restarts[0]["from"], "checkpoint", "{name}: a rollback: {restarts:#?}");
    assert_eq!(restarts[0]["scope"], 1, "{name}: {restarts:#?}");
    assert!(of_task(run, "escalate", id).is_empty(), "{name}: {:#?}", of_task(run, "escalate", id));
    let reports: Vec<&Value> = of_task(run, "fault_report", id);
    assert!(reports.len() == 1 && reports[0]["action"] == "rollback", "{name}: {reports:#?}");
    assert_eq!(reports[0]["frame"], "?", "{name}: the walk cannot have reached the scope: {reports:#?}");
    assert!(
        run.console.contains(&format!("fault {}: the walk did not reach scope 1's frame", faults[0]["seq"])),
        "{name}: the console says why:\n{}",
        run.console
    );
    let checks: Vec<&Value> = run.checks(check).into_iter().filter(|c| c["task"] == id).collect();
    assert!(checks.len() == 1 && checks[0]["ok"] == true && checks[0]["value"] == 1, "{name}: {checks:#?}");
    let exits = run.task_events("task_exit", name);
    assert!(exits.len() == 1 && exits[0]["code"] == 0, "{name}: {exits:#?}");
}

#[test]
fn a_kernel_stack_pointer_in_a_scope_is_rolled_back_all_the_same() {
    rolled_back_for("kernel-rsp", "forger:kernel-rsp");
}

#[test]
fn a_stack_pointer_into_the_callers_frame_is_rolled_back_all_the_same() {
    rolled_back_for("caller-rsp", "forger:caller-rsp");
}

#[test]
fn the_fault_server_and_the_bystander_survive() {
    let run = run();
    let server = task_id(run, "fault-server");
    assert!(of_task(run, "fault", server).is_empty(), "the fault server faulted");
    assert!(of_task(run, "task_panic", server).is_empty(), "the fault server panicked");
    assert!(run.task_events("task_exit", "fault-server").is_empty(), "the fault server exited");
    // It answered the four attacks that fault, the sealed scope's, and
    // the mutex word that names no task (attack 7).
    assert_eq!(run.events_of("fault_report").len(), 6);
    let exits = run.task_events("task_exit", "spinner");
    assert!(exits.len() == 1 && exits[0]["code"] == 0, "spinner: {exits:#?}");
}

/// A bit of `rbx` flipped between a sealed scope's open and its commit: the
/// kernel refuses the commit and faults the task inside the scope
/// (`scope_check`, `error_code` 0 = rbx), the fault server rolls it back,
/// and the re-run commits with rbx intact.
#[test]
fn a_register_corrupted_inside_a_sealed_scope_faults_at_the_commit_and_is_rolled_back() {
    let run = run();
    let id = task_id(run, "seal-rbx");
    let faults = of_task(run, "fault", id);
    assert_eq!(faults.len(), 1, "{faults:#?}\nconsole:\n{}", run.console);
    assert_eq!(faults[0]["kind"], "scope_check", "{faults:#?}");
    assert_eq!(faults[0]["error_code"], "0x0", "rbx is SEAL_REGS[0]: {faults:#?}");
    assert_eq!(faults[0]["scopes"], 1, "the scope is still open at the fault: {faults:#?}");
    let restarts = of_task(run, "restart", id);
    assert!(restarts.len() == 1 && restarts[0]["from"] == "checkpoint", "{restarts:#?}");
    let checks: Vec<&Value> = run.checks("forger:seal").into_iter().filter(|c| c["task"] == id).collect();
    assert!(checks.len() == 1 && checks[0]["ok"] == true && checks[0]["value"] == 1, "{checks:#?}\n{}", run.console);
}

/// The control: the same corruption in an unsealed scope commits unseen.
#[test]
fn the_same_corruption_in_an_unsealed_scope_commits_unseen() {
    let run = run();
    let id = task_id(run, "unsealed-rbx");
    assert!(of_task(run, "fault", id).is_empty(), "{:#?}", of_task(run, "fault", id));
    let checks: Vec<&Value> = run.checks("forger:unsealed").into_iter().filter(|c| c["task"] == id).collect();
    assert!(checks.len() == 1 && checks[0]["ok"] == true && checks[0]["value"] == 0, "{checks:#?}\n{}", run.console);
}
