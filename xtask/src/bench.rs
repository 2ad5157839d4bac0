//! `cargo xtask bench`: boot the benchmark image under icount, print the
//! figures in guest instructions, write them to `target/rewind/bench.json`.
//!
//! Why guest instructions: under `-icount shift=0,sleep=off` the guest TSC
//! counts instructions and a whole run is reproducible byte for byte
//! (PLATFORM-NOTES, "Deterministic measurement"). A figure is therefore an
//! exact count that the same build always reproduces, so a change in the
//! table is a change in the code, never noise — which wall-clock times
//! under TCG could not give. Counts are not time (TCG models no caches, no
//! TLB misses, no pipeline), but they are what DESIGN.md's targets are
//! stated in, and Linux's figures in the same QEMU are given alongside.
//!
//! Division of labour: the guest measures, the host reads. The benchmark
//! task (`tasks/bench`, one role per manifest entry of `images/bench.toml`)
//! times each operation with `rdtsc` in ring 3 and reports the figure as
//! the check event `bench:<name>`; the design note at the top of
//! `tasks/bench/src/main.rs` says how each one is measured. This module only
//! builds, boots, and turns those events into a table and a JSON file.
//!
//! Release is the default profile: performance is a property of the
//! optimised kernel (the debug profile is opt-level 1 with debug
//! assertions); `--debug` measures that one instead. The run fails (exit
//! status 2, with the reason) when the guest does not shut down cleanly,
//! a figure is missing, or a benchmark reported a failure (`ok: false`).
//! Nothing here judges speed: the table shows the targets, it does not
//! enforce them (the project measures performance, it never asserts it).
//!
//! A new figure is one more row in [`FIGURES`] and one more report in the
//! benchmark task; the table, the JSON and the determinism test
//! (`qemu-tests/tests/bench.rs`) pick it up from there. A figure is a count
//! of guest instructions unless its `unit` says otherwise: the one other
//! unit is a page count that a cost depends on (the pages a checkpoint
//! open write-protects), reported next to that cost and shown with its
//! unit in the table and in `bench.json`.

use crate::build::{self, Profile};
use crate::paths;
use crate::qemu::{Boot, Console, Verdict};
use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Prefix of the check events that carry figures.
pub const CHECK_PREFIX: &str = "bench:";
/// The image `cargo xtask bench` boots by default.
pub const DEFAULT_IMAGE: &str = "bench";
/// The QEMU option that makes the TSC count instructions.
pub const ICOUNT: &str = "-icount shift=0,sleep=off";

/// One figure of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Figure {
    /// The check is `bench:<name>`; also the key in `bench.json`.
    pub name: &'static str,
    /// What the table calls it.
    pub label: &'static str,
    /// DESIGN.md's target, in guest instructions (an upper bound).
    pub target: Option<u64>,
    /// Linux 6.1 in the same QEMU, for the nearest equivalent (DESIGN.md).
    pub linux: Option<u64>,
    /// What the value counts: [`INSTRUCTIONS`] for every figure but the
    /// few that give a measurement its context (a page count).
    pub unit: &'static str,
}

/// The unit of (almost) every figure.
pub const INSTRUCTIONS: &str = "guest instructions";
/// The unit of a page count.
pub const PAGES: &str = "pages";

const fn fig(name: &'static str, label: &'static str, target: Option<u64>, linux: Option<u64>) -> Figure {
    Figure { name, label, target, linux, unit: INSTRUCTIONS }
}

