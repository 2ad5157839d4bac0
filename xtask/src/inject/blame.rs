//! Blame by bisection: the injection of a batch a failure appeared with.
//!
//! Why: the classifier blames a failed check on the latest injection into
//! the task that reported it, and a task that never finished on every
//! injection into it (`classify.rs`). That is right when a task's fault
//! shows in its own checks soon after, and wrong when it does not: a
//! skipped store in one consumer leaks a buffer that the producer's audit
//! finds at the end and that timing pins on the producer's last
//! injection, a `ud` it recovered from; a server's flipped register is
//! answered wrongly to a client that rolls back, and the server's check
//! blames its own latest fault. Wrong blame hides a real bug behind a
//! flip, or a flip's limit behind a bug.
//!
//! How: under icount a boot is a pure function of its image and plan, so
//! the runner can ask directly. For each *symptom* of a batch (a failed
//! check of one task, a task that never finished), it boots the batch
//! again with only the first k injections enabled, in the order they came
//! due in the full run, and searches for the smallest k whose boot shows
//! the symptom: the k-th injection is the one the failure appeared with
//! (the boot with k − 1 is clean of it, the boot with k is not). The
//! prefix plan is the full plan's text but for the mask on its `seed`
//! line (`prefix_plan`), and the kernel follows a disabled injection
//! exactly like an enabled one up to the instant it would act: so the
//! prefix boot is, instruction for instruction, the full run's up to the
//! first disabled injection's instant, which comes after every enabled
//! one's. Each prefix boot is checked for that (`faithful`: every enabled
//! injection came due at the same guest instant), and a bisection whose
//! prefix boot drifts is reported as unreliable and changes no blame. About log2(injections) boots per
//! symptom, only for batches with a failure.
//!
//! The result is recorded in the batch's facts (`Bisected`), and the
//! verdicts are rebuilt from it (`excused`, `charge`): the symptom no
//! longer counts against the injection timing picked, and counts against
//! the one the bisection found. `--replay` applies the recorded result the same
//! way, so it shows the report's verdicts without booting the prefixes.

use super::classify::{Outcome, Rules, Verdict};
use super::plan::Batch;
use super::run::End;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// A failure of a boot that timing alone may blame wrongly.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Symptom {
    /// Check `name` reported not ok by task `task`.
    Check { name: String, task: String },
    /// Task `task` started and never exited (nor was stopped).
    Unfinished { task: String },
}

impl Symptom {
    pub fn show(&self) -> String {
        match self {
            Symptom::Check { name, task } => format!("check {name:?} by {task} failed"),
            Symptom::Unfinished { task } => format!("{task} never finished"),
        }
    }
}

/// What the bisection of one symptom found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bisected {
    pub symptom: Symptom,
    /// The injection it appeared with; `None`: unreliable (see `note`).
    pub culprit: Option<u64>,
    /// Prefix boots: (injections enabled, whether the symptom showed).
    pub boots: Vec<(usize, bool)>,
    pub note: String,
}

/// The symptoms of a boot: failed checks (but the script's ignored ones)
/// and, when the boot ended with the kernel alive, tasks that never
/// finished (but the fault server and the script's servers).
pub fn symptoms(events: &[u8], end: End, rules: &Rules) -> BTreeSet<Symptom> {
    let mut out = BTreeSet::new();
    let mut running: BTreeSet<String> = BTreeSet::new();
    for line in events.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let Ok(e) = serde_json::from_slice::<Value>(line) else { continue };
        let name = e["name"].as_str().unwrap_or("").to_string();
        match e["ev"].as_str().unwrap_or("") {
            "check" if e["ok"] == Value::Bool(false) => {
                let check = e["name"].as_str().unwrap_or("?").to_string();
                if !rules.ignore_checks.contains(&check) {
                    let task = e["task_name"].as_str().unwrap_or("kernel").to_string();
                    out.insert(Symptom::Check { name: check, task });
                }
            }
            "task_start" => {
                running.insert(name);
            }
            "task_exit" => {
                running.remove(&name);
            }
            // The kernel's own `escalate` (no `by`): the task was stopped.
            "escalate" if e.get("by").is_none() => {
                running.remove(&name);
            }
            _ => {}
        }
    }
    if end.kernel_alive() {
        for task in running {
            if task != rules.fault_server && !rules.servers.contains(&task) {
                out.insert(Symptom::Unfinished { task });
            }
        }
    }
    out
}

