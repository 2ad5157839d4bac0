//! Transactional IPC (`docs/ipc.md`, "Requests in a scope"): a
//! request-scoped server faulting mid-request under several clients
//! answers every call exactly once, and a server that is restarted or
//! stopped makes its clients' calls fail with its generation, never hang.
//!
//! The workload is `images/kv.toml` (`tasks/kv`: a key-value server, each
//! request in a checkpoint scope with the reply at the commit, and three
//! clients making 100 checked calls each), booted under `-icount` with an
//! injection plan. Its clients pause from their 50th call until tick 700:
//! a kill at tick 400 finds the server blocked in `recv` inside its scope;
//! a `ud` or a `hang` due at tick 712 or 720 lands when the server runs
//! next, which in this deterministic run is mid-request (the tests check
//! the fault's backtrace says so: a fault *between* two requests' scopes
//! is outside any scope, and restarts the server from its image —
//! `docs/recovery.md`). The last test lets the fault server roll a request
//! back only once, so a second fault restarts the server from its image
//! mid-request: that caller's `call` fails with `Restarted` and the new
//! generation, and nobody hangs. Every test asserts on what the system did: the tasks' check
//! events (the invariants of `tasks/kv`, which fail on a lost or doubled
//! request), the fault and the fault server's decision, the exit.

use abi::exit::GuestExit;
use qemu_tests::Run;
use serde_json::Value;

/// Packs `manifest`, appends the injection `plan` and boots it under `-icount`.
fn boot_plan(name: &str, manifest: &str, plan: &str) -> Run {
    qemu_tests::boot_plan("txipc", name, manifest, plan)
}

