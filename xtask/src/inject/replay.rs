//! `--replay REPORT#ID`: re-run one injection exactly and show its events.
//!
//! Why re-run the whole batch: an injection's fate depends on everything
//! that happened before it in its boot (earlier injections, restarts, the
//! scheduler's state), so "exactly" means the same plan from the same boot:
//! the report keeps every batch's plan text. Under icount the new event
//! stream must then be the same bytes; we print the injection's excerpt
//! (its `inject` event to the event that decided it) and compare its
//! FNV-1a fingerprint — and the whole batch's — with the report's, and,
//! when the original run's events are still on disk, the bytes themselves.
//! When the report compared the batch with a golden run, the golden run is
//! booted again too, and the injection's golden-run diff (what the tasks
//! reported differently, blamed on it) is shown and compared.
//! Any difference exits non-zero: the build changed, or determinism broke.

use super::classify::{self, Outcome};
use super::plan::Batch;
use super::report::Report;
use super::{Options, prepare, run};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

pub fn run(spec: &str, opts: &Options) -> Result<ExitCode> {
    let (path, id) = spec.rsplit_once('#').with_context(|| format!("--replay wants REPORT#ID, got {spec:?}"))?;
    let id: u64 = id.parse().with_context(|| format!("--replay: {id:?} is not an injection id"))?;
    let path = PathBuf::from(path);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading the report {}", path.display()))?;
    let report: Report =
        serde_json::from_str(&text).with_context(|| format!("parsing the report {}", path.display()))?;
    let out = replay(&report, &path, id, opts)?;
    print!("{}", out.text);
    Ok(if out.identical { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// What a replay found.
pub struct Replayed {
    pub text: String,
    pub identical: bool,
    /// The new excerpt's bytes.
    pub excerpt: Vec<u8>,
    pub outcome: Outcome,
}

pub fn replay(report: &Report, report_path: &Path, id: u64, opts: &Options) -> Result<Replayed> {
    let Some(entry) = report.injections.iter().find(|e| e.planned.id == id) else {
        bail!("the report has no injection {id} (ids 1..={})", report.injections.len());
    };
    let batch = report
        .batches
        .get(entry.planned.batch)
        .with_context(|| format!("the report has no batch {}", entry.planned.batch))?;
    let script = crate::paths::root().join(&report.script);
    let prep = prepare(&script, opts)?;
    let mut text = String::new();
    if classify::fnv(&prep.machine.image) != report.image_fnv || prep.kernel_fnv()? != report.kernel_fnv {
        text.push_str("warning: the kernel or image differs from the report's build; events may differ\n");
    }
    let stem = report_path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let dir = prep.out_dir.join(format!("replay-{stem}-{id}"));
    let _ = std::fs::remove_dir_all(&dir);
    let prep = prep.pin_kernel(&dir)?;
    eprintln!(
        "xtask: replaying injection {id} of {}: batch {} ({} injections)",
        report_path.display(),
        batch.index,
        batch.plan.lines().count() - 2
    );
    let boot = run::boot_plan(&prep.machine, batch.index, &batch.plan, &dir)?;
    let planned: Vec<_> =
        report.injections.iter().filter(|e| e.planned.batch == batch.index).map(|e| e.planned.clone()).collect();
    // The golden run again, if the report compared with one.
    let golden = match &batch.golden {
        Some(_) => Some(prep.golden(batch.deadline_ms, &dir)?),
        None => None,
    };
    let b = Batch { index: batch.index, seed: batch.seed, deadline_ms: batch.deadline_ms, injections: planned };
    // The report's bisection applied again (its prefix boots are not).
    let (verdicts, facts) = prep.judge_bisected(&b, &boot, golden.as_ref(), &batch.facts.bisected);
    let v = verdicts.iter().find(|v| v.id == id).context("the replayed batch lost the injection")?;

    text.push_str(&format!("injection {id}: {}\n", entry.planned.line));
    text.push_str(&format!(
        "outcome: {} ({}); report said {} ({})\n",
        v.outcome.name(),
        v.detail,
        entry.verdict.outcome.name(),
        entry.verdict.detail
    ));
    let excerpt = v.excerpt_lines.map(|l| classify::excerpt(&boot.events, l)).unwrap_or_default();
    if let Some([a, b]) = v.excerpt_lines {
        text.push_str(&format!("events {a}..={b} of batch {}:\n", batch.index));
        text.push_str(&String::from_utf8_lossy(&excerpt));
    } else {
        text.push_str("no events: it never fired\n");
    }
    let mut same_golden = true;
    if let (Some(g), Some(old)) = (&golden, &batch.golden) {
        same_golden = g.reference.events_fnv == old.events_fnv;
        text.push_str(&format!(
            "golden run ({} events, fnv1a64 {}; report {}): {}\n",
            g.reference.events,
            g.reference.events_fnv,
            old.events_fnv,
            if same_golden { "identical" } else { "DIFFERENT" }
        ));
        if v.golden_diff.is_empty() {
            text.push_str("golden-run diff: none blamed on this injection\n");
        } else {
            text.push_str("golden-run diff blamed on this injection:\n");
            for d in &v.golden_diff {
                text.push_str(&format!("  {d}\n"));
            }
        }
        if v.golden_diff != entry.verdict.golden_diff {
            same_golden = false;
            text.push_str(&format!("  DIFFERENT from the report's: {:?}\n", entry.verdict.golden_diff));
        }
    }
    let same_excerpt = v.excerpt_fnv == entry.verdict.excerpt_fnv && v.excerpt_lines == entry.verdict.excerpt_lines;
    let same_batch = facts.events_fnv == batch.facts.events_fnv;
    text.push_str(&format!(
        "excerpt fnv1a64 {} (report {}): {}\n",
        v.excerpt_fnv.as_deref().unwrap_or("-"),
        entry.verdict.excerpt_fnv.as_deref().unwrap_or("-"),
        if same_excerpt { "identical" } else { "DIFFERENT" }
    ));
    text.push_str(&format!(
        "batch stream fnv1a64 {} (report {}, {} events): {}\n",
        facts.events_fnv,
        batch.facts.events_fnv,
        facts.events,
        if same_batch { "identical" } else { "DIFFERENT" }
    ));
    let mut identical = same_excerpt && same_batch && same_golden && v.outcome == entry.verdict.outcome;
    // The original bytes, if the run's files are still there.
    let original = report_path.with_extension("").join(format!("batch-{}.jsonl", batch.index));
    if let Ok(old) = std::fs::read(&original) {
        let same = old == boot.events;
        identical &= same;
        text.push_str(&format!(
            "byte comparison with {}: {}\n",
            original.display(),
            if same { "identical" } else { "DIFFERENT" }
        ));
    }
    text.push_str(if identical { "replay: identical\n" } else { "replay: DIFFERENT\n" });
    Ok(Replayed { text, identical, excerpt, outcome: v.outcome })
}
