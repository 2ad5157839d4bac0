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
//! With the default image, a second boot measures the two-CPU rows
//! ([`SMP_FIGURES`]: image [`SMP_IMAGE`] on [`SMP_CPUS`] CPUs, every task
//! pinned), printed as a second table with what they count ([`SMP_NOTE`])
//! and written under `smp` in `bench.json`; [`parse_smp`] also checks, from
//! the `task_start` and `fault` events' `cpu`, that each pair ran where
//! its row says.
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
    fig("timer_tick", "timer tick of the boot CPU (interrupt, clock, scheduler pass every slice)", None, None),
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

/// The image of the two-CPU rows (`cargo xtask bench` boots it after the
/// default image, with [`SMP_CPUS`] CPUs).
pub const SMP_IMAGE: &str = "bench-smp";
/// The CPUs of the two-CPU rows.
pub const SMP_CPUS: u32 = 2;

/// The two-CPU rows (`images/bench-smp.toml`, `tasks/bench/src/placed.rs`):
/// the IPC round trip and fault -> checkpoint with both parties on one CPU
/// and on two. Not comparable with the one-CPU rows above them (other
/// kernel paths, and the TSC counts both CPUs' instructions: [`SMP_NOTE`]).
pub const SMP_FIGURES: &[Figure] = &[
    fig("ipc_call_reply_same_cpu", "IPC call + reply round trip, client and server on the same CPU", None, None),
    fig("ipc_call_reply_cross_cpu", "IPC call + reply round trip, client and server on different CPUs", None, None),
    fig("fault_to_checkpoint_same_cpu", "fault -> running at the checkpoint, fault server on the same CPU", None, None),
    fig("fault_to_recovered_same_cpu", "  fault -> rolled back (RECOVER done), the same", None, None),
    fig(
        "fault_to_checkpoint_cross_cpu",
        "fault -> running at the checkpoint, fault server on the other CPU (+ its report)",
        None,
        None,
    ),
    fig("fault_to_recovered_cross_cpu", "  fault -> rolled back (RECOVER done), the same", None, None),
];

/// Where the two parties of each two-CPU row must have run: the figure,
/// the task that reports it, its peer, and whether they share a CPU.
/// `cargo xtask bench` checks it against the `task_start` events' `cpu`.
const PLACEMENT: &[(&str, &str, &str, bool)] = &[
    ("ipc_call_reply_same_cpu", "bench-ipc-same", "bench-ipc-server", true),
    ("ipc_call_reply_cross_cpu", "bench-ipc-cross", "bench-ipc-server", false),
    ("fault_to_checkpoint_same_cpu", "bench-fault-same", "fault-server", true),
    ("fault_to_checkpoint_cross_cpu", "bench-fault-cross", "fault-server", false),
];

/// What the two-CPU rows count.
const SMP_NOTE: &str = "Two-CPU rows: under -icount QEMU runs both vCPUs round-robin on one host thread and the TSC \
                        advances with the instructions of whichever runs, so a figure is the sum of both CPUs' \
                        instructions between the two TSC reads; it switches vCPUs when one halts (or at a timer \
                        deadline), not when an IPI is sent. So the cross-CPU IPC round trip is the work of both \
                        sides, the IPIs and the two wake-ups from hlt included; with a fault server on the other \
                        CPU, that CPU finishes the server's deferred report before the faulted task's CPU runs \
                        again, so the 'running at the checkpoint' row includes the report and the 'rolled back' \
                        row (the kernel's RECOVER done, from the fault's fault_report phases) is the recovery's \
                        own cost. With several CPUs the kernel takes the general IPC path (the fastpath is \
                        one-CPU only): the same-CPU rows measure other paths than the one-CPU rows \
                        (DESIGN.md, SMP)";

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
    parse_set(lines, FIGURES, derive)
}

/// [`parse`] for the two-CPU image ([`SMP_FIGURES`]); also fails when a
/// pair did not run where its row says ([`PLACEMENT`]) or a task other
/// than the faulting roles faulted.
pub fn parse_smp(lines: &[String]) -> Result<Vec<Measured>> {
    let results = parse_set(lines, SMP_FIGURES, derive_smp)?;
    check_placement(lines)?;
    Ok(results)
}

type Derive = fn(&[String], &[Option<u64>]) -> Result<Vec<(&'static str, u64)>>;

fn parse_set(lines: &[String], figures: &'static [Figure], derive: Derive) -> Result<Vec<Measured>> {
    let mut values: Vec<Option<u64>> = vec![None; figures.len()];
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
        let Some(slot) = figures.iter().position(|f| f.name == name) else { continue };
        let value = value.with_context(|| format!("{CHECK_PREFIX}{name} has no numeric value: {line}"))?;
        if values[slot].replace(value).is_some() {
            bail!("{CHECK_PREFIX}{name} was reported twice");
        }
    }
    if !failures.is_empty() {
        bail!("benchmarks reported failure: {}", failures.join(", "));
    }
    for (name, value) in derive(lines, &values)? {
        if let Some(slot) = figures.iter().position(|f| f.name == name) {
            values[slot] = Some(value);
        }
    }
    let missing: Vec<&str> = figures.iter().zip(&values).filter(|(_, v)| v.is_none()).map(|(f, _)| f.name).collect();
    if !missing.is_empty() {
        bail!("benchmarks did not report: {}", missing.join(", "));
    }
    Ok(figures.iter().zip(values).map(|(figure, v)| Measured { figure, value: v.unwrap_or_default() }).collect())
}

