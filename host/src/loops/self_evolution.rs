//! The Self-Evolution loop (arXiv 2408.12247): G generations (paper: 8). In
//! each generation the current model writes one QA pair per knowledge
//! fragment through the evolution-strategy plugin (`write-pair`: question at
//! temperature 0.5 / top-p 0.95, answer with the fragment in context, IFD
//! from the host's scoring), the plugin selects the fine-tuning set among
//! the candidates of this and earlier generations (`select`: top-k by IFD
//! plus re-use mode `top` / `random` / `all` / `none`), the host fine-tunes
//! (SFT, by default continuing from the previous generation's model: the
//! model evolves), registers the result as `<name>-r<g>`, and evaluates it
//! on held-out questions with BLEU-4 and ROUGE-1/2/L against the reference
//! answers (the paper's metrics). The base model is evaluated once before
//! generation 1 (`baseline`).
//!
//! Steps of a round: `write-pairs` (per-fragment progress in
//! `candidates.jsonl`), `select` (`selection.jsonl`, `train.jsonl`),
//! `train` (`train/`), `evaluate` (`eval.jsonl`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::state::{append_jsonl, read_jsonl, write_jsonl};
use super::{LoopContext, LoopError, RoundOutcome, map_concurrent, read_records, text_field};
use crate::backends::{ChatMessage, GenerationRequest, ModelSet, Prompt, Role, Sampling};
use crate::eval::Metric;
use crate::sandbox::ScoredPair;

/// `[loop.self-evolution]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SelfEvolutionSettings {
    /// Knowledge fragments: JSONL or a JSON array of objects.
    pub fragments: PathBuf,
    /// The field holding a fragment's text.
    #[serde(default = "default_fragment_field")]
    pub fragment_field: String,
    /// Use only the first this many fragments.
    pub fragment_limit: Option<usize>,
    /// Held-out questions with reference answers: JSONL or a JSON array.
    pub eval: PathBuf,
    /// The field holding an evaluation question.
    #[serde(default = "default_question_field")]
    pub eval_question_field: String,
    /// The field holding its reference answer.
    #[serde(default = "default_reference_field")]
    pub eval_reference_field: String,
    /// Use only the first this many evaluation questions.
    pub eval_limit: Option<usize>,
    /// Token budget of an evaluation answer.
    #[serde(default = "default_answer_tokens")]
    pub answer_max_tokens: u32,
    /// Overrides the strategy's `mode` parameter (`top`, `random`, `all`, `none`).
    pub selection_mode: Option<String>,
    /// Overrides the strategy's `top-k` parameter.
    pub top_k: Option<u32>,
    /// Where each generation's training starts.
    #[serde(default)]
    pub train_from: TrainFrom,
    /// Evaluate the base model before generation 1.
    #[serde(default = "default_true")]
    pub evaluate_base: bool,
}

/// Where a generation's fine-tuning starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrainFrom {
    /// The previous generation's model (the model evolves).
    #[default]
    Previous,
    /// The base model every time (on the cumulative selection).
    Base,
}

fn default_fragment_field() -> String {
    "fragment".into()
}
fn default_question_field() -> String {
    "question".into()
}
fn default_reference_field() -> String {
    "answer".into()
}
fn default_answer_tokens() -> u32 {
    128
}
fn default_true() -> bool {
    true
}

impl SelfEvolutionSettings {
    /// Check the values; returns the key and how to fix it.
    pub(crate) fn validate(&self) -> Result<(), (String, String)> {
        if let Some(mode) = &self.selection_mode
            && !["top", "random", "all", "none"].contains(&mode.as_str())
        {
            return Err(("selection-mode".into(), "must be one of top, random, all, none".into()));
        }
        if self.top_k == Some(0) {
            return Err(("top-k".into(), "must be at least 1".into()));
        }
        if self.answer_max_tokens == 0 {
            return Err(("answer-max-tokens".into(), "must be at least 1".into()));
        }
        if self.fragment_limit == Some(0) || self.eval_limit == Some(0) {
            return Err(("fragment-limit".into(), "limits must be at least 1".into()));
        }
        Ok(())
    }
}

/// The metrics of an evaluation, in report order.
pub const EVAL_METRICS: [Metric; 4] = [Metric::Bleu4, Metric::Rouge1, Metric::Rouge2, Metric::RougeL];

