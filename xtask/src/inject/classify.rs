//! What became of each injection, read from the event stream alone.
//!
//! Why only events: the stream is the system's own account, reproducible
//! byte for byte under icount, and the same thing a user reads
//! (`docs/events.md`), so a classification can always be checked by hand
//! against the excerpt the report points at. The rules (also in
//! `docs/fault-injection.md`), for an injection into task T:
//!
//! * **not fired** — no `inject` event for its id (`inject_missed`: T was
//!   not alive; or the boot ended first), or the kernel found nothing to
//!   flip (`missed`). Not counted as an outcome of a fault.
//! * Its fault: the `seq` of its `inject` event (synthetic faults, kill);
//!   else the first `fault`/`task_panic` of T after it that no other
//!   injection claims (flips, skip, hang: if they manifest at all).
//! * **recovered** — a `restart` of that seq `from: checkpoint`.
//! * **escalated** — a `restart` `from: image`, or an `escalate`, of that seq.
//! * **silent corruption** — a `check` with `ok: false` after it (by T, or
//!   by any task when no injection into that task is open), or T exiting
//!   with a non-zero code, with no fault to show for it.
//! * **hang** — its fault was never answered, or T never finished (it was
//!   still running or blocked when the boot ended), or the boot reached its
//!   deadline with it open.
//! * **system failure** — the kernel died (`kernel_fault`, `kernel_panic`,
//!   a non-zero or missing exit) or the fault server was lost, while it was
//!   the latest injection fired.
//! * **not manifested** — none of the above: no fault of T followed, T
//!   finished normally and no check failed.
//!
//! When several apply, the worst wins: system failure > hang > silent
//! corruption > escalated > recovered > not manifested.
//!
//! Latency: guest instructions (`tsc`) from the fault — the `inject` event
//! when it carries the seq, else the `fault` event — to the `restart` that
//! let T run again. `dormant`: from `inject` to a late-manifesting fault.

use super::plan::Planned;
use super::run::End;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// Outcome classes, worst last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    NotFired,
    NotManifested,
    Recovered,
    Escalated,
    SilentCorruption,
    Hang,
    SystemFailure,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::NotFired,
        Outcome::NotManifested,
        Outcome::Recovered,
        Outcome::Escalated,
        Outcome::SilentCorruption,
        Outcome::Hang,
        Outcome::SystemFailure,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Outcome::NotFired => "not_fired",
            Outcome::NotManifested => "not_manifested",
            Outcome::Recovered => "recovered",
            Outcome::Escalated => "escalated",
            Outcome::SilentCorruption => "silent_corruption",
            Outcome::Hang => "hang",
            Outcome::SystemFailure => "system_failure",
        }
    }
    /// A fault that showed itself (the denominator of "recovered %").
    pub fn manifested(self) -> bool {
        !matches!(self, Outcome::NotFired | Outcome::NotManifested)
    }
}

/// What the classifier needs from the script.
pub struct Rules<'a> {
    pub fault_server: &'a str,
    pub servers: &'a [String],
    pub ignore_checks: &'a [String],
    /// Symptoms a bisection blamed (`blame.rs`): they count against no
    /// injection here; the bisection's culprit gets them.
    pub excused: &'a [super::blame::Symptom],
}

/// One injection's verdict.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Verdict {
    /// The injection's id (the report keeps it once, in the plan's half).
    #[serde(skip)]
    pub id: u64,
    pub outcome: Outcome,
    /// Why, in words.
    pub detail: String,
    pub seq: Option<u64>,
    /// Where the task was when it fired.
    pub rip: Option<String>,
    /// The function of the task's ELF that `rip` lies in (filled by the
    /// runner, which has the binaries: `Prepared::judge_boot`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    pub inject_tsc: Option<u64>,
    pub latency: Option<u64>,
    pub dormant: Option<u64>,
    /// 1-based line numbers of the batch's event stream: from its `inject`
    /// event to the event that decided its outcome.
    pub excerpt_lines: Option<[usize; 2]>,
    pub excerpt_fnv: Option<String>,
    /// How the tasks' reports differed from the golden run's, blamed on
    /// this injection (`golden.rs`); empty without a golden run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub golden_diff: Vec<String>,
}

