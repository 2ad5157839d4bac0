//! `cargo xtask inject SCRIPT [--seed N] [--jobs N] [--replay REPORT#ID]`:
//! the host side of fault injection.
//!
//! Why the work is split this way: the kernel injects (it alone can flip a
//! register at an instruction boundary of a running task), the host plans
//! and judges. A script (`script.rs`, format in `docs/fault-injection.md`)
//! becomes batches of plan lines (`plan.rs`), each batch one deterministic
//! boot under icount with its plan appended to the image (`run.rs`, several
//! QEMUs at once); every injection is classified from its boot's event
//! stream (`classify.rs`), the whole run is summarised into a JSON report
//! and tables (`report.rs`) and an SVG (`chart.rs`), and judged against the
//! script's expectations (`expect.rs`): any failed expectation makes the
//! command exit non-zero. `replay.rs` re-runs one injection's batch and
//! proves its events are the same bytes.
//!
//! Outputs: `target/rewind/inject/<script>-<seed>.json` and `.svg`, and the
//! per-batch event streams and consoles in `target/rewind/inject/<script>-<seed>/`.

mod chart;
mod classify;
mod expect;
mod plan;
pub mod replay;
mod report;
mod run;
mod script;
mod symbol;

pub use classify::Outcome;
pub use report::Report;

use crate::build::{self, Profile};
use crate::images::Manifest;
use crate::paths;
use anyhow::{Context, Result, bail};
use clap::Args;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct InjectArgs {
    /// The script (faults/NAME.toml).
    pub script: Option<PathBuf>,
    /// Seed of the campaign (default: the script's `seed`).
    #[arg(long)]
    pub seed: Option<u64>,
    /// QEMU instances at once (default: the number of cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Re-run one injection of a report and show its events:
    /// `target/rewind/inject/smoke-1.json#17`.
    #[arg(long, value_name = "REPORT#ID", conflicts_with_all = ["script", "seed"])]
    pub replay: Option<String>,
    /// Boot this kernel ELF instead of building one (with --bins).
    #[arg(long, requires = "bins")]
    pub kernel: Option<PathBuf>,
    /// Take the task binaries from this folder instead of building them.
    #[arg(long, requires = "kernel")]
    pub bins: Option<PathBuf>,
}

/// How to run a script (the CLI's defaults, or a test's own).
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub seed: Option<u64>,
    pub jobs: Option<usize>,
    /// Pre-built kernel and task binaries (default: build them).
    pub kernel: Option<PathBuf>,
    pub bins: Option<PathBuf>,
    /// Where reports go (default `target/rewind/inject`).
    pub out_dir: Option<PathBuf>,
    /// Draw a progress bar (terminals only; indicatif hides it otherwise).
    pub progress: bool,
}

/// A finished run.
pub struct Finished {
    pub report: Report,
    pub json: PathBuf,
    pub svg: PathBuf,
    pub wall: Duration,
}

impl Finished {
    /// The failed expectations, one line each.
    pub fn failures(&self) -> Vec<String> {
        self.report.expectations.iter().filter(|e| !e.ok).map(|e| format!("{}: {}", e.name, e.detail)).collect()
    }
}