/// `images/kv.toml` as it is in the tree.
fn kv_manifest() -> String {
    let path = xtask::paths::root().join("images").join("kv.toml");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every invariant of `tasks/kv` held: three clients each answered 100
/// times, for their own requests, with the right results; the server saw
/// each client's requests exactly once and in order, answered 300, kept
/// the total, applied each request once to the shared ledger, leaked no
/// Arc; the audit call was answered; every task exited.
fn kv_invariants_hold(run: &Run) {
    run.expect_exit(GuestExit::Success);
    let failed: Vec<_> = run.events_of("check").into_iter().filter(|c| c["ok"] != true).collect();
    assert!(failed.is_empty(), "{}: failed checks {failed:#?}\nconsole:\n{}", run.name, run.console);
    let clients = run.checks("kv:client");
    assert_eq!(clients.len(), 3, "{}: {clients:#?}\n{}", run.name, run.console);
    assert!(clients.iter().all(|c| c["value"] == 100), "{clients:#?}");
    for (name, value) in [
        ("kv:sequence", 0),
        ("kv:answered", 300),
        ("kv:total", 8000),
        ("kv:ledger", 300),
        ("kv:arcs", 3),
        ("kv:audit", 1),
    ] {
        let found = run.checks(name);
        assert_eq!(found.len(), 1, "{}: one {name}: {found:#?}\n{}", run.name, run.console);
        assert_eq!(found[0]["value"], value, "{}: {name}: {}", run.name, found[0]);
    }
    assert!(run.checks("kv:call-error").is_empty());
    let done = run.event("all_tasks_done");
    assert_eq!((done["exited"].as_u64(), done["faulted"].as_u64()), (Some(4), Some(0)), "{done}");
}

/// The faults of task `kv`, each with the fault server's report: `(fault, report)`.
fn kv_faults(run: &Run) -> Vec<(&Value, &Value)> {
    run.task_events("fault", "kv")
        .into_iter()
        .map(|f| {
            let reports: Vec<_> = run.events_of("fault_report").into_iter().filter(|r| r["seq"] == f["seq"]).collect();
            assert_eq!(reports.len(), 1, "{}: one report of {f}: {reports:#?}", run.name);
            (f, reports[0])
        })
        .collect()
}

/// The function names of the fault server's backtrace of fault `seq`.
fn frames(run: &Run, seq: &Value) -> Vec<String> {
    let traces: Vec<_> =
        run.events_of("backtrace").into_iter().filter(|b| &b["seq"] == seq && b.get("by").is_some()).collect();
    assert_eq!(traces.len(), 1, "{}: one backtrace of fault {seq}: {traces:#?}", run.name);
    traces[0]["frames"].as_array().unwrap().iter().map(|f| f["symbol"].as_str().unwrap_or("").to_owned()).collect()
}

fn rolled_back_mid_request(run: &Run, kind: &str) {
    let faults = kv_faults(run);
    assert_eq!(faults.len(), 1, "{}: {faults:#?}\n{}", run.name, run.console);
    let (fault, report) = faults[0];
    assert_eq!(fault["kind"], kind, "{fault}");
    assert_eq!(report["action"], "rollback", "{report}");
    let names = frames(run, &fault["seq"]);
    assert!(
        names.iter().any(|f| f.contains("kv::handle") || f.contains("kv::apply_once")),
        "{}: not mid-request: {names:?}",
        run.name
    );
}

#[test]
fn txipc_kv_without_faults_every_invariant_holds() {
    let run = boot_plan("kv-clean", &kv_manifest(), "");
    kv_invariants_hold(&run);
    assert!(run.task_events("fault", "kv").is_empty());
}

#[test]
fn txipc_kv_server_ud_mid_request_every_call_answered_exactly_once() {
    let run = boot_plan("kv-ud", &kv_manifest(), "inject id=1 task=kv at=tick:712 kind=ud\n");
    rolled_back_mid_request(&run, "exception");
    kv_invariants_hold(&run);
}

#[test]
fn txipc_kv_server_hang_mid_request_watchdog_every_call_answered_exactly_once() {
    let run = boot_plan("kv-hang", &kv_manifest(), "inject id=1 task=kv at=tick:720 kind=hang\n");
    rolled_back_mid_request(&run, "watchdog");
    kv_invariants_hold(&run);
}

#[test]
fn txipc_kv_server_killed_in_recv_inside_its_scope_loses_nothing() {
    let run = boot_plan("kv-kill-recv", &kv_manifest(), "inject id=1 task=kv at=tick:400 kind=kill\n");
    let faults = kv_faults(&run);
    assert_eq!(faults.len(), 1, "{}: {faults:#?}\n{}", run.name, run.console);
    let (fault, report) = faults[0];
    assert_eq!(fault["kind"], "kill", "{fault}");
    assert_eq!(report["action"], "rollback", "{report}");
    // Blocked in `recv` inside the request's scope (a run of
    // `Server::serve_until`'s `repeat`), not in a handler: the clients
    // were pausing.
    let names = frames(&run, &fault["seq"]);
    assert!(names.iter().any(|f| f == "libtask::ipc::recv"), "{names:?}");
    assert!(
        names.iter().any(|f| f.contains("libtask::checkpoint::repeat") && f.contains("Server>::serve_until")),
        "{names:?}"
    );
    assert!(!names.iter().any(|f| f.contains("kv::handle")), "{names:?}");
    kv_invariants_hold(&run);
}

#[test]
fn txipc_kv_server_ud_kill_and_hang_in_one_run_every_call_answered_exactly_once() {
    // Faults at the busiest moments too: the clients' first calls (ticks
    // 40..), the pause, and right after it, mid-request.
    let plan = "inject id=1 task=kv at=tick:40 kind=ud\ninject id=2 task=kv at=tick:400 kind=kill\ninject id=3 task=kv at=tick:705 kind=hang\ninject id=4 task=kv at=tick:760 kind=kill\ninject id=5 task=kv at=tick:770 kind=ud\n";
    let run = boot_plan("kv-storm", &kv_manifest(), plan);
    let faults = kv_faults(&run);
    assert!(faults.len() >= 3, "{}: {faults:#?}\n{}", run.name, run.console);
    assert!(faults.iter().all(|(_, r)| r["action"] == "rollback"), "{faults:#?}");
    kv_invariants_hold(&run);
}

#[test]
fn txipc_kv_server_restarted_from_its_image_mid_request_caller_gets_new_generation_nobody_hangs() {
    // At most one rollback of the request scope per 10 s: the second fault
    // escalates to a fresh start from the image (no enclosing scope).
    let manifest =
        kv_manifest().replace("watchdog_ms = 30", "watchdog_ms = 30\nmax_restarts = 1\nrestart_window_ms = 10000");
    assert!(manifest.contains("max_restarts = 1"), "images/kv.toml changed: update this test");
    let plan = "inject id=1 task=kv at=tick:712 kind=ud\ninject id=2 task=kv at=tick:722 kind=ud\n";
    let run = boot_plan("kv-restarted", &manifest, plan);
    run.expect_exit(GuestExit::Success);
    let faults = kv_faults(&run);
    assert_eq!(faults.len(), 2, "{}: {faults:#?}\n{}", run.name, run.console);
    assert_eq!(faults[0].1["action"], "rollback", "{:#?}", faults[0]);
    assert_eq!(faults[1].1["action"], "restart", "{:#?}", faults[1]);
    // Inside a request's scope, with the request received: in the handler
    // or in `recv`'s return path (`Server`'s `one`).
    let names = frames(&run, &faults[1].0["seq"]);
    assert!(
        names.iter().any(|f| f.contains("kv::handle") || f.starts_with("libtask::ipc::server::one")),
        "the restart took a request in flight: {names:?}"
    );
    let restarts = run.task_events("restart", "kv").into_iter().filter(|r| r["from"] == "image").collect::<Vec<_>>();
    assert!(restarts.len() == 1 && restarts[0]["restarts"] == 1, "{restarts:#?}");
    // The caller whose request the old instance held: `Restarted`, with the
    // new generation (1); it stops calling. Nobody hangs: every task exits.
    let errors = run.checks("kv:call-error");
    assert_eq!(errors.len(), 1, "{}: {errors:#?}\n{}", run.name, run.console);
    assert_eq!(errors[0]["value"], abi::syscall::Error::Restarted as u64);
    let generations = run.checks("kv:generation");
    assert!(generations.len() == 1 && generations[0]["value"] == 1, "{generations:#?}");
    assert_eq!(generations[0]["task_name"], errors[0]["task_name"]);
    let done = run.event("all_tasks_done");
    assert_eq!(
        (done["exited"].as_u64(), done["faulted"].as_u64(), done["blocked"].as_u64()),
        (Some(4), Some(0), Some(1)),
        "{done}"
    );
    // The new instance started from an empty store: the invariants that
    // span the restart say so (the private store is not what a restart
    // keeps: docs/recovery.md).
    assert_eq!(run.checks("kv:sequence").first().map(|c| c["ok"] == false), Some(true), "{}", run.console);
}
