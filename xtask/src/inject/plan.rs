//! From a script and a seed to boots: batches of injections, each batch a
//! plan in the kernel's command language (`kernel/src/inject/command.rs`).
//!
//! Why batches: a boot costs 0.5–1 s of TCG before the first injection, so
//! one boot per injection would make 10,000 injections take hours. A batch
//! puts up to 60 injections in one boot, spread over guest time
//! (`at=tick:N`), and the classifier reads each one's outcome from the
//! events that follow its own `inject` event.
//!
//! Why the host draws everything: the plan names the target, the time, the
//! register and the bit of every injection, so the plan alone (plus the
//! per-batch `seed` line for what the kernel still picks: page-fault and
//! memory-flip addresses) determines the run. Same script and seed ⇒ same
//! plans ⇒ byte-identical event streams under icount ⇒ identical reports,
//! and any one batch can be replayed on its own.
//!
//! Each plan ends with the *deadline marker*: an injection (id 0) into a
//! task that does not exist, due at the batch's guest-time deadline. The
//! kernel answers it with `inject_missed` at exactly that tick, whoever is
//! running, so the host knows deterministically when the guest has run long
//! enough — a hung boot is cut at the same event every time, not at a
//! wall-clock moment.

use super::script::{self, DEFAULT_REGS, Script};
use super::symbol;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The id of the deadline marker.
pub const MARKER_ID: u64 = 0;
/// The task name of the deadline marker: no manifest task can be named
/// this (names are checked to be 1..=24 bytes; this one has a leading dot
/// that no image in this repository uses).
pub const MARKER_TASK: &str = ".deadline";

/// One planned injection.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Planned {
    pub id: u64,
    pub batch: usize,
    /// Where it came from: `inject#N`, `sweep#N step K`, `campaign`.
    pub source: String,
    pub kind: String,
    pub task: String,
    /// Its line in the plan.
    pub line: String,
}

/// One boot.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Batch {
    pub index: usize,
    /// Seeds the kernel's generator (random addresses).
    pub seed: u64,
    /// Guest ms after which a boot that is still running counts as hung.
    pub deadline_ms: u64,
    pub injections: Vec<Planned>,
}

impl Batch {
    /// The plan text appended to the boot image.
    pub fn plan_text(&self) -> String {
        self.plan_text_enabled(u64::MAX)
    }

    /// The plan with only the injections whose bit is set in `enabled` (bit
    /// i: the i-th) able to act. The mask is written as 20 digits whatever
    /// it is, so every such plan parses at the same cost in the kernel
    /// (`kernel/src/inject/command.rs`, `seed`).
    pub fn plan_text_enabled(&self, enabled: u64) -> String {
        let mut text = format!("seed {} {enabled:020}\n", self.seed);
        for p in &self.injections {
            text.push_str(&p.line);
            text.push('\n');
        }
        text.push_str(&format!("inject id={MARKER_ID} task={MARKER_TASK} at=tick:{} kind=kill\n", self.deadline_ms));
        text
    }
}

/// splitmix64: small, fast, and the same on every host.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64, stream: u64) -> Rng {
        let mut r = Rng(seed ^ stream.wrapping_mul(0xd1b5_4a32_d192_ed03));
        r.next();
        r
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        let span = hi - lo;
        if span == u64::MAX { self.next() } else { lo + self.next() % (span + 1) }
    }
}

/// What the planner needs to know about the image: task name → binary.
pub struct ImageTasks<'a> {
    pub tasks: BTreeMap<String, String>,
    pub bins: &'a Path,
}

impl ImageTasks<'_> {
    fn expand(&self, patterns: &[String]) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for p in patterns {
            let found: Vec<&String> = self.tasks.keys().filter(|n| script::matches(p, n)).collect();
            if found.is_empty() {
                bail!("target {p:?} matches no task of the image (tasks: {})", self.names());
            }
            out.extend(found.into_iter().cloned());
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    fn names(&self) -> String {
        self.tasks.keys().cloned().collect::<Vec<_>>().join(", ")
    }

    fn function(&self, task: &str, name: &str) -> Result<symbol::Function> {
        let bin =
            self.tasks.get(task).with_context(|| format!("no task {task:?} in the image (tasks: {})", self.names()))?;
        symbol::resolve(&self.bins.join(bin), name)
    }
}

