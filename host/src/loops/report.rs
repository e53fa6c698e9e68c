//! The loop directory's reports: `report.md` (per-round metrics table) and a
//! self-contained `report.html` (no scripts, no external files) with inline
//! SVG charts: each evaluation metric per round (the baseline as round 0)
//! and the training loss curve of every round. Rewritten after every round.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use super::config::LoopConfig;
use super::state::LoopState;

/// Metrics shown as per-round charts, when present.
const CHARTED: [&str; 6] = ["bleu4", "rouge1", "rouge2", "rouge-l", "similarity", "precision"];

/// Write `report.md` and `report.html` into `dir`.
pub fn write(dir: &Path, state: &LoopState, section: &LoopConfig) -> std::io::Result<()> {
    crate::sandbox::component_cache::write_atomically(&dir.join("report.md"), markdown(state, section).as_bytes())?;
    crate::sandbox::component_cache::write_atomically(&dir.join("report.html"), html(state, section).as_bytes())
}

/// Every metric name of the loop, in a stable order (charted ones first).
fn metric_names(state: &LoopState) -> Vec<String> {
    let all: BTreeSet<&str> = state
        .rounds
        .iter()
        .flat_map(|r| r.metrics.keys().map(String::as_str))
        .chain(state.baseline.keys().map(String::as_str))
        .filter(|k| *k != "finished")
        .collect();
    let mut names: Vec<String> = CHARTED.iter().filter(|m| all.contains(*m)).map(|m| m.to_string()).collect();
    names.extend(all.iter().filter(|m| !CHARTED.contains(m)).map(|m| m.to_string()));
    names
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else if v.fract() == 0.0 && v.abs() < 1e9 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
    }
}

/// `report.md`.
pub fn markdown(state: &LoopState, section: &LoopConfig) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Loop `{}` ({})\n", state.name, state.kind);
    let _ = writeln!(md, "- strategy plugin: `{}`; trained model entry: `{}`", section.strategy, section.model);
    let _ = writeln!(md, "- base model: `{}`; current model: `{}`", state.base_model, state.current_model);
    let _ = writeln!(
        md,
        "- rounds run: {}; status: {}\n",
        state.rounds.len(),
        state.finished.as_deref().unwrap_or("running")
    );
    let names = metric_names(state);
    let _ = write!(md, "| round | model | steps | failures | seconds | first → last loss |");
    for n in &names {
        let _ = write!(md, " {n} |");
    }
    md.push('\n');
    md.push_str(&"| --- ".repeat(6 + names.len()));
    md.push_str("|\n");
    if !state.baseline.is_empty() {
        let _ = write!(md, "| 0 (base) | `{}` | baseline | 0 | | |", state.base_model);
        for n in &names {
            let _ = write!(md, " {} |", state.baseline.get(n).map(|v| number(*v)).unwrap_or_default());
        }
        md.push('\n');
    }
    for r in &state.rounds {
        let loss = match (r.losses.first(), r.losses.last()) {
            (Some(a), Some(b)) => format!("{a:.3} → {b:.3}"),
            _ => String::new(),
        };
        let _ = write!(
            md,
            "| {} | `{}` | {} | {} | {:.1} | {} |",
            r.round,
            r.model.as_deref().unwrap_or("(unchanged)"),
            r.steps.join(", "),
            r.failures,
            r.seconds,
            loss
        );
        for n in &names {
            let _ = write!(md, " {} |", r.metrics.get(n).map(|v| number(*v)).unwrap_or_default());
        }
        md.push('\n');
    }
    md.push_str("\nPer-round data: `round-NNN/` (generated JSONL, `train/` with the training report and lineage, evaluation results); strategy failures: `round-NNN/failures.jsonl`.\n");
    md
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const PALETTE: [&str; 6] = ["#3b6fb6", "#d9822b", "#3d9a50", "#b63b5a", "#7a5cb8", "#8a8a8a"];

