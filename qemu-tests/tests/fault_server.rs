//! The fault server (`fault-server/`): register checks, resume, restart,
//! restart storms, and what tasks without capabilities cannot do.
//!
//! One boot of `images/fault-server.toml` (the manifest's comment lists its
//! tasks) serves every test here: the tasks do not interact, and each test
//! reads its own task's events. Events come from three independent
//! sources and the tests cross-check them: the kernel (`fault`,
//! `task_panic`, `restart`, `resume`, `escalate`), the fault server
//! (`fault_report`, `backtrace`, and `check` with `"by"`), and the tasks
//! themselves (`check` via REPORT).

use abi::exit::GuestExit;
use qemu_tests::{Run, boot_image, hex};
use serde_json::Value;
use std::sync::OnceLock;

fn run() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| {
        let run = boot_image("fault-server", "fault-server");
        run.expect_exit(GuestExit::Success);
        run
    })
}

fn task_id(run: &Run, name: &str) -> u64 {
    let starts = run.task_events("task_start", name);
    assert_eq!(starts.len(), 1, "expected one task_start for {name}");
    starts[0]["task"].as_u64().unwrap()
}

/// Events of kind `ev` whose `task` field is `id`.
fn of_task<'r>(run: &'r Run, ev: &str, id: u64) -> Vec<&'r Value> {
    run.events_of(ev).into_iter().filter(|e| e["task"] == id).collect()
}

/// Checks named `name` that task `id` reported itself.
fn task_checks<'r>(run: &'r Run, name: &str, id: u64) -> Vec<&'r Value> {
    run.checks(name).into_iter().filter(|c| c["task"] == id && c.get("by").is_none()).collect()
}

fn server_id(run: &Run) -> u64 {
    task_id(run, "fault-server")
}

/// `(task name, vector)` of the regcheck instances.
const KINDS: &[(&str, u64)] = &[
    ("regcheck-ud2", 6),
    ("regcheck-null", 14),
    ("regcheck-rodata-write", 14),
    ("regcheck-nx-exec", 14),
    ("regcheck-div0", 0),
    ("regcheck-hlt", 13),
    ("regcheck-cli", 13),
    ("regcheck-cr3", 13),
    ("regcheck-stack-overflow", 14),
];

#[test]
fn fault_messages_carry_every_register_of_every_fault_kind() {
    let run = run();
    let server = server_id(run);
    for &(name, vector) in KINDS {
        let id = task_id(run, name);
        let faults = of_task(run, "fault", id);
        assert_eq!(faults.len(), 1, "{name}: one fault: {faults:#?}");
        assert_eq!(faults[0]["vector"], vector, "{name}: the kernel saw vector {}", faults[0]["vector"]);
        let seq = &faults[0]["seq"];
        // The server's check: every GPR, RIP, RSP, RFLAGS, vector, error
        // code (and CR2 for page faults) equal what the task set.
        let checks: Vec<&Value> = run.checks("regs-match").into_iter().filter(|c| c["task"] == id).collect();
        assert_eq!(checks.len(), 1, "{name}: one regs-match check: {checks:#?}");
        let c = checks[0];
        assert_eq!(c["by"], server, "{name}: the check comes from the fault server");
        assert_eq!(&c["seq"], seq, "{name}: the check is about this fault");
        assert_eq!(c["ok"], true, "{name}: registers differ: {c}");
        assert_eq!(c["mismatches"], 0, "{name}: {c}");
        assert_eq!(c["vector"], vector, "{name}: {c}");
        let fields = c["fields"].as_u64().unwrap();
        assert!(fields >= 20 + u64::from(vector == 14), "{name}: only {fields} fields compared");
    }
}