pub fn main(args: InjectArgs) -> Result<ExitCode> {
    if let Some(spec) = &args.replay {
        return replay::run(
            spec,
            &Options { jobs: args.jobs, kernel: args.kernel, bins: args.bins, ..Options::default() },
        );
    }
    let Some(script) = &args.script else { bail!("name a script (faults/*.toml), or --replay REPORT#ID") };
    let opts = Options {
        seed: args.seed,
        jobs: args.jobs,
        progress: true,
        kernel: args.kernel.clone(),
        bins: args.bins.clone(),
        ..Options::default()
    };
    let done = run_script(script, &opts)?;
    print_result(&done);
    Ok(if done.report.passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Prints the tables, the expectations and where the files are.
pub fn print_result(done: &Finished) {
    let r = &done.report;
    println!();
    print!("{}", report::table(&r.summary));
    println!();
    for e in &r.expectations {
        println!("{} {:<28} {}", if e.ok { "ok  " } else { "FAIL" }, e.name, e.detail);
    }
    let boots = r.batches.len();
    println!(
        "\n{}: {} injections in {boots} boots, {:.0} s; report {} (chart {})",
        if r.passed { "passed" } else { "FAILED" },
        r.summary.total.injections,
        done.wall.as_secs_f64(),
        done.json.display(),
        done.svg.display()
    );
}

/// Everything a boot of this script needs, built and packed.
pub(crate) struct Prepared {
    pub loaded: script::Loaded,
    pub profile: Profile,
    pub machine: run::Machine,
    pub tasks: BTreeMap<String, String>,
    pub bins: PathBuf,
    pub out_dir: PathBuf,
}

pub(crate) fn prepare(path: &Path, opts: &Options) -> Result<Prepared> {
    let loaded = script::load(path)?;
    let s = &loaded.script;
    let profile = if s.release { Profile::Release } else { Profile::Debug };
    let kernel = match &opts.kernel {
        Some(k) => k.clone(),
        None => build::kernel(profile)?,
    };
    let bins = match &opts.bins {
        Some(b) => b.clone(),
        None => build::tasks(profile)?,
    };
    let out_dir = opts.out_dir.clone().unwrap_or_else(|| paths::rewind_dir().join("inject"));
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let manifest = match &s.image {
        script::ImageRef::Name(name) if name.ends_with(".toml") => {
            let p = loaded.path.parent().unwrap_or(Path::new(".")).join(name);
            Manifest::load(&p.display().to_string())?
        }
        script::ImageRef::Name(name) => Manifest::load(name)?,
        script::ImageRef::Inline(table) => {
            let p = out_dir.join(format!("{}.image.toml", loaded.stem));
            let text = toml::to_string(table).context("writing the inline [image] back as TOML")?;
            std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
            Manifest::load(&p.display().to_string()).context("the script's inline [image]")?
        }
    };
    let image = manifest.pack(&bins)?;
    let mut tasks = BTreeMap::new();
    for t in &manifest.tasks {
        for i in 0..t.count {
            let name = if t.count > 1 { format!("{}-{i}", t.name) } else { t.name.clone() };
            tasks.insert(name, t.bin.clone());
        }
    }
    if run::marker_collides(tasks.keys()) {
        bail!("the image has a task named {:?}, which the runner reserves", plan::MARKER_TASK);
    }
    let machine = run::Machine { kernel, image, wall_timeout: Duration::from_secs(s.run.timeout_secs) };
    Ok(Prepared { loaded, profile, machine, tasks, bins, out_dir })
}

impl Prepared {
    pub fn rules(&self) -> classify::Rules<'_> {
        let s = &self.loaded.script;
        classify::Rules { fault_server: &s.run.fault_server, servers: &s.run.servers, ignore_checks: &s.checks.ignore }
    }

    /// Boots a private copy of the kernel: others may rebuild the tree
    /// while a long campaign runs, and every boot must run the same bytes.
    pub fn pin_kernel(mut self, dir: &Path) -> Result<Prepared> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let copy = dir.join("kernel.elf");
        std::fs::copy(&self.machine.kernel, &copy)
            .with_context(|| format!("copying {}", self.machine.kernel.display()))?;
        self.machine.kernel = copy;
        Ok(self)
    }

    pub fn kernel_fnv(&self) -> Result<String> {
        let bytes = std::fs::read(&self.machine.kernel)
            .with_context(|| format!("reading {}", self.machine.kernel.display()))?;
        Ok(classify::fnv(&bytes))
    }
}

/// One boot's verdicts and facts.
type Classified = (Vec<classify::Verdict>, classify::Facts);

