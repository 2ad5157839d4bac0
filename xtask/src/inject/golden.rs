//! Golden runs: what the tasks report without any injection, and the diff
//! of a faulted boot against it.
//!
//! Why: a task's own checks only see what its author thought to check. Under
//! icount a boot is deterministic, so the same image booted with no
//! injection armed is the reference for what every task *should* have
//! reported; a faulted boot whose tasks reported something else, beyond
//! what the injected task's own recovery explains, silently corrupted
//! something even when every check said `ok` (FAIL* finds SDC this way with
//! traces; icount makes it a second boot here).
//!
//! What is compared (precisely, also in `docs/campaigns.md`): per task
//! *name*, the sequence of its `check` reports — `(name, ok, value)` in the
//! order the task emitted them — and its end: `exit CODE`, `stopped` (an
//! `escalate` with `action: stop`), or `unfinished` (still running or
//! blocked when the boot ended). Not compared: timestamps, the interleaving
//! of different tasks' events, and every other event (faults, restarts,
//! injections, the fault server's reports) — a faulted run takes a
//! different number of instructions, so *when* differs; *what* must not.
//! Left out: checks named in `[checks] ignore` or `[golden] ignore`, checks
//! of the fault server (events with `by`, or by `run.fault_server`), which
//! describe recoveries a golden run never has.
//!
//! The rules, for each task (its golden trace `G`, faulted trace `F`):
//!
//! * **not restarted** in either run: `F` must equal `G` report by report.
//! * **restarted** (a `restart` of the task in either run, from a
//!   checkpoint or its image): a restarted task re-runs code and may report
//!   again what it reported before the rollback, so `F` must be `G` *with
//!   rewinds*: every report of `F` equals a report of `G` at or before the
//!   position reached so far, and the position only advances by matching
//!   the next report of `G` (nothing of `G` is skipped). A doubled update
//!   shows up as a value `G` never had at that point.
//! * **ends**: if both ended with an exit, the codes must be equal and `F`
//!   must have reached the end of `G` (nothing missing). A task stopped by
//!   its supervisor may end early (that is its escalation, classified as
//!   such). A task unfinished in either run (the boot was cut at its
//!   deadline) is compared only as far as both got; not finishing is a
//!   hang, the classifier's business, not a corruption.
//!
//! A divergence is blamed on the latest injection into that task fired
//! before the divergent event (in guest time), else the latest injection
//! into any task fired before it (another task's corruption reached this
//! one through shared memory or messages); with none before it, it is
//! recorded on the batch as unattributed. Attribution across tasks is only
//! exact with one injection per boot (`run.batch = 1`).

use super::classify::{self, Outcome, Verdict};
use super::plan::Planned;
use serde_json::Value;
use std::collections::BTreeMap;

/// One `check` report of a task.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub value: Option<u64>,
    /// 1-based line of the event stream, and its guest time.
    pub line: usize,
    pub tsc: u64,
}

impl Check {
    fn same(&self, other: &Check) -> bool {
        self.name == other.name && self.ok == other.ok && self.value == other.value
    }
    fn show(&self) -> String {
        let value = self.value.map_or("-".to_string(), |v| v.to_string());
        format!("{} ok={} value={value}", self.name, self.ok)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Exit(u64),
    Stopped,
    Unfinished,
}

impl End {
    fn show(self) -> String {
        match self {
            End::Exit(c) => format!("exit {c}"),
            End::Stopped => "stopped".into(),
            End::Unfinished => "unfinished".into(),
        }
    }
}

/// What one task did, in what it reported.
#[derive(Clone, Debug)]
pub struct TaskTrace {
    pub checks: Vec<Check>,
    pub end: End,
    /// Line and guest time of the event that ended it (or of the last event).
    pub end_at: (usize, u64),
    pub restarted: bool,
}

/// Every task's trace in one boot, by task name.
pub type Trace = BTreeMap<String, TaskTrace>;

/// What is left out of the comparison.
pub struct Filter<'a> {
    pub fault_server: &'a str,
    pub ignore: Vec<&'a str>,
}

