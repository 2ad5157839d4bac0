//! IPC under faults: one test per row of the table in `docs/ipc.md`.
//!
//! Each test boots an image written here — a server on endpoint `svc` and
//! its clients, all `tasks/ipcfault` (roles by `arg`, listed in its
//! `//!` note), with or without the fault server — under `-icount`, with
//! an injection plan that kills the client or the server at tick 100
//! (the last test, of a scope's bounds, needs no kill).
//! At that tick the call is in flight: the client called a request the
//! server holds for 400 ms before replying (the kill is the scenario's
//! setup, not a timing assertion: nothing here measures time). The tests
//! assert on what each side's system calls returned (the tasks' `check`
//! events carry the error codes, `abi::syscall::Error`), on which request
//! a reply answered, and on the kernel's and fault server's events.

use abi::exit::GuestExit;
use abi::syscall::Error;
use qemu_tests::Run;
use serde_json::Value;

/// Packs `manifest`, appends the injection `plan` and boots it under `-icount`.
fn boot_plan(name: &str, manifest: &str, plan: &str) -> Run {
    qemu_tests::boot_plan("ipc-faults", name, manifest, plan)
}

const FAULT_SERVER: &str = "endpoints = [\"faults\", \"svc\"]\n\n[[task]]\nname = \"fault-server\"\nbin = \"fault-server\"\npriority = 0\nstack_kib = 128\ncaps = [\"faults:recv\", \"supervisor\"]\n";
const NO_SUPERVISOR: &str = "endpoints = [\"svc\"]\n";

/// A `[[task]]` of `tasks/ipcfault` in role `arg`.
fn task(name: &str, arg: u64, cap: &str) -> String {
    format!("\n[[task]]\nname = \"{name}\"\nbin = \"ipcfault\"\narg = {arg}\ncaps = [\"svc:{cap}\"]\n")
}

fn kill(name: &str) -> String {
    format!("inject id=1 task={name} at=tick:100 kind=kill\n")
}

/// The values of the checks named `name`, in order; each must have `ok` as given.
fn values(run: &Run, name: &str) -> Vec<(bool, u64)> {
    run.checks(name).iter().map(|c| (c["ok"] == true, c["value"].as_u64().unwrap())).collect()
}

/// The one fault of task `name`: a kill, and the injection's.
fn the_kill<'r>(run: &'r Run, name: &str) -> &'r Value {
    let inject = run.events_of("inject");
    assert_eq!(inject.len(), 1, "{}: {inject:#?}\n{}", run.name, run.console);
    let faults = run.task_events("fault", name);
    assert!(!faults.is_empty(), "{}: no fault of {name}\n{}", run.name, run.console);
    assert!(faults.iter().all(|f| f["kind"] == "kill" && f["seq"] == inject[0]["seq"]), "{faults:#?}");
    faults[0]
}

/// The fault server's `action` for fault `seq`.
fn action(run: &Run, seq: &Value) -> String {
    let reports: Vec<_> = run.events_of("fault_report").into_iter().filter(|r| &r["seq"] == seq).collect();
    assert_eq!(reports.len(), 1, "{}: {reports:#?}", run.name);
    reports[0]["action"].as_str().unwrap().to_owned()
}

const NO_CALLER: u64 = Error::NoCaller as u64;
const BAD_TASK: u64 = Error::BadTask as u64;
const RESTARTED: u64 = Error::Restarted as u64;
const STOPPED: u64 = Error::Stopped as u64;
/// `tasks/ipcfault`'s request labels.
const SLOW: u64 = 0x510;
const FAST: u64 = 0xfa5;

// ---- the client faults mid-call ----

#[test]
fn ipc_client_rolled_back_mid_call_server_reply_gets_no_caller() {
    let manifest = format!("{FAULT_SERVER}{}{}", task("server", 1, "recv"), task("client", 12, "send"));
    let run = boot_plan("ipc-client-rolled-back", &manifest, &kill("client"));
    run.expect_exit(GuestExit::Success);
    let fault = the_kill(&run, "client");
    assert_eq!(action(&run, &fault["seq"]), "rollback");
    // The client's scope ran twice; its retry got the answer to its retry,
    // never the held reply to the call that was rolled back.
    assert_eq!(values(&run, "client:attempt"), [(true, 0), (true, 1)], "{}", run.console);
    assert_eq!(values(&run, "client:reply"), [(true, FAST)]);
    // The server's reply to the rolled-back call: `NoCaller`; the next works.
    assert_eq!(values(&run, "server:reply"), [(false, NO_CALLER), (true, 0)], "{}", run.console);
}

