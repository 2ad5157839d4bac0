//! The report: one JSON file per script and seed, and the summary tables.
//!
//! Why this shape: the JSON holds only what the guest determined — plans,
//! outcomes, guest-instruction latencies, event fingerprints — and nothing
//! about the host (no wall times, no paths, no `--jobs`), so two runs of the
//! same script, seed and build write the same bytes, and `diff` between two
//! builds shows exactly which injections changed fate. Each injection keeps
//! its plan line and the line range and FNV-1a fingerprint of its event
//! excerpt (its `inject` event to the event that decided it); each batch
//! keeps its whole plan, so `--replay REPORT#ID` needs nothing but the
//! report and the same build. The events themselves stay next to the report
//! (`<script>-<seed>/batch-N.jsonl`): 10,000 excerpts inline would make the
//! report tens of MB.
//!
//! Format (`format: 2`): `script`, `description`, `seed`, `profile`,
//! `image_fnv`, `kernel_fnv`, `summary` (`total`, `by_kind`, `by_task`: each
//! `injections`, `outcomes.{class}`, `recovered_percent`, `latency.{count,
//! p50,p99,max}`), `batches[]` (`index`, `seed`, `deadline_ms`, `plan`,
//! `facts`, `golden`: the golden run compared with), `injections[]` (`id`,
//! `batch`, `source`, `kind`, `task`, `line`, and the classifier's verdict
//! fields, `golden_diff` among them), `expectations[]` (`name`, `ok`,
//! `detail`) and `passed`. Format 1 (no golden runs) still reads.
//!
//! A campaign run in shards (`shard.rs`) merges into this same report, byte
//! for byte: nothing in it depends on which machine ran which boot.

use super::classify::{Facts, Outcome, Verdict};
use super::plan::{Batch, Planned};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const FORMAT: u32 = 2;

/// What a report says about the run as a whole (the same in every shard).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Header {
    pub script: String,
    pub description: String,
    pub seed: u64,
    pub profile: String,
    pub image_fnv: String,
    pub kernel_fnv: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub format: u32,
    pub script: String,
    pub description: String,
    pub seed: u64,
    pub profile: String,
    pub image_fnv: String,
    pub kernel_fnv: String,
    pub summary: Summary,
    pub batches: Vec<BatchReport>,
    pub injections: Vec<Entry>,
    pub expectations: Vec<Expectation>,
    pub passed: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BatchReport {
    pub index: usize,
    pub seed: u64,
    pub deadline_ms: u64,
    pub plan: String,
    pub facts: Facts,
    /// The golden run this batch was compared with (`golden.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub golden: Option<GoldenRef>,
}

