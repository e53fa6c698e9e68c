//! The run directory's outputs: `results.jsonl` (one line per item, in
//! dataset order), `summary.json` and `report.md`; and the progress bar.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::control::StopReason;
use crate::backends::meter::{Usage, UsageMeter};
use crate::config::RunConfig;
use crate::sandbox::component_cache::write_atomically;
use crate::sandbox::{CallError, Plugin, TraceStep};

use super::RunError;
use super::dataset::Item;

/// Why an item failed: the stage, a stable kind and the message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ItemFailure {
    /// `rewriter`, `policy`, `solver` or `answer`.
    pub stage: String,
    /// A stable failure kind (`timeout`, `memory-limit`, `panic`, …).
    pub kind: String,
    /// The full message.
    pub message: String,
}

impl ItemFailure {
    /// A failure of a plugin stage.
    pub fn plugin(stage: &str, plugin: &str, error: &CallError) -> Self {
        Self { stage: stage.to_string(), kind: error.kind().to_string(), message: format!("plugin `{plugin}` {error}") }
    }
}

/// What happened to one item under one technique.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ItemResult {
    /// The technique (`pipeline` for a `[pipeline]` table).
    #[serde(default = "default_technique")]
    pub technique: String,
    /// The item's id.
    pub id: String,
    /// The original question.
    pub input: String,
    /// The reference answer, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The rewriter's question.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewritten: Option<String>,
    /// The policy's prompt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// The answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// The solver's trace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trace: Vec<TraceStep>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<ItemFailure>,
    /// Scores against the reference, by metric (a failed item scores 0).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scores: BTreeMap<String, f64>,
    /// The LLM judge's raw scores and failed repeats (`llm-judge` metric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<crate::eval::JudgeOutcome>,
    /// Why the K-QA judge could not score the answer, or how many of its
    /// replies had no verdict (`k-qa-*` metrics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kqa_failure: Option<String>,
    /// Wall time of the item, in milliseconds.
    pub elapsed_ms: u64,
}

impl ItemResult {
    pub(crate) fn new(technique: &str, item: &Item) -> Self {
        Self {
            technique: technique.to_string(),
            id: item.id.clone(),
            input: item.input.clone(),
            reference: item.reference.clone(),
            rewritten: None,
            prompt: None,
            answer: None,
            trace: Vec::new(),
            failure: None,
            scores: BTreeMap::new(),
            judge: None,
            kqa_failure: None,
            elapsed_ms: 0,
        }
    }

    /// The journal key: technique and item id.
    pub fn key(&self) -> String {
        work_key(&self.technique, &self.id)
    }

    /// Score the answer against the reference with `metrics`.
    pub fn score(&mut self, metrics: &[crate::eval::Metric]) {
        let Some(reference) = &self.reference else { return };
        for metric in metrics {
            let value = match (&self.failure, &self.answer) {
                (None, Some(answer)) => metric.score(answer, reference),
                _ => 0.0,
            };
            self.scores.insert(metric.name().to_string(), value);
        }
    }

    /// Judge the answer against the reference with `judge` (the `llm-judge`
    /// score): a failed item scores 0; an answer no repeat could judge gets
    /// no score, and the reasons stay in `judge`.
    pub async fn score_with_judge(&mut self, judge: &crate::eval::Judge, seed: u64) {
        let Some(reference) = &self.reference else { return };
        let name = crate::eval::judge::METRIC_NAME.to_string();
        let (None, Some(answer)) = (&self.failure, &self.answer) else {
            self.scores.insert(name, 0.0);
            return;
        };
        let outcome = judge.judge(&self.input, reference, answer, seed).await;
        if let Some(mean) = outcome.mean(judge.config().scale) {
            self.scores.insert(name, mean);
        }
        self.judge = Some(outcome);
    }

    /// K-QA's criteria for the answer against the item's `statements`
    /// (`k-qa-comprehensiveness`, `k-qa-contradiction`). A failed item
    /// scores 0 comprehensiveness and no contradiction count; a judge that
    /// fails leaves both unscored, with the reason in `kqa_failure`.
    pub async fn score_with_kqa(
        &mut self,
        judge: &crate::collect::kqa::KqaJudge,
        statements: &crate::runs::dataset::AnswerStatements,
    ) {
        use crate::eval::{KQA_COMPREHENSIVENESS, KQA_CONTRADICTION};
        let (None, Some(answer)) = (&self.failure, &self.answer) else {
            self.scores.insert(KQA_COMPREHENSIVENESS.to_string(), 0.0);
            return;
        };
        let record = crate::collect::kqa::KqaRecord {
            id: self.id.clone(),
            question: self.input.clone(),
            must_have: statements.must_have.clone(),
            nice_to_have: statements.nice_to_have.clone(),
        };
        match judge.score(&record, answer).await {
            Ok(scores) => {
                self.scores.insert(KQA_COMPREHENSIVENESS.to_string(), scores.comprehensiveness);
                self.scores.insert(KQA_CONTRADICTION.to_string(), scores.contradiction);
                if scores.unparsed > 0 {
                    self.kqa_failure =
                        Some(format!("{} judge replies had no verdict (counted as False)", scores.unparsed));
                }
            }
            Err(e) => self.kqa_failure = Some(format!("the K-QA judge failed: {e}")),
        }
    }