#[test]
fn restarted_tasks_run_again_from_their_start() {
    let run = run();
    for &(name, _) in KINDS {
        let id = task_id(run, name);
        let seq = &of_task(run, "fault", id)[0]["seq"];
        let restarts = of_task(run, "restart", id);
        assert_eq!(restarts.len(), 1, "{name}: {restarts:#?}");
        assert_eq!(&restarts[0]["seq"], seq, "{name}: the restart answers the fault");
        assert_eq!(restarts[0]["from"], "image");
        let reports = of_task(run, "fault_report", id);
        assert!(
            reports.len() == 1 && reports[0]["action"] == "restart" && &reports[0]["seq"] == seq,
            "{name}: {reports:#?}"
        );
        // The second run started from `main` (it read its restart count).
        let rerun = task_checks(run, "regcheck-rerun", id);
        assert!(rerun.len() == 1 && rerun[0]["ok"] == true && rerun[0]["value"] == 1, "{name}: {rerun:#?}");
        assert!(rerun[0]["tsc"].as_u64() > restarts[0]["tsc"].as_u64());
        let exits = run.task_events("task_exit", name);
        assert!(exits.len() == 1 && exits[0]["code"] == 0, "{name}: {exits:#?}");
    }

    // A panic is a synchronous fault of kind `panic`, with its message.
    let id = task_id(run, "crasher-panic");
    let panics = of_task(run, "task_panic", id);
    assert_eq!(panics.len(), 1);
    let reports = of_task(run, "fault_report", id);
    assert_eq!(reports.len(), 1, "{reports:#?}");
    let r = reports[0];
    assert_eq!((&r["kind"], &r["action"], &r["seq"]), (&"panic".into(), &"restart".into(), &panics[0]["seq"]), "{r}");
    assert!(r["message"].as_str().unwrap().contains("panics on purpose"), "{r}");
    let runs: Vec<u64> = task_checks(run, "crasher-run", id).iter().map(|c| c["value"].as_u64().unwrap()).collect();
    assert_eq!(runs, [0, 1], "crasher-panic ran twice from its start");
    assert_eq!(run.task_events("task_exit", "crasher-panic")[0]["code"], 0);
}

#[test]
fn backtraces_name_the_frames_from_the_fault_to_start() {
    let run = run();
    for name in ["regcheck-ud2", "regcheck-null", "regcheck-div0", "crasher-panic"] {
        let id = task_id(run, name);
        let traces = of_task(run, "backtrace", id);
        assert_eq!(traces.len(), 1, "{name}: {traces:#?}");
        let t = traces[0];
        assert_eq!(t["stop"], "outermost", "{name}: {t}");
        let frames = t["frames"].as_array().unwrap();
        let symbols: Vec<&str> = frames.iter().map(|f| f["symbol"].as_str().unwrap()).collect();
        assert_eq!(symbols.last(), Some(&"_start"), "{name}: {symbols:?}");
        assert!(symbols.contains(&"libtask::start::rust_start"), "{name}: {symbols:?}");
        if let Some(fault) = of_task(run, "fault", id).first() {
            assert_eq!(hex(&frames[0]["pc"]), hex(&fault["rip"]), "{name}: frame 0 is the faulting instruction");
        }
    }
}

#[test]
fn the_server_resumes_a_task_past_its_ud2() {
    let run = run();
    let id = task_id(run, "resumer");
    let faults = of_task(run, "fault", id);
    let reports = of_task(run, "fault_report", id);
    let resumes = of_task(run, "resume", id);
    assert_eq!((faults.len(), reports.len(), resumes.len()), (3, 3, 3), "three requests, three answers");
    for ((f, r), k) in faults.iter().zip(&reports).zip(&resumes) {
        assert_eq!(r["action"], "resume", "{r}");
        assert_eq!(f["seq"], r["seq"]);
        assert_eq!(f["seq"], k["seq"]);
        // The kernel resumed it two bytes further, with rax = 0 set by the
        // server (the task checks rax and its other registers itself).
        assert_eq!(hex(&k["rip"]), hex(&f["rip"]) + 2, "{k}");
        assert_eq!(hex(&f["regs"]["rax"]), abi::fault::RESUME_REQUEST);
    }
    let rounds: Vec<&Value> = task_checks(run, "resumed", id);
    assert!(rounds.len() == 3 && rounds.iter().all(|c| c["ok"] == true), "{rounds:#?}");
    let all = task_checks(run, "resume-all", id);
    assert!(all.len() == 1 && all[0]["ok"] == true && all[0]["value"] == 3, "{all:#?}");
    assert!(of_task(run, "restart", id).is_empty(), "resumed, never restarted");
    assert_eq!(run.task_events("task_exit", "resumer")[0]["code"], 0);
}