/// Every batch of the script for `seed`.
pub fn batches(script: &Script, seed: u64, image: &ImageTasks) -> Result<Vec<Batch>> {
    let mut out: Vec<Batch> = Vec::new();
    let mut next_id = 1u64;
    let settle = script.run.settle_ms;
    let new_batch = |out: &mut Vec<Batch>, deadline_ms: u64| {
        let index = out.len();
        out.push(Batch {
            index,
            seed: Rng::new(seed, 0x5eed_0000 + index as u64).next() | 1,
            deadline_ms,
            injections: Vec::new(),
        });
        index
    };

    // Single injections: one boot each, exactly as written.
    for (i, s) in script.injects.iter().enumerate() {
        if !image.tasks.contains_key(&s.task) {
            bail!("[[inject]] #{}: no task {:?} in the image (tasks: {})", i + 1, s.task, image.names());
        }
        let (at, deadline) = if let Some(ms) = s.at_ms {
            (format!("at=tick:{ms}"), ms + settle)
        } else if let Some(tsc) = s.at_tsc {
            (format!("at=tsc:{tsc}"), tsc / 1_000_000 + settle)
        } else {
            let pc = match (&s.symbol, s.pc) {
                (Some(name), _) => {
                    image.function(&s.task, name).with_context(|| format!("[[inject]] #{}", i + 1))?.addr
                }
                (None, Some(pc)) => pc,
                (None, None) => unreachable!("checked when the script was loaded"),
            };
            (format!("at=pc:{pc:#x} steps={}", s.steps), script.run.sweep_deadline_ms)
        };
        let b = new_batch(&mut out, deadline);
        let line = line(next_id, &s.task, &at, &s.kind, &params(s.reg.as_deref(), s.bit, s.addr, s.len));
        out[b].injections.push(Planned {
            id: next_id,
            batch: b,
            source: format!("inject#{}", i + 1),
            kind: s.kind.clone(),
            task: s.task.clone(),
            line,
        });
        next_id += 1;
    }

    // Sweeps: step K of the function's path; each boot gives every target
    // instance one step (a restart from the image drops a task's other
    // breakpoints, so a task never carries two).
    for (i, s) in script.sweeps.iter().enumerate() {
        let targets = image.expand(&s.targets).with_context(|| format!("[[sweep]] #{}", i + 1))?;
        let bins: Vec<&String> = targets.iter().map(|t| &image.tasks[t]).collect();
        if bins.iter().any(|b| *b != bins[0]) {
            bail!("[[sweep]] #{}: the targets run different binaries; a sweep needs instances of one", i + 1);
        }
        let f = image.function(&targets[0], &s.symbol).with_context(|| format!("[[sweep]] #{}", i + 1))?;
        let [first, last] = s.steps.unwrap_or([0, f.size.clamp(1, 256) - 1]);
        let per_boot = targets.len().min(script.run.batch);
        let steps: Vec<u64> = (first..=last).collect();
        for chunk in steps.chunks(per_boot) {
            let b = new_batch(&mut out, script.run.sweep_deadline_ms);
            for (k, step) in chunk.iter().enumerate() {
                let task = &targets[k];
                let at = format!("at=pc:{:#x} steps={step}", f.addr);
                let line = line(next_id, task, &at, &s.kind, &params(s.reg.as_deref(), s.bit, None, s.len));
                let source = format!("sweep#{} {} step {step}", i + 1, f.name);
                out[b].injections.push(Planned {
                    id: next_id,
                    batch: b,
                    source,
                    kind: s.kind.clone(),
                    task: task.clone(),
                    line,
                });
                next_id += 1;
            }
        }
    }

    // The campaign: targets, kinds, times and parameters drawn from the seed.
    if let Some(c) = &script.campaign {
        let targets = image.expand(&c.targets).context("[campaign]")?;
        let regs: Vec<String> =
            if c.regs.is_empty() { DEFAULT_REGS.iter().map(|r| r.to_string()).collect() } else { c.regs.clone() };
        let kinds: Vec<(&String, u32)> = c.kinds.iter().map(|(k, w)| (k, *w)).filter(|(_, w)| *w > 0).collect();
        let total: u64 = kinds.iter().map(|(_, w)| *w as u64).sum();
        let mut rng = Rng::new(seed, 0xca4a_1612);
        let mut left = c.count;
        while left > 0 {
            let n = left.min(script.run.batch);
            left -= n;
            let b = new_batch(&mut out, c.window_ms[1] + settle);
            let mut drawn = Vec::with_capacity(n);
            for _ in 0..n {
                let at = rng.range(c.window_ms[0], c.window_ms[1]);
                let mut pick = rng.range(0, total - 1);
                let kind = kinds.iter().find(|(_, w)| {
                    let hit = pick < *w as u64;
                    pick = pick.saturating_sub(*w as u64);
                    hit
                });
                let kind = kind.map_or("ud", |(k, _)| k.as_str()).to_string();
                let task = targets[rng.range(0, targets.len() as u64 - 1) as usize].clone();
                let p = match kind.as_str() {
                    "regflip" => params(
                        Some(&regs[rng.range(0, regs.len() as u64 - 1) as usize]),
                        Some(rng.range(0, 63) as u8),
                        None,
                        None,
                    ),
                    "memflip" | "sharedflip" => params(None, Some(rng.range(0, 7) as u8), None, None),
                    "skip" => params(None, None, None, Some(rng.range(c.skip_len[0], c.skip_len[1]))),
                    _ => String::new(),
                };
                drawn.push((at, task, kind, p));
            }
            drawn.sort_by_key(|d| d.0);
            for (at, task, kind, p) in drawn {
                let line = line(next_id, &task, &format!("at=tick:{at}"), &kind, &p);
                out[b].injections.push(Planned { id: next_id, batch: b, source: "campaign".into(), kind, task, line });
                next_id += 1;
            }
        }
    }
    Ok(out)
}