#[test]
fn ipc_client_restarted_mid_call_server_reply_gets_no_caller() {
    let manifest = format!("{FAULT_SERVER}{}{}", task("server", 1, "recv"), task("client", 11, "send"));
    let run = boot_plan("ipc-client-restarted", &manifest, &kill("client"));
    run.expect_exit(GuestExit::Success);
    let fault = the_kill(&run, "client");
    assert_eq!(action(&run, &fault["seq"]), "restart");
    // The killed instance never returned from its call; the new one did.
    assert_eq!(values(&run, "client:first-call"), [(true, 0)], "{}", run.console);
    assert_eq!(values(&run, "server:reply"), [(false, NO_CALLER), (true, 0)], "{}", run.console);
    let exits = run.task_events("task_exit", "client");
    assert!(exits.len() == 1 && exits[0]["code"] == 0, "{exits:#?}");
}

#[test]
fn ipc_client_killed_for_good_mid_call_server_reply_gets_no_caller() {
    let manifest = format!("{NO_SUPERVISOR}{}{}", task("server", 1, "recv"), task("client", 11, "send"));
    let run = boot_plan("ipc-client-killed", &manifest, &kill("client"));
    run.expect_exit(GuestExit::Success);
    let fault = the_kill(&run, "client");
    assert!(fault.get("by").is_none(), "no supervisor: the kernel reports and stops it");
    assert!(values(&run, "client:first-call").is_empty(), "the killed client never returns");
    assert_eq!(values(&run, "server:reply"), [(false, NO_CALLER)], "{}", run.console);
    assert_eq!(run.event("all_tasks_done")["faulted"], 1);
}

// ---- the server faults (or ends) holding the request ----

#[test]
fn ipc_server_rolled_back_mid_request_held_by_its_scope_caller_answered_once() {
    let manifest = format!(
        "{FAULT_SERVER}{}{}{}",
        task("server", 2, "recv"),
        task("client", 10, "send"),
        task("queued", 13, "send")
    );
    let run = boot_plan("ipc-server-rolled-back", &manifest, &kill("server"));
    run.expect_exit(GuestExit::Success);
    let fault = the_kill(&run, "server");
    assert_eq!(action(&run, &fault["seq"]), "rollback");
    // The scope received the request: the kernel held it and handed it to
    // the re-run (attempt 1), which answered it. The caller saw one call,
    // answered once, by the reply to its own request.
    let attempts = values(&run, "server:attempt");
    assert_eq!(attempts.iter().filter(|a| a.1 == 1).count(), 1, "one re-run of the scope: {attempts:?}");
    assert_eq!(values(&run, "client:first-call"), [(true, 0)], "{}", run.console);
    assert_eq!(values(&run, "client:first-answer"), [(true, SLOW)], "{}", run.console);
    assert_eq!(values(&run, "client:retry"), [(true, FAST)]);
    // A caller still queued (not yet received) is untouched: served later.
    assert_eq!(values(&run, "queued:reply"), [(true, 0)], "{}", run.console);
    // Three requests, three replies, each delivered (the rolled-back run's
    // reply was never made: it was killed holding the request).
    assert_eq!(values(&run, "server:reply"), [(true, 0); 3], "{}", run.console);
}

#[test]
fn ipc_server_rolled_back_scope_not_holding_the_request_caller_gets_bad_task() {
    let manifest = format!("{FAULT_SERVER}{}{}", task("server", 4, "recv"), task("client", 10, "send"));
    let run = boot_plan("ipc-server-rolled-back-unheld", &manifest, &kill("server"));
    run.expect_exit(GuestExit::Success);
    let fault = the_kill(&run, "server");
    assert_eq!(action(&run, &fault["seq"]), "rollback");
    // Received outside the rolled-back scope: lost with the rolled-back
    // run, as before transactional IPC. The re-run's reply finds nobody.
    assert_eq!(values(&run, "server:attempt").iter().filter(|a| a.1 == 1).count(), 1);
    assert_eq!(values(&run, "client:first-call"), [(true, BAD_TASK)], "{}", run.console);
    assert_eq!(values(&run, "client:retry"), [(true, FAST)]);
    assert_eq!(values(&run, "server:reply"), [(false, NO_CALLER), (true, 0)], "{}", run.console);
}