/// When each planned injection came due in a boot: the tsc of its
/// `inject` or `inject_missed` event.
fn due_times(events: &[u8], ids: &BTreeSet<u64>) -> BTreeMap<u64, u64> {
    let mut out = BTreeMap::new();
    for line in events.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        if !line.starts_with(b"{\"ev\":\"inject") || line.starts_with(b"{\"ev\":\"inject_armed") {
            continue;
        }
        let Ok(e) = serde_json::from_slice::<Value>(line) else { continue };
        if let (Some(id), Some(tsc)) = (e["id"].as_u64(), e["tsc"].as_u64())
            && ids.contains(&id)
        {
            out.entry(id).or_insert(tsc);
        }
    }
    out
}

/// The batch's plan with only the injections in `enabled` able to act:
/// the same text but the `seed` line's mask (`Batch::plan_text_enabled`),
/// so the kernel does the same work for every injection, tick by tick, up
/// to the instant a disabled one would act.
/// A batch holds at most `MAX_BATCH` injections, so the mask's 64 bits
/// cover them and the deadline marker after them.
const _: () = assert!(super::script::MAX_BATCH < 64);

fn prefix_plan(b: &Batch, enabled: &BTreeSet<u64>) -> String {
    let mask =
        b.injections.iter().enumerate().filter(|(_, p)| enabled.contains(&p.id)).fold(0u64, |m, (i, _)| m | 1 << i);
    // The deadline marker, after the injections, stays enabled.
    b.plan_text_enabled(mask | !((1u64 << b.injections.len()) - 1))
}

/// Bisects every symptom of a boot (`events`, `end`) of batch `b` that
/// made an injection silent corruption or a hang. `boot(plan)` boots a
/// plan of the batch and returns its events and end. Prefix boots are
/// shared between symptoms.
pub fn bisect(
    b: &Batch,
    verdicts: &[Verdict],
    events: &[u8],
    end: End,
    rules: &Rules,
    mut boot: impl FnMut(usize, &str) -> Result<(Vec<u8>, End)>,
) -> Result<Vec<Bisected>> {
    let failing = verdicts.iter().any(|v| matches!(v.outcome, Outcome::SilentCorruption | Outcome::Hang));
    if !failing || !end.kernel_alive() {
        return Ok(Vec::new());
    }
    let ids: BTreeSet<u64> = b.injections.iter().map(|p| p.id).collect();
    let due = due_times(events, &ids);
    let mut order: Vec<(u64, u64)> = due.iter().map(|(&id, &tsc)| (tsc, id)).collect();
    order.sort_unstable();
    let order: Vec<u64> = order.into_iter().map(|(_, id)| id).collect();
    let full = symptoms(events, end, rules);
    let mut cache: BTreeMap<usize, Option<BTreeSet<Symptom>>> = BTreeMap::new();
    let mut out = Vec::new();
    for symptom in full {
        let mut boots = Vec::new();
        let (mut lo, mut hi) = (0usize, order.len());
        let mut unreliable = None;
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            if let std::collections::btree_map::Entry::Vacant(slot) = cache.entry(mid) {
                let enabled: BTreeSet<u64> = order[..mid].iter().copied().collect();
                let (ev, e) = boot(mid, &prefix_plan(b, &enabled))?;
                // Faithful: every enabled injection came due when it did in
                // the full run.
                let prefix_due = due_times(&ev, &enabled);
                let faithful = enabled.iter().all(|id| prefix_due.get(id) == due.get(id));
                slot.insert(faithful.then(|| symptoms(&ev, e, rules)));
            }
            match &cache[&mid] {
                Some(s) => {
                    let shows = s.contains(&symptom);
                    boots.push((mid, shows));
                    if shows { hi = mid } else { lo = mid }
                }
                None => {
                    unreliable = Some(format!("the boot with the first {mid} injections drifted from the full run"));
                    break;
                }
            }
        }
        let (culprit, note) = match (unreliable, order.get(hi.wrapping_sub(1))) {
            (Some(why), _) => (None, why),
            (None, None) => (None, "no injection came due".to_string()),
            (None, Some(&id)) => {
                let fired = verdicts.iter().any(|v| v.id == id && v.outcome != Outcome::NotFired);
                if fired {
                    (Some(id), format!("absent with the first {} injections, present with {hi}", hi - 1))
                } else {
                    (None, format!("it appeared with injection {id}, which never fired: not monotonic"))
                }
            }
        };
        out.push(Bisected { symptom, culprit, boots, note });
    }
    Ok(out)
}