/// A golden run: its plan (no injection, the batch's deadline), how it
/// ended and its events' fingerprint.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct GoldenRef {
    pub plan: String,
    pub end: String,
    pub events: usize,
    pub events_fnv: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Entry {
    #[serde(flatten)]
    pub planned: Planned,
    #[serde(flatten)]
    pub verdict: Verdict,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Expectation {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Summary {
    pub total: Row,
    pub by_kind: BTreeMap<String, Row>,
    pub by_task: BTreeMap<String, Row>,
    /// Where the injections that fired landed: the function of the task's
    /// binary its `rip` was in, and how many (the distribution of
    /// injection points, `docs/campaigns.md`).
    #[serde(default)]
    pub by_function: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Row {
    pub injections: u64,
    pub outcomes: BTreeMap<String, u64>,
    /// recovered / manifested, percent (None: nothing manifested).
    pub recovered_percent: Option<f64>,
    pub latency: Latency,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub p50: Option<u64>,
    pub p99: Option<u64>,
    pub max: Option<u64>,
}

impl Row {
    pub fn count(&self, o: Outcome) -> u64 {
        self.outcomes.get(o.name()).copied().unwrap_or(0)
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

fn row<'a>(entries: impl Iterator<Item = &'a Entry>) -> Row {
    let mut r = Row::default();
    for o in Outcome::ALL {
        r.outcomes.insert(o.name().into(), 0);
    }
    let mut lat = Vec::new();
    for e in entries {
        r.injections += 1;
        *r.outcomes.entry(e.verdict.outcome.name().into()).or_default() += 1;
        if let Some(l) = e.verdict.latency {
            lat.push(l);
        }
    }
    let manifested: u64 = Outcome::ALL.iter().filter(|o| o.manifested()).map(|o| r.count(*o)).sum();
    // Two decimals, computed exactly the same way every run.
    r.recovered_percent = (r.count(Outcome::Recovered) * 10_000).checked_div(manifested).map(|p| p as f64 / 100.0);
    lat.sort_unstable();
    r.latency = Latency {
        count: lat.len() as u64,
        p50: percentile(&lat, 50.0),
        p99: percentile(&lat, 99.0),
        max: lat.last().copied(),
    };
    r
}

pub fn summarize(entries: &[Entry]) -> Summary {
    let mut kinds: Vec<&str> = entries.iter().map(|e| e.planned.kind.as_str()).collect();
    kinds.sort();
    kinds.dedup();
    let mut tasks: Vec<&str> = entries.iter().map(|e| e.planned.task.as_str()).collect();
    tasks.sort();
    tasks.dedup();
    Summary {
        total: row(entries.iter()),
        by_kind: kinds.iter().map(|k| (k.to_string(), row(entries.iter().filter(|e| e.planned.kind == *k)))).collect(),
        by_task: tasks.iter().map(|t| (t.to_string(), row(entries.iter().filter(|e| e.planned.task == *t)))).collect(),
        by_function: entries.iter().filter_map(|e| e.verdict.function.clone()).fold(BTreeMap::new(), |mut m, f| {
            *m.entry(f).or_insert(0) += 1;
            m
        }),
    }
}

pub fn batch_report(b: &Batch, facts: Facts) -> BatchReport {
    BatchReport { index: b.index, seed: b.seed, deadline_ms: b.deadline_ms, plan: b.plan_text(), facts, golden: None }
}

/// Column headings of the outcome table.
const SHORT: [(Outcome, &str); 7] = [
    (Outcome::NotFired, "not fired"),
    (Outcome::NotManifested, "no effect"),
    (Outcome::Recovered, "recovered"),
    (Outcome::Escalated, "escalated"),
    (Outcome::SilentCorruption, "corrupt"),
    (Outcome::Hang, "hang"),
    (Outcome::SystemFailure, "sys fail"),
];

fn num(v: Option<u64>) -> String {
    let Some(v) = v else { return "-".into() };
    let s = v.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The summary table: per kind, per task, and the total.
pub fn table(s: &Summary) -> String {
    let mut out = String::new();
    let mut section = |title: &str, rows: Vec<(&str, &Row)>| {
        out.push_str(&format!("{title:<22} {:>6}", "inj"));
        for (_, h) in SHORT {
            out.push_str(&format!(" {h:>9}"));
        }
        out.push_str(&format!(" {:>7} {:>11} {:>11} {:>11}\n", "recov%", "lat p50", "lat p99", "lat max"));
        for (name, r) in rows {
            out.push_str(&format!("{name:<22} {:>6}", r.injections));
            for (o, _) in SHORT {
                out.push_str(&format!(" {:>9}", r.count(o)));
            }
            let pct = r.recovered_percent.map_or("-".into(), |p| format!("{p:.1}"));
            out.push_str(&format!(
                " {pct:>7} {:>11} {:>11} {:>11}\n",
                num(r.latency.p50),
                num(r.latency.p99),
                num(r.latency.max)
            ));
        }
        out.push('\n');
    };
    section("kind", s.by_kind.iter().map(|(k, r)| (k.as_str(), r)).chain([("total", &s.total)]).collect());
    section("task", s.by_task.iter().map(|(k, r)| (k.as_str(), r)).chain([("total", &s.total)]).collect());
    out.push_str("latency: guest instructions from the fault to the restart that let the task run again\n");
    out.push_str(&where_table(&s.by_function, 10));
    out
}

/// The `top` functions injections landed in most, with their share.
pub fn where_table(by_function: &BTreeMap<String, u64>, top: usize) -> String {
    let total: u64 = by_function.values().sum();
    if total == 0 {
        return String::new();
    }
    let mut rows: Vec<(&String, &u64)> = by_function.iter().collect();
    rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let mut out = format!("\nwhere the {total} injections that fired landed (function of the rip, top {top}):\n");
    for (name, n) in rows.iter().take(top) {
        let name: String = if name.chars().count() > 90 {
            name.chars().take(87).chain("...".chars()).collect()
        } else {
            name.to_string()
        };
        out.push_str(&format!("{:>7} {:>5.1}%  {name}\n", n, **n as f64 * 100.0 / total as f64));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn the_where_table_lists_the_commonest_functions_first_with_their_share() {
        let m: BTreeMap<String, u64> = [("a".to_string(), 1), ("b".to_string(), 3)].into_iter().collect();
        let t = where_table(&m, 1);
        assert!(t.contains("where the 4 injections"), "{t}");
        assert!(t.contains("3  75.0%  b"), "{t}");
        assert!(!t.contains("  a\n"), "{t}");
        assert_eq!(where_table(&BTreeMap::new(), 5), "");
    }

    #[test]
    fn numbers_get_thousands_separators() {
        assert_eq!(num(Some(1234567)), "1,234,567");
        assert_eq!(num(Some(999)), "999");
        assert_eq!(num(None), "-");
    }
}