#[test]
fn ipc_server_restarted_mid_request_caller_gets_restarted_with_new_generation_queued_caller_served() {
    let manifest = format!(
        "{FAULT_SERVER}{}{}{}",
        task("server", 1, "recv"),
        task("client", 10, "send"),
        task("queued", 13, "send")
    );
    let run = boot_plan("ipc-server-restarted", &manifest, &kill("server"));
    run.expect_exit(GuestExit::Success);
    let fault = the_kill(&run, "server");
    assert_eq!(action(&run, &fault["seq"]), "restart");
    assert_eq!(values(&run, "client:first-call"), [(true, RESTARTED)], "{}", run.console);
    // The new instance is generation 1 (its first restart from the image),
    // as the restart event says.
    let restarts = run.task_events("restart", "server");
    assert!(restarts.len() == 1 && restarts[0]["restarts"] == 1, "{restarts:#?}");
    assert_eq!(values(&run, "client:generation"), [(true, 1)], "{}", run.console);
    assert_eq!(values(&run, "client:retry"), [(true, FAST)]);
    assert_eq!(values(&run, "queued:reply"), [(true, 0)], "{}", run.console);
    assert_eq!(values(&run, "server:reply"), [(true, 0), (true, 0)], "the new instance served both, {}", run.console);
}

#[test]
fn ipc_server_stopped_mid_request_caller_and_queued_caller_get_stopped() {
    let manifest = format!(
        "{NO_SUPERVISOR}{}{}{}",
        task("server", 1, "recv"),
        task("client", 11, "send"),
        task("queued", 13, "send")
    );
    let run = boot_plan("ipc-server-stopped", &manifest, &kill("server"));
    run.expect_exit(GuestExit::Success);
    the_kill(&run, "server");
    assert_eq!(values(&run, "client:first-call"), [(true, STOPPED)], "{}", run.console);
    assert_eq!(values(&run, "client:generation"), [(true, 0)], "{}", run.console);
    // Nobody will ever receive on `svc`: the queued call fails too, with
    // the same error, instead of waiting forever.
    assert_eq!(values(&run, "queued:reply"), [(false, STOPPED)], "{}", run.console);
    assert_eq!(values(&run, "queued:generation"), [(true, 0)], "{}", run.console);
    let done = run.event("all_tasks_done");
    assert_eq!((done["faulted"].as_u64(), done["blocked"].as_u64()), (Some(1), Some(0)), "{done}");
}

#[test]
fn ipc_server_exits_holding_a_request_caller_gets_stopped() {
    let manifest = format!("{NO_SUPERVISOR}{}{}", task("server", 3, "recv"), task("client", 11, "send"));
    let run = boot_plan("ipc-server-exits", &manifest, "");
    run.expect_exit(GuestExit::Success);
    assert_eq!(values(&run, "server:received"), [(true, SLOW)]);
    assert_eq!(values(&run, "client:first-call"), [(true, STOPPED)], "{}", run.console);
    let exits = run.task_events("task_exit", "server");
    assert!(exits.len() == 1 && exits[0]["code"] == 0, "{exits:#?}");
}

// ---- what a scope may hold ----

#[test]
fn ipc_scope_holds_at_most_max_held_requests_unanswered_ones_fail_at_commit() {
    let clients: String = (0..abi::ipc::MAX_HELD).map(|i| task(&format!("client-{i}"), 11, "send")).collect();
    let manifest = format!("{NO_SUPERVISOR}{}{clients}", task("server", 5, "recv"));
    let run = boot_plan("ipc-scope-full", &manifest, "");
    run.expect_exit(GuestExit::Success);
    // One more receive in the full scope: `NoMemory`, nothing taken; a
    // reply with a buffer inside the scope: `BadArgument` (held replies are
    // registers only), the reply right kept for the reply that follows.
    assert_eq!(values(&run, "server:full"), [(true, Error::NoMemory as u64)], "{}", run.console);
    assert_eq!(values(&run, "server:buffer-reply"), [(true, Error::BadArgument as u64)]);
    assert_eq!(values(&run, "server:committed"), [(true, 0)]);
    // At the commit: the request replied to is answered; the three whose
    // reply right the later receives replaced can no longer be answered and
    // fail with `BadTask` — none waits forever.
    let mut firsts: Vec<u64> = values(&run, "client:first-call").into_iter().map(|(_, v)| v).collect();
    firsts.sort();
    assert_eq!(firsts, [0, BAD_TASK, BAD_TASK, BAD_TASK], "{}", run.console);
    assert_eq!(values(&run, "client:first-answer"), [(true, SLOW)]);
    assert_eq!(run.event("all_tasks_done")["blocked"], 0);
}