/// The traces of a decoded event stream (JSON lines), in stream order.
pub fn trace(events: &[u8], filter: &Filter) -> Trace {
    let mut out = Trace::new();
    let mut last = (0, 0);
    let blank = |at| TaskTrace { checks: Vec::new(), end: End::Unfinished, end_at: at, restarted: false };
    let lines: Vec<Value> = events
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap_or(Value::Null))
        .collect();
    // In time order: the fault server writes a `restart` after the task
    // may already have exited, stamped with when the kernel did it.
    let mut in_time: Vec<usize> = (0..lines.len()).collect();
    in_time.sort_by_key(|&i| (lines[i]["tsc"].as_u64().unwrap_or(0), i));
    for i in in_time {
        let e = &lines[i];
        let n = i + 1;
        let tsc = e["tsc"].as_u64().unwrap_or(0);
        last = (n, tsc);
        match e["ev"].as_str().unwrap_or("") {
            "task_start" => {
                let name = e["name"].as_str().unwrap_or("?").to_string();
                out.entry(name).or_insert_with(|| blank((n, tsc)));
            }
            "check" => {
                if e.get("by").is_some() {
                    continue;
                }
                let who = e["task_name"].as_str().unwrap_or("kernel");
                let name = e["name"].as_str().unwrap_or("?");
                if who == filter.fault_server || filter.ignore.contains(&name) {
                    continue;
                }
                let c = Check {
                    name: name.to_string(),
                    ok: e["ok"] != Value::Bool(false),
                    value: e["value"].as_u64(),
                    line: n,
                    tsc,
                };
                out.entry(who.to_string()).or_insert_with(|| blank((n, tsc))).checks.push(c);
            }
            "task_exit" => {
                let t = out.entry(e["name"].as_str().unwrap_or("?").to_string()).or_insert_with(|| blank((n, tsc)));
                if t.end != End::Stopped {
                    t.end = End::Exit(e["code"].as_u64().unwrap_or(0));
                    t.end_at = (n, tsc);
                }
            }
            "restart" => {
                let t = out.entry(e["name"].as_str().unwrap_or("?").to_string()).or_insert_with(|| blank((n, tsc)));
                t.restarted = true;
                // A task restarted after it was counted as ended runs again.
                t.end = End::Unfinished;
            }
            "escalate" if e["action"] == "stop" => {
                let t = out.entry(e["name"].as_str().unwrap_or("?").to_string()).or_insert_with(|| blank((n, tsc)));
                t.end = End::Stopped;
                t.end_at = (n, tsc);
            }
            _ => {}
        }
    }
    for t in out.values_mut() {
        if t.end == End::Unfinished {
            t.end_at = last;
        }
    }
    out.remove(filter.fault_server);
    out
}

/// One way a task's faulted trace differs from its golden one.
#[derive(Clone, Debug, PartialEq)]
pub struct Divergence {
    pub task: String,
    pub detail: String,
    /// Where it shows in the faulted stream: 1-based line and guest time.
    pub line: usize,
    pub tsc: u64,
}

impl Divergence {
    pub fn show(&self) -> String {
        format!("{}: {} (event line {})", self.task, self.detail, self.line)
    }
}

/// The divergences of `faulted` from `golden`, at most one per task (its first).
pub fn diff(golden: &Trace, faulted: &Trace) -> Vec<Divergence> {
    let mut out = Vec::new();
    let absent = |end_at| TaskTrace { checks: Vec::new(), end: End::Unfinished, end_at, restarted: false };
    let mut names: Vec<&String> = golden.keys().chain(faulted.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        let g = golden.get(name).cloned().unwrap_or_else(|| absent((0, 0)));
        let f = faulted.get(name).cloned().unwrap_or_else(|| absent((0, 0)));
        if let Some((detail, (line, tsc))) = diff_task(&g, &f) {
            out.push(Divergence { task: name.clone(), detail, line, tsc });
        }
    }
    out
}

/// The first way `f` departs from `g`, and where in `f`'s stream. A task
/// the golden run itself restarted (a workload's designed fault) has
/// rewinds in `g` too: then `g` being `f` with rewinds also matches.
fn diff_task(g: &TaskTrace, f: &TaskTrace) -> Option<(String, (usize, u64))> {
    let found = walk(g, f)?;
    if g.restarted && walk(f, g).is_none() { None } else { Some(found) }
}