/// One line of a round's `candidates.jsonl`: what `write-pair` gave for a fragment.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CandidateLine {
    index: usize,
    pair: Option<ScoredPair>,
    error: Option<String>,
}

/// One line of `eval.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct EvalLine {
    index: usize,
    question: String,
    reference: String,
    answer: String,
    scores: std::collections::BTreeMap<String, f64>,
}

fn settings(ctx: &LoopContext) -> Result<SelfEvolutionSettings, LoopError> {
    ctx.section.self_evolution.clone().ok_or(LoopError::NotALoop)
}

fn fragments(ctx: &LoopContext, s: &SelfEvolutionSettings) -> Result<Vec<String>, LoopError> {
    let path = super::config::resolve(&ctx.config.base_dir, &s.fragments);
    let records = read_records(&path)?;
    let mut out = Vec::new();
    for (i, r) in records.iter().enumerate().take(s.fragment_limit.unwrap_or(usize::MAX)) {
        out.push(text_field(&path, r, i, &s.fragment_field)?);
    }
    if out.is_empty() {
        return Err(LoopError::Data {
            path,
            message: "holds no fragments: add JSON records with the fragment text".into(),
        });
    }
    Ok(out)
}

fn eval_set(ctx: &LoopContext, s: &SelfEvolutionSettings) -> Result<Vec<(String, String)>, LoopError> {
    let path = super::config::resolve(&ctx.config.base_dir, &s.eval);
    let records = read_records(&path)?;
    let mut out = Vec::new();
    for (i, r) in records.iter().enumerate().take(s.eval_limit.unwrap_or(usize::MAX)) {
        out.push((text_field(&path, r, i, &s.eval_question_field)?, text_field(&path, r, i, &s.eval_reference_field)?));
    }
    if out.is_empty() {
        return Err(LoopError::Data { path, message: "holds no evaluation questions".into() });
    }
    Ok(out)
}

/// Evaluate the base model once, before generation 1 (step `baseline`).
pub(crate) async fn baseline(ctx: &mut LoopContext) -> Result<(), LoopError> {
    let s = settings(ctx)?;
    if !s.evaluate_base || ctx.step_done(0, "baseline") {
        return Ok(());
    }
    let dir = ctx.dir.join("baseline");
    std::fs::create_dir_all(&dir).map_err(LoopError::io(&dir))?;
    let metrics = evaluate(ctx, 0, &s, &dir.join("eval.jsonl")).await?;
    let named: Vec<(&str, f64)> = metrics.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    ctx.complete_step(0, "baseline", &named)
}