/// Runs a script: plans, boots, classifies, reports, judges.
pub fn run_script(path: &Path, opts: &Options) -> Result<Finished> {
    let start = Instant::now();
    let prep = prepare(path, opts)?;
    let s = &prep.loaded.script;
    let seed = opts.seed.unwrap_or(s.seed);
    let image_tasks = plan::ImageTasks { tasks: prep.tasks.clone(), bins: &prep.bins };
    let batches = plan::batches(s, seed, &image_tasks)?;
    let total: usize = batches.iter().map(|b| b.injections.len()).sum();
    let name = format!("{}-{seed}", prep.loaded.stem);
    let dir = prep.out_dir.join(&name);
    let _ = std::fs::remove_dir_all(&dir);
    let prep = prep.pin_kernel(&dir)?;
    let s = &prep.loaded.script;
    let jobs = opts
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1)
        .min(batches.len().max(1));
    eprintln!(
        "xtask: inject {}: {total} injections in {} boots, seed {seed}, {jobs} QEMU at once",
        prep.loaded.display,
        batches.len()
    );

    let bar = if opts.progress { indicatif::ProgressBar::new(total as u64) } else { indicatif::ProgressBar::hidden() };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} injections  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let rules = prep.rules();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<Classified>>>> = Mutex::new((0..batches.len()).map(|_| None).collect());
    let tally: Mutex<BTreeMap<Outcome, u64>> = Mutex::new(BTreeMap::new());
    let failed = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= batches.len() || failed.load(Ordering::SeqCst) {
                        break;
                    }
                    let b = &batches[i];
                    let result = run::boot(&prep.machine, b, &dir)
                        .map(|r| classify::classify(&b.injections, &r.events, r.end, &rules));
                    match &result {
                        Ok((verdicts, _)) => {
                            let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
                            for v in verdicts {
                                *t.entry(v.outcome).or_default() += 1;
                            }
                            let msg: Vec<String> = t.iter().map(|(o, n)| format!("{} {n}", o.name())).collect();
                            bar.set_message(msg.join(", "));
                        }
                        Err(_) => failed.store(true, Ordering::SeqCst),
                    }
                    bar.inc(b.injections.len() as u64);
                    if !opts.progress {
                        let done = next.load(Ordering::SeqCst).min(batches.len());
                        if done % 10 == 0 || done == batches.len() {
                            eprintln!("xtask: inject: {done}/{} boots started", batches.len());
                        }
                    }
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(result);
                }
            });
        }
    });
    bar.finish_and_clear();

    let mut entries = Vec::with_capacity(total);
    let mut batch_reports = Vec::with_capacity(batches.len());
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    for (b, result) in batches.iter().zip(results) {
        let Some(result) = result else { bail!("batch {} was not run (an earlier boot failed)", b.index) };
        let (verdicts, facts) = result.with_context(|| format!("booting batch {}", b.index))?;
        for (p, v) in b.injections.iter().zip(verdicts) {
            entries.push(report::Entry { planned: p.clone(), verdict: v });
        }
        batch_reports.push(report::batch_report(b, facts));
    }
    entries.sort_by_key(|e| e.planned.id);
    let summary = report::summarize(&entries);
    let expectations = expect::judge(s, &batch_reports, &entries, &summary);
    let passed = expectations.iter().all(|e| e.ok);
    let report = Report {
        format: report::FORMAT,
        script: prep.loaded.display.clone(),
        description: s.description.clone(),
        seed,
        profile: if prep.profile == Profile::Release { "release" } else { "debug" }.into(),
        image_fnv: classify::fnv(&prep.machine.image),
        kernel_fnv: prep.kernel_fnv()?,
        summary,
        batches: batch_reports,
        injections: entries,
        expectations,
        passed,
    };
    let json = prep.out_dir.join(format!("{name}.json"));
    let svg = prep.out_dir.join(format!("{name}.svg"));
    let mut text = serde_json::to_string_pretty(&report).context("serialising the report")?;
    text.push('\n');
    std::fs::write(&json, text).with_context(|| format!("writing {}", json.display()))?;
    std::fs::write(&svg, chart::svg(&report)).with_context(|| format!("writing {}", svg.display()))?;
    Ok(Finished { report, json, svg, wall: start.elapsed() })
}

/// Replays injection `id` of the report at `report_path` (see `replay.rs`).
pub fn replay_injection(report_path: &Path, id: u64, opts: &Options) -> Result<replay::Replayed> {
    let text = std::fs::read_to_string(report_path)
        .with_context(|| format!("reading the report {}", report_path.display()))?;
    let report: Report =
        serde_json::from_str(&text).with_context(|| format!("parsing the report {}", report_path.display()))?;
    replay::replay(&report, report_path, id, opts)
}