/// Every figure the benchmark image reports, in table order. How each is
/// measured is the design note of its role in `tasks/bench/src/` (the table
/// of roles is in `main.rs`); an indented label is a variant or a part of
/// the figure above it.
pub const FIGURES: &[Figure] = &[
    fig("null_syscall", "null syscall", Some(100), Some(335)),
    fig("context_switch", "context switch (yield, two address spaces)", None, None),
    fig("ipc_call_reply", "IPC call + reply round trip", Some(400), Some(10_102)),
    fig(
        "ipc_request_in_scope",
        "  the same, request-scoped server (scope open, recv, reply held, commit delivers)",
        None,
        None,
    ),
    fig("fault_to_server", "fault -> fault server holding the message", Some(1_500), None),
    fig("fault_to_resume", "fault -> task resumed by the server", None, Some(3_497)),
    // recover.rs: the real fault server walks, releases, rolls back.
    fig(
        "fault_to_checkpoint",
        "fault -> running at the checkpoint (10 frames, 2 mutexes + 1 Arc, 8 pages)",
        Some(7_000),
        Some(3_497),
    ),
    // Derived from the events of the best round's fault (`derive`).
    fig("phase_delivery", "  phase: delivery (fault -> server holding the message)", None, None),
    fig("phase_decision", "  phase: decision (policy, scope chosen)", None, None),
    fig("phase_walk", "  phase: walk to the scope's frame", None, None),
    fig("phase_plan", "  phase: release plan from the recovery page", None, None),
    fig("phase_request", "  phase: the RECOVER request (built, system call entry)", None, None),
    fig("phase_releases", "  phase: releases (in RECOVER)", None, None),
    fig("phase_rollback", "  phase: rollback (in RECOVER)", None, None),
    fig("phase_return", "  phase: return (RECOVER back into the task's scope)", None, None),
    fig(
        "fault_to_report",
        "fault -> the last event of its report (the whole cost, reporting included)",
        Some(30_000),
        None,
    ),
    fig(
        "fault_to_checkpoint_cold",
        "  the same, the task's first fault (cold unwind rows, region layouts)",
        None,
        None,
    ),
    fig("fault_to_checkpoint_64_pages", "  the same with 64 dirty pages", None, None),
    fig("fault_to_checkpoint_20_frames", "  the same with 20 frames", None, None),
    fig("fault_to_checkpoint_40_frames", "  the same with 40 frames", None, None),
    fig("rollback_per_page", "rollback per dirty page ((64 - 8 pages) / 56)", Some(100), None),
    fig("walk_per_frame", "stack walk per frame in the guest ((40 - 20 frames) / 20)", Some(100), None),
    // scope.rs: scopes without faults.
    fig("first_write_in_scope", "first write to a page in a scope (fault + preserve)", Some(1_500), None),
    fig("checkpoint_open_commit", "checkpoint open + commit, nothing dirtied", Some(2_000), None),
    Figure { unit: PAGES, ..fig("checkpoint_pages", "  private writable pages the open write-protects", None, None) },
    // lock.rs: the registry on the uncontended path.
    fig("lock_unlock_spin", "bare spinlock lock + unlock (CAS + store)", None, None),
    fig("lock_unlock_mutex", "Mutex lock + unlock, uncontended (registry included)", None, None),
    fig("registry_cost", "registry cost on lock + unlock (Mutex - spinlock)", Some(30), None),
];

/// What the Linux column compares against (DESIGN.md, "Targets").
const LINUX_NOTE: &str = "Linux 6.1 column: measured in the same QEMU the same way (DESIGN.md); the IPC row \
                          compares a futex ping-pong between two threads, the two fault rows SIGSEGV -> handler -> \
                          siglongjmp back to a sigsetjmp checkpoint (which releases and rolls back nothing)";

/// A measured figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Measured {
    pub figure: &'static Figure,
    /// Guest instructions per operation.
    pub value: u64,
}

/// Reads the figures from an event stream (one JSON object per line).
///
/// Fails when a benchmark reported `ok: false` (any `bench:` check, known
/// or not: a role that found something wrong), a figure is reported twice,
/// or a figure of [`FIGURES`] is missing. Unknown `bench:` checks that are
/// ok are ignored (a newer task against an older table).
pub fn parse(lines: &[String]) -> Result<Vec<Measured>> {
    let mut values: Vec<Option<u64>> = vec![None; FIGURES.len()];
    let mut failures = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let event: Value =
            serde_json::from_str(line).with_context(|| format!("event line {} is not JSON: {line:?}", i + 1))?;
        if event["ev"] != "check" {
            continue;
        }
        let Some(name) = event["name"].as_str().and_then(|n| n.strip_prefix(CHECK_PREFIX)) else { continue };
        let value = event["value"].as_u64();
        if event["ok"] != true {
            let task = event["task_name"].as_str().unwrap_or("?");
            failures.push(format!(
                "{CHECK_PREFIX}{name} (task {task}, value {})",
                value.map_or("?".into(), |v| v.to_string())
            ));
            continue;
        }
        let Some(slot) = FIGURES.iter().position(|f| f.name == name) else { continue };
        let value = value.with_context(|| format!("{CHECK_PREFIX}{name} has no numeric value: {line}"))?;
        if values[slot].replace(value).is_some() {
            bail!("{CHECK_PREFIX}{name} was reported twice");
        }
    }
    if !failures.is_empty() {
        bail!("benchmarks reported failure: {}", failures.join(", "));
    }
    for (name, value) in derive(lines, &values)? {
        if let Some(slot) = FIGURES.iter().position(|f| f.name == name) {
            values[slot] = Some(value);
        }
    }
    let missing: Vec<&str> = FIGURES.iter().zip(&values).filter(|(_, v)| v.is_none()).map(|(f, _)| f.name).collect();
    if !missing.is_empty() {
        bail!("benchmarks did not report: {}", missing.join(", "));
    }
    Ok(FIGURES.iter().zip(values).map(|(figure, v)| Measured { figure, value: v.unwrap_or_default() }).collect())
}