/// The recovery phases of fault `seq` (delivery .. rollback, the
/// `fault_report`'s `phases`): the fault taken to the kernel's `RECOVER`
/// done.
fn phases_of(events: &[Value], seq: u64) -> Result<Vec<(&'static str, u64)>> {
    let report = events
        .iter()
        .find(|e| e["ev"] == "fault_report" && e["seq"].as_u64() == Some(seq) && e.get("by").is_some())
        .with_context(|| format!("no fault_report for the benchmark's fault {seq}"))?;
    let p = &report["phases"];
    ["delivery", "decision", "walk", "plan", "request", "releases", "rollback"]
        .into_iter()
        .map(|k| Ok((k, p[k].as_u64().with_context(|| format!("fault_report {seq} has no phase {k}"))?)))
        .collect()
}

/// The two-CPU rows read off the events: fault -> rolled back, the sum of
/// the phases of each faulting role's best round (the round's `seq` is
/// the check `bench:<figure>_seq`).
fn derive_smp(lines: &[String], _values: &[Option<u64>]) -> Result<Vec<(&'static str, u64)>> {
    let events: Vec<Value> = lines.iter().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let mut out = Vec::new();
    for (seq_check, figure) in [
        ("bench:fault_to_checkpoint_same_cpu_seq", "fault_to_recovered_same_cpu"),
        ("bench:fault_to_checkpoint_cross_cpu_seq", "fault_to_recovered_cross_cpu"),
    ] {
        let seq =
            events.iter().find(|e| e["ev"] == "check" && e["name"] == seq_check).and_then(|e| e["value"].as_u64());
        if let Some(seq) = seq {
            out.push((figure, phases_of(&events, seq)?.iter().map(|(_, v)| v).sum()));
        }
    }
    Ok(out)
}