/// What a boot as a whole showed.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Facts {
    pub end: String,
    pub kernel_alive: bool,
    /// Why the fault server counts as lost, if it does.
    pub fault_server_lost: Option<String>,
    /// `all_tasks_done.blocked` (None: never reached).
    pub blocked_at_end: Option<u64>,
    /// Failed checks: (name, task name, 1-based line).
    pub failed_checks: Vec<(String, String, usize)>,
    /// Check names seen at all (for expectations on named checks).
    pub checks_seen: Vec<String>,
    /// Faults no injection accounts for.
    pub unattributed_faults: u64,
    pub events: usize,
    pub events_fnv: String,
    /// Golden-run divergences no injection fired before (`golden.rs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unattributed_divergences: Vec<String>,
    /// The batch's failures bisected to the injection each appeared with
    /// (`blame.rs`); absent when there was nothing to bisect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bisected: Vec<super::blame::Bisected>,
}

#[derive(Default, Clone)]
struct Open {
    line: usize,
    tsc: u64,
    seq: Option<u64>,
    seq_from_inject: bool,
    fault_tsc: Option<u64>,
    outcome: Option<(Outcome, String, usize)>,
    corrupt: Option<(String, usize)>,
    ended: bool,
    missed: bool,
    rip: Option<String>,
    latency: Option<u64>,
    /// The supervisor's reason, from its own `escalate` event.
    note: Option<String>,
}