/// One generation.
pub(crate) async fn run_round(ctx: &mut LoopContext, round: u32) -> Result<RoundOutcome, LoopError> {
    let s = settings(ctx)?;
    let generation = round - 1;
    let dir = ctx.round_dir(round)?;

    if !ctx.step_done(round, "write-pairs") {
        let fragments = fragments(ctx, &s)?;
        let path = dir.join("candidates.jsonl");
        // Pairs written before a kill are kept; failed fragments are tried again.
        let done: Vec<CandidateLine> = read_jsonl(&path).map_err(LoopError::io(&path))?;
        let seen: std::collections::BTreeSet<usize> =
            done.iter().filter(|l| l.pair.is_some()).map(|l| l.index).collect();
        let models = ctx.models()?;
        let plugin = ctx.strategy(&models, &overrides(&s)).await?;
        let model = ctx.section.model.clone();
        let pending: Vec<(usize, String, crate::sandbox::WorkItem)> = fragments
            .iter()
            .enumerate()
            .filter(|(i, _)| !seen.contains(i))
            .map(|(i, f)| (i, f.clone(), ctx.work_item(format!("r{round}-write-pair-{i}"))))
            .collect();
        let stop = ctx.stop_signal();
        let loop_dir = ctx.dir.clone();
        let concurrency = ctx.config.run.concurrency;
        let work = move |(index, fragment, item): (usize, String, crate::sandbox::WorkItem)| {
            let plugin = plugin.clone();
            let model = model.clone();
            async move {
                let result = match plugin.instantiate(&item).await {
                    Ok(mut instance) => instance.write_pair(&fragment, generation, &model).await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok(pair) => CandidateLine { index, pair: Some(pair), error: None },
                    Err(e) => CandidateLine { index, pair: None, error: Some(e.to_string()) },
                }
            }
        };
        let mut failures = Vec::new();
        let outcome = map_concurrent(&stop, &loop_dir, concurrency, pending, work, |line: CandidateLine| {
            append_jsonl(&path, &line).map_err(LoopError::io(&path))?;
            if let Some(reason) = &line.error {
                failures.push((line.index, reason.clone()));
            }
            Ok(())
        })
        .await;
        for (index, reason) in failures {
            ctx.record_failure(round, "write-pairs", &format!("fragment-{index}"), &reason)?;
        }
        outcome?;
        let lines = latest_candidates(&path)?;
        let pairs: Vec<&ScoredPair> = lines.iter().filter_map(|l| l.pair.as_ref()).collect();
        let mean_ifd =
            if pairs.is_empty() { 0.0 } else { pairs.iter().map(|p| p.ifd).sum::<f64>() / pairs.len() as f64 };
        ctx.complete_step(
            round,
            "write-pairs",
            &[
                ("pairs_written", pairs.len() as f64),
                ("pairs_failed", (lines.len() - pairs.len()) as f64),
                ("mean_ifd", mean_ifd),
            ],
        )?;
    }

    let train_path = dir.join("train.jsonl");
    if !ctx.step_done(round, "select") {
        let mut candidates: Vec<ScoredPair> = Vec::new();
        for r in 1..=round {
            let path = ctx.dir.join(format!("round-{r:03}")).join("candidates.jsonl");
            candidates.extend(latest_candidates(&path)?.into_iter().filter_map(|l| l.pair));
        }
        let chosen = if candidates.is_empty() {
            Vec::new()
        } else {
            let models = ctx.models()?;
            let plugin = ctx.strategy(&models, &overrides(&s)).await?;
            let item = ctx.work_item(format!("r{round}-select"));
            let mut instance = plugin.instantiate(&item).await.map_err(|e| strategy_error(round, "select", e))?;
            instance.select(&candidates, generation).await.map_err(|e| strategy_error(round, "select", e))?
        };
        let selection: Vec<&ScoredPair> = chosen.iter().map(|&i| &candidates[i as usize]).collect();
        let selection_path = dir.join("selection.jsonl");
        write_jsonl(&selection_path, &selection).map_err(LoopError::io(&selection_path))?;
        let sft: Vec<serde_json::Value> = selection
            .iter()
            .map(|p| serde_json::json!({ "prompt": p.pair.question, "completion": p.pair.answer }))
            .collect();
        write_jsonl(&train_path, &sft).map_err(LoopError::io(&train_path))?;
        let reused = selection.iter().filter(|p| p.generation != generation).count();
        ctx.complete_step(
            round,
            "select",
            &[("candidates", candidates.len() as f64), ("selected", selection.len() as f64), ("reused", reused as f64)],
        )?;
    }

    if !ctx.step_done(round, "train") {
        let selected = ctx.state.round(round).and_then(|r| r.metrics.get("selected")).copied().unwrap_or(0.0);
        if selected < 1.0 {
            tracing::warn!(
                "generation {round}: the strategy selected no pair (all IFDs above max-ifd, or no pair written): \
                 the model is kept; raise the strategy's max-ifd or top-k to train"
            );
            ctx.complete_step(round, "train", &[("train_examples", 0.0)])?;
        } else {
            let start = match s.train_from {
                TrainFrom::Previous => ctx.state.current_model.clone(),
                TrainFrom::Base => ctx.state.base_model.clone(),
            };
            let report = ctx.train(round, techne_training::TrainKind::Sft, &train_path, &start, None).await?;
            ctx.complete_step(
                round,
                "train",
                &[
                    ("train_examples", report.examples as f64),
                    ("train_steps", report.steps.len() as f64),
                    ("final_loss", report.final_loss.unwrap_or(f64::NAN)),
                    ("train_tokens_per_s", report.tokens_per_second),
                ],
            )?;
        }
    }

    if !ctx.step_done(round, "evaluate") {
        let metrics = evaluate(ctx, round, &s, &dir.join("eval.jsonl")).await?;
        let named: Vec<(&str, f64)> = metrics.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        ctx.complete_step(round, "evaluate", &named)?;
    }
    Ok(RoundOutcome::Continue)
}

