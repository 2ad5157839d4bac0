//! The fault-injection runner (`cargo xtask inject`) against the real
//! system: it can fail, and it is deterministic.
//!
//! Why these tests: a runner that always passes proves nothing, so the
//! first test breaks an expectation on purpose (a recovery latency limit of
//! one instruction) and checks the run fails naming it — and that the same
//! script with a sane limit passes, so it is the expectation that decided.
//! The second runs a small seeded campaign twice and checks the two reports
//! are the same bytes, then replays one injection and checks its events are
//! byte-identical to the first run's. The golden-run test injects into a
//! deliberately wrong task (`tasks/doubler`) and checks the diff alone
//! calls it corruption — and that without the golden run it looks
//! recovered, so it is the diff that decided. The shard test runs a small
//! campaign whole and in two shards, merges, and compares the bytes.
//! Scripts are written by the tests (small, two spinners) into
//! `target/rewind/qemu-tests/inject/`.

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

/// A script of the repository, copied into the test folder with `extra`
/// appended (the copy names its image by name, so it boots the same).
fn repo_script(name: &str, copy: &str, extra: &str) -> PathBuf {
    let text = std::fs::read_to_string(xtask::paths::root().join("faults").join(name)).expect("read the script");
    let path = dir().join(format!("{copy}.toml"));
    std::fs::write(&path, format!("{text}\n{extra}")).expect("write the script");
    path
}

/// Golden runs: `tasks/doubler`'s wrong role adds to a shared counter
/// inside its checkpoint scope, so the re-run after a rollback adds again,
/// and its own check is disabled. The event stream shows a clean rollback;
/// only the comparison with the fault-free boot can see the tally is 41.
#[test]
fn inject_golden_run_catches_the_doubled_update() {
    let path = repo_script("golden-doubler.toml", "golden-doubler", "");
    let done = run_script(&path, &options("golden")).expect("the runner runs");
    let wrong = done.report.injections.iter().find(|e| e.planned.task == "doubler-wrong").expect("wrong");
    let right = done.report.injections.iter().find(|e| e.planned.task == "doubler-right").expect("right");
    assert_eq!(wrong.verdict.outcome, Outcome::SilentCorruption, "{:#?}", wrong.verdict);
    assert_eq!(wrong.verdict.golden_diff.len(), 1, "{:#?}", wrong.verdict);
    assert!(
        wrong.verdict.golden_diff[0].starts_with(
            "doubler-wrong: report 1 doubler:progress ok=true value=11; golden: doubler:progress ok=true value=10 "
        ),
        "the first report after the rollback is one too many: {:?}",
        wrong.verdict.golden_diff
    );
    assert_eq!(right.verdict.outcome, Outcome::Recovered, "{:#?}", right.verdict);
    assert!(right.verdict.golden_diff.is_empty(), "the correct twin re-runs without a trace: {:#?}", right.verdict);
    // No check failed anywhere: only the diff saw it.
    for b in &done.report.batches {
        assert!(b.facts.failed_checks.is_empty(), "batch {}: {:?}", b.index, b.facts.failed_checks);
        assert!(b.golden.is_some(), "batch {} was compared with a golden run", b.index);
    }
    assert!(done.report.passed, "{:?}", done.failures());

    // The same boots without the golden run: the corruption is invisible.
    let blind = repo_script("golden-doubler.toml", "golden-doubler-blind", "[golden]\nenabled = false\n");
    let blind = run_script(&blind, &options("golden-blind")).expect("the runner runs");
    let outcomes: Vec<Outcome> = blind.report.injections.iter().map(|e| e.verdict.outcome).collect();
    assert_eq!(outcomes, [Outcome::Recovered, Outcome::Recovered], "without a golden run both look recovered");

    // `--replay` boots the golden run again and shows the same diff.
    let replayed = xtask::inject::replay_injection(&done.json, wrong.planned.id, &options("golden")).expect("replay");
    assert!(replayed.identical, "replay differs:\n{}", replayed.text);
    assert_eq!(replayed.outcome, Outcome::SilentCorruption);
    assert!(replayed.text.contains(&format!("  {}\n", wrong.verdict.golden_diff[0])), "{}", replayed.text);
}

/// `--shard I/N` + `merge` write the report one machine writes: the same
/// bytes, JSON and chart.
#[test]
fn inject_shards_merge_into_the_whole_report_byte_for_byte() {
    let body = r#"
[campaign]
count = 6
targets = ["spin-*"]
window_ms = [20, 80]
kinds = { ud = 1, regflip = 1, kill = 1 }
[expect]
max_system_failures = 0
"#;
    let path = script("sharded", "batch = 2", body);
    let whole = run_script(&path, &options("sharded-whole")).expect("the whole run");
    assert_eq!(whole.report.batches.len(), 3);
    let parts: Vec<PathBuf> = ["1/2", "2/2"]
        .iter()
        .map(|s| {
            let shard = s.parse().expect("a shard spec");
            let done = xtask::inject::shard::run_shard(&path, shard, &options("sharded-parts")).expect("a shard");
            assert!(!done.part.batches.is_empty(), "shard {s} ran boots");
            done.json
        })
        .collect();
    let out = dir().join("sharded-merged").join("sharded-1.json");
    let (merged, json, svg) = xtask::inject::shard::merge_files(&parts, Some(&out)).expect("merge");
    assert_eq!(merged.summary, whole.report.summary);
    assert!(
        std::fs::read(&json).expect("merged") == std::fs::read(&whole.json).expect("whole"),
        "{} and {} differ",
        json.display(),
        whole.json.display()
    );
    assert!(std::fs::read(&svg).expect("merged chart") == std::fs::read(&whole.svg).expect("whole chart"));
    // One part alone is refused, naming what is missing.
    let err = xtask::inject::shard::merge_files(&parts[..1], Some(&out)).expect_err("a part is missing");
    assert!(err.to_string().contains("shard 2/2 missing"), "{err:#}");
}
