//! An SVG chart of a report: outcomes per kind and per task, the
//! distribution of recovery latencies, and the expectations as judged.
//!
//! Why hand-written SVG: the chart is a few simple figures, a plotting crate
//! would dwarf the runner, and a self-contained `.svg` opens in any browser
//! or CI artifact viewer without scripts or fonts to fetch. Like the JSON,
//! it is a pure function of the report: same report, same bytes.

use super::classify::Outcome;
use super::report::{Report, Row};
use std::fmt::Write;

const COLORS: [(Outcome, &str); 7] = [
    (Outcome::NotFired, "#c7c7c7"),
    (Outcome::NotManifested, "#9ecae1"),
    (Outcome::Recovered, "#31a354"),
    (Outcome::Escalated, "#fdae6b"),
    (Outcome::SilentCorruption, "#9e3cb3"),
    (Outcome::Hang, "#e6550d"),
    (Outcome::SystemFailure, "#000000"),
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

pub fn svg(r: &Report) -> String {
    let kinds: Vec<(&String, &Row)> = r.summary.by_kind.iter().collect();
    let tasks: Vec<(&String, &Row)> = r.summary.by_task.iter().collect();
    let bar_h = 22;
    let left = 150;
    let width = 900;
    let bars_w = width - left - 30;
    let top = 70;
    let section = |rows: usize| 30 + rows as i64 * (bar_h + 8);
    let tasks_top = top + section(kinds.len());
    let hist_top = tasks_top + section(tasks.len()) + 50;
    let hist_h = 180;
    let expect_top = hist_top + hist_h + 60;
    let height = expect_top + 30 + 18 * r.expectations.len() as i64 + 20;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="22" font-size="16">{} — seed {}: {} injections, {}</text>"#,
        esc(&r.script),
        r.seed,
        r.summary.total.injections,
        if r.passed { "passed" } else { "FAILED" }
    );
    // Legend.
    let mut x = 10;
    for (o, c) in COLORS {
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="36" width="12" height="12" fill="{c}"/><text x="{}" y="46">{}</text>"#,
            x + 16,
            o.name()
        );
        x += 16 + 8 * o.name().len() as i64 + 14;
    }
    bars(&mut s, "Outcomes per kind", top, &kinds, left, bars_w, bar_h);
    bars(&mut s, "Outcomes per task", tasks_top, &tasks, left, bars_w, bar_h);
    // Latency histogram, log2 bins.
    let lat: Vec<u64> = r.injections.iter().filter_map(|e| e.verdict.latency).collect();
    let _ = writeln!(
        s,
        r#"<text x="10" y="{}" font-size="14">Recovery latency (guest instructions, log2 bins): {} restarts</text>"#,
        hist_top - 20,
        lat.len()
    );
    if !lat.is_empty() {
        let bin = |v: u64| 63 - v.max(1).leading_zeros() as usize;
        let lo = lat.iter().map(|v| bin(*v)).min().unwrap_or(0);
        let hi = lat.iter().map(|v| bin(*v)).max().unwrap_or(0);
        let mut counts = vec![0u64; hi - lo + 1];
        for v in &lat {
            counts[bin(*v) - lo] += 1;
        }
        let most = counts.iter().copied().max().unwrap_or(1).max(1);
        let bw = (bars_w as f64 / counts.len() as f64).min(80.0);
        for (i, n) in counts.iter().enumerate() {
            let h = hist_h as f64 * *n as f64 / most as f64;
            let x = left as f64 + i as f64 * bw;
            let y = (hist_top + hist_h) as f64 - h;
            let (a, b, w) = (lo + i, lo + i + 1, bw - 2.0);
            let _ = writeln!(
                s,
                r##"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" fill="#3182bd"><title>[2^{a}, 2^{b}): {n}</title></rect>"##
            );
            let _ =
                writeln!(s, r#"<text x="{x:.1}" y="{}" font-size="10">2^{}</text>"#, hist_top + hist_h + 14, lo + i);
            if *n > 0 {
                let _ = writeln!(s, r#"<text x="{x:.1}" y="{:.1}" font-size="10">{n}</text>"#, y - 3.0);
            }
        }
    }
    // The expectations, as judged.
    let _ = writeln!(s, r#"<text x="10" y="{}" font-size="14">Expectations</text>"#, expect_top);
    for (i, e) in r.expectations.iter().enumerate() {
        let y = expect_top + 22 + 18 * i as i64;
        let (mark, color) = if e.ok { ("ok", "#31a354") } else { ("FAIL", "#e6550d") };
        let detail: String = e.detail.chars().take(110).collect();
        let _ = writeln!(
            s,
            r#"<text x="10" y="{y}"><tspan fill="{color}" font-weight="bold">{mark}</tspan> {}: {}</text>"#,
            esc(&e.name),
            esc(&detail)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// One stacked bar per row, each scaled to its own count, under a title.
fn bars(s: &mut String, title: &str, top: i64, rows: &[(&String, &Row)], left: i64, bars_w: i64, bar_h: i64) {
    let _ = writeln!(s, r#"<text x="10" y="{}" font-size="14">{title}</text>"#, top + 4);
    for (i, (name, row)) in rows.iter().enumerate() {
        let y = top + 14 + i as i64 * (bar_h + 8);
        let _ = writeln!(s, r#"<text x="10" y="{}">{} ({})</text>"#, y + 15, esc(name), row.injections);
        let mut x = left as f64;
        for (o, c) in COLORS {
            let n = row.count(o);
            if n == 0 || row.injections == 0 {
                continue;
            }
            let w = bars_w as f64 * n as f64 / row.injections as f64;
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{y}" width="{w:.1}" height="{bar_h}" fill="{c}"><title>{} {}: {n}</title></rect>"#,
                esc(name),
                o.name()
            );
            x += w;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::report::{Expectation, Summary};
    use super::*;

    #[test]
    fn per_task_bars_and_the_expectations_are_drawn() {
        let mut row = Row { injections: 3, ..Row::default() };
        row.outcomes.insert("recovered".into(), 2);
        row.outcomes.insert("hang".into(), 1);
        let mut summary = Summary::default();
        summary.by_kind.insert("ud".into(), row.clone());
        summary.by_task.insert("spin-<0>".into(), row);
        let r = Report {
            format: 2,
            script: "faults/x.toml".into(),
            description: String::new(),
            seed: 1,
            profile: "debug".into(),
            image_fnv: String::new(),
            kernel_fnv: String::new(),
            summary,
            batches: Vec::new(),
            injections: Vec::new(),
            expectations: vec![
                Expectation { name: "max_hangs".into(), ok: false, detail: "1 hang (limit 0)".into() },
                Expectation { name: "kernel_alive".into(), ok: true, detail: "1 boot".into() },
            ],
            passed: false,
        };
        let svg = svg(&r);
        assert!(svg.contains("<title>spin-&lt;0&gt; recovered: 2</title>"), "{svg}");
        assert!(svg.contains("<title>spin-&lt;0&gt; hang: 1</title>"), "{svg}");
        assert!(svg.contains(">FAIL</tspan> max_hangs: 1 hang (limit 0)</text>"), "{svg}");
        assert!(svg.contains(">ok</tspan> kernel_alive: 1 boot</text>"), "{svg}");
        assert!(svg.contains("FAILED</text>"));
    }
}