/// Each pair of [`PLACEMENT`] ran on one CPU or on two, as its row says
/// (the CPU each task started on: every task of the image is pinned), the
/// faulting roles faulted on their own CPU, and nothing else faulted.
fn check_placement(lines: &[String]) -> Result<()> {
    let events: Vec<Value> = lines.iter().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let cpu_of = |name: &str| {
        events
            .iter()
            .find(|e| e["ev"] == "task_start" && e["name"] == name)
            .and_then(|e| e["cpu"].as_u64())
            .with_context(|| format!("no task_start with a cpu for {name}"))
    };
    for &(figure, reporter, peer, same) in PLACEMENT {
        let (a, b) = (cpu_of(reporter)?, cpu_of(peer)?);
        if (a == b) != same {
            bail!("{figure}: {reporter} ran on CPU {a} and {peer} on CPU {b}, not as the row says");
        }
    }
    for f in events.iter().filter(|e| e["ev"] == "fault" && e.get("by").is_none()) {
        let name = f["name"].as_str().unwrap_or("?");
        let faulting = PLACEMENT.iter().any(|&(fig, r, _, _)| r == name && fig.starts_with("fault_"));
        if !faulting {
            bail!("task {name} faulted: {f}");
        }
        if f["cpu"].as_u64() != Some(cpu_of(name)?) {
            bail!("{name} faulted on another CPU than its own: {f}");
        }
    }
    Ok(())
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
        let mut sum = 0;
        for (k, v) in phases_of(&events, seq)? {
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
    /// Only the one-CPU table (skip the two-CPU rows of image `bench-smp`).
    #[arg(long)]
    pub one_cpu: bool,
}

/// Boots `image` on `cpus` CPUs under icount and returns its event lines
/// (the run's console and events in `target/rewind/<dir>/`).
fn boot_bench(
    profile: Profile,
    image: &str,
    cpus: u32,
    dir: &str,
    timeout: f64,
) -> Result<(Vec<String>, PathBuf, f64)> {
    let (kernel, packed) = build::system(profile, image)?;
    let dir = paths::rewind_dir().join(dir);
    let console = dir.join("console.log");
    let mut boot = Boot::new(&kernel, dir.join("events.jsonl"));
    boot.image = Some(packed);
    boot.icount = true;
    boot.cpus = cpus;
    boot.console = Console::File(console.clone());
    boot.timeout = Some(Duration::from_secs_f64(timeout));
    let outcome = boot.run()?;
    if outcome.verdict != Verdict::Guest(abi::exit::GuestExit::Success) {
        bail!(
            "the benchmark guest ({image}, {cpus} CPU(s)) did not shut down cleanly: {}\n{}console: {}, events: {}",
            outcome.verdict.describe(),
            tail(&console, 20),
            console.display(),
            outcome.events.display()
        );
    }
    Ok((outcome.event_lines()?, outcome.events.clone(), outcome.wall.as_secs_f64()))
}

/// `cargo xtask bench`.
pub fn run(args: BenchArgs) -> Result<ExitCode> {
    let profile = if args.debug { Profile::Debug } else { Profile::Release };
    let (lines, events, wall) = boot_bench(profile, &args.image, 1, "bench", args.timeout)?;
    let results = parse(&lines).with_context(|| format!("in {}", events.display()))?;
    // The two-CPU rows come with the default image only (another image
    // is a table of its own).
    let smp = if args.image == DEFAULT_IMAGE && !args.one_cpu {
        let (lines, events, wall) = boot_bench(profile, SMP_IMAGE, SMP_CPUS, "bench-smp", args.timeout)?;
        Some((parse_smp(&lines).with_context(|| format!("in {}", events.display()))?, wall))
    } else {
        None
    };
    let json_path = args.json.unwrap_or_else(|| paths::rewind_dir().join("bench.json"));
    let mut json = to_json(&results, profile, &args.image);
    if let Some((smp, _)) = &smp {
        json["smp"] = to_json(smp, profile, SMP_IMAGE);
        json["smp"]["cpus"] = json!(SMP_CPUS);
    }
    let text = serde_json::to_string_pretty(&json)? + "\n";
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
    let mut walls = format!("{wall:.2} s");
    if let Some((smp, wall)) = &smp {
        println!();
        println!("On {SMP_CPUS} CPUs: image {SMP_IMAGE}, --cpus {SMP_CPUS}, every task pinned (manifest `cpu`)");
        println!();
        println!("{}", table(smp));
        println!();
        println!("{SMP_NOTE}.");
        walls.push_str(&format!(" + {wall:.2} s"));
    }
    eprintln!("xtask: figures in {}; guest runs {walls}", json_path.display());
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

    /// The two-CPU image's events: every figure, the best rounds' faults
    /// with their phases, each task started on `cpus` (by name).
    fn smp_lines(cpus: &[(&str, u64)]) -> Vec<String> {
        let mut lines: Vec<String> = cpus
            .iter()
            .map(|(name, cpu)| format!(r#"{{"ev":"task_start","tsc":1,"task":1,"name":"{name}","cpu":{cpu}}}"#))
            .collect();
        for (i, f) in SMP_FIGURES.iter().enumerate() {
            lines.push(check(&format!("bench:{}", f.name), true, 1000 + i as u64));
        }
        for (seq, which) in [(7, "same"), (9, "cross")] {
            lines.push(check(&format!("bench:fault_to_checkpoint_{which}_cpu_seq"), true, seq));
            lines.push(format!(
                r#"{{"ev":"fault_report","tsc":1,"by":6,"seq":{seq},"phases":{{"delivery":1,"decision":2,"walk":3,"plan":4,"request":5,"releases":6,"rollback":{seq}}}}}"#
            ));
        }
        lines
    }

    const PLACED: [(&str, u64); 5] = [
        ("bench-ipc-server", 0),
        ("bench-ipc-same", 0),
        ("bench-ipc-cross", 1),
        ("bench-fault-same", 0),
        ("bench-fault-cross", 1),
    ];

    #[test]
    fn smp_rows_are_checked_against_where_the_tasks_ran() {
        let mut cpus = PLACED.to_vec();
        cpus.push(("fault-server", 0));
        let results = parse_smp(&smp_lines(&cpus)).unwrap();
        let value = |n: &str| results.iter().find(|m| m.figure.name == n).unwrap().value;
        // Fault -> rolled back is the sum of the best round's phases.
        assert_eq!(value("fault_to_recovered_same_cpu"), 1 + 2 + 3 + 4 + 5 + 6 + 7);
        assert_eq!(value("fault_to_recovered_cross_cpu"), 1 + 2 + 3 + 4 + 5 + 6 + 9);
        // The fault server on CPU 1: the "same CPU" fault row is not.
        cpus.pop();
        cpus.push(("fault-server", 1));
        let e = parse_smp(&smp_lines(&cpus)).unwrap_err().to_string();
        assert!(e.contains("fault_to_checkpoint_same_cpu") && e.contains("not as the row says"), "{e}");
        // A task that is not a faulting role faulted.
        let mut lines = smp_lines(&[PLACED.as_slice(), &[("fault-server", 0)]].concat());
        lines.push(r#"{"ev":"fault","tsc":1,"task":2,"name":"bench-ipc-same","cpu":0}"#.into());
        let e = parse_smp(&lines).unwrap_err().to_string();
        assert!(e.contains("bench-ipc-same faulted"), "{e}");
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
