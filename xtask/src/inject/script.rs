//! Fault-injection scripts (`faults/*.toml`): what to boot, what to inject,
//! what must hold afterwards.
//!
//! Why a declarative file and not flags: a campaign is an experiment that
//! must be re-run exactly (CI, a bisection, a replay months later), so
//! everything that decides its outcome — the image, the injections or the
//! recipe that generates them, the seed, the expectations — lives in one
//! reviewed file. The format is documented with examples in
//! `docs/fault-injection.md`; in short:
//!
//! ```toml
//! description = "one line"
//! image = "demo"            # images/NAME.toml, a manifest path relative
//!                           # to this script, or an inline [image] table
//! seed = 1                  # default seed (`--seed` overrides)
//! [run]                     # batching: several injections per boot
//! batch = 20
//! [[inject]]                # single injections, one boot each
//! task = "spinner-a"
//! kind = "ud"
//! at_ms = 40
//! [campaign]                # a seeded random campaign
//! count = 200
//! targets = ["spin-*"]
//! window_ms = [20, 300]
//! kinds = { ud = 2, regflip = 3 }
//! [[sweep]]                 # one injection per instruction of a function
//! targets = ["spin-*"]
//! symbol = "spinner::spin"
//! kind = "ud"
//! [expect]                  # what must hold; any failure fails the run
//! kernel_alive = true
//! ```
//!
//! Everything is checked here, before anything is built or booted: an
//! unknown key, kind or register is an error that names it.

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The kernel's injection kinds (`kernel/src/inject/command.rs`).
pub const KINDS: [&str; 10] = ["ud", "pf", "de", "gp", "regflip", "memflip", "sharedflip", "skip", "kill", "hang"];

/// Registers a campaign's `regflip` picks from by default: the general
/// purpose ones, RIP, RSP and RFLAGS (segment selectors and bases are the
/// kernel's to sanitise, not the task's state).
pub const DEFAULT_REGS: [&str; 18] = [
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip",
    "rsp", "rflags",
];

/// Most injections the kernel holds armed at once is 64; one slot is the
/// runner's end-of-boot marker.
pub const MAX_BATCH: usize = 60;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    #[serde(default)]
    pub description: String,
    pub image: ImageRef,
    /// Boot the release build (default: debug).
    #[serde(default)]
    pub release: bool,
    #[serde(default = "one")]
    pub seed: u64,
    #[serde(default)]
    pub run: RunConfig,
    #[serde(default, rename = "inject")]
    pub injects: Vec<Single>,
    #[serde(default)]
    pub campaign: Option<Campaign>,
    #[serde(default, rename = "sweep")]
    pub sweeps: Vec<Sweep>,
    #[serde(default)]
    pub expect: Expect,
    #[serde(default)]
    pub checks: CheckNames,
    #[serde(default)]
    pub golden: GoldenConfig,
}

/// Golden runs (`golden.rs`): boot the workload once without injections
/// and call any other difference in what the tasks reported silent
/// corruption.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GoldenConfig {
    pub enabled: bool,
    /// Checks left out of the comparison, besides `[checks] ignore`: those
    /// that report recovery itself (`bank:retried`), which a golden run
    /// never has, or whose values measure time.
    pub ignore: Vec<String>,
}

impl Default for GoldenConfig {
    fn default() -> Self {
        GoldenConfig { enabled: true, ignore: Vec::new() }
    }
}

/// The image: a manifest name, a manifest path, or the manifest inline.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum ImageRef {
    Name(String),
    Inline(toml::Table),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Injections per boot (1..=60).
    pub batch: usize,
    /// Guest ms after the last injection's time before a boot that has not
    /// shut down counts as hung.
    pub settle_ms: u64,
    /// Guest ms a boot of pc-triggered injections (sweeps) may run.
    pub sweep_deadline_ms: u64,
    /// The fault server's task name.
    pub fault_server: String,
    /// Tasks that may still be blocked when everything else is done
    /// (servers waiting in `recv`).
    pub servers: Vec<String>,
    /// Wall-clock seconds a boot may take before it is killed (a backstop:
    /// the guest-time deadline normally ends a hung boot first).
    pub timeout_secs: u64,
    /// Virtual CPUs per boot (QEMU `-smp`; 1..=16). Under `-icount` QEMU
    /// runs them round-robin on one host thread, so a run stays
    /// reproducible from its seed (DESIGN.md, SMP).
    pub cpus: u32,
    /// Bisect a batch's failures to the injection each appeared with
    /// (`blame.rs`): a few prefix boots per failing batch.
    pub bisect: bool,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            batch: 20,
            settle_ms: 2000,
            sweep_deadline_ms: 3000,
            fault_server: "fault-server".into(),
            servers: vec!["fault-server".into()],
            timeout_secs: 600,
            cpus: 1,
            bisect: true,
        }
    }
}

