//! `cargo xtask inject SCRIPT [--seed N] [--jobs N] [--shard I/N]`,
//! `--replay REPORT#ID`, `merge PARTS…`: the host side of fault injection.
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
//! command exit non-zero. Unless the script says otherwise, the workload is
//! also booted once per deadline with no injection armed (the *golden
//! run*, `golden.rs`), and what each task reported in a faulted boot is
//! compared with it: a difference its own recovery does not explain is
//! silent corruption, whatever the task's checks said. `replay.rs` re-runs
//! one injection's batch and proves its events are the same bytes;
//! `shard.rs` runs a slice of the batches and merges slices back into the
//! very report one machine would have written.
//!
//! Outputs: `target/rewind/inject/<script>-<seed>.json` and `.svg`, and the
//! per-batch event streams and consoles (and the golden runs',
//! `golden-<deadline>.jsonl`) in `target/rewind/inject/<script>-<seed>/`; a
//! shard writes `<script>-<seed>.shard-I-of-N.json` and its own folder.

mod blame;
mod chart;
mod classify;
mod expect;
mod golden;
mod plan;
pub mod replay;
mod report;
mod run;
mod script;
pub mod shard;
mod symbol;

/// The packed image with an injection plan appended (tests boot these).
pub use run::with_plan;

pub use classify::Outcome;
pub use report::Report;