/// The figures read off the events of the benchmark's faults rather than
/// reported by the guest:
///
/// * the phases of `fault_to_checkpoint`: the bench reports the `seq` of its
///   best main round (`bench:fault_to_checkpoint_seq`); that fault's
///   `fault_report` carries the server's `phases` (guest instructions, see
///   `docs/events.md`); `return` is what is left of the figure: the server
///   handing the CPU back, the switch, libtask's way back into the scope;
/// * `fault_to_report`: for the fault of `bench:fault_to_report_seq` (a
///   round after which the bench task sleeps), the time its last event was
///   written (`emitted`, else `tsc`) minus the fault's time (`fault_tsc`):
///   recovery and the whole deferred report.
fn derive(lines: &[String], values: &[Option<u64>]) -> Result<Vec<(&'static str, u64)>> {
    let events: Vec<Value> = lines.iter().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let check =
        |name: &str| events.iter().find(|e| e["ev"] == "check" && e["name"] == name).and_then(|e| e["value"].as_u64());
    let of_seq = |seq: u64| events.iter().filter(move |e| e["seq"].as_u64() == Some(seq) && e.get("by").is_some());
    let mut out = Vec::new();
    if let Some(seq) = check("bench:fault_to_checkpoint_seq") {
        let report = of_seq(seq)
            .find(|e| e["ev"] == "fault_report")
            .with_context(|| format!("no fault_report for the benchmark's fault {seq}"))?;
        let p = &report["phases"];
        let phase = |k: &str| p[k].as_u64().with_context(|| format!("fault_report {seq} has no phase {k}"));
        let names = ["delivery", "decision", "walk", "plan", "request", "releases", "rollback"];
        let mut sum = 0;
        for k in names {
            let v = phase(k)?;
            sum += v;
            out.push((FIGURES.iter().find(|f| f.name == format!("phase_{k}")).map_or("", |f| f.name), v));
        }
        let total = FIGURES.iter().position(|f| f.name == "fault_to_checkpoint").and_then(|i| values[i]);
        if let Some(total) = total {
            out.push(("phase_return", total.saturating_sub(sum)));
        }
    }
    if let Some(seq) = check("bench:fault_to_report_seq") {
        let fault = of_seq(seq)
            .find(|e| e["ev"] == "fault")
            .and_then(|e| e["fault_tsc"].as_u64().or(e["tsc"].as_u64()))
            .with_context(|| format!("no fault event for the benchmark's fault {seq}"))?;
        let last = of_seq(seq)
            .filter_map(|e| e["emitted"].as_u64().or(e["tsc"].as_u64()))
            .max()
            .with_context(|| format!("no report for the benchmark's fault {seq}"))?;
        out.push(("fault_to_report", last.saturating_sub(fault)));
    }
    Ok(out)
}

/// The table, one line per figure (no trailing newline).
pub fn table(results: &[Measured]) -> String {
    let cell = |v: Option<u64>, prefix: &str| v.map_or("-".to_string(), |v| format!("{prefix}{}", group(v)));
    let width = FIGURES.iter().map(|f| f.label.len()).max().unwrap_or(0).max("figure".len());
    let mut out = format!("{:<width$}  {:>18}  {:>8}  {:>9}", "figure", "guest instructions", "target", "Linux 6.1");
    for m in results {
        let value = if m.figure.unit == INSTRUCTIONS {
            group(m.value)
        } else {
            format!("{} {}", group(m.value), m.figure.unit)
        };
        out.push_str(&format!(
            "\n{:<width$}  {:>18}  {:>8}  {:>9}",
            m.figure.label,
            value,
            cell(m.figure.target, "<= "),
            cell(m.figure.linux, "")
        ));
    }
    out
}

/// `12345` → `12,345`.
fn group(v: u64) -> String {
    let digits = v.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The contents of `bench.json`: deterministic (no wall time, no paths),
/// so two runs of one build give the same file.
pub fn to_json(results: &[Measured], profile: Profile, image: &str) -> Value {
    let figures: serde_json::Map<String, Value> = results
        .iter()
        .map(|m| {
            let f = m.figure;
            let mut entry = json!({ "label": f.label, "value": m.value, "target": f.target, "linux": f.linux });
            if f.unit != INSTRUCTIONS {
                entry["unit"] = json!(f.unit);
            }
            (f.name.to_string(), entry)
        })
        .collect();
    json!({
        "unit": "guest instructions",
        "qemu": ICOUNT,
        "profile": match profile { Profile::Debug => "debug", Profile::Release => "release" },
        "image": image,
        "figures": figures,
    })
}

/// Arguments of `cargo xtask bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Measure the release build (the default).
    #[arg(long, conflicts_with = "debug")]
    pub release: bool,
    /// Measure the debug build instead.
    #[arg(long)]
    pub debug: bool,
    /// The image to boot (images/NAME.toml); its tasks report `bench:*` checks.
    #[arg(long, default_value = DEFAULT_IMAGE)]
    pub image: String,
    /// Where to write the figures as JSON (default target/rewind/bench.json).
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Kill QEMU after this many seconds.
    #[arg(long, default_value_t = 300.0)]
    pub timeout: f64,
}

