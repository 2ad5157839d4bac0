//! Campaigns across machines: `--shard I/N` runs the I-th of N slices of a
//! campaign and writes a partial report; `merge PARTS…` joins the parts
//! into the report one machine would have written, byte for byte.
//!
//! Why it can be exact: the plan is a pure function of the script, the
//! seed and the image (`plan.rs`), every boot is deterministic under
//! icount, and the report holds nothing about the host. So a shard plans
//! the *whole* campaign, boots only its batches — batch `b` belongs to
//! shard `b mod N + 1`, a fixed interleaving that gives every shard a fair
//! share of early and late batches — and the merge sorts the union of the
//! parts' batches and injections and computes the summary and the
//! expectations exactly as a whole run does (`super::assemble`).
//!
//! What a part carries so that merging needs nothing else (no checkout, no
//! build, no QEMU): the report's header, the script's text (the
//! expectations are judged from it), the shard, the number of batches and
//! an FNV-1a fingerprint of every batch's plan text. The merge refuses
//! parts that disagree on any of them (different scripts, seeds, builds or
//! shard counts), a shard given twice or missing, and whole reports.
//!
//! No scheduler of our own: shards are independent commands, to be spread
//! with GNU parallel, a Slurm array job or CI matrix (`docs/campaigns.md`).

use super::report::{BatchReport, Entry, Header, Report};
use super::{Options, assemble, classify, execute, header, plan_script, script, write_report};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The format of partial reports.
pub const PART_FORMAT: u32 = 1;

/// Slice `index` (1-based) of `count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Shard> {
        let (i, n) = s.split_once('/').with_context(|| format!("--shard wants I/N (e.g. 2/4), got {s:?}"))?;
        let index: usize = i.trim().parse().with_context(|| format!("--shard {s}: {i:?} is not a shard number"))?;
        let count: usize = n.trim().parse().with_context(|| format!("--shard {s}: {n:?} is not a shard count"))?;
        if count == 0 {
            bail!("--shard {s}: the count must be at least 1");
        }
        if index == 0 || index > count {
            bail!("--shard {s}: shard {index} does not exist; shards are numbered 1 to {count}");
        }
        Ok(Shard { index, count })
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl Shard {
    /// Whether batch `index` is this shard's.
    pub fn owns(&self, batch: usize) -> bool {
        batch % self.count + 1 == self.index
    }
}

/// A shard's partial report.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Part {
    pub part_format: u32,
    pub shard: Shard,
    #[serde(flatten)]
    pub header: Header,
    /// The report format the merge will write.
    pub report_format: u32,
    /// The script's text: the merge judges the expectations from it.
    pub script_text: String,
    /// Batches of the whole campaign, and the FNV-1a of their plan texts
    /// (each followed by a NUL), in order.
    pub batches_total: usize,
    pub plan_fnv: String,
    pub batches: Vec<BatchReport>,
    pub injections: Vec<Entry>,
}

/// A finished shard.
pub struct PartDone {
    pub part: Part,
    pub json: PathBuf,
}

/// The FNV-1a of every batch's plan text, each followed by a NUL.
pub fn plan_fnv(plans: impl IntoIterator<Item = String>) -> String {
    let mut all = Vec::new();
    for p in plans {
        all.extend_from_slice(p.as_bytes());
        all.push(0);
    }
    classify::fnv(&all)
}