/// A line chart of several series of (x, y) points, with a legend.
fn line_chart(title: &str, x_label: &str, series: &[(String, Vec<(f64, f64)>)]) -> String {
    let points: Vec<(f64, f64)> =
        series.iter().flat_map(|(_, p)| p.iter().copied()).filter(|(_, y)| y.is_finite()).collect();
    if points.is_empty() {
        return String::new();
    }
    let (w, h, left, right, top, bottom) = (640.0, 280.0, 60.0, 150.0, 20.0, 40.0);
    let (mut x0, mut x1) = (f64::INFINITY, f64::NEG_INFINITY);
    let (mut y0, mut y1) = (f64::INFINITY, f64::NEG_INFINITY);
    for (x, y) in &points {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y0 = y0.min(*y);
        y1 = y1.max(*y);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    if y1 - y0 < 1e-12 {
        y1 = y0 + 1.0;
    }
    if y0 > 0.0 {
        y0 = 0.0;
    }
    let px = |x: f64| left + (w - left - right) * (x - x0) / (x1 - x0);
    let py = |y: f64| top + (h - top - bottom) * (1.0 - (y - y0) / (y1 - y0));
    let mut svg = format!(
        r#"<h2>{}</h2><svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="{}">"#,
        esc(title),
        esc(title)
    );
    for tick in 0..=4 {
        let v = y0 + (y1 - y0) * f64::from(tick) / 4.0;
        let _ = write!(
            svg,
            r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            w - right,
            left - 6.0,
            py(v) + 4.0,
            if (y1 - y0) < 10.0 { format!("{v:.3}") } else { format!("{v:.0}") },
            y = py(v)
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{:.1}" y="{}" font-size="12" text-anchor="middle">{}</text><text x="{left}" y="{}" font-size="11">{x0:.0}</text><text x="{}" y="{}" font-size="11" text-anchor="end">{x1:.0}</text>"#,
        left + (w - left - right) / 2.0,
        h - 6.0,
        esc(x_label),
        h - bottom + 16.0,
        w - right,
        h - bottom + 16.0
    );
    for (i, (name, pts)) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let path: Vec<String> =
            pts.iter().filter(|(_, y)| y.is_finite()).map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y))).collect();
        let _ = write!(svg, r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#, path.join(" "));
        for p in &path {
            let (cx, cy) = p.split_once(',').unwrap_or(("0", "0"));
            let _ = write!(svg, r#"<circle cx="{cx}" cy="{cy}" r="3" fill="{color}"/>"#);
        }
        let ly = top + 16.0 * i as f64 + 8.0;
        let _ = write!(
            svg,
            r#"<rect x="{}" y="{:.1}" width="10" height="10" fill="{color}"/><text x="{}" y="{:.1}" font-size="12">{}</text>"#,
            w - right + 12.0,
            ly - 9.0,
            w - right + 28.0,
            ly,
            esc(name)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// `report.html`.
pub fn html(state: &LoopState, section: &LoopConfig) -> String {
    let mut body = String::new();
    let metric_series: Vec<(String, Vec<(f64, f64)>)> = CHARTED
        .iter()
        .filter_map(|m| {
            let mut pts: Vec<(f64, f64)> = state.baseline.get(*m).map(|v| vec![(0.0, *v)]).unwrap_or_default();
            pts.extend(state.rounds.iter().filter_map(|r| r.metrics.get(*m).map(|v| (f64::from(r.round), *v))));
            (!pts.is_empty()).then(|| (m.to_string(), pts))
        })
        .collect();
    let (scores, judge): (Vec<_>, Vec<_>) =
        metric_series.into_iter().partition(|(m, _)| m != "similarity" && m != "precision");
    body.push_str(&line_chart("Evaluation per round (round 0: the base model)", "round", &scores));
    body.push_str(&line_chart("Judge scores per round (1–100)", "round", &judge));
    let losses: Vec<(String, Vec<(f64, f64)>)> = state
        .rounds
        .iter()
        .filter(|r| !r.losses.is_empty())
        .map(|r| {
            (format!("round {}", r.round), r.losses.iter().enumerate().map(|(i, l)| ((i + 1) as f64, *l)).collect())
        })
        .collect();
    body.push_str(&line_chart("Training loss per round", "optimizer step", &losses));
    let table = markdown_table_html(state, section);
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Loop {name}</title><style>body{{font-family:sans-serif;max-width:900px;margin:2em auto}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 6px;font-size:13px}}</style></head><body><h1>Loop <code>{name}</code> ({kind})</h1><p>Status: {status}. Base model <code>{base}</code>, current model <code>{current}</code>, strategy <code>{strategy}</code>.</p>{table}{body}</body></html>",
        name = esc(&state.name),
        kind = esc(&state.kind),
        status = esc(state.finished.as_deref().unwrap_or("running")),
        base = esc(&state.base_model),
        current = esc(&state.current_model),
        strategy = esc(&section.strategy),
    )
}

/// The per-round table as HTML.
fn markdown_table_html(state: &LoopState, _section: &LoopConfig) -> String {
    let names = metric_names(state);
    let mut t = String::from("<table><tr><th>round</th><th>model</th><th>failures</th><th>seconds</th>");
    for n in &names {
        let _ = write!(t, "<th>{}</th>", esc(n));
    }
    t.push_str("</tr>");
    if !state.baseline.is_empty() {
        let _ = write!(t, "<tr><td>0 (base)</td><td>{}</td><td></td><td></td>", esc(&state.base_model));
        for n in &names {
            let _ = write!(t, "<td>{}</td>", state.baseline.get(n).map(|v| number(*v)).unwrap_or_default());
        }
        t.push_str("</tr>");
    }
    for r in &state.rounds {
        let _ = write!(
            t,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td>",
            r.round,
            esc(r.model.as_deref().unwrap_or("(unchanged)")),
            r.failures,
            r.seconds
        );
        for n in &names {
            let _ = write!(t, "<td>{}</td>", r.metrics.get(n).map(|v| number(*v)).unwrap_or_default());
        }
        t.push_str("</tr>");
    }
    t.push_str("</table>");
    t
}