    pub(crate) fn finished(mut self, started: Instant) -> Self {
        self.elapsed_ms = started.elapsed().as_millis() as u64;
        self
    }

    pub(crate) fn failed(mut self, failure: ItemFailure, started: Instant) -> Self {
        self.failure = Some(failure);
        self.finished(started)
    }
}

fn default_technique() -> String {
    "pipeline".to_string()
}

/// The key of one unit of work: a technique applied to an item.
pub fn work_key(technique: &str, id: &str) -> String {
    format!("{technique}\u{1f}{id}")
}

/// A plugin as recorded in the summary.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PluginRecord {
    /// Its role.
    pub role: String,
    /// Its file's sha256.
    pub sha256: String,
    /// Its self-declared name and version.
    pub version: String,
    /// Resolved parameters.
    pub parameters: BTreeMap<String, String>,
}

/// One technique's results in a run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TechniqueSummary {
    /// The technique's name.
    pub name: String,
    /// Items finished.
    pub items: usize,
    /// Items that failed.
    pub failed: usize,
    /// Mean score with its 95 % bootstrap interval, by metric.
    pub scores: BTreeMap<String, crate::eval::MeanWithInterval>,
    /// Against the baseline on the primary metric (absent for the baseline).
    pub versus_baseline: Option<Comparison>,
}

/// A paired comparison with the baseline on the items both finished.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Comparison {
    /// The baseline technique.
    pub baseline: String,
    /// The metric compared.
    pub metric: String,
    /// Mean difference (this − baseline), its interval, and the p-value.
    pub result: crate::eval::PairedComparison,
}

fn technique_summaries(config: &RunConfig, results: &[ItemResult]) -> Vec<TechniqueSummary> {
    let metrics = super::run_metrics(config);
    let resamples =
        config.evaluation.as_ref().map(|e| e.resamples).unwrap_or(crate::eval::statistics::DEFAULT_RESAMPLES);
    let names: Vec<String> = config.technique_list().into_iter().map(|(n, _)| n).collect();
    // The configured metrics, then scores that pipeline stages recorded (a
    // judge plugin's `judge-similarity`, for example).
    let mut metric_names: Vec<String> = metrics.iter().map(|m| m.name().to_string()).collect();
    let stage_scores: std::collections::BTreeSet<&String> =
        results.iter().flat_map(|r| r.scores.keys()).filter(|k| !metric_names.contains(k)).collect();
    metric_names.extend(stage_scores.into_iter().cloned());
    let baseline = config.evaluation.as_ref().and_then(|e| e.baseline.clone()).or_else(|| names.first().cloned());
    let scores_of = |technique: &str, metric: &str| -> BTreeMap<String, f64> {
        results
            .iter()
            .filter(|r| r.technique == technique)
            .filter_map(|r| r.scores.get(metric).map(|v| (r.id.clone(), *v)))
            .collect()
    };
    names
        .iter()
        .map(|name| {
            let mine: Vec<&ItemResult> = results.iter().filter(|r| &r.technique == name).collect();
            let scores = metric_names
                .iter()
                .filter_map(|m| {
                    let values: Vec<f64> = scores_of(name, m).into_values().collect();
                    (!values.is_empty())
                        .then(|| (m.clone(), crate::eval::bootstrap_mean(&values, resamples, config.run.seed)))
                })
                .collect();
            let versus_baseline = match (&baseline, metrics.first()) {
                (Some(base), Some(metric)) if base != name => {
                    let theirs = scores_of(base, metric.name());
                    let ours = scores_of(name, metric.name());
                    let (a, b): (Vec<f64>, Vec<f64>) =
                        ours.iter().filter_map(|(id, v)| theirs.get(id).map(|t| (*t, *v))).unzip();
                    (!a.is_empty()).then(|| Comparison {
                        baseline: base.clone(),
                        metric: metric.name().to_string(),
                        result: crate::eval::paired_bootstrap(&a, &b, resamples, config.run.seed),
                    })
                }
                _ => None,
            };
            TechniqueSummary {
                name: name.clone(),
                items: mine.len(),
                failed: mine.iter().filter(|r| r.failure.is_some()).count(),
                scores,
                versus_baseline,
            }
        })
        .collect()
}