/// Runs shard `shard` of the script at `path`; writes
/// `<script>-<seed>.shard-I-of-N.json` (events in the folder of that name).
pub fn run_shard(path: &Path, shard: Shard, opts: &Options) -> Result<PartDone> {
    let start = Instant::now();
    let (prep, seed, batches) = plan_script(path, opts)?;
    let name = format!("{}-{seed}.shard-{}-of-{}", prep.loaded.stem, shard.index, shard.count);
    let dir = prep.out_dir.join(&name);
    let _ = std::fs::remove_dir_all(&dir);
    let prep = prep.pin_kernel(&dir)?;
    let mine: Vec<_> = batches.iter().filter(|b| shard.owns(b.index)).cloned().collect();
    eprintln!("xtask: inject: shard {shard}: {} of the campaign's {} boots", mine.len(), batches.len());
    let (batch_reports, entries) = execute(&prep, &mine, &dir, seed, opts)?;
    let part = Part {
        part_format: PART_FORMAT,
        shard,
        header: header(&prep, seed)?,
        report_format: super::report::FORMAT,
        script_text: prep.loaded.text.clone(),
        batches_total: batches.len(),
        plan_fnv: plan_fnv(batches.iter().map(|b| b.plan_text())),
        batches: batch_reports,
        injections: entries,
    };
    let json = prep.out_dir.join(format!("{name}.json"));
    let mut text = serde_json::to_string_pretty(&part).context("serialising the partial report")?;
    text.push('\n');
    std::fs::write(&json, text).with_context(|| format!("writing {}", json.display()))?;
    eprintln!("xtask: inject: shard {shard} done in {:.0} s", start.elapsed().as_secs_f64());
    Ok(PartDone { part, json })
}

/// Reads a partial report, refusing anything else with a clear message.
pub fn read_part(path: &Path) -> Result<Part> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    if v.get("part_format").is_none() {
        if v.get("summary").is_some() {
            bail!("{} is a whole report, not a shard's partial report: there is nothing to merge", path.display());
        }
        bail!("{} is not a partial report of `cargo xtask inject --shard`", path.display());
    }
    let part: Part =
        serde_json::from_value(v).with_context(|| format!("{}: malformed partial report", path.display()))?;
    if part.part_format != PART_FORMAT {
        bail!("{}: partial report format {} (this xtask reads {PART_FORMAT})", path.display(), part.part_format);
    }
    Ok(part)
}

/// Merges parts into the whole report (module notes); checks they belong
/// together first.
pub fn merge(parts: &[(PathBuf, Part)]) -> Result<Report> {
    let Some((first_path, first)) = parts.first() else { bail!("merge needs the partial reports of every shard") };
    let same = |what: &str, a: String, b: String, path: &Path| -> Result<()> {
        if a != b {
            bail!(
                "{} and {} are parts of different campaigns: {what} {a} vs {b}; merge only the shards of one run",
                first_path.display(),
                path.display()
            );
        }
        Ok(())
    };
    for (path, p) in &parts[1..] {
        same("script", first.header.script.clone(), p.header.script.clone(), path)?;
        same("seed", first.header.seed.to_string(), p.header.seed.to_string(), path)?;
        same("profile", first.header.profile.clone(), p.header.profile.clone(), path)?;
        same("image fnv", first.header.image_fnv.clone(), p.header.image_fnv.clone(), path)?;
        same("kernel fnv", first.header.kernel_fnv.clone(), p.header.kernel_fnv.clone(), path)?;
        same(
            "script text fnv",
            classify::fnv(first.script_text.as_bytes()),
            classify::fnv(p.script_text.as_bytes()),
            path,
        )?;
        same("plan fnv", first.plan_fnv.clone(), p.plan_fnv.clone(), path)?;
        same("shard count", first.shard.count.to_string(), p.shard.count.to_string(), path)?;
        same("report format", first.report_format.to_string(), p.report_format.to_string(), path)?;
    }
    if first.report_format != super::report::FORMAT {
        bail!("the parts are of report format {} (this xtask writes {})", first.report_format, super::report::FORMAT);
    }
    let n = first.shard.count;
    let mut seen: BTreeMap<usize, &Path> = BTreeMap::new();
    for (path, p) in parts {
        if let Some(other) = seen.insert(p.shard.index, path) {
            bail!("shard {} is given twice: {} and {}", p.shard, other.display(), path.display());
        }
    }
    let missing: Vec<String> = (1..=n).filter(|i| !seen.contains_key(i)).map(|i| format!("{i}/{n}")).collect();
    if !missing.is_empty() {
        bail!("shard {} missing: merge needs all {n} parts", missing.join(", "));
    }
    let mut batches = Vec::new();
    let mut entries = Vec::new();
    for (path, p) in parts {
        for b in &p.batches {
            if !p.shard.owns(b.index) || b.index >= first.batches_total {
                bail!("{}: batch {} is not shard {}'s", path.display(), b.index, p.shard);
            }
        }
        batches.extend(p.batches.iter().cloned());
        entries.extend(p.injections.iter().cloned());
    }
    if batches.len() != first.batches_total {
        bail!("the parts hold {} batches; the campaign has {}", batches.len(), first.batches_total);
    }
    let script = script::parse(&first.script_text, &format!("{} (script text)", first_path.display()))?;
    Ok(assemble(&first.header, &script, batches, entries))
}

