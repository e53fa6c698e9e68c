//! The training report: `report.md` and a self-contained `report.html`
//! (inline SVG, no scripts, no external files; the style and colours of the
//! run reports in [`crate::runs::report_html`]) written into a training
//! run's output directory next to the trainer's `report.json`.
//!
//! Curves: the training loss per step, the learning rate, tokens/s, and for
//! DPO the reward accuracy and margin. A resumed run's report covers every
//! step, including those before the resume.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use techne_training::{StepRecord, TrainReport};

use super::TrainingError;
use crate::runs::report_html::{PALETTE, STYLE, esc};

/// One line of a chart: a label and its `(x, y)` points.
pub struct Series<'a> {
    /// The legend label.
    pub label: &'a str,
    /// The points, in increasing `x`.
    pub points: Vec<(f64, f64)>,
}

fn fmt_tick(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// An SVG line chart of `series` against the step (x axis), with `y_label`
/// on the y axis. A single point is drawn as a dot.
pub fn line_chart(y_label: &str, series: &[Series<'_>]) -> String {
    let (w, h, left, right, bottom, top) = (640.0, 260.0, 70.0, 20.0, 40.0, 15.0);
    let plot_w = w - left - right;
    let plot_h = h - bottom - top;
    let all = || series.iter().flat_map(|s| s.points.iter()).filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1) = all().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), (x, _)| (a.min(*x), b.max(*x)));
    let (mut y0, mut y1) = all().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), (_, y)| (a.min(*y), b.max(*y)));
    if !x0.is_finite() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    if y1 - y0 < 1e-12 {
        let pad = (y0.abs() * 0.1).max(1e-6);
        (y0, y1) = (y0 - pad, y1 + pad);
    }
    let sx = |x: f64| left + plot_w * (x - x0) / (x1 - x0);
    let sy = |y: f64| top + plot_h * (1.0 - (y - y0) / (y1 - y0));
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="{}">"#,
        esc(y_label)
    );
    for tick in 0..=4 {
        let v = y0 + (y1 - y0) * f64::from(tick) / 4.0;
        let _ = write!(
            svg,
            r##"<line x1="{left}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            w - right,
            left - 6.0,
            sy(v) + 4.0,
            fmt_tick(v),
            y = sy(v)
        );
        let xv = x0 + (x1 - x0) * f64::from(tick) / 4.0;
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"#,
            sx(xv),
            h - bottom + 16.0,
            fmt_tick(xv)
        );
    }
    for (i, s) in series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let points: Vec<String> = s
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        if points.len() == 1 {
            let (cx, cy) = points[0].split_once(',').unwrap_or(("0", "0"));
            let _ = write!(svg, r#"<circle cx="{cx}" cy="{cy}" r="3" fill="{color}"/>"#);
        } else if !points.is_empty() {
            let _ = write!(
                svg,
                r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"><title>{}</title></polyline>"#,
                points.join(" "),
                esc(s.label)
            );
        }
    }
    let _ = write!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle">step</text><text x="14" y="{:.1}" font-size="12" transform="rotate(-90 14 {:.1})" text-anchor="middle">{}</text></svg>"#,
        left + plot_w / 2.0,
        h - 4.0,
        top + plot_h / 2.0,
        top + plot_h / 2.0,
        esc(y_label)
    );
    svg
}