/// One injection, written out.
#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct Single {
    pub task: String,
    pub kind: String,
    /// Fire at this tick (guest ms since the timer started).
    pub at_ms: Option<u64>,
    /// Fire at this TSC value (guest instructions).
    pub at_tsc: Option<u64>,
    /// Fire when the task reaches this function (symbol of its ELF) ...
    pub symbol: Option<String>,
    /// ... or this pc ...
    pub pc: Option<u64>,
    /// ... then after this many more instructions.
    #[serde(default)]
    pub steps: u64,
    pub reg: Option<String>,
    pub bit: Option<u8>,
    pub addr: Option<u64>,
    pub len: Option<u64>,
}

/// A seeded random campaign.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Campaign {
    pub count: usize,
    /// Kind → weight.
    pub kinds: BTreeMap<String, u32>,
    /// Task names; `*` at the end matches a prefix (`spin-*`).
    pub targets: Vec<String>,
    /// Injection times are drawn uniformly from [start, end] guest ms.
    pub window_ms: [u64; 2],
    /// Registers for `regflip` (default: [`DEFAULT_REGS`]).
    #[serde(default)]
    pub regs: Vec<String>,
    /// Byte counts for `skip` ([min, max], default [1, 3]).
    #[serde(default = "skip_default")]
    pub skip_len: [u64; 2],
}

/// One injection per instruction boundary of a function's path.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Sweep {
    /// Instances of one binary; each boot gives each of them one step.
    pub targets: Vec<String>,
    /// The function (demangled, without hash; a unique substring will do).
    pub symbol: String,
    pub kind: String,
    /// Steps [first, last] after the entry (default: 0 up to the
    /// function's size in bytes, at most 256: an upper bound on its
    /// instructions; steps past its end fire in its callers).
    pub steps: Option<[u64; 2]>,
    pub reg: Option<String>,
    pub bit: Option<u8>,
    pub len: Option<u64>,
}

/// What must hold. Every failure fails the run with its own message.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Expect {
    /// Every boot ends in a clean shutdown (or is alive at its deadline).
    pub kernel_alive: bool,
    /// The fault server is never stopped or left dead.
    pub fault_server_alive: bool,
    /// No task stays blocked forever (beyond `run.servers`) and every lock
    /// check (`checks.locks`) holds.
    pub no_leaked_locks: bool,
    /// Every Arc check (`checks.arcs`) holds.
    pub arc_consistent: bool,
    /// Named checks that must never report `ok: false`.
    pub invariants: Vec<String>,
    /// Largest fault → running-again latency, guest instructions.
    pub max_recovery_instructions: Option<u64>,
    /// Recovered (checkpoint) share of manifested faults, percent.
    pub min_recovered_percent: Option<f64>,
    pub max_hangs: Option<u64>,
    pub max_silent_corruptions: Option<u64>,
    pub max_system_failures: Option<u64>,
}

impl Default for Expect {
    fn default() -> Self {
        Expect {
            kernel_alive: true,
            fault_server_alive: true,
            no_leaked_locks: false,
            arc_consistent: false,
            invariants: Vec::new(),
            max_recovery_instructions: None,
            min_recovered_percent: None,
            max_hangs: None,
            max_silent_corruptions: None,
            max_system_failures: None,
        }
    }
}

/// Names of the check events the expectations read.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckNames {
    pub locks: Vec<String>,
    pub arcs: Vec<String>,
    /// Checks whose `ok: false` is not a corruption (e.g. a test's own
    /// expected failures).
    pub ignore: Vec<String>,
}

impl Default for CheckNames {
    fn default() -> Self {
        CheckNames {
            locks: vec!["no-leaked-locks".into(), "locks-released".into()],
            arcs: vec!["arc-consistent".into(), "arc-counts".into()],
            ignore: Vec::new(),
        }
    }
}

fn one() -> u64 {
    1
}
fn skip_default() -> [u64; 2] {
    [1, 3]
}

/// A loaded script and where it came from.
pub struct Loaded {
    pub script: Script,
    /// The file's text (a shard's partial report carries it to the merge).
    pub text: String,
    pub path: PathBuf,
    /// The name reports use: the path relative to the workspace root.
    pub display: String,
    pub stem: String,
}