/// `cargo xtask inject merge PARTS… [--out FILE]`: writes the merged
/// report (default `target/rewind/inject/<script>-<seed>.json`) and chart.
pub fn merge_files(paths: &[PathBuf], out: Option<&Path>) -> Result<(Report, PathBuf, PathBuf)> {
    let mut parts = Vec::new();
    for p in paths {
        parts.push((p.clone(), read_part(p)?));
    }
    let report = merge(&parts)?;
    let json = match out {
        Some(o) => o.to_path_buf(),
        None => {
            let stem = Path::new(&report.script).file_stem().map(|s| s.to_string_lossy().into_owned());
            let stem = stem.unwrap_or_else(|| "script".into());
            crate::paths::rewind_dir().join("inject").join(format!("{stem}-{}.json", report.seed))
        }
    };
    let (json, svg) = write_report(&report, &json)?;
    Ok((report, json, svg))
}

#[cfg(test)]
mod tests {
    use super::super::classify::{Facts, Outcome, Verdict};
    use super::super::plan::Planned;
    use super::super::report::{BatchReport, Entry, GoldenRef};
    use super::*;

    #[test]
    fn shard_specs() {
        assert_eq!("2/4".parse::<Shard>().unwrap(), Shard { index: 2, count: 4 });
        assert_eq!("1/1".parse::<Shard>().unwrap(), Shard { index: 1, count: 1 });
        for bad in ["3/2", "0/2", "1/0", "2", "a/2", "1/b", "-1/2", ""] {
            let e = bad.parse::<Shard>().expect_err(bad).to_string();
            assert!(e.starts_with("--shard"), "{bad}: {e}");
        }
        assert!("3/2".parse::<Shard>().unwrap_err().to_string().contains("numbered 1 to 2"));
        let s = Shard { index: 2, count: 3 };
        assert_eq!((0..7).filter(|b| s.owns(*b)).collect::<Vec<_>>(), [1, 4]);
    }

    const SCRIPT: &str = r#"
description = "merge test"
image = "demo"
[campaign]
count = 6
targets = ["t-*"]
window_ms = [1, 2]
kinds = { ud = 1 }
[expect]
max_silent_corruptions = 0
"#;

    fn batch(i: usize) -> BatchReport {
        BatchReport {
            index: i,
            seed: 40 + i as u64,
            deadline_ms: 100,
            plan: format!("seed {}\ninject id={} ...\n", 40 + i, i + 1),
            facts: Facts { end: "clean shutdown".into(), kernel_alive: true, events: 10 + i, ..Facts::default() },
            golden: Some(GoldenRef {
                plan: "seed 1\n".into(),
                end: "clean".into(),
                events: 9,
                events_fnv: "ab".into(),
            }),
        }
    }

    fn entry(id: u64, b: usize, outcome: Outcome) -> Entry {
        Entry {
            planned: Planned {
                id,
                batch: b,
                source: "campaign".into(),
                kind: "ud".into(),
                task: format!("t-{}", id % 2),
                line: format!("inject id={id}"),
            },
            verdict: Verdict {
                id,
                outcome,
                detail: "why".into(),
                seq: Some(id),
                rip: Some("0x1".into()),
                function: Some(format!("f{}", id % 3)),
                inject_tsc: Some(id * 10),
                latency: (outcome == Outcome::Recovered).then_some(1000 + id),
                dormant: None,
                excerpt_lines: Some([1, 2]),
                excerpt_fnv: Some("cd".into()),
                golden_diff: if outcome == Outcome::SilentCorruption { vec!["t-1: x".into()] } else { vec![] },
            },
        }
    }