/// The symptoms a bisection pinned on an injection: the classifier
/// excuses these (`Rules::excused`), and [`charge`] gives them to their
/// culprits. Unreliable bisections excuse nothing.
pub fn excused(found: &[Bisected]) -> Vec<Symptom> {
    found.iter().filter(|f| f.culprit.is_some()).map(|f| f.symptom.clone()).collect()
}

/// The tasks a bisection pinned a failure of on an injection, with it:
/// their golden-run divergences are that failure again
/// (`golden::apply`).
pub fn explained(found: &[Bisected]) -> Vec<(String, u64)> {
    found
        .iter()
        .filter_map(|f| {
            let task = match &f.symptom {
                Symptom::Check { task, .. } | Symptom::Unfinished { task } => task.clone(),
            };
            f.culprit.map(|c| (task, c))
        })
        .collect()
}

/// Charges each bisected symptom to its culprit, in verdicts classified
/// with the symptoms excused: silent corruption for a failed check, a
/// hang for a task that never finished; the worse outcome wins.
pub fn charge(verdicts: &mut [Verdict], found: &[Bisected]) {
    for f in found {
        let Some(v) = verdicts.iter_mut().find(|v| Some(v.id) == f.culprit) else { continue };
        let outcome = match f.symptom {
            Symptom::Check { .. } => Outcome::SilentCorruption,
            Symptom::Unfinished { .. } => Outcome::Hang,
        };
        if outcome > v.outcome {
            v.detail =
                format!("{} (bisected: {}; classified {}: {})", f.symptom.show(), f.note, v.outcome.name(), v.detail);
            v.outcome = outcome;
            v.latency = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inject::classify;
    use crate::inject::plan::Planned;

    fn rules() -> Rules<'static> {
        static NONE: [String; 0] = [];
        static EXCUSED: [Symptom; 0] = [];
        Rules { fault_server: "fault-server", servers: &NONE, ignore_checks: &NONE, excused: &EXCUSED }
    }

    #[test]
    fn a_prefix_plan_differs_from_the_full_one_only_in_its_mask() {
        let p = |id: u64| Planned {
            id,
            batch: 0,
            source: "test".into(),
            kind: "ud".into(),
            task: "a".into(),
            line: format!("inject id={id} task=a at=tick:{id} kind=ud"),
        };
        let b = Batch { index: 0, seed: 3, deadline_ms: 100, injections: vec![p(4), p(7), p(9)] };
        let full = b.plan_text();
        let prefix = prefix_plan(&b, &[4, 9].into());
        assert_eq!(prefix.len(), full.len());
        let mask = 0b101 | !0b111u64;
        assert_eq!(prefix.lines().next().unwrap(), format!("seed 3 {mask:020}"));
        assert_eq!(prefix.lines().skip(1).collect::<Vec<_>>(), full.lines().skip(1).collect::<Vec<_>>());
    }

    #[test]
    fn symptoms_are_failed_checks_and_tasks_that_never_finished() {
        let events = br#"{"ev":"task_start","tsc":1,"task":2,"name":"a"}
{"ev":"task_start","tsc":1,"task":3,"name":"b"}
{"ev":"task_start","tsc":1,"task":1,"name":"fault-server"}
{"ev":"check","tsc":5,"task":2,"task_name":"a","name":"x","ok":false,"value":1}
{"ev":"check","tsc":5,"task":2,"task_name":"a","name":"y","ok":true,"value":1}
{"ev":"task_exit","tsc":9,"task":2,"name":"a","code":0}
"#;
        let s = symptoms(events, End::Deadline, &rules());
        let want: BTreeSet<Symptom> =
            [Symptom::Check { name: "x".into(), task: "a".into() }, Symptom::Unfinished { task: "b".into() }].into();
        assert_eq!(s, want);
    }

    /// A fake boot: injection 3 (the second to come due) leaks, and the
    /// audit of task `p` fails when it fired; every prefix is faithful.
    #[test]
    fn bisection_finds_the_injection_the_failure_appeared_with() {
        let planned = |id: u64, task: &str| Planned {
            id,
            batch: 0,
            source: "test".into(),
            kind: "skip".into(),
            task: task.into(),
            line: format!("inject id={id} task={task} at=tick:{} kind=skip len=1", id * 10),
        };
        let b = Batch {
            index: 0,
            seed: 1,
            deadline_ms: 100,
            injections: vec![planned(1, "c"), planned(3, "c"), planned(5, "p")],
        };
        let boot_events = |enabled: &[u64]| {
            let mut ev = String::from("{\"ev\":\"task_start\",\"tsc\":1,\"task\":2,\"name\":\"p\"}\n");
            ev.push_str("{\"ev\":\"task_start\",\"tsc\":1,\"task\":3,\"name\":\"c\"}\n");
            for (id, tsc, task) in [(1, 10, "c"), (3, 30, "c"), (5, 50, "p")] {
                // A disabled injection is dropped without a trace.
                if enabled.contains(&id) {
                    ev.push_str(&format!("{{\"ev\":\"inject\",\"tsc\":{tsc},\"id\":{id},\"name\":\"{task}\",\"kind\":\"skip\",\"rip\":\"0x1\"}}\n"));
                }
            }
            let ok = !enabled.contains(&3);
            ev.push_str(&format!("{{\"ev\":\"check\",\"tsc\":90,\"task\":2,\"task_name\":\"p\",\"name\":\"audit\",\"ok\":{ok},\"value\":1}}\n"));
            ev.push_str("{\"ev\":\"task_exit\",\"tsc\":95,\"task\":3,\"name\":\"c\",\"code\":0}\n");
            ev.push_str("{\"ev\":\"task_exit\",\"tsc\":96,\"task\":2,\"name\":\"p\",\"code\":0}\n");
            ev.into_bytes()
        };
        let full = boot_events(&[1, 3, 5]);
        let (verdicts, facts) = classify::classify(&b.injections, &full, End::Deadline, &rules());
        // Timing blames the latest injection into `p`: 5.
        assert_eq!(verdicts.iter().find(|v| v.outcome == Outcome::SilentCorruption).map(|v| v.id), Some(5));
        let mut booted = Vec::new();
        let found = bisect(&b, &verdicts, &full, End::Deadline, &rules(), |k, plan| {
            booted.push(k);
            let mask: u64 = plan.lines().next().unwrap().rsplit(' ').next().unwrap().parse().unwrap();
            let enabled: Vec<u64> =
                b.injections.iter().enumerate().filter(|(i, _)| mask & 1 << i != 0).map(|(_, p)| p.id).collect();
            Ok((boot_events(&enabled), End::Deadline))
        })
        .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].culprit, Some(3), "{found:?}");
        assert!(booted.len() <= 2, "{booted:?}");
        let _ = (verdicts, facts);
        let excused = excused(&found);
        let (mut v, _) =
            classify::classify(&b.injections, &full, End::Deadline, &Rules { excused: &excused, ..rules() });
        charge(&mut v, &found);
        let of = |id: u64| v.iter().find(|v| v.id == id).unwrap().outcome;
        assert_eq!((of(3), of(5)), (Outcome::SilentCorruption, Outcome::NotManifested), "{v:#?}");
    }
}