/// `cargo xtask bench`.
pub fn run(args: BenchArgs) -> Result<ExitCode> {
    let profile = if args.debug { Profile::Debug } else { Profile::Release };
    let (kernel, image) = build::system(profile, &args.image)?;
    let dir = paths::rewind_dir().join("bench");
    let console = dir.join("console.log");
    let mut boot = Boot::new(&kernel, dir.join("events.jsonl"));
    boot.image = Some(image);
    boot.icount = true;
    boot.console = Console::File(console.clone());
    boot.timeout = Some(Duration::from_secs_f64(args.timeout));
    let outcome = boot.run()?;
    if outcome.verdict != Verdict::Guest(abi::exit::GuestExit::Success) {
        bail!(
            "the benchmark guest did not shut down cleanly: {}\n{}console: {}, events: {}",
            outcome.verdict.describe(),
            tail(&console, 20),
            console.display(),
            outcome.events.display()
        );
    }
    let results = parse(&outcome.event_lines()?).with_context(|| format!("in {}", outcome.events.display()))?;
    let json_path = args.json.unwrap_or_else(|| paths::rewind_dir().join("bench.json"));
    let text = serde_json::to_string_pretty(&to_json(&results, profile, &args.image))? + "\n";
    if let Some(parent) = json_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&json_path, text).with_context(|| format!("writing {}", json_path.display()))?;

    let name = match profile {
        Profile::Debug => "debug",
        Profile::Release => "release",
    };
    println!("Rewind benchmarks: {name} build, image {}, {ICOUNT} (1 TSC tick = 1 guest instruction)", args.image);
    println!();
    println!("{}", table(&results));
    println!();
    println!("{LINUX_NOTE}.");
    eprintln!("xtask: figures in {}; guest run {:.2} s", json_path.display(), outcome.wall.as_secs_f64());
    Ok(ExitCode::SUCCESS)
}

/// The last `n` lines of a file, each indented, for an error message.
fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].iter().map(|l| format!("  | {l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, ok: bool, value: u64) -> String {
        format!(r#"{{"ev":"check","tsc":1,"task":2,"task_name":"bench-x","name":"{name}","ok":{ok},"value":{value}}}"#)
    }

    fn all_figures() -> Vec<String> {
        let mut lines = vec![r#"{"ev":"boot","tsc":0}"#.to_string()];
        lines
            .extend(FIGURES.iter().enumerate().map(|(i, f)| check(&format!("bench:{}", f.name), true, 100 + i as u64)));
        lines.push(check("other", true, 5));
        lines
    }

    #[test]
    fn parses_every_figure_in_table_order() {
        let results = parse(&all_figures()).unwrap();
        assert_eq!(results.len(), FIGURES.len());
        for (i, m) in results.iter().enumerate() {
            assert_eq!(m.figure.name, FIGURES[i].name);
            assert_eq!(m.value, 100 + i as u64);
        }
    }

    #[test]
    fn a_missing_figure_is_an_error() {
        let mut lines = all_figures();
        lines.retain(|l| !l.contains("bench:null_syscall"));
        let err = parse(&lines).unwrap_err().to_string();
        assert!(err.contains("did not report: null_syscall"), "{err}");
    }

    #[test]
    fn a_failed_benchmark_is_an_error() {
        let mut lines = all_figures();
        lines.push(check("bench:unexpected_fault", false, 3));
        let err = parse(&lines).unwrap_err().to_string();
        assert!(err.contains("bench:unexpected_fault"), "{err}");
    }

    #[test]
    fn a_figure_reported_twice_is_an_error() {
        let mut lines = all_figures();
        lines.push(check("bench:context_switch", true, 1));
        assert!(parse(&lines).is_err());
    }

    #[test]
    fn a_count_shows_its_unit() {
        let results = parse(&all_figures()).unwrap();
        let i = FIGURES.iter().position(|f| f.unit == PAGES).expect("a page count");
        let text = table(&results);
        let row = text.lines().nth(i + 1).unwrap();
        assert!(row.contains(&format!("{} pages", 100 + i)), "{row}");
        let json = to_json(&results, Profile::Release, "bench");
        assert_eq!(json["figures"][FIGURES[i].name]["unit"], PAGES);
        assert!(json["figures"]["null_syscall"].get("unit").is_none());
    }

    #[test]
    fn groups_thousands() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(10_102), "10,102");
        assert_eq!(group(1_234_567), "1,234,567");
    }
}