fn walk(g: &TaskTrace, f: &TaskTrace) -> Option<(String, (usize, u64))> {
    let n = g.checks.len();
    let rewinds = g.restarted || f.restarted;
    // `pos`: how many of g's reports have been matched in order.
    let mut pos = 0;
    for (k, c) in f.checks.iter().enumerate() {
        if pos < n && g.checks[pos].same(c) {
            pos += 1;
            continue;
        }
        if rewinds && g.checks[..pos].iter().any(|x| x.same(c)) {
            // Re-reported after a rollback or a fresh start; reports of g
            // after it must come again before anything new counts.
            pos = g.checks[..pos].iter().rposition(|x| x.same(c)).map_or(pos, |q| q + 1);
            continue;
        }
        if pos == n && g.end == End::Unfinished {
            // The golden boot was cut before this report: nothing to compare.
            break;
        }
        let want = match g.checks.get(pos) {
            Some(x) => format!("golden: {}", x.show()),
            None => format!("golden reported {n} and then {}", g.end.show()),
        };
        return Some((format!("report {} {}; {want}", k + 1, c.show()), (c.line, c.tsc)));
    }
    match (g.end, f.end) {
        (End::Exit(a), End::Exit(b)) if a != b => Some((format!("exit {b}; golden: exit {a}"), f.end_at)),
        (End::Exit(_) | End::Stopped, End::Exit(_)) if pos < n => {
            Some((format!("{} without report {}; golden: {}", f.end.show(), pos + 1, g.checks[pos].show()), f.end_at))
        }
        (End::Stopped, End::Exit(b)) => Some((format!("exit {b}; golden: stopped"), f.end_at)),
        _ => None,
    }
}