#[test]
fn a_crash_loop_is_slowed_down_then_stopped() {
    let run = run();
    let id = task_id(run, "crasher-storm");
    let restarts = of_task(run, "restart", id);
    let delays: Vec<u64> = restarts.iter().map(|r| r["delay_ms"].as_u64().unwrap()).collect();
    assert_eq!(delays, [0, 10, 20, 40, 80], "first restart at once, then doubling delays");
    // The delays are real: each run starts about its delay after the
    // restart, measured in guest TSC ticks (`platform` gives their rate).
    // The scheduler sleeps in LAPIC timer ticks, which TCG keeps within a
    // few percent of the calibrated TSC: allow 10 % (a storm would show
    // ~0 ms).
    let tsc_per_ms = run.event("platform")["tsc_hz"].as_u64().unwrap() / 1000;
    let runs = task_checks(run, "crasher-run", id);
    let values: Vec<u64> = runs.iter().map(|c| c["value"].as_u64().unwrap()).collect();
    assert_eq!(values, [0, 1, 2, 3, 4, 5], "six runs, each from the start");
    for (restart, next) in restarts.iter().zip(&runs[1..]) {
        let waited = next["tsc"].as_u64().unwrap() - restart["tsc"].as_u64().unwrap();
        let delay = restart["delay_ms"].as_u64().unwrap();
        assert!(
            waited * 10 >= delay * tsc_per_ms * 9,
            "run after a {delay} ms delay came {} ms later",
            waited / tsc_per_ms
        );
    }
    // The sixth fault stops it: the server says why, the kernel escalates.
    let reports = of_task(run, "fault_report", id);
    assert_eq!(reports.len(), 6);
    let last = reports[5];
    assert_eq!((&last["action"], &last["reason"]), (&"stop".into(), &"restart_storm".into()), "{last}");
    let escalations = of_task(run, "escalate", id);
    assert_eq!(escalations.len(), 1, "{escalations:#?}");
    assert_eq!(escalations[0]["action"], "stop");
    assert_eq!(escalations[0]["reason_code"], 1);
    assert_eq!(escalations[0]["seq"], last["seq"]);
    assert!(run.task_events("task_exit", "crasher-storm").is_empty(), "stopped, not exited");
}

#[test]
fn tasks_cannot_use_capabilities_they_do_not_hold() {
    let run = run();
    let id = task_id(run, "snoop");
    for name in ["no-cap-send", "no-supervisor"] {
        let c = task_checks(run, name, id);
        assert!(c.len() == 1 && c[0]["ok"] == true && c[0]["value"] == 0, "{name}: {c:#?}");
    }
    // Its attempt to emit a check as a supervisor left no trace, and the
    // server it tried to stop is still the one answering faults.
    assert!(run.checks("forged").is_empty());
    let server = server_id(run);
    assert!(run.events.iter().filter(|e| e.get("by").is_some()).all(|e| e["by"] == server), "only the server emits");
    assert!(of_task(run, "escalate", server).is_empty() && run.task_events("task_exit", "fault-server").is_empty());
    assert_eq!(run.task_events("task_exit", "snoop")[0]["code"], 0);
    let done = run.event("all_tasks_done");
    assert_eq!(done["blocked"], 1, "only the fault server is left, waiting: {done}");
}
