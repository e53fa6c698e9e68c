//! `report.html`: a self-contained run report (no scripts, no external
//! files) with inline SVG charts: score per technique with 95 % bootstrap
//! intervals, the latency distribution, and token usage.

use std::fmt::Write as _;

use super::output::{ItemResult, RunSummary};

/// Escape text for HTML.
pub(crate) fn esc(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// The series colours of every techne report.
pub(crate) const PALETTE: [&str; 6] = ["#3b6fb6", "#d9822b", "#3d9a50", "#b63b5a", "#7a5cb8", "#8a8a8a"];

/// Bars with error bars: one per technique, the primary metric's mean and interval.
fn score_chart(summary: &RunSummary) -> Option<String> {
    let metric = summary.techniques.iter().find_map(|t| t.scores.keys().next().cloned())?;
    let rows: Vec<(&str, f64, f64, f64)> = summary
        .techniques
        .iter()
        .filter_map(|t| t.scores.get(&metric).map(|s| (t.name.as_str(), s.mean, s.low, s.high)))
        .collect();
    let (w, h, left, bottom, top) = (640.0, 300.0, 60.0, 50.0, 20.0);
    let plot_h = h - bottom - top;
    let slot = (w - left - 20.0) / rows.len().max(1) as f64;
    let y = |v: f64| top + plot_h * (1.0 - v.clamp(0.0, 1.0));
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="score per technique">"#
    );
    for tick in 0..=4 {
        let v = f64::from(tick) / 4.0;
        let _ = write!(
            svg,
            r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end">{v:.2}</text>"##,
            w - 20.0,
            left - 6.0,
            y(v) + 4.0,
            y = y(v)
        );
    }
    for (i, (name, mean, low, high)) in rows.iter().enumerate() {
        let x = left + slot * i as f64 + slot * 0.2;
        let bw = slot * 0.6;
        let color = PALETTE[i % PALETTE.len()];
        let _ = write!(
            svg,
            r##"<rect x="{x:.1}" y="{:.1}" width="{bw:.1}" height="{:.1}" fill="{color}"><title>{} {mean:.3} [{low:.3}, {high:.3}]</title></rect>"##,
            y(*mean),
            (y(0.0) - y(*mean)).max(0.0),
            esc(name)
        );
        let cx = x + bw / 2.0;
        let _ = write!(
            svg,
            r##"<line x1="{cx:.1}" x2="{cx:.1}" y1="{:.1}" y2="{:.1}" stroke="#222" stroke-width="2"/><line x1="{:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#222" stroke-width="2"/><line x1="{:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#222" stroke-width="2"/>"##,
            y(*low),
            y(*high),
            cx - 6.0,
            cx + 6.0,
            y(*low),
            y(*low),
            cx - 6.0,
            cx + 6.0,
            y(*high),
            y(*high)
        );
        let _ = write!(
            svg,
            r##"<text x="{cx:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text><text x="{cx:.1}" y="{:.1}" font-size="11" text-anchor="middle" fill="#444">{mean:.3}</text>"##,
            h - bottom + 18.0,
            esc(name),
            h - bottom + 34.0
        );
    }
    let _ = write!(
        svg,
        r##"<text x="14" y="{:.1}" font-size="12" transform="rotate(-90 14 {:.1})" text-anchor="middle">{} (95% CI)</text></svg>"##,
        top + plot_h / 2.0,
        top + plot_h / 2.0,
        esc(&metric)
    );
    Some(svg)
}

/// A histogram of item latencies, one colour per technique.
fn latency_chart(summary: &RunSummary, results: &[ItemResult]) -> String {
    let max = results.iter().map(|r| r.elapsed_ms).max().unwrap_or(0).max(1) as f64;
    let bins = 20usize;
    let names: Vec<&str> = summary.techniques.iter().map(|t| t.name.as_str()).collect();
    let mut counts = vec![vec![0usize; bins]; names.len().max(1)];
    for r in results {
        let t = names.iter().position(|n| *n == r.technique).unwrap_or(0);
        let b = ((r.elapsed_ms as f64 / max) * (bins as f64 - 1.0)).round() as usize;
        counts[t][b.min(bins - 1)] += 1;
    }
    let peak = counts.iter().flat_map(|c| c.iter()).copied().max().unwrap_or(1).max(1) as f64;
    let (w, h, left, bottom, top) = (640.0, 240.0, 50.0, 40.0, 15.0);
    let plot_w = w - left - 20.0;
    let plot_h = h - bottom - top;
    let bin_w = plot_w / bins as f64;
    let bar_w = bin_w / counts.len() as f64;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="latency distribution">"#
    );
    let _ = write!(
        svg,
        r##"<line x1="{left}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#999"/>"##,
        w - 20.0,
        top + plot_h,
        top + plot_h
    );
    for (t, row) in counts.iter().enumerate() {
        for (b, &c) in row.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let bh = plot_h * c as f64 / peak;
            let _ = write!(
                svg,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="{}"><title>{c} items</title></rect>"#,
                left + bin_w * b as f64 + bar_w * t as f64,
                top + plot_h - bh,
                bar_w.max(1.0),
                PALETTE[t % PALETTE.len()]
            );
        }
    }
    for i in 0..=4 {
        let v = max * f64::from(i) / 4.0;
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{} ms</text>"#,
            left + plot_w * f64::from(i) / 4.0,
            h - bottom + 16.0,
            if max < 20.0 { format!("{v:.1}") } else { format!("{v:.0}") }
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">tallest bin: {peak:.0} items</text>"#,
        w - 20.0,
        top + 10.0
    );
    svg.push_str("</svg>");
    svg
}