use crate::build::{self, Profile};
use crate::images::Manifest;
use crate::paths;
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct InjectArgs {
    #[command(subcommand)]
    pub command: Option<InjectCommand>,
    /// The script (faults/NAME.toml).
    pub script: Option<PathBuf>,
    /// Run only the I-th of N slices of the campaign (1 ≤ I ≤ N) and write
    /// a partial report for `merge`.
    #[arg(long, value_name = "I/N", conflicts_with = "replay")]
    pub shard: Option<shard::Shard>,
    /// Seed of the campaign (default: the script's `seed`).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Virtual CPUs per boot (default: the script's `[run] cpus`, else 1).
    #[arg(long, conflicts_with = "replay")]
    pub cpus: Option<u32>,
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

#[derive(Subcommand, Debug)]
pub enum InjectCommand {
    /// Merge the partial reports of every `--shard I/N` run of one campaign
    /// into the report a single machine would have written.
    Merge {
        /// The parts: `target/rewind/inject/<script>-<seed>.shard-I-of-N.json`, all N.
        #[arg(required = true)]
        parts: Vec<PathBuf>,
        /// Where to write the report (default
        /// `target/rewind/inject/<script>-<seed>.json`); the chart goes next to it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// How to run a script (the CLI's defaults, or a test's own).
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub seed: Option<u64>,
    pub jobs: Option<usize>,
    /// Pre-built kernel and task binaries (default: build them).
    pub kernel: Option<PathBuf>,
    pub bins: Option<PathBuf>,
    /// Virtual CPUs per boot, instead of the script's `[run] cpus`.
    pub cpus: Option<u32>,
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
    if let Some(InjectCommand::Merge { parts, out }) = &args.command {
        let (report, json, svg) = shard::merge_files(parts, out.as_deref())?;
        print!("{}", report::table(&report.summary));
        println!();
        for e in &report.expectations {
            println!("{} {:<28} {}", if e.ok { "ok  " } else { "FAIL" }, e.name, e.detail);
        }
        println!(
            "\n{}: {} parts merged: {} injections in {} boots; report {} (chart {})",
            if report.passed { "passed" } else { "FAILED" },
            parts.len(),
            report.summary.total.injections,
            report.batches.len(),
            json.display(),
            svg.display()
        );
        return Ok(if report.passed { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    if let Some(spec) = &args.replay {
        return replay::run(
            spec,
            &Options { jobs: args.jobs, kernel: args.kernel, bins: args.bins, ..Options::default() },
        );
    }
    let Some(script) = &args.script else { bail!("name a script (faults/*.toml), or --replay REPORT#ID") };
    let opts = Options {
        seed: args.seed,
        cpus: args.cpus,
        jobs: args.jobs,
        progress: true,
        kernel: args.kernel.clone(),
        bins: args.bins.clone(),
        ..Options::default()
    };
    if let Some(sh) = args.shard {
        let done = shard::run_shard(script, sh, &opts)?;
        let n: usize = done.part.injections.len();
        println!(
            "shard {sh}: {n} injections in {} of {} boots; partial report {}\n\
             merge all {} parts with: cargo xtask inject merge PARTS...",
            done.part.batches.len(),
            done.part.batches_total,
            done.json.display(),
            sh.count
        );
        return Ok(ExitCode::SUCCESS);
    }
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
    /// Each binary's functions, loaded on first use (`function_at`).
    pub functions: Mutex<BTreeMap<String, std::sync::Arc<symbol::Functions>>>,
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
    let cpus = opts.cpus.unwrap_or(s.run.cpus);
    if !(1..=16).contains(&cpus) {
        bail!("cpus = {cpus}: a boot has 1 to 16 CPUs");
    }
    let machine = run::Machine { kernel, image, wall_timeout: Duration::from_secs(s.run.timeout_secs), cpus };
    Ok(Prepared { loaded, profile, machine, tasks, bins, out_dir, functions: Mutex::default() })
}

impl Prepared {
    pub fn rules(&self) -> classify::Rules<'_> {
        let s = &self.loaded.script;
        classify::Rules {
            fault_server: &s.run.fault_server,
            servers: &s.run.servers,
            ignore_checks: &s.checks.ignore,
            excused: &[],
        }
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

/// The golden run of one deadline: its reference in the report, and the traces.
pub(crate) struct Golden {
    pub reference: report::GoldenRef,
    pub trace: golden::Trace,
}

impl Prepared {
    /// What the golden-run comparison leaves out.
    pub fn golden_filter(&self) -> golden::Filter<'_> {
        let s = &self.loaded.script;
        let ignore = s.checks.ignore.iter().chain(&s.golden.ignore).map(String::as_str).collect();
        golden::Filter { fault_server: &s.run.fault_server, ignore }
    }

    /// Boots the golden run of `deadline_ms`: the plan with no injection.
    /// The plan's `seed` only feeds the injector's own picks, so with none
    /// armed every batch of that deadline would boot the same bytes; one
    /// boot serves them all.
    pub fn golden(&self, deadline_ms: u64, dir: &Path) -> Result<Golden> {
        let plan = plan::Batch { index: 0, seed: 1, deadline_ms, injections: Vec::new() }.plan_text();
        let run = run::boot_named(&self.machine, &format!("golden-{deadline_ms}"), &plan, dir)?;
        if !run.end.kernel_alive() {
            bail!(
                "the golden run (no injections, deadline {deadline_ms} ms) ended: {}; the workload must run \
                 without faults to be compared with (or set [golden] enabled = false)",
                run.end.describe()
            );
        }
        let trace = golden::trace(&run.events, &self.golden_filter());
        let reference = report::GoldenRef {
            plan,
            end: run.end.describe(),
            events: run.events.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count(),
            events_fnv: classify::fnv(&run.events),
        };
        Ok(Golden { reference, trace })
    }

    /// The function of task `task`'s binary that `pc` lies in: its name,
    /// `?` if none (outside every function symbol, or an unknown task).
    fn function_at(&self, task: &str, pc: u64) -> String {
        let Some(bin) = self.tasks.get(task) else { return "?".into() };
        let table = {
            let mut cache = self.functions.lock().unwrap_or_else(|e| e.into_inner());
            cache
                .entry(bin.clone())
                .or_insert_with(|| std::sync::Arc::new(symbol::Functions::load(&self.bins.join(bin))))
                .clone()
        };
        table.name_at(pc).map_or_else(|| "?".into(), str::to_owned)
    }

    /// Classifies one boot, and compares it with its golden run if any.
    pub fn judge_boot(&self, b: &plan::Batch, run: &run::BatchRun, golden: Option<&Golden>) -> Classified {
        self.judge_bisected(b, run, golden, &[])
    }

    /// [`Prepared::judge_boot`], with the blame of a bisection of the boot's
    /// failures (`blame.rs`): each bisected symptom counts against the
    /// injection it appeared with, not the one timing picks.
    pub fn judge_bisected(
        &self,
        b: &plan::Batch,
        run: &run::BatchRun,
        golden: Option<&Golden>,
        found: &[blame::Bisected],
    ) -> Classified {
        let excused = blame::excused(found);
        let rules = classify::Rules { excused: &excused, ..self.rules() };
        let (mut verdicts, mut facts) = classify::classify(&b.injections, &run.events, run.end, &rules);
        for (p, v) in b.injections.iter().zip(verdicts.iter_mut()) {
            let pc = v.rip.as_deref().and_then(|r| u64::from_str_radix(r.trim_start_matches("0x"), 16).ok());
            v.function = pc.map(|pc| self.function_at(&p.task, pc));
        }
        if let Some(g) = golden {
            let faulted = golden::trace(&run.events, &self.golden_filter());
            let divergences = golden::diff(&g.trace, &faulted);
            let explained = blame::explained(found);
            facts.unattributed_divergences =
                golden::apply(&b.injections, &mut verdicts, &divergences, &run.events, &explained);
        }
        blame::charge(&mut verdicts, found);
        facts.bisected = found.to_vec();
        (verdicts, facts)
    }

    /// Judges a boot of batch `b`, bisecting its failures when the script
    /// asks (`[run] bisect`, the default): the prefix boots go to
    /// `dir/batch-N-prefix-K.*`.
    fn judge_and_bisect(
        &self,
        b: &plan::Batch,
        run: &run::BatchRun,
        golden: Option<&Golden>,
        dir: &Path,
    ) -> Result<Classified> {
        let classified = self.judge_boot(b, run, golden);
        if !self.loaded.script.run.bisect {
            return Ok(classified);
        }
        let found = blame::bisect(b, &classified.0, &run.events, run.end, &self.rules(), |k, plan| {
            let r = run::boot_named(&self.machine, &format!("batch-{}-prefix-{k}", b.index), plan, dir)?;
            Ok((r.events, r.end))
        })?;
        if found.is_empty() {
            return Ok(classified);
        }
        Ok(self.judge_bisected(b, run, golden, &found))
    }
}

/// Runs a script: plans, boots, classifies, reports, judges.
pub fn run_script(path: &Path, opts: &Options) -> Result<Finished> {
    let start = Instant::now();
    let (prep, seed, batches) = plan_script(path, opts)?;
    let name = format!("{}-{seed}", prep.loaded.stem);
    let dir = prep.out_dir.join(&name);
    let _ = std::fs::remove_dir_all(&dir);
    let prep = prep.pin_kernel(&dir)?;
    let (batch_reports, entries) = execute(&prep, &batches, &dir, seed, opts)?;
    let report = assemble(&header(&prep, seed)?, &prep.loaded.script, batch_reports, entries);
    let (json, svg) = write_report(&report, &prep.out_dir.join(format!("{name}.json")))?;
    Ok(Finished { report, json, svg, wall: start.elapsed() })
}

/// Loads a script and plans every batch of it.
pub(crate) fn plan_script(path: &Path, opts: &Options) -> Result<(Prepared, u64, Vec<plan::Batch>)> {
    let prep = prepare(path, opts)?;
    let seed = opts.seed.unwrap_or(prep.loaded.script.seed);
    let image_tasks = plan::ImageTasks { tasks: prep.tasks.clone(), bins: &prep.bins };
    let batches = plan::batches(&prep.loaded.script, seed, &image_tasks)?;
    Ok((prep, seed, batches))
}

/// What a report says about the run as a whole, before any boot's result.
pub(crate) fn header(prep: &Prepared, seed: u64) -> Result<report::Header> {
    Ok(report::Header {
        script: prep.loaded.display.clone(),
        description: prep.loaded.script.description.clone(),
        seed,
        profile: if prep.profile == Profile::Release { "release" } else { "debug" }.into(),
        image_fnv: classify::fnv(&prep.machine.image),
        kernel_fnv: prep.kernel_fnv()?,
    })
}

/// The report of a whole campaign from its boots' results (in any order).
pub(crate) fn assemble(
    h: &report::Header,
    s: &script::Script,
    mut batches: Vec<report::BatchReport>,
    mut entries: Vec<report::Entry>,
) -> Report {
    batches.sort_by_key(|b| b.index);
    entries.sort_by_key(|e| e.planned.id);
    let summary = report::summarize(&entries);
    let expectations = expect::judge(s, &batches, &entries, &summary);
    let passed = expectations.iter().all(|e| e.ok);
    Report {
        format: report::FORMAT,
        script: h.script.clone(),
        description: h.description.clone(),
        seed: h.seed,
        profile: h.profile.clone(),
        image_fnv: h.image_fnv.clone(),
        kernel_fnv: h.kernel_fnv.clone(),
        summary,
        batches,
        injections: entries,
        expectations,
        passed,
    }
}

/// Writes the report's JSON to `json` and its chart next to it.
pub(crate) fn write_report(report: &Report, json: &Path) -> Result<(PathBuf, PathBuf)> {
    let svg = json.with_extension("svg");
    if let Some(d) = json.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let mut text = serde_json::to_string_pretty(report).context("serialising the report")?;
    text.push('\n');
    std::fs::write(json, text).with_context(|| format!("writing {}", json.display()))?;
    std::fs::write(&svg, chart::svg(report)).with_context(|| format!("writing {}", svg.display()))?;
    Ok((json.to_path_buf(), svg))
}

/// Boots `batches` (and their golden runs), `opts.jobs` QEMUs at once;
/// returns each batch's report and its injections' entries.
pub(crate) fn execute(
    prep: &Prepared,
    batches: &[plan::Batch],
    dir: &Path,
    seed: u64,
    opts: &Options,
) -> Result<(Vec<report::BatchReport>, Vec<report::Entry>)> {
    let s = &prep.loaded.script;
    let total: usize = batches.iter().map(|b| b.injections.len()).sum();
    let mut deadlines: Vec<u64> = batches.iter().map(|b| b.deadline_ms).collect();
    deadlines.sort_unstable();
    deadlines.dedup();
    if !s.golden.enabled {
        deadlines.clear();
    }
    let jobs = opts
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1)
        .min((batches.len() + deadlines.len()).max(1));
    let boots = batches.len() + deadlines.len();
    eprintln!(
        "xtask: inject {}: {total} injections in {} boots (+{} golden), seed {seed}, {jobs} QEMU at once",
        prep.loaded.display,
        batches.len(),
        deadlines.len()
    );

    let start = Instant::now();
    let progress = Progress::new(opts.progress, boots, total);
    // The golden runs first: every batch of a deadline is compared with its.
    let goldens: Mutex<BTreeMap<u64, Golden>> = Mutex::new(BTreeMap::new());
    pool(jobs, deadlines.len(), |i| {
        let g = prep.golden(deadlines[i], dir)?;
        progress.boot_done(&format!("golden run, deadline {} ms", deadlines[i]), 0, None);
        goldens.lock().unwrap_or_else(|e| e.into_inner()).insert(deadlines[i], g);
        Ok(())
    })?;
    let goldens = goldens.into_inner().unwrap_or_else(|e| e.into_inner());

    let results: Mutex<Vec<Option<Classified>>> = Mutex::new((0..batches.len()).map(|_| None).collect());
    pool(jobs, batches.len(), |i| {
        let b = &batches[i];
        let r = run::boot(&prep.machine, b, dir).with_context(|| format!("booting batch {}", b.index))?;
        let classified = prep
            .judge_and_bisect(b, &r, goldens.get(&b.deadline_ms), dir)
            .with_context(|| format!("bisecting batch {}", b.index))?;
        progress.boot_done(&format!("batch {}", b.index), b.injections.len(), Some(&classified.0));
        results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(classified);
        Ok(())
    })?;
    progress.finish(start.elapsed());

    let mut entries = Vec::with_capacity(total);
    let mut batch_reports = Vec::with_capacity(batches.len());
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    for (b, result) in batches.iter().zip(results) {
        let Some((verdicts, facts)) = result else { bail!("batch {} was not run (an earlier boot failed)", b.index) };
        for (p, v) in b.injections.iter().zip(verdicts) {
            entries.push(report::Entry { planned: p.clone(), verdict: v });
        }
        let mut br = report::batch_report(b, facts);
        br.golden = goldens.get(&b.deadline_ms).map(|g| g.reference.clone());
        batch_reports.push(br);
    }
    Ok((batch_reports, entries))
}

/// Runs `work(0..n)` on `jobs` threads; stops handing out work at the
/// first error, and returns it.
fn pool(jobs: usize, n: usize, work: impl Fn(usize) -> Result<()> + Sync) -> Result<()> {
    let next = AtomicUsize::new(0);
    let error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(n) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= n || error.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
                        break;
                    }
                    if let Err(e) = work(i) {
                        error.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(e);
                    }
                }
            });
        }
    });
    match error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The progress display: a bar with boots done and an ETA on a terminal;
