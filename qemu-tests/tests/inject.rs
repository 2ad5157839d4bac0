//! The fault-injection runner (`cargo xtask inject`) against the real
//! system: it can fail, and it is deterministic.
//!
//! Why these tests: a runner that always passes proves nothing, so the
//! first test breaks an expectation on purpose (a recovery latency limit of
//! one instruction) and checks the run fails naming it — and that the same
//! script with a sane limit passes, so it is the expectation that decided.
//! The second runs a small seeded campaign twice and checks the two reports
//! are the same bytes, then replays one injection and checks its events are
//! byte-identical to the first run's. Scripts are written by the tests
//! (small, two spinners) into `target/rewind/qemu-tests/inject/`.

use std::path::PathBuf;
use xtask::inject::{Options, Outcome, run_script};

const IMAGE: &str = r#"
[image]
description = "the fault server and two spinners"
endpoints = ["faults"]
[[image.task]]
name = "fault-server"
bin = "fault-server"
priority = 0
stack_kib = 128
caps = ["faults:recv", "supervisor"]
[[image.task]]
name = "spin"
bin = "spinner"
count = 2
watchdog_ms = 20
"#;

fn dir() -> PathBuf {
    let d = xtask::paths::rewind_dir().join("qemu-tests").join("inject");
    std::fs::create_dir_all(&d).expect("create the test folder");
    d
}

/// A script: the image above, `run` lines in `[run]`, then `body`'s tables.
fn script(name: &str, run: &str, body: &str) -> PathBuf {
    let path = dir().join(format!("{name}.toml"));
    std::fs::write(&path, format!("description = \"{name}\"\n{IMAGE}\n[run]\nsettle_ms = 500\n{run}\n{body}"))
        .expect("write the script");
    path
}

fn options(out: &str) -> Options {
    Options {
        kernel: Some(qemu_tests::kernel()),
        bins: Some(qemu_tests::task_bins()),
        out_dir: Some(dir().join(out)),
        jobs: Some(1),
        ..Options::default()
    }
}

const TWO_FAULTS: &str = r#"
[[inject]]
task = "spin-0"
kind = "ud"
at_ms = 30
[[inject]]
task = "spin-1"
kind = "kill"
at_ms = 40
"#;

#[test]
fn inject_a_broken_expectation_fails_the_run() {
    let broken = script("broken", "", &format!("{TWO_FAULTS}\n[expect]\nmax_recovery_instructions = 1\n"));
    let done = run_script(&broken, &options("broken")).expect("the runner runs");
    let outcomes: Vec<Outcome> = done.report.injections.iter().map(|e| e.verdict.outcome).collect();
    assert!(outcomes.iter().all(|o| o.manifested()), "both injections fault: {outcomes:?}");
    assert!(!done.report.passed, "a 1-instruction recovery limit cannot hold");
    let failures = done.failures();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].starts_with("max_recovery_instructions"), "{failures:?}");

    let sane = script("sane", "", &format!("{TWO_FAULTS}\n[expect]\nmax_recovery_instructions = 100_000_000\n"));
    let done = run_script(&sane, &options("sane")).expect("the runner runs");
    assert!(done.report.passed, "{:?}", done.failures());
}

#[test]
fn inject_same_seed_same_report_and_replays_are_byte_identical() {
    let body = r#"
[campaign]
count = 8
targets = ["spin-*"]
window_ms = [20, 80]
kinds = { ud = 1, regflip = 1, kill = 1, hang = 1 }
"#;
    let path = script("determinism", "batch = 8", body);
    let first = run_script(&path, &options("first")).expect("first run");
    let second = run_script(&path, &options("second")).expect("second run");
    let a = std::fs::read(&first.json).expect("first report");
    let b = std::fs::read(&second.json).expect("second report");
    assert!(
        a == b,
        "two runs of one script and seed wrote different reports: {} vs {}",
        first.json.display(),
        second.json.display()
    );

    let fired =
        first.report.injections.iter().find(|e| e.verdict.outcome.manifested()).expect("some injection manifests");
    let replayed = xtask::inject::replay_injection(&first.json, fired.planned.id, &options("first")).expect("replay");
    assert!(replayed.identical, "replay differs:\n{}", replayed.text);
    let [from, to] = fired.verdict.excerpt_lines.expect("a fired injection has an excerpt");
    let original = std::fs::read(first.json.with_extension("").join("batch-0.jsonl")).expect("the first run's events");
    let old: Vec<&[u8]> = original.split_inclusive(|b| *b == b'\n').skip(from - 1).take(to + 1 - from).collect();
    assert_eq!(old.concat(), replayed.excerpt, "the excerpt is not byte-identical");
}