/// Facts about a run that the summary reports besides its results.
#[derive(Debug, Clone)]
pub struct RunFacts {
    /// Items in the dataset (after `limit`).
    pub total_items: usize,
    /// Items already finished before this invocation (resumed from the journal).
    pub resumed_items: usize,
    /// Why the run stopped early, if it did.
    pub stopped: Option<StopReason>,
    /// Model usage of this invocation.
    pub usage: Usage,
    /// Model calls answered from the cache.
    pub cache_hits: u64,
    /// Model calls not in the cache.
    pub cache_misses: u64,
    /// Wall time of this invocation.
    pub elapsed: Duration,
}

/// `summary.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunSummary {
    /// The run's name.
    pub name: String,
    /// The run seed.
    pub seed: u64,
    /// Items in the dataset.
    pub total_items: usize,
    /// Items finished (in this and earlier invocations).
    pub items: usize,
    /// Items that produced an answer.
    pub succeeded: usize,
    /// Items that failed.
    pub failed: usize,
    /// Items finished by earlier invocations (resumed).
    pub resumed_items: usize,
    /// Why the run stopped before its last item; it can be resumed.
    pub stopped: Option<StopReason>,
    /// Failed items by failure kind.
    pub failures_by_kind: BTreeMap<String, usize>,
    /// The plugins by configured name.
    pub plugins: BTreeMap<String, PluginRecord>,
    /// Model usage of this invocation.
    pub usage: Usage,
    /// Model calls answered from the cache in this invocation.
    pub cache_hits: u64,
    /// Model calls that missed the cache in this invocation.
    pub cache_misses: u64,
    /// Per technique: counts and scores with 95 % bootstrap intervals, and
    /// the paired comparison with the baseline.
    pub techniques: Vec<TechniqueSummary>,
    /// Median item latency in milliseconds.
    pub latency_p50_ms: u64,
    /// 90th-percentile item latency in milliseconds.
    pub latency_p90_ms: u64,
    /// Wall time of this invocation, in seconds.
    pub elapsed_s: f64,
}

impl RunSummary {
    pub(crate) fn new(
        config: &RunConfig,
        plugins: &BTreeMap<String, Arc<Plugin>>,
        results: &[ItemResult],
        facts: RunFacts,
    ) -> Self {
        let mut failures_by_kind = BTreeMap::new();
        for failure in results.iter().filter_map(|r| r.failure.as_ref()) {
            *failures_by_kind.entry(failure.kind.clone()).or_insert(0) += 1;
        }
        let failed = results.iter().filter(|r| r.failure.is_some()).count();
        let mut latencies: Vec<u64> = results.iter().map(|r| r.elapsed_ms).collect();
        latencies.sort_unstable();
        let quantile = |q: f64| {
            if latencies.is_empty() { 0 } else { latencies[((latencies.len() - 1) as f64 * q).round() as usize] }
        };
        Self {
            name: config.run.name.clone().unwrap_or_default(),
            seed: config.run.seed,
            total_items: facts.total_items,
            items: results.len(),
            succeeded: results.len() - failed,
            failed,
            resumed_items: facts.resumed_items,
            stopped: facts.stopped,
            failures_by_kind,
            plugins: plugins
                .iter()
                .map(|(name, p)| {
                    (
                        name.clone(),
                        PluginRecord {
                            role: p.role().to_string(),
                            sha256: p.sha256().to_string(),
                            version: format!("{} {}", p.metadata().name, p.metadata().version),
                            parameters: p.parameters().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                        },
                    )
                })
                .collect(),
            techniques: technique_summaries(config, results),
            usage: facts.usage,
            cache_hits: facts.cache_hits,
            cache_misses: facts.cache_misses,
            latency_p50_ms: quantile(0.5),
            latency_p90_ms: quantile(0.9),
            elapsed_s: facts.elapsed.as_secs_f64(),
        }
    }

    /// The techniques with their scores (Markdown table; empty when nothing was scored).
    pub fn comparison_table(&self) -> String {
        let metrics: Vec<String> = {
            let mut m: Vec<String> = Vec::new();
            for t in &self.techniques {
                for k in t.scores.keys() {
                    if !m.contains(k) {
                        m.push(k.clone());
                    }
                }
            }
            m
        };
        let mut md = String::from("\n## Techniques\n\n| technique | items | failed |");
        for m in &metrics {
            md.push_str(&format!(" {m} (95% CI) |"));
        }
        md.push_str(" vs baseline |\n| --- | --- | --- |");
        md.push_str(&" --- |".repeat(metrics.len() + 1));
        md.push('\n');
        for t in &self.techniques {
            md.push_str(&format!("| {} | {} | {} |", t.name, t.items, t.failed));
            for m in &metrics {
                match t.scores.get(m) {
                    Some(s) => md.push_str(&format!(" {:.3} [{:.3}, {:.3}] |", s.mean, s.low, s.high)),
                    None => md.push_str(" – |"),
                }
            }
            match &t.versus_baseline {
                Some(c) => md.push_str(&format!(
                    " {:+.3} [{:+.3}, {:+.3}], p = {:.3} |",
                    c.result.difference.mean, c.result.difference.low, c.result.difference.high, c.result.p_value
                )),
                None => md.push_str(" baseline |"),
            }
            md.push('\n');
        }
        md
    }

