//! An SVG chart of a report: outcomes per kind, and the distribution of
//! recovery latencies.
//!
//! Why hand-written SVG: the chart is two simple figures, a plotting crate
//! would dwarf the runner, and a self-contained `.svg` opens in any browser
//! or CI artifact viewer without scripts or fonts to fetch. Like the JSON,
//! it is a pure function of the report: same report, same bytes.

use super::classify::Outcome;
use super::report::Report;
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
    let rows: Vec<(&String, &super::report::Row)> = r.summary.by_kind.iter().collect();
    let bar_h = 22;
    let left = 110;
    let width = 900;
    let bars_w = width - left - 30;
    let top = 70;
    let bars_end = top + rows.len() as i64 * (bar_h + 8);
    let hist_top = bars_end + 80;
    let hist_h = 180;
    let height = hist_top + hist_h + 60;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="22" font-size="16">{} — seed {}: {} injections</text>"#,
        esc(&r.script),
        r.seed,
        r.summary.total.injections
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
    // Outcomes per kind: one stacked bar each, scaled to its own count.
    for (i, (kind, row)) in rows.iter().enumerate() {
        let y = top + i as i64 * (bar_h + 8);
        let _ = writeln!(s, r#"<text x="10" y="{}">{} ({})</text>"#, y + 15, esc(kind), row.injections);
        let mut x = left as f64;
        for (o, c) in COLORS {
            let n = row.count(o);
            if n == 0 || row.injections == 0 {
                continue;
            }
            let w = bars_w as f64 * n as f64 / row.injections as f64;
            let _ = writeln!(
                s,
                r#"<rect x="{x:.1}" y="{y}" width="{w:.1}" height="{bar_h}" fill="{c}"><title>{kind} {}: {n}</title></rect>"#,
                o.name()
            );
            x += w;
        }
    }
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
    s.push_str("</svg>\n");
    s
}