/// Blames each divergence on an injection (module notes), attaches the
/// diffs to their verdicts, and turns outcomes that showed no harm
/// (not manifested, recovered, escalated) into silent corruption. Returns
/// the divergences no injection explains.
///
/// `explained`: tasks whose failure a bisection pinned on an injection
/// (`blame.rs`), with that injection: a divergence of such a task is the
/// same failure seen again (a failed check is a report the golden run has
/// not), so it goes with the bisection's culprit, as information, and
/// makes nothing else silent corruption.
pub fn apply(
    planned: &[Planned],
    verdicts: &mut [Verdict],
    divergences: &[Divergence],
    events: &[u8],
    explained: &[(String, u64)],
) -> Vec<String> {
    let mut unattributed = Vec::new();
    for d in divergences {
        if let Some((_, culprit)) = explained.iter().find(|(task, _)| *task == d.task) {
            if let Some(v) = verdicts.iter_mut().find(|v| v.id == *culprit) {
                v.golden_diff.push(d.show());
            }
            continue;
        }
        let fired = |p: &&Planned| {
            verdicts
                .iter()
                .any(|v| v.id == p.id && v.outcome != Outcome::NotFired && v.inject_tsc.is_some_and(|t| t <= d.tsc))
        };
        let tsc = |p: &Planned| verdicts.iter().find(|v| v.id == p.id).and_then(|v| v.inject_tsc).unwrap_or(0);
        let into = planned.iter().filter(|p| p.task == d.task).filter(fired).max_by_key(|p| (tsc(p), p.id));
        let any = planned.iter().filter(fired).max_by_key(|p| (tsc(p), p.id));
        let Some(p) = into.or(any) else {
            unattributed.push(d.show());
            continue;
        };
        let v = verdicts.iter_mut().find(|v| v.id == p.id).expect("planned ids have verdicts");
        v.golden_diff.push(d.show());
        if matches!(v.outcome, Outcome::NotManifested | Outcome::Recovered | Outcome::Escalated) {
            v.detail = format!("golden-run diff: {} (classified {}: {})", d.show(), v.outcome.name(), v.detail);
            v.outcome = Outcome::SilentCorruption;
            v.latency = None;
            if let Some([from, to]) = v.excerpt_lines {
                let lines = [from, to.max(d.line)];
                v.excerpt_lines = Some(lines);
                v.excerpt_fnv = Some(classify::fnv(&classify::excerpt(events, lines)));
            }
        }
    }
    unattributed
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILTER: Filter = Filter { fault_server: "fault-server", ignore: Vec::new() };

    fn t(lines: &str) -> Trace {
        trace(lines.as_bytes(), &FILTER)
    }

    const GOLDEN: &str = r#"{"ev":"task_start","tsc":1,"task":2,"name":"a"}
{"ev":"task_start","tsc":2,"task":3,"name":"b"}
{"ev":"check","tsc":10,"task":2,"task_name":"a","name":"n","ok":true,"value":1}
{"ev":"check","tsc":11,"task":3,"task_name":"b","name":"m","ok":true,"value":7}
{"ev":"check","tsc":20,"task":2,"task_name":"a","name":"n","ok":true,"value":2}
{"ev":"check","tsc":30,"task":2,"task_name":"a","name":"total","ok":true,"value":40}
{"ev":"task_exit","tsc":31,"task":2,"name":"a","code":0}
{"ev":"task_exit","tsc":32,"task":3,"name":"b","code":0}
"#;

    #[test]
    fn same_reports_in_another_interleaving_and_time_do_not_differ() {
        let faulted = r#"{"ev":"task_start","tsc":1,"task":2,"name":"a"}
{"ev":"task_start","tsc":2,"task":3,"name":"b"}
{"ev":"check","tsc":15,"task":2,"task_name":"a","name":"n","ok":true,"value":1}
{"ev":"check","tsc":25,"task":2,"task_name":"a","name":"n","ok":true,"value":2}
{"ev":"check","tsc":70,"task":2,"task_name":"a","name":"total","ok":true,"value":40}
{"ev":"check","tsc":71,"task":3,"task_name":"b","name":"m","ok":true,"value":7}
{"ev":"task_exit","tsc":72,"task":3,"name":"b","code":0}
{"ev":"task_exit","tsc":80,"task":2,"name":"a","code":0}
"#;
        assert_eq!(diff(&t(GOLDEN), &t(faulted)), []);
    }

    #[test]
    fn a_rolled_back_task_may_report_again_but_not_anew() {
        let rerun = r#"{"ev":"check","tsc":15,"task":2,"task_name":"a","name":"n","ok":true,"value":1}
{"ev":"check","tsc":25,"task":2,"task_name":"a","name":"n","ok":true,"value":2}
{"ev":"restart","tsc":26,"task":2,"name":"a","seq":1,"from":"checkpoint"}
{"ev":"check","tsc":27,"task":2,"task_name":"a","name":"n","ok":true,"value":2}
{"ev":"check","tsc":70,"task":2,"task_name":"a","name":"total","ok":true,"value":40}
{"ev":"check","tsc":71,"task":3,"task_name":"b","name":"m","ok":true,"value":7}
{"ev":"task_exit","tsc":72,"task":3,"name":"b","code":0}
{"ev":"task_exit","tsc":80,"task":2,"name":"a","code":0}
"#;
        assert_eq!(diff(&t(GOLDEN), &t(rerun)), []);
        // The same re-report without a restart is a divergence.
        let no_restart = rerun.replace("\"ev\":\"restart\"", "\"ev\":\"note\"");
        let d = diff(&t(GOLDEN), &t(&no_restart));
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!((d[0].task.as_str(), d[0].line), ("a", 4));
        // A doubled update: a value the golden run never reported.
        let doubled = rerun.replace("\"value\":40", "\"value\":41");
        let d = diff(&t(GOLDEN), &t(&doubled));
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].detail, "report 4 total ok=true value=41; golden: total ok=true value=40");
        assert_eq!(d[0].line, 5);
    }

    #[test]
    fn missing_reports_exit_codes_and_stops() {
        let short = r#"{"ev":"check","tsc":15,"task":2,"task_name":"a","name":"n","ok":true,"value":1}
{"ev":"check","tsc":71,"task":3,"task_name":"b","name":"m","ok":true,"value":7}
{"ev":"task_exit","tsc":72,"task":3,"name":"b","code":3}
{"ev":"task_exit","tsc":80,"task":2,"name":"a","code":0}
"#;
        let d = diff(&t(GOLDEN), &t(short));
        let shown: Vec<String> = d.iter().map(|d| d.detail.clone()).collect();
        assert_eq!(shown, ["exit 0 without report 2; golden: n ok=true value=2", "exit 3; golden: exit 0"]);
        // Stopped early, or cut by the deadline: compared as far as it got.
        let stopped = r#"{"ev":"check","tsc":15,"task":2,"task_name":"a","name":"n","ok":true,"value":1}
{"ev":"escalate","tsc":16,"task":2,"name":"a","seq":4,"action":"stop"}
{"ev":"check","tsc":71,"task":3,"task_name":"b","name":"m","ok":true,"value":7}
"#;
        assert_eq!(diff(&t(GOLDEN), &t(stopped)), []);
    }

    #[test]
    fn ignored_and_fault_server_checks_are_left_out() {
        let filter = Filter { fault_server: "fault-server", ignore: vec!["retried"] };
        let golden = trace(GOLDEN.as_bytes(), &filter);
        let extra = GOLDEN.replace(
            "{\"ev\":\"task_exit\",\"tsc\":31",
            "{\"ev\":\"check\",\"tsc\":30,\"task\":2,\"task_name\":\"a\",\"name\":\"retried\",\"ok\":true,\"value\":9}\n\
             {\"ev\":\"check\",\"tsc\":30,\"task\":2,\"name\":\"regs-match\",\"ok\":false,\"by\":1}\n\
             {\"ev\":\"check\",\"tsc\":30,\"task\":1,\"task_name\":\"fault-server\",\"name\":\"x\",\"ok\":false}\n\
             {\"ev\":\"task_exit\",\"tsc\":31",
        );
        assert_eq!(diff(&golden, &trace(extra.as_bytes(), &filter)), []);
        assert_eq!(diff(&t(GOLDEN), &t(&extra)).len(), 1, "without the ignore list the extra report differs");
    }

    fn planned(id: u64, task: &str) -> Planned {
        Planned { id, batch: 0, source: "test".into(), kind: "ud".into(), task: task.into(), line: String::new() }
    }

    fn verdict(id: u64, outcome: Outcome, tsc: u64) -> Verdict {
        Verdict {
            id,
            outcome,
            detail: "d".into(),
            seq: None,
            rip: None,
            function: None,
            inject_tsc: Some(tsc),
            latency: Some(5),
            dormant: None,
            excerpt_lines: Some([1, 2]),
            excerpt_fnv: None,
            golden_diff: Vec::new(),
        }
    }

    #[test]
    fn blame_goes_to_the_latest_injection_into_the_task_then_any() {
        let p = [planned(1, "a"), planned(2, "b"), planned(3, "a")];
        let mut v =
            vec![verdict(1, Outcome::Recovered, 10), verdict(2, Outcome::Hang, 20), verdict(3, Outcome::Recovered, 50)];
        let d = |task: &str, tsc| Divergence { task: task.into(), detail: "x".into(), line: 3, tsc };
        // Into a at 30: injection 1 (3 fired later). Into c at 25: the
        // latest of any, 2 (a hang stays a hang). Before anything: nobody.
        let left = apply(&p, &mut v, &[d("a", 30), d("c", 25), d("c", 5)], b"1\n2\n3\n", &[]);
        assert_eq!(left, ["c: x (event line 3)"]);
        assert_eq!(v[0].outcome, Outcome::SilentCorruption);
        assert_eq!(v[0].excerpt_lines, Some([1, 3]));
        assert_eq!(v[0].latency, None);
        assert_eq!(v[1].outcome, Outcome::Hang);
        assert_eq!(v[1].golden_diff, ["c: x (event line 3)"]);
        assert_eq!(v[2].outcome, Outcome::Recovered);
    }

    #[test]
    fn a_divergence_a_bisection_explained_goes_with_its_culprit_and_blames_nobody_else() {
        let p = [planned(1, "a"), planned(2, "b")];
        let mut v = vec![verdict(1, Outcome::Recovered, 10), verdict(2, Outcome::SilentCorruption, 5)];
        let d = Divergence { task: "a".into(), detail: "x".into(), line: 3, tsc: 30 };
        let left = apply(&p, &mut v, &[d], b"1\n2\n3\n", &[("a".into(), 2)]);
        assert!(left.is_empty());
        assert_eq!(v[0].outcome, Outcome::Recovered, "timing would have blamed 1");
        assert_eq!(v[1].golden_diff, ["a: x (event line 3)"]);
    }
}