/// The last line per fragment of a `candidates.jsonl`, in fragment order.
fn latest_candidates(path: &Path) -> Result<Vec<CandidateLine>, LoopError> {
    let mut latest = std::collections::BTreeMap::new();
    for line in read_jsonl::<CandidateLine>(path).map_err(LoopError::io(path))? {
        latest.insert(line.index, line);
    }
    Ok(latest.into_values().collect())
}

/// Loop settings that override the strategy's parameters.
fn overrides(s: &SelfEvolutionSettings) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(mode) = &s.selection_mode {
        out.push(("mode", mode.clone()));
    }
    if let Some(k) = s.top_k {
        out.push(("top-k", k.to_string()));
    }
    out
}

fn strategy_error(round: u32, step: &str, e: crate::sandbox::CallError) -> LoopError {
    LoopError::Strategy { round, step: step.into(), message: e.to_string() }
}

/// Answer every evaluation question greedily with the current model and
/// score the answers against the references; per-item results in `out`.
async fn evaluate(
    ctx: &mut LoopContext,
    round: u32,
    s: &SelfEvolutionSettings,
    out: &Path,
) -> Result<Vec<(String, f64)>, LoopError> {
    let questions = eval_set(ctx, s)?;
    let models = ctx.models()?;
    let prompts: Vec<String> = questions.iter().map(|(q, _)| q.clone()).collect();
    let sampling = Sampling { max_tokens: s.answer_max_tokens, ..Sampling::default() };
    let answers: Vec<String> = generate_answers(ctx, round, "evaluate", &models, &prompts, sampling)
        .await?
        .into_iter()
        .map(|choices| choices.into_iter().next().unwrap_or_default())
        .collect();
    let mut lines = Vec::new();
    let mut sums = [0.0f64; EVAL_METRICS.len()];
    for (index, ((question, reference), answer)) in questions.into_iter().zip(answers).enumerate() {
        let mut scores = std::collections::BTreeMap::new();
        for (m, sum) in EVAL_METRICS.iter().zip(sums.iter_mut()) {
            let v = m.score(&answer, &reference);
            *sum += v;
            scores.insert(m.name().to_string(), v);
        }
        lines.push(EvalLine { index, question, reference, answer, scores });
    }
    write_jsonl(out, &lines).map_err(LoopError::io(out))?;
    let n = lines.len().max(1) as f64;
    Ok(EVAL_METRICS.iter().zip(sums).map(|(m, sum)| (m.name().to_string(), sum / n)).collect())
}

/// The loop's model's answers (`sampling.n` each) to `prompts` as user
/// messages, in order; shared with the LlamaDuo loop.
pub(crate) async fn generate_answers(
    ctx: &LoopContext,
    round: u32,
    step: &str,
    models: &ModelSet,
    prompts: &[String],
    sampling: Sampling,
) -> Result<Vec<Vec<String>>, LoopError> {
    let model = ctx.section.model.clone();
    let items: Vec<(usize, String)> = prompts.iter().cloned().enumerate().collect();
    let models = models.clone();
    let sampling = Arc::new(sampling);
    let work = move |(index, prompt): (usize, String)| {
        let models = models.clone();
        let model = model.clone();
        let sampling = (*sampling).clone();
        async move {
            let request =
                GenerationRequest { prompt: Prompt::Chat(vec![ChatMessage::new(Role::User, prompt)]), sampling };
            let result = models.generate(&model, "loop", request).await;
            (index, result.map(|g| g.choices.into_iter().map(|c| c.text).collect::<Vec<_>>()))
        }
    };
    let mut answers = vec![Vec::new(); prompts.len()];
    let mut failure = None;
    map_concurrent(&ctx.stop_signal(), &ctx.dir, ctx.config.run.concurrency, items, work, |(index, result)| {
        match result {
            Ok(texts) => answers[index] = texts,
            Err(e) => failure = failure.take().or(Some(e.to_string())),
        }
        Ok(())
    })
    .await?;
    if let Some(message) = failure {
        return Err(LoopError::Model { round, step: step.into(), model: ctx.section.model.clone(), message });
    }
    Ok(answers)
}