/// FNV-1a, 64 bits: a stable fingerprint for event excerpts.
pub fn fnv(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// The raw lines `first..=last` (1-based) of a stream, newline-terminated.
pub fn excerpt(events: &[u8], [first, last]: [usize; 2]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in events.split_inclusive(|b| *b == b'\n').skip(first - 1).take(last + 1 - first) {
        out.extend_from_slice(line);
    }
    out
}

pub fn classify(planned: &[Planned], events: &[u8], end: End, rules: &Rules) -> (Vec<Verdict>, Facts) {
    let lines: Vec<Value> = events
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap_or(Value::Null))
        .collect();
    let wanted: BTreeMap<u64, &Planned> = planned.iter().map(|p| (p.id, p)).collect();
    let mut open: BTreeMap<u64, Open> = BTreeMap::new();
    let mut order: Vec<u64> = Vec::new();
    let mut by_seq: BTreeMap<u64, u64> = BTreeMap::new();
    let mut not_fired: BTreeMap<u64, String> = BTreeMap::new();
    let mut facts = Facts {
        end: end.describe(),
        kernel_alive: end.kernel_alive(),
        events: lines.len(),
        events_fnv: fnv(events),
        ..Facts::default()
    };
    let mut server_faults: BTreeMap<u64, usize> = BTreeMap::new();
    let mut system_down: Option<(String, usize)> = None;
    let mut last_line = 0;

    // In time order: a supervisor reports a fault after it recovered the
    // task, stamping each event with when it happened, so an `inject` that
    // came in between is written before the report of an earlier fault.
    let mut in_time: Vec<usize> = (0..lines.len()).collect();
    in_time.sort_by_key(|&i| (lines[i]["tsc"].as_u64().unwrap_or(0), i));
    for i in in_time {
        let e = &lines[i];
        let n = i + 1;
        last_line = last_line.max(n);
        let ev = e["ev"].as_str().unwrap_or("");
        let tsc = e["tsc"].as_u64().unwrap_or(0);
        let name = e["name"].as_str().unwrap_or("");
        let seq = e["seq"].as_u64();
        match ev {
            "inject" => {
                let Some(id) = e["id"].as_u64().filter(|id| wanted.contains_key(id)) else { continue };
                let mut o = Open {
                    line: n,
                    tsc,
                    seq,
                    seq_from_inject: seq.is_some(),
                    rip: e["rip"].as_str().map(str::to_owned),
                    ..Open::default()
                };
                if let Some(m) = e["missed"].as_str() {
                    o.missed = true;
                    not_fired.insert(id, format!("fired, but {m}"));
                }
                if let Some(s) = seq {
                    by_seq.insert(s, id);
                }
                open.insert(id, o);
                order.push(id);
            }
            "inject_missed" => {
                if let Some(id) = e["id"].as_u64().filter(|id| wanted.contains_key(id)) {
                    not_fired.insert(id, format!("inject_missed: {}", e["reason"].as_str().unwrap_or("?")));
                }
            }
            "fault" | "task_panic" => {
                if name == rules.fault_server {
                    server_faults.insert(seq.unwrap_or(0), n);
                }
                let Some(s) = seq else { continue };
                if let Some(id) = by_seq.get(&s) {
                    if let Some(o) = open.get_mut(id) {
                        o.fault_tsc.get_or_insert(tsc);
                    }
                    continue;
                }
                // A late fault: the latest open injection into this task
                // that has no fault yet — for a watchdog fault, the latest
                // `hang` among them if there is one (an injection that
                // fired after a hang acted on the hang page, not the task).
                let candidates: Vec<u64> = order
                    .iter()
                    .copied()
                    .filter(|id| {
                        let o = &open[id];
                        wanted[id].task == name && o.seq.is_none() && o.outcome.is_none() && !o.missed
                    })
                    .collect();
                let hang = candidates.iter().rev().find(|id| wanted[*id].kind == "hang");
                let claim = if e["kind"] == "watchdog" { hang.or(candidates.last()) } else { candidates.last() };
                match claim.copied() {
                    Some(id) => {
                        let o = open.get_mut(&id).expect("ordered ids are open");
                        o.seq = Some(s);
                        o.fault_tsc = Some(tsc);
                        by_seq.insert(s, id);
                    }
                    None => facts.unattributed_faults += 1,
                }
            }
            "restart" => {
                if name == rules.fault_server {
                    server_faults.remove(&seq.unwrap_or(0));
                }
                let Some(&id) = seq.and_then(|s| by_seq.get(&s)) else { continue };
                if open[&id].outcome.is_some() {
                    continue;
                }
                // Other injections into the task still waiting to show an
                // effect are wiped out by the restart.
                for other in order.iter().filter(|x| **x != id && wanted[*x].task == name) {
                    let w = open.get_mut(other).expect("ordered ids are open");
                    if w.seq.is_none() && w.outcome.is_none() && w.corrupt.is_none() && !w.missed {
                        w.outcome = Some((
                            Outcome::NotManifested,
                            format!("overtaken: {name} restarted for injection {id} (seq {})", seq.unwrap_or(0)),
                            n,
                        ));
                    }
                }
                let o = open.get_mut(&id).expect("seqs map to open ids");
                let from = e["from"].as_str().unwrap_or("?");
                let start = if o.seq_from_inject { o.tsc } else { o.fault_tsc.unwrap_or(o.tsc) };
                o.latency = Some(tsc.saturating_sub(start));
                o.outcome = Some(if from == "checkpoint" {
                    (
                        Outcome::Recovered,
                        format!("restart from checkpoint (scope {}, attempt {})", e["scope"], e["attempt"]),
                        n,
                    )
                } else {
                    let why = o.note.as_ref().map(|w| format!(": {w}")).unwrap_or_default();
                    (Outcome::Escalated, format!("restart from {from}{why}"), n)
                });
            }
            "escalate" => {
                let reason = e["reason"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("reason_code {}", e["reason_code"]));
                let detail = format!("{} ({reason})", e["action"].as_str().unwrap_or("stop"));
                if e.get("by").is_some() {
                    // A supervisor's own escalate (e.g. `fresh_start`) says
                    // why; the kernel's `restart` or `escalate` that follows
                    // decides.
                    if let Some(o) = seq.and_then(|s| by_seq.get(&s)).and_then(|id| open.get_mut(id)) {
                        o.note.get_or_insert(detail);
                    }
                    continue;
                }
                if name == rules.fault_server && system_down.is_none() {
                    system_down = Some((format!("the fault server was stopped ({reason})"), n));
                    facts.fault_server_lost = Some(format!("escalate at event line {n}"));
                }
                // A stopped task is finished for every injection into it.
                for id in order.iter().filter(|id| wanted[*id].task == name) {
                    open.get_mut(id).expect("ordered ids are open").ended = true;
                }
                let Some(id) = seq.and_then(|s| by_seq.get(&s)) else { continue };
                let o = open.get_mut(id).expect("seqs map to open ids");
                if matches!(o.outcome, None | Some((Outcome::Recovered | Outcome::NotManifested, _, _))) {
                    o.outcome = Some((Outcome::Escalated, detail, n));
                    o.latency = None;
                }
            }
            "check" => {
                let check = e["name"].as_str().unwrap_or("?").to_string();
                if !facts.checks_seen.contains(&check) {
                    facts.checks_seen.push(check.clone());
                }
                if e["ok"] != Value::Bool(false) || rules.ignore_checks.contains(&check) {
                    continue;
                }
                let who = e["task_name"].as_str().unwrap_or("kernel").to_string();
                facts.failed_checks.push((check.clone(), who.clone(), n));
                if rules.excused.contains(&super::blame::Symptom::Check { name: check.clone(), task: who.clone() }) {
                    continue;
                }
                let into_task = order.iter().rev().find(|id| wanted[*id].task == who && !open[*id].missed);
                let culprit = into_task.or_else(|| order.iter().rev().find(|id| !open[*id].missed)).copied();
                if let Some(id) = culprit {
                    let o = open.get_mut(&id).expect("ordered ids are open");
                    o.corrupt.get_or_insert((format!("check {check:?} by {who} failed"), n));
                }
            }
            "task_exit" => {
                let code = e["code"].as_u64().unwrap_or(0);
                for id in order.iter().filter(|id| wanted[*id].task == name) {
                    let o = open.get_mut(id).expect("ordered ids are open");
                    if o.ended {
                        continue;
                    }
                    o.ended = true;
                    if code != 0 && o.outcome.is_none() && o.seq.is_none() {
                        o.corrupt.get_or_insert((format!("{name} exited with code {code}"), n));
                    }
                    if o.outcome.is_none() && o.corrupt.is_none() && o.seq.is_none() {
                        o.outcome =
                            Some((Outcome::NotManifested, format!("{name} finished (exit {code}) without a fault"), n));
                    }
                }
            }
            "kernel_fault" | "kernel_panic" => {
                system_down.get_or_insert((format!("{ev} at event line {n}"), n));
                facts.kernel_alive = false;
            }
            "all_tasks_done" => facts.blocked_at_end = e["blocked"].as_u64(),
            _ => {}
        }
    }
    if let Some((&seq, &n)) = server_faults.iter().next() {
        facts.fault_server_lost.get_or_insert(format!("it faulted (seq {seq}, event line {n}) and was not restarted"));
        system_down.get_or_insert((format!("the fault server faulted (seq {seq}) and was not restarted"), n));
    }
    if !end.kernel_alive() {
        system_down.get_or_insert((format!("the boot ended: {}", end.describe()), last_line.max(1)));
    }
    let timed_out = matches!(end, End::Deadline | End::WallTimeout);
    let clean = end.kernel_alive() && !timed_out;
    // The culprit of a system failure: the latest injection fired before it.
    let culprit = system_down
        .as_ref()
        .and_then(|(_, n)| order.iter().rev().find(|id| open[*id].line <= *n && !open[*id].missed).copied());

    let mut verdicts = Vec::new();
    for p in planned {
        let Some(o) = open.get(&p.id).filter(|o| !o.missed) else {
            let detail = not_fired.get(&p.id).cloned().unwrap_or_else(|| "never fired (the boot ended first)".into());
            verdicts.push(Verdict {
                id: p.id,
                outcome: Outcome::NotFired,
                detail,
                seq: None,
                rip: open.get(&p.id).and_then(|o| o.rip.clone()),
                function: None,
                inject_tsc: open.get(&p.id).map(|o| o.tsc),
                latency: None,
                dormant: None,
                excerpt_lines: None,
                excerpt_fnv: None,
                golden_diff: Vec::new(),
            });
            continue;
        };
        let server = rules.servers.contains(&p.task);
        let (outcome, detail, upto) = if culprit == Some(p.id) {
            let (why, n) = system_down.clone().expect("a culprit implies a failure");
            (Outcome::SystemFailure, why, n)
        } else if o.seq.is_some() && o.outcome.is_none() {
            (Outcome::Hang, format!("fault seq {} never answered ({})", o.seq.unwrap_or(0), end.describe()), last_line)
        } else if o.seq.is_none()
            && !o.ended
            && o.corrupt.is_none()
            && !server
            && (timed_out || clean)
            && !rules.excused.contains(&super::blame::Symptom::Unfinished { task: p.task.clone() })
        {
            (Outcome::Hang, format!("{} never finished ({})", p.task, end.describe()), last_line)
        } else if let Some((why, n)) = &o.corrupt {
            (Outcome::SilentCorruption, why.clone(), *n)
        } else if let Some((out, why, n)) = &o.outcome {
            (*out, why.clone(), *n)
        } else if server {
            (Outcome::NotManifested, format!("no fault of {} (a server)", p.task), last_line)
        } else {
            (Outcome::NotManifested, format!("no fault; observation cut short ({})", end.describe()), last_line)
        };
        let upto = upto.max(o.line);
        let lines = [o.line, upto];
        verdicts.push(Verdict {
            id: p.id,
            outcome,
            detail,
            seq: o.seq,
            rip: o.rip.clone(),
            function: None,
            inject_tsc: Some(o.tsc),
            latency: if matches!(outcome, Outcome::Recovered | Outcome::Escalated) { o.latency } else { None },
            dormant: if o.seq_from_inject { None } else { o.fault_tsc.map(|t| t.saturating_sub(o.tsc)) },
            excerpt_lines: Some(lines),
            excerpt_fnv: Some(fnv(&excerpt(events, lines))),
            golden_diff: Vec::new(),
        });
    }
    (verdicts, facts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::Verdict as Exit;

    fn planned(id: u64, task: &str, kind: &str) -> Planned {
        Planned { id, batch: 0, source: "test".into(), kind: kind.into(), task: task.into(), line: String::new() }
    }

    fn rules() -> Rules<'static> {
        static SERVERS: [String; 0] = [];
        Rules { fault_server: "fault-server", servers: &SERVERS, ignore_checks: &SERVERS, excused: &[] }
    }

    const CLEAN: End = End::Exit(Exit::Guest(abi::exit::GuestExit::Success));

    #[test]
    fn synthetic_fault_restarted_from_image_is_escalated_with_latency() {
        let events = br#"{"ev":"inject","tsc":100,"id":1,"task":3,"name":"a","kind":"ud","rip":"0x1","seq":2}
{"ev":"fault","tsc":120,"task":3,"name":"a","seq":2}
{"ev":"restart","tsc":400,"task":3,"name":"a","seq":2,"from":"image","delay_ms":0,"restarts":1}
{"ev":"task_exit","tsc":900,"task":3,"name":"a","code":0}
{"ev":"shutdown","tsc":901,"code":0}
"#;
        let (v, f) = classify(&[planned(1, "a", "ud")], events, CLEAN, &rules());
        assert_eq!(v[0].outcome, Outcome::Escalated);
        assert_eq!(v[0].latency, Some(300));
        assert_eq!(v[0].excerpt_lines, Some([1, 3]));
        assert!(f.kernel_alive);
    }

    #[test]
    fn late_fault_is_claimed_and_checkpoint_restart_is_recovered() {
        let events = br#"{"ev":"inject","tsc":100,"id":1,"task":3,"name":"a","kind":"regflip","rip":"0x1"}
{"ev":"fault","tsc":500,"task":3,"name":"a","seq":7}
{"ev":"restart","tsc":800,"task":3,"name":"a","seq":7,"from":"checkpoint","scope":1,"attempt":1}
{"ev":"task_exit","tsc":900,"task":3,"name":"a","code":0}
"#;
        let (v, _) = classify(&[planned(1, "a", "regflip")], events, CLEAN, &rules());
        assert_eq!(v[0].outcome, Outcome::Recovered);
        assert_eq!((v[0].latency, v[0].dormant), (Some(300), Some(400)));
    }

    #[test]
    fn flips_that_do_nothing_and_failed_checks_and_hangs() {
        let events = br#"{"ev":"inject","tsc":100,"id":1,"task":3,"name":"a","kind":"memflip","rip":"0x1"}
{"ev":"inject","tsc":110,"id":2,"task":4,"name":"b","kind":"memflip","rip":"0x1"}
{"ev":"inject","tsc":120,"id":3,"task":5,"name":"c","kind":"hang","rip":"0x1"}
{"ev":"check","tsc":130,"task":4,"task_name":"b","name":"bank-total","ok":false}
{"ev":"task_exit","tsc":200,"task":3,"name":"a","code":0}
{"ev":"task_exit","tsc":210,"task":4,"name":"b","code":0}
{"ev":"inject_missed","tsc":300,"id":4,"reason":"task not alive"}
{"ev":"inject_missed","tsc":999,"id":0,"reason":"no such task"}
"#;
        let p =
            [planned(1, "a", "memflip"), planned(2, "b", "memflip"), planned(3, "c", "hang"), planned(4, "d", "ud")];
        let (v, f) = classify(&p, events, End::Deadline, &rules());
        let outcomes: Vec<Outcome> = v.iter().map(|v| v.outcome).collect();
        assert_eq!(outcomes, [Outcome::NotManifested, Outcome::SilentCorruption, Outcome::Hang, Outcome::NotFired]);
        assert_eq!(f.failed_checks.len(), 1);
        assert!(f.kernel_alive);
    }

    #[test]
    fn a_kernel_fault_is_a_system_failure_of_the_latest_injection() {
        let events = br#"{"ev":"inject","tsc":100,"id":1,"task":3,"name":"a","kind":"ud","rip":"0x1","seq":1}
{"ev":"restart","tsc":200,"task":3,"name":"a","seq":1,"from":"image"}
{"ev":"inject","tsc":300,"id":2,"task":3,"name":"a","kind":"regflip","rip":"0x1"}
{"ev":"kernel_fault","tsc":400,"vector":14}
{"ev":"shutdown","tsc":401,"code":3}
"#;
        let end = End::Exit(Exit::Guest(abi::exit::GuestExit::KernelFault));
        let (v, f) = classify(&[planned(1, "a", "ud"), planned(2, "a", "regflip")], events, end, &rules());
        assert_eq!(v[0].outcome, Outcome::Escalated);
        assert_eq!(v[1].outcome, Outcome::SystemFailure);
        assert!(!f.kernel_alive);
    }
}