    /// The summary as a Markdown report.
    pub fn to_markdown(&self) -> String {
        let mut md = format!("# Run `{}`\n\n", self.name);
        md.push_str("| | |\n| --- | --- |\n");
        md.push_str(&format!("| items | {} of {} finished |\n", self.items, self.total_items));
        md.push_str(&format!("| succeeded | {} |\n| failed | {} |\n", self.succeeded, self.failed));
        if let Some(stopped) = &self.stopped {
            md.push_str(&format!("| stopped early | {stopped:?} (resume with `techne run --resume`) |\n"));
        }
        md.push_str(&format!("| seed | {} |\n", self.seed));
        md.push_str(&format!("| latency p50 / p90 | {} ms / {} ms |\n", self.latency_p50_ms, self.latency_p90_ms));
        md.push_str(&format!(
            "| model requests | {} ({} cache hits, {} misses) |\n",
            self.usage.requests, self.cache_hits, self.cache_misses
        ));
        md.push_str(&format!(
            "| tokens | {} prompt, {} generated |\n",
            self.usage.prompt_tokens, self.usage.completion_tokens
        ));
        md.push_str(&format!("| estimated cost | {:.4} |\n", self.usage.cost));
        md.push_str(&format!("| wall time | {:.2} s |\n", self.elapsed_s));
        md.push_str(&self.comparison_table());
        if !self.failures_by_kind.is_empty() {
            md.push_str("\n## Failures\n\n| kind | items |\n| --- | --- |\n");
            for (kind, n) in &self.failures_by_kind {
                md.push_str(&format!("| {kind} | {n} |\n"));
            }
        }
        md.push_str("\n## Plugins\n\n| name | role | plugin | sha256 |\n| --- | --- | --- | --- |\n");
        for (name, p) in &self.plugins {
            md.push_str(&format!(
                "| {name} | {} | {} | `{}` |\n",
                p.role,
                p.version,
                &p.sha256[..16.min(p.sha256.len())]
            ));
        }
        md
    }
}

/// Write `results.jsonl`, `summary.json`, `report.md` and `report.html` into the run directory.
pub(crate) fn write_run_directory(dir: &Path, results: &[ItemResult], summary: &RunSummary) -> Result<(), RunError> {
    let io = super::output_error;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut lines = String::new();
    for result in results {
        lines.push_str(&serde_json::to_string(result).unwrap_or_default());
        lines.push('\n');
    }
    let results_path = dir.join("results.jsonl");
    write_atomically(&results_path, lines.as_bytes()).map_err(io(&results_path))?;
    let summary_path = dir.join("summary.json");
    let summary_json = serde_json::to_string_pretty(summary).unwrap_or_default();
    write_atomically(&summary_path, summary_json.as_bytes()).map_err(io(&summary_path))?;
    let report_path = dir.join("report.md");
    write_atomically(&report_path, summary.to_markdown().as_bytes()).map_err(io(&report_path))?;
    let html_path = dir.join("report.html");
    write_atomically(&html_path, super::report_html::render(summary, results).as_bytes()).map_err(io(&html_path))
}

/// A progress bar over a run's items (items, items/s, tokens/s, ETA), drawn
/// only on a terminal and never in CI.
#[derive(Clone)]
pub(crate) struct Progress {
    bar: Option<indicatif::ProgressBar>,
    meter: Arc<UsageMeter>,
    started: Instant,
}

impl Progress {
    pub(crate) fn new(enabled: bool, total: u64, done: u64, meter: Arc<UsageMeter>) -> Self {
        use std::io::IsTerminal;
        let visible = enabled && std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
        let bar = visible.then(|| {
            let bar = indicatif::ProgressBar::new(total);
            let style =
                indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} items  {per_sec}  eta {eta}  {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_position(done);
            bar
        });
        Self { bar, meter, started: Instant::now() }
    }

    pub(crate) fn item_done(&self, result: &ItemResult) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
            let usage = self.meter.usage();
            let secs = self.started.elapsed().as_secs_f64().max(1e-3);
            let failed = if result.failure.is_some() { " (last item failed)" } else { "" };
            bar.set_message(format!(
                "{} requests  {:.0} tokens/s  spent {:.4}{failed}",
                usage.requests,
                (usage.prompt_tokens + usage.completion_tokens) as f64 / secs,
                usage.cost
            ));
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