pub fn load(path: &Path) -> Result<Loaded> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the script {}", path.display()))?;
    let script = parse(&text, &path.display().to_string())?;
    let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let root = std::fs::canonicalize(crate::paths::root()).unwrap_or_else(|_| crate::paths::root());
    let display = abs.strip_prefix(&root).map(|p| p.display().to_string()).unwrap_or_else(|_| {
        path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "script".into())
    });
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "script".into());
    Ok(Loaded { script, text, path: abs, display, stem })
}

/// A script's text, checked; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<Script> {
    let script: Script = toml::from_str(text).with_context(|| format!("parsing the script {origin}"))?;
    script.check().with_context(|| format!("in {origin}"))?;
    Ok(script)
}

pub fn check_kind(kind: &str) -> Result<()> {
    if !KINDS.contains(&kind) {
        bail!("unknown injection kind {kind:?} (kinds: {})", KINDS.join(" "));
    }
    Ok(())
}

pub fn check_reg(reg: &str) -> Result<()> {
    if !abi::trap::Registers::default().named().iter().any(|(n, _)| *n == reg) {
        bail!("unknown register {reg:?} (registers: {})", DEFAULT_REGS.join(" "));
    }
    Ok(())
}

/// Whether task `name` matches target pattern `pattern` (`*` suffix = prefix).
pub fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

impl Script {
    fn check(&self) -> Result<()> {
        if self.run.batch == 0 || self.run.batch > MAX_BATCH {
            bail!("run.batch must be 1..={MAX_BATCH} (the kernel holds 64 armed injections)");
        }
        if self.injects.is_empty() && self.campaign.is_none() && self.sweeps.is_empty() {
            bail!("the script injects nothing: add [[inject]], [campaign] or [[sweep]]");
        }
        for (i, s) in self.injects.iter().enumerate() {
            single_check(s).with_context(|| format!("[[inject]] #{}", i + 1))?;
        }
        if let Some(c) = &self.campaign {
            c.check().context("[campaign]")?;
        }
        for (i, s) in self.sweeps.iter().enumerate() {
            check_kind(&s.kind).with_context(|| format!("[[sweep]] #{}", i + 1))?;
            if s.targets.is_empty() {
                bail!("[[sweep]] #{}: targets is empty", i + 1);
            }
            if let Some([a, b]) = s.steps
                && a > b
            {
                bail!("[[sweep]] #{}: steps = [{a}, {b}] is empty", i + 1);
            }
            params_check(&s.kind, s.reg.as_deref(), s.bit, s.len).with_context(|| format!("[[sweep]] #{}", i + 1))?;
        }
        if let Some(p) = self.expect.min_recovered_percent
            && !(0.0..=100.0).contains(&p)
        {
            bail!("expect.min_recovered_percent must be within 0..=100");
        }
        Ok(())
    }
}

fn single_check(s: &Single) -> Result<()> {
    check_kind(&s.kind)?;
    let triggers = [s.at_ms.is_some(), s.at_tsc.is_some(), s.symbol.is_some() || s.pc.is_some()];
    if triggers.iter().filter(|t| **t).count() != 1 || (s.symbol.is_some() && s.pc.is_some()) {
        bail!("give exactly one of at_ms, at_tsc, symbol or pc");
    }
    if s.task.is_empty() || s.task.contains(char::is_whitespace) {
        bail!("task {:?} must be a task name (no spaces)", s.task);
    }
    params_check(&s.kind, s.reg.as_deref(), s.bit, s.len)
}

fn params_check(kind: &str, reg: Option<&str>, bit: Option<u8>, len: Option<u64>) -> Result<()> {
    if let Some(r) = reg {
        check_reg(r)?;
    }
    if let Some(b) = bit
        && b > 63
    {
        bail!("bit must be 0..=63");
    }
    if kind == "skip" && !matches!(len, Some(1..=15)) {
        bail!("kind = \"skip\" needs len = 1..=15 (the bytes to skip)");
    }
    Ok(())
}

impl Campaign {
    fn check(&self) -> Result<()> {
        if self.count == 0 {
            bail!("count must be at least 1");
        }
        if self.kinds.is_empty() || self.kinds.values().all(|w| *w == 0) {
            bail!("kinds needs at least one kind with a weight > 0");
        }
        for k in self.kinds.keys() {
            check_kind(k)?;
        }
        if self.targets.is_empty() {
            bail!("targets is empty");
        }
        if self.window_ms[0] > self.window_ms[1] {
            bail!("window_ms = [{}, {}] is empty", self.window_ms[0], self.window_ms[1]);
        }
        for r in &self.regs {
            check_reg(r)?;
        }
        if self.skip_len[0] == 0 || self.skip_len[1] > 15 || self.skip_len[0] > self.skip_len[1] {
            bail!("skip_len must be [min, max] within 1..=15");
        }
        Ok(())
    }
}