    fn whole() -> (Header, Vec<BatchReport>, Vec<Entry>) {
        let header = Header {
            script: "faults/m.toml".into(),
            description: "merge test".into(),
            seed: 3,
            profile: "debug".into(),
            image_fnv: "01".into(),
            kernel_fnv: "02".into(),
        };
        let outcomes = [Outcome::Recovered, Outcome::SilentCorruption, Outcome::Escalated, Outcome::Recovered];
        let batches: Vec<BatchReport> = (0..5).map(batch).collect();
        let entries = (0..10).map(|i| entry(i as u64 + 1, i / 2, outcomes[i % 4])).collect();
        (header, batches, entries)
    }

    fn parts(n: usize) -> Vec<(PathBuf, Part)> {
        let (header, batches, entries) = whole();
        (1..=n)
            .map(|i| {
                let shard = Shard { index: i, count: n };
                let part = Part {
                    part_format: PART_FORMAT,
                    shard,
                    header: header.clone(),
                    report_format: super::super::report::FORMAT,
                    script_text: SCRIPT.into(),
                    batches_total: batches.len(),
                    plan_fnv: plan_fnv(batches.iter().map(|b| b.plan.clone())),
                    batches: batches.iter().filter(|b| shard.owns(b.index)).cloned().collect(),
                    injections: entries.iter().filter(|e| shard.owns(e.planned.batch)).cloned().collect(),
                };
                // Through JSON, as between machines.
                let text = serde_json::to_string_pretty(&part).unwrap();
                (PathBuf::from(format!("part-{i}.json")), serde_json::from_str(&text).unwrap())
            })
            .collect()
    }

    fn bytes(r: &Report) -> String {
        serde_json::to_string_pretty(r).unwrap()
    }

    #[test]
    fn merged_parts_are_the_whole_report_byte_for_byte() {
        let (header, batches, entries) = whole();
        let script = script::parse(SCRIPT, "test").unwrap();
        let single = bytes(&assemble(&header, &script, batches, entries));
        assert!(single.contains("\"silent_corruption\": 3"), "the fixture has corruptions to summarise");
        for n in [1, 2, 3, 7] {
            let mut p = parts(n);
            p.reverse(); // order of the parts on the command line does not matter
            let merged = merge(&p).unwrap_or_else(|e| panic!("{n} shards: {e:#}"));
            assert_eq!(bytes(&merged), single, "{n} shards");
            assert!(!merged.passed, "max_silent_corruptions = 0 is judged on the merged whole");
        }
    }

    #[test]
    fn merge_refuses_parts_that_do_not_belong_together() {
        let err = |p: &[(PathBuf, Part)]| format!("{:#}", merge(p).expect_err("must be refused"));
        let mut p = parts(2);
        p[1].1.header.seed = 4;
        assert!(err(&p).contains("different campaigns: seed 3 vs 4"), "{}", err(&p));
        let mut p = parts(2);
        p[1].1.header.script = "faults/other.toml".into();
        assert!(err(&p).contains("different campaigns: script"), "{}", err(&p));
        let mut p = parts(2);
        p[1].1.header.kernel_fnv = "ff".into();
        assert!(err(&p).contains("kernel fnv"), "{}", err(&p));
        let mut p = parts(2);
        p[1].1.script_text.push_str("\n# edited\n");
        assert!(err(&p).contains("script text fnv"), "{}", err(&p));
        let p = parts(3);
        assert!(err(&p[..2]).contains("shard 3/3 missing"), "{}", err(&p[..2]));
        let p = parts(2);
        let twice = [p[0].clone(), p[0].clone(), p[1].clone()];
        assert!(err(&twice).contains("shard 1/2 is given twice"), "{}", err(&twice));
        let (a, b) = (parts(2), parts(3));
        let mixed = [a[0].clone(), b[1].clone()];
        assert!(err(&mixed).contains("shard count 2 vs 3"), "{}", err(&mixed));
        assert!(err(&[]).contains("needs the partial reports"));
    }

    #[test]
    fn a_whole_report_is_not_a_part() {
        let (header, batches, entries) = whole();
        let report = assemble(&header, &script::parse(SCRIPT, "t").unwrap(), batches, entries);
        let dir = std::env::temp_dir().join(format!("rewind-merge-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("whole.json");
        std::fs::write(&path, bytes(&report)).unwrap();
        let e = read_part(&path).unwrap_err().to_string();
        assert!(e.contains("is a whole report"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