fn legend(labels: &[&str]) -> String {
    let mut html = String::from(r#"<p class="legend">"#);
    for (i, l) in labels.iter().enumerate() {
        let _ = write!(html, r#"<span><i style="background:{}"></i>{}</span>"#, PALETTE[i % PALETTE.len()], esc(l));
    }
    html.push_str("</p>");
    html
}

fn curve(steps: &[StepRecord], value: impl Fn(&StepRecord) -> Option<f64>) -> Vec<(f64, f64)> {
    steps.iter().filter_map(|s| value(s).map(|v| (s.step as f64, v))).collect()
}

/// The rows of the summary table, shared by the Markdown and HTML reports.
fn summary_rows(report: &TrainReport, extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut rows = vec![("kind", report.kind.as_str().to_string())];
    if let Some(l) = &report.lineage {
        rows.push(("base model", l.base_model.name.clone().unwrap_or_else(|| l.base_model.gguf.clone())));
        rows.push(("data", format!("{} ({} examples, {} skipped)", l.dataset.path, report.examples, report.skipped)));
    } else {
        rows.push(("examples", format!("{} ({} skipped)", report.examples, report.skipped)));
    }
    if !report.steps.is_empty() || report.model.is_none() {
        let resumed = report.resumed_from.map(|s| format!(", resumed after step {s}")).unwrap_or_default();
        rows.push(("steps", format!("{} of {}{resumed}", report.steps.len(), report.total_steps)));
        if report.trainable_params > 0 {
            rows.push(("trainable parameters", report.trainable_params.to_string()));
        }
        if let Some(first) = report.steps.first() {
            rows.push(("first loss", format!("{:.4}", first.loss)));
        }
        if let Some(loss) = report.final_loss {
            rows.push(("final loss", format!("{loss:.4}")));
        }
        if report.tokens_per_second > 0.0 {
            rows.push((
                "throughput",
                format!("{:.1} tokens/s over {:.1} s of steps", report.tokens_per_second, report.train_seconds),
            ));
        }
    }
    if let Some(rss) = report.peak_rss_bytes {
        rows.push(("peak memory (RSS)", format!("{:.2} GiB", rss as f64 / (1u64 << 30) as f64)));
    }
    if let Some(step) = report.selected_step {
        rows.push(("kept adapter", format!("step {step}: the best held-out evaluation (--keep-best)")));
    }
    if report.stopped_early {
        rows.push(("stopped early", "yes: resume with --resume and the same settings".into()));
    }
    if let Some(m) = &report.model {
        rows.push(("registered model", m.name.clone()));
    }
    if let Some(g) = &report.merged_gguf {
        rows.push(("merged GGUF", g.display().to_string()));
    }
    rows.extend(extra.iter().cloned());
    rows
}

/// The Markdown report; `extra` rows go at the end of the summary table.
pub fn render_markdown(report: &TrainReport, extra: &[(&'static str, String)]) -> String {
    let mut md = format!("# techne train {}\n\n| | |\n| --- | --- |\n", report.kind.as_str());
    for (k, v) in summary_rows(report, extra) {
        let _ = writeln!(md, "| {k} | {} |", v.replace('|', "\\|"));
    }
    if !report.steps.is_empty() {
        md.push_str("\nCurves: `report.html`. Every step is in `report.json`.\n\n");
        let dpo = report.steps.iter().any(|s| s.dpo.is_some());
        let eval = report.steps.iter().any(|s| s.eval_loss.is_some());
        md.push_str(if dpo {
            "| step | loss | lr | grad norm | tokens/s | accuracy | margin |"
        } else {
            "| step | loss | lr | grad norm | tokens | tokens/s |"
        });
        md.push_str(if eval { " held-out loss |\n" } else { "\n" });
        md.push_str(if dpo {
            "| --- | --- | --- | --- | --- | --- | --- |"
        } else {
            "| --- | --- | --- | --- | --- | --- |"
        });
        md.push_str(if eval { " --- |\n" } else { "\n" });
        // At most ~40 rows: every k-th step and always the last.
        let every = report.steps.len().div_ceil(40).max(1);
        let last = report.steps.len() - 1;
        let shown =
            report.steps.iter().enumerate().filter(|(i, s)| i % every == 0 || *i == last || s.eval_loss.is_some());
        for (_, s) in shown {
            let _ = match &s.dpo {
                Some(d) => write!(
                    md,
                    "| {} | {:.4} | {:.2e} | {:.3} | {:.0} | {:.2} | {:+.3} |",
                    s.step, s.loss, s.lr, s.grad_norm, s.tokens_per_second, d.accuracy, d.margin
                ),
                None => write!(
                    md,
                    "| {} | {:.4} | {:.2e} | {:.3} | {} | {:.0} |",
                    s.step, s.loss, s.lr, s.grad_norm, s.tokens, s.tokens_per_second
                ),
            };
            match (eval, s.eval_loss) {
                (false, _) => md.push('\n'),
                (true, Some(l)) => {
                    let _ = writeln!(md, " {l:.4} |");
                }
                (true, None) => md.push_str(" |\n"),
            }
        }
    }
    md
}

/// The HTML report; `extra` rows go at the end of the summary table.
pub fn render_html(report: &TrainReport, extra: &[(&'static str, String)]) -> String {
    let title = format!("techne train {}", report.kind.as_str());
    let mut html = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{t}</title><style>{STYLE}</style></head><body><h1>{t}</h1><table>"#,
        t = esc(&title)
    );
    for (k, v) in summary_rows(report, extra) {
        let _ = write!(html, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v));
    }
    html.push_str("</table>");
    let steps = &report.steps;
    if !steps.is_empty() {
        let eval = curve(steps, |s| s.eval_loss);
        let mut loss = vec![Series { label: "training loss", points: curve(steps, |s| Some(s.loss)) }];
        if !eval.is_empty() {
            loss.push(Series { label: "held-out loss", points: eval });
        }
        html.push_str(if loss.len() > 1 { "<h2>Training and held-out loss</h2>" } else { "<h2>Training loss</h2>" });
        html.push_str(&legend(&loss.iter().map(|s| s.label).collect::<Vec<_>>()));
        html.push_str(&line_chart("loss", &loss));
        if steps.iter().any(|s| s.dpo.is_some()) {
            html.push_str("<h2>Preference accuracy and margin</h2>");
            let mut accuracy =
                vec![Series { label: "reward accuracy", points: curve(steps, |s| s.dpo.as_ref().map(|d| d.accuracy)) }];
            let eval = curve(steps, |s| s.eval_accuracy);
            if !eval.is_empty() {
                accuracy.push(Series { label: "held-out reward accuracy", points: eval });
            }
            html.push_str(&legend(&accuracy.iter().map(|s| s.label).collect::<Vec<_>>()));
            html.push_str(&line_chart("accuracy", &accuracy));
            html.push_str(&legend(&["chosen reward", "rejected reward", "margin"]));
            html.push_str(&line_chart(
                "reward",
                &[
                    Series {
                        label: "chosen reward",
                        points: curve(steps, |s| s.dpo.as_ref().map(|d| d.reward_chosen)),
                    },
                    Series {
                        label: "rejected reward",
                        points: curve(steps, |s| s.dpo.as_ref().map(|d| d.reward_rejected)),
                    },
                    Series { label: "margin", points: curve(steps, |s| s.dpo.as_ref().map(|d| d.margin)) },
                ],
            ));
        }
        html.push_str("<h2>Learning rate</h2>");
        html.push_str(&line_chart("learning rate", &[Series { label: "lr", points: curve(steps, |s| Some(s.lr)) }]));
        // An external job's log history has no timings.
        if steps.iter().any(|s| s.tokens_per_second > 0.0) {
            html.push_str("<h2>Throughput</h2>");
            html.push_str(&line_chart(
                "tokens/s",
                &[Series { label: "tokens/s", points: curve(steps, |s| Some(s.tokens_per_second)) }],
            ));
        }
    }
    if let Some(l) = &report.lineage {
        html.push_str("<h2>Lineage</h2><pre>");
        html.push_str(&esc(&serde_json::to_string_pretty(l).unwrap_or_default()));
        html.push_str("</pre>");
    }
    html.push_str("</body></html>\n");
    html
}

fn write_one(path: &Path, text: &str) -> Result<(), TrainingError> {
    techne_training::checkpoint::write_file_atomic(path, text.as_bytes())
        .map_err(|e| TrainingError::Report { path: path.to_path_buf(), message: e.to_string() })
}

/// Writes `report.md` and `report.html` into the report's output directory,
/// with `extra` rows at the end of the summary table; returns their paths.
pub fn write(report: &TrainReport, extra: &[(&'static str, String)]) -> Result<(PathBuf, PathBuf), TrainingError> {
    let md = report.output_dir.join("report.md");
    let html = report.output_dir.join("report.html");
    write_one(&md, &render_markdown(report, extra))?;
    write_one(&html, &render_html(report, extra))?;
    Ok((md, html))
}

#[cfg(test)]
mod tests {
    use super::*;
    use techne_training::{DpoStats, TrainKind};

    fn step(step: usize, loss: f64, dpo: bool) -> StepRecord {
        StepRecord {
            step,
            loss,
            lr: 1e-4 * step as f64,
            grad_norm: 0.5,
            tokens: 100,
            target_tokens: 40,
            seconds: 0.5,
            tokens_per_second: 200.0,
            dpo: dpo.then(|| DpoStats { reward_chosen: 0.1, reward_rejected: -0.1, accuracy: 0.75, margin: 0.2 }),
            eval_loss: (step == 2).then_some(1.5),
            eval_accuracy: None,
        }
    }

    fn report(kind: TrainKind, steps: Vec<StepRecord>) -> TrainReport {
        TrainReport {
            kind,
            total_steps: steps.len(),
            final_loss: steps.last().map(|s| s.loss),
            steps,
            resumed_from: Some(1),
            stopped_early: false,
            tokens_per_second: 200.0,
            train_seconds: 1.5,
            trainable_params: 1234,
            examples: 8,
            skipped: 1,
            output_dir: PathBuf::from("out"),
            merged_gguf: None,
            model: None,
            lineage: None,
            peak_rss_bytes: Some(3 << 28),
            selected_step: None,
        }
    }

    #[test]
    fn the_loss_curve_has_one_vertex_per_step_scaled_into_the_plot() {
        let chart = line_chart("loss", &[Series { label: "loss", points: vec![(1.0, 2.0), (2.0, 1.0), (3.0, 0.5)] }]);
        let points = chart.split("points=\"").nth(1).and_then(|s| s.split('"').next()).unwrap();
        let xy: Vec<(f64, f64)> = points
            .split(' ')
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect();
        assert_eq!(xy.len(), 3);
        // Step 1 at the left edge, step 3 at the right; the highest loss at the top.
        assert_eq!(xy[0].0, 70.0);
        assert_eq!(xy[2].0, 620.0);
        assert_eq!(xy[0].1, 15.0);
        assert_eq!(xy[2].1, 220.0);
        assert!(xy[1].1 > xy[0].1 && xy[1].1 < xy[2].1);
    }

    #[test]
    fn a_single_step_is_a_dot_and_nan_points_are_dropped() {
        let chart = line_chart("loss", &[Series { label: "loss", points: vec![(1.0, 2.0), (2.0, f64::NAN)] }]);
        assert!(chart.contains("<circle"), "{chart}");
        assert!(!chart.contains("NaN"), "{chart}");
    }

    #[test]
    fn reports_list_every_step_and_dpo_statistics() {
        let sft = report(TrainKind::Sft, vec![step(1, 2.5, false), step(2, 2.0, false)]);
        let md = render_markdown(&sft, &[]);
        assert!(md.contains("| 1 | 2.5000 |") && md.contains("| 2 | 2.0000 |"), "{md}");
        assert!(md.contains("| 1 | 2.5000 | 1.00e-4 | 0.500 | 100 | 200 | |"), "no held-out loss at step 1: {md}");
        assert!(md.contains("| 2 | 2.0000 | 2.00e-4 | 0.500 | 100 | 200 | 1.5000 |"), "{md}");
        assert!(md.contains("resumed after step 1"), "{md}");
        assert!(md.contains("0.75 GiB"), "{md}");
        let html = render_html(&sft, &[]);
        assert!(html.contains("<h2>Training and held-out loss</h2>") && html.contains("<polyline"), "{html}");
        assert!(html.contains("held-out loss") && html.contains("<circle"), "the one held-out point is drawn: {html}");
        assert!(!html.contains("accuracy"), "an SFT report has no preference curves");
        let dpo = report(TrainKind::Dpo, vec![step(1, 0.69, true), step(2, 0.6, true)]);
        assert!(render_markdown(&dpo, &[]).contains("| 2 | 0.6000 | 2.00e-4 | 0.500 | 200 | 0.75 | +0.200 | 1.5000 |"));
        let html = render_html(&dpo, &[]);
        assert!(html.contains("Preference accuracy and margin") && html.contains("rejected reward"), "{html}");
    }
}
