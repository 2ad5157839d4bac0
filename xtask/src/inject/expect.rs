//! Judging a finished campaign against the script's `[expect]` table.
//!
//! Why each expectation is its own line with its own reason: a red CI run
//! must say *which* promise broke and where to look (a batch, a check, an
//! injection id to `--replay`), not just "failed". An expectation whose
//! evidence the workload never produced — no lock checks reported, say —
//! passes but says so ("nothing to verify"), so a green run is never
//! mistaken for a proof it is not.

use super::classify::Outcome;
use super::report::{BatchReport, Entry, Expectation, Summary};
use super::script::Script;

pub fn judge(script: &Script, batches: &[BatchReport], entries: &[Entry], summary: &Summary) -> Vec<Expectation> {
    let x = &script.expect;
    let mut out = Vec::new();
    let mut push = |name: &str, ok: bool, detail: String| out.push(Expectation { name: name.into(), ok, detail });

    if x.kernel_alive {
        let dead: Vec<String> = batches
            .iter()
            .filter(|b| !b.facts.kernel_alive)
            .map(|b| format!("batch {}: {}", b.index, b.facts.end))
            .collect();
        push(
            "kernel_alive",
            dead.is_empty(),
            if dead.is_empty() {
                format!("{} boots, kernel alive at the end of each", batches.len())
            } else {
                first(&dead)
            },
        );
    }
    if x.fault_server_alive {
        let lost: Vec<String> = batches
            .iter()
            .filter_map(|b| {
                b.facts
                    .fault_server_lost
                    .as_ref()
                    .map(|why| format!("batch {}: {} {why}", b.index, script.run.fault_server))
            })
            .collect();
        push(
            "fault_server_alive",
            lost.is_empty(),
            if lost.is_empty() { format!("{} never lost", script.run.fault_server) } else { first(&lost) },
        );
    }
    if x.no_leaked_locks {
        let allowed = script.run.servers.len() as u64;
        let mut bad: Vec<String> = batches
            .iter()
            .filter_map(|b| {
                let blocked = b.facts.blocked_at_end?;
                (blocked > allowed).then(|| {
                    format!("batch {}: {blocked} tasks blocked forever at the end (servers: {allowed})", b.index)
                })
            })
            .collect();
        bad.extend(failed_named(batches, &script.checks.locks));
        let seen = seen_any(batches, &script.checks.locks);
        let detail = if !bad.is_empty() {
            first(&bad)
        } else if seen {
            "no task left blocked; every lock check held".into()
        } else {
            format!("no task left blocked; no lock checks ({}) reported", script.checks.locks.join(", "))
        };
        push("no_leaked_locks", bad.is_empty(), detail);
    }
    if x.arc_consistent {
        let bad = failed_named(batches, &script.checks.arcs);
        let detail = if !bad.is_empty() {
            first(&bad)
        } else if seen_any(batches, &script.checks.arcs) {
            "every Arc check held".into()
        } else {
            format!("nothing to verify: no Arc checks ({}) reported", script.checks.arcs.join(", "))
        };
        push("arc_consistent", bad.is_empty(), detail);
    }
    for name in &x.invariants {
        let names = std::slice::from_ref(name);
        let bad = failed_named(batches, names);
        let detail = if !bad.is_empty() {
            first(&bad)
        } else if seen_any(batches, names) {
            "always held".into()
        } else {
            "nothing to verify: never reported".into()
        };
        push(&format!("invariant {name}"), bad.is_empty(), detail);
    }
    if let Some(max) = x.max_recovery_instructions {
        let worst = entries.iter().filter_map(|e| e.verdict.latency.map(|l| (l, e.planned.id))).max();
        let (ok, detail) = match worst {
            Some((l, id)) if l > max => (false, format!("injection {id} took {l} instructions (limit {max})")),
            Some((l, _)) => (true, format!("max {l} ≤ {max}")),
            None => (true, "no restarts to measure".into()),
        };
        push("max_recovery_instructions", ok, detail);
    }
    if let Some(min) = x.min_recovered_percent {
        let (ok, detail) = match summary.total.recovered_percent {
            Some(p) => (p >= min, format!("{p:.2} % of manifested faults recovered (minimum {min} %)")),
            None => (true, "no fault manifested".into()),
        };
        push("min_recovered_percent", ok, detail);
    }
    let limits = [
        (x.max_hangs, Outcome::Hang, "max_hangs"),
        (x.max_silent_corruptions, Outcome::SilentCorruption, "max_silent_corruptions"),
        (x.max_system_failures, Outcome::SystemFailure, "max_system_failures"),
    ];
    for (limit, outcome, name) in limits {
        if let Some(limit) = limit {
            let n = summary.total.count(outcome);
            let example = entries
                .iter()
                .find(|e| e.verdict.outcome == outcome)
                .map(|e| format!("; e.g. injection {}: {}", e.planned.id, e.verdict.detail))
                .unwrap_or_default();
            push(name, n <= limit, format!("{n} {} (limit {limit}){example}", outcome.name()));
        }
    }
    out
}

fn first(list: &[String]) -> String {
    match list.len() {
        1 => list[0].clone(),
        n => format!("{} (and {} more)", list[0], n - 1),
    }
}

fn failed_named(batches: &[BatchReport], names: &[String]) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            b.facts.failed_checks.iter().filter(|(n, _, _)| names.contains(n)).map(move |(n, who, line)| {
                format!("batch {}: check {n:?} by {who} failed (event line {line})", b.index)
            })
        })
        .collect()
}

fn seen_any(batches: &[BatchReport], names: &[String]) -> bool {
    batches.iter().any(|b| b.facts.checks_seen.iter().any(|c| names.contains(c)))
}