fn params(reg: Option<&str>, bit: Option<u8>, addr: Option<u64>, len: Option<u64>) -> String {
    let mut s = String::new();
    if let Some(r) = reg {
        s.push_str(&format!(" reg={r}"));
    }
    if let Some(b) = bit {
        s.push_str(&format!(" bit={b}"));
    }
    if let Some(a) = addr {
        s.push_str(&format!(" addr={a:#x}"));
    }
    if let Some(l) = len {
        s.push_str(&format!(" len={l}"));
    }
    s
}

fn line(id: u64, task: &str, at: &str, kind: &str, params: &str) -> String {
    format!("inject id={id} task={task} {at} kind={kind}{params}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_stable() {
        let mut a = Rng::new(42, 7);
        let mut b = Rng::new(42, 7);
        let xs: Vec<u64> = (0..5).map(|_| a.next()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next()).collect();
        assert_eq!(xs, ys);
        assert_ne!(Rng::new(43, 7).next(), xs[0]);
        for _ in 0..1000 {
            let v = a.range(3, 5);
            assert!((3..=5).contains(&v));
        }
    }

    #[test]
    fn plan_text_ends_with_the_marker() {
        let b = Batch { index: 0, seed: 9, deadline_ms: 500, injections: vec![] };
        assert_eq!(b.plan_text(), "seed 9 18446744073709551615\ninject id=0 task=.deadline at=tick:500 kind=kill\n");
        let with = |mask| Batch { index: 0, seed: 9, deadline_ms: 500, injections: vec![] }.plan_text_enabled(mask);
        assert_eq!(with(5).len(), with(u64::MAX).len(), "every mask parses at the same cost");
    }
}