/// one line per finished boot when stdout is not a terminal (CI logs);
/// nothing when not asked for (tests).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    lines: bool,
    start: Instant,
    boots: usize,
    total: usize,
    state: Mutex<(usize, usize, BTreeMap<Outcome, u64>)>,
}

impl Progress {
    fn new(wanted: bool, boots: usize, total: usize) -> Progress {
        use std::io::IsTerminal;
        let terminal = std::io::stdout().is_terminal();
        let bar = (wanted && terminal).then(|| {
            let bar = indicatif::ProgressBar::new(boots as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] {pos}/{len} boots, ETA {eta}  {msg}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar
        });
        Progress {
            bar,
            lines: wanted && !terminal,
            start: Instant::now(),
            boots,
            total,
            state: Mutex::new((0, 0, BTreeMap::new())),
        }
    }

    fn boot_done(&self, what: &str, injections: usize, verdicts: Option<&[classify::Verdict]>) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.0 += 1;
        st.1 += injections;
        for v in verdicts.unwrap_or_default() {
            *st.2.entry(v.outcome).or_default() += 1;
        }
        let mut msg = format!("{}/{} injections", st.1, self.total);
        for (i, (o, n)) in st.2.iter().enumerate() {
            msg.push_str(if i == 0 { ": " } else { ", " });
            msg.push_str(&format!("{} {n}", o.name()));
        }
        if let Some(bar) = &self.bar {
            bar.set_message(msg.clone());
            bar.inc(1);
        }
        if self.lines {
            let elapsed = self.start.elapsed().as_secs_f64();
            let eta = elapsed / st.0 as f64 * (self.boots - st.0) as f64;
            println!(
                "xtask: inject: boot {}/{} done ({what}): {msg}; {elapsed:.0} s elapsed, ETA {eta:.0} s",
                st.0, self.boots
            );
        }
    }

    fn finish(&self, wall: Duration) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if self.lines {
            println!("xtask: inject: {} boots in {:.0} s", self.boots, wall.as_secs_f64());
        }
    }
}

/// Replays injection `id` of the report at `report_path` (see `replay.rs`).
pub fn replay_injection(report_path: &Path, id: u64, opts: &Options) -> Result<replay::Replayed> {
    let text = std::fs::read_to_string(report_path)
        .with_context(|| format!("reading the report {}", report_path.display()))?;
    let report: Report =
        serde_json::from_str(&text).with_context(|| format!("parsing the report {}", report_path.display()))?;
    replay::replay(&report, report_path, id, opts)
}