/// Token usage as two horizontal bars.
fn token_chart(summary: &RunSummary) -> String {
    let (p, c) = (summary.usage.prompt_tokens as f64, summary.usage.completion_tokens as f64);
    let total = (p + c).max(1.0);
    let w = 640.0;
    let scale = (w - 200.0) / total;
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="70" role="img" aria-label="tokens"><text x="0" y="22" font-size="12">prompt tokens</text><rect x="120" y="10" width="{:.1}" height="16" fill="{}"/><text x="{:.1}" y="22" font-size="12">{p}</text><text x="0" y="52" font-size="12">generated tokens</text><rect x="120" y="40" width="{:.1}" height="16" fill="{}"/><text x="{:.1}" y="52" font-size="12">{c}</text></svg>"##,
        (p * scale).max(1.0),
        PALETTE[0],
        126.0 + p * scale,
        (c * scale).max(1.0),
        PALETTE[1],
        126.0 + c * scale
    )
}

/// The style sheet of every techne HTML report.
pub(crate) const STYLE: &str = "
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:880px;color:#222}
h1{font-size:1.5rem} h2{font-size:1.15rem;margin-top:2rem} table{border-collapse:collapse;margin:.5rem 0}
td,th{border:1px solid #ddd;padding:.3rem .6rem;text-align:left;font-size:.9rem} th{background:#f4f4f4}
.legend span{display:inline-block;margin-right:1rem} .legend i{display:inline-block;width:.8rem;height:.8rem;margin-right:.3rem;vertical-align:middle}
";

/// The whole report.
pub fn render(summary: &RunSummary, results: &[ItemResult]) -> String {
    let mut html = String::new();
    let _ = write!(
        html,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>techne run {name}</title><style>{STYLE}</style></head><body><h1>techne run <code>{name}</code></h1>"#,
        name = esc(&summary.name)
    );
    let _ = write!(
        html,
        "<table><tr><th>items</th><td>{} of {} finished</td></tr><tr><th>succeeded / failed</th><td>{} / {}</td></tr>\
         <tr><th>seed</th><td>{}</td></tr><tr><th>latency p50 / p90</th><td>{} ms / {} ms</td></tr>\
         <tr><th>model requests</th><td>{} ({} cache hits)</td></tr><tr><th>wall time</th><td>{:.2} s</td></tr>",
        summary.items,
        summary.total_items,
        summary.succeeded,
        summary.failed,
        summary.seed,
        summary.latency_p50_ms,
        summary.latency_p90_ms,
        summary.usage.requests,
        summary.cache_hits,
        summary.elapsed_s
    );
    if let Some(stopped) = &summary.stopped {
        let _ = write!(html, "<tr><th>stopped early</th><td>{}</td></tr>", esc(&format!("{stopped:?}")));
    }
    html.push_str("</table>");
    html.push_str(r#"<p class="legend">"#);
    for (i, t) in summary.techniques.iter().enumerate() {
        let _ =
            write!(html, r#"<span><i style="background:{}"></i>{}</span>"#, PALETTE[i % PALETTE.len()], esc(&t.name));
    }
    html.push_str("</p>");
    if let Some(chart) = score_chart(summary) {
        html.push_str("<h2>Score per technique</h2>");
        html.push_str(&chart);
        html.push_str("<table><tr><th>technique</th><th>items</th><th>failed</th><th>scores (95% CI)</th><th>vs baseline</th></tr>");
        for t in &summary.techniques {
            let scores: Vec<String> =
                t.scores.iter().map(|(m, s)| format!("{m} {:.3} [{:.3}, {:.3}]", s.mean, s.low, s.high)).collect();
            let versus = t
                .versus_baseline
                .as_ref()
                .map(|c| {
                    format!(
                        "{:+.3} [{:+.3}, {:+.3}] on {}, p = {:.3}",
                        c.result.difference.mean,
                        c.result.difference.low,
                        c.result.difference.high,
                        c.metric,
                        c.result.p_value
                    )
                })
                .unwrap_or_else(|| "baseline".into());
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&t.name),
                t.items,
                t.failed,
                esc(&scores.join("; ")),
                esc(&versus)
            );
        }
        html.push_str("</table>");
    }
    html.push_str("<h2>Latency distribution</h2>");
    html.push_str(&latency_chart(summary, results));
    html.push_str("<h2>Tokens and cost</h2>");
    html.push_str(&token_chart(summary));
    let _ = write!(html, "<p>estimated cost of the calls that reached a model: {:.4}</p>", summary.usage.cost);
    if !summary.failures_by_kind.is_empty() {
        html.push_str("<h2>Failures</h2><table><tr><th>kind</th><th>items</th></tr>");
        for (kind, n) in &summary.failures_by_kind {
            let _ = write!(html, "<tr><td>{}</td><td>{n}</td></tr>", esc(kind));
        }
        html.push_str("</table>");
    }
    html.push_str("<h2>Plugins</h2><table><tr><th>name</th><th>role</th><th>plugin</th><th>sha256</th></tr>");
    for (name, p) in &summary.plugins {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            esc(name),
            esc(&p.role),
            esc(&p.version),
            esc(&p.sha256)
        );
    }
    html.push_str("</table></body></html>\n");
    html
}
