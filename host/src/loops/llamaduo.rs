//! The LlamaDuo loop (arXiv 2408.13467): migrate a task from a service model
//! to the small local model. The coverage dataset (prompt, reference
//! response) is split into train and test. Each round the host fine-tunes
//! the local model **from the base** on the train split plus the cumulative
//! synthetic set, batch-infers K responses per test prompt, and the
//! migration-strategy plugin's `judge` has the service model score each for
//! similarity and precision (1–100, averaged over M repeats inside the
//! plugin). When both means reach the threshold the loop stops; otherwise
//! the plugin `synthesize`s new pairs Self-Instruct style from the train
//! seeds and `curate`s them (dedupe against each other and the existing
//! data, decontaminate against the test prompts), and the kept pairs join
//! the cumulative synthetic set for the next round. A round limit bounds it.
//!
//! Steps of a round: `train` (`train.jsonl`, `train/`), `infer`
//! (`responses.jsonl`), `judge` (per-response progress in
//! `judgements.jsonl`; a resumed step judges again the responses whose
//! judgement failed), then, unless the loop stops, `synthesize`
//! (`candidates.jsonl`) and `curate` (`synthetic.jsonl`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::self_evolution::generate_answers;
use super::state::{append_jsonl, read_jsonl, write_jsonl};
use super::{LoopContext, LoopError, RoundOutcome, map_concurrent, read_records, text_field};
use crate::backends::Sampling;
use crate::sandbox::{Example, Judgement};

/// `[loop.llamaduo]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LlamaDuoSettings {
    /// The coverage dataset: JSONL or a JSON array of objects.
    pub data: PathBuf,
    /// The field holding a prompt.
    #[serde(default = "default_prompt_field")]
    pub prompt_field: String,
    /// The field holding its reference response.
    #[serde(default = "default_response_field")]
    pub response_field: String,
    /// Examples held out as the test split (the last ones); default a fifth.
    pub test_size: Option<usize>,
    /// The service model (a `[models.NAME]`) that judges and synthesises.
    pub service_model: String,
    /// K: responses of the local model per test prompt.
    #[serde(default = "default_responses")]
    pub responses_per_prompt: u32,
    /// Sampling temperature of those responses (must be above 0 when K > 1).
    #[serde(default)]
    pub response_temperature: f32,
    /// Token budget of a local response.
    #[serde(default = "default_response_tokens")]
    pub response_max_tokens: u32,
    /// Stop when both mean scores (similarity, precision; 1–100) reach this.
    /// Default 90, the value of the paper's reference implementation
    /// (`avg_similarity_threshold` / `avg_precision_threshold` in
    /// deep-diver/llamaduo's `config/evaluation.yaml`).
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// Synthetic examples asked for per round. The paper scales the
    /// synthetic set from 1k to 256k examples and leaves the per-round
    /// amount to the run; 100 is techne's default, sized for one machine.
    #[serde(default = "default_synthetic")]
    pub synthetic_per_round: u32,
    /// Overrides the strategy's `judge-repeats` parameter (M).
    pub judge_repeats: Option<u32>,
}

fn default_prompt_field() -> String {
    "prompt".into()
}
fn default_response_field() -> String {
    "response".into()
}
fn default_responses() -> u32 {
    1
}
fn default_response_tokens() -> u32 {
    256
}
fn default_threshold() -> f64 {
    90.0
}
fn default_synthetic() -> u32 {
    100
}

impl LlamaDuoSettings {
    /// Check the values; returns the key and how to fix it.
    pub(crate) fn validate(&self) -> Result<(), (String, String)> {
        if self.responses_per_prompt == 0 {
            return Err(("responses-per-prompt".into(), "must be at least 1".into()));
        }
        if self.responses_per_prompt > 1 && self.response_temperature <= 0.0 {
            return Err((
                "response-temperature".into(),
                "K > 1 responses per prompt need sampling: set a temperature above 0 (e.g. 0.7)".into(),
            ));
        }
        if !(0.0..=2.0).contains(&self.response_temperature) {
            return Err(("response-temperature".into(), "must be between 0 and 2".into()));
        }
        if !(1.0..=100.0).contains(&self.threshold) {
            return Err(("threshold".into(), "judge scores run from 1 to 100: pick a threshold in that range".into()));
        }
        for (key, zero) in [
            ("test-size", self.test_size == Some(0)),
            ("synthetic-per-round", self.synthetic_per_round == 0),
            ("response-max-tokens", self.response_max_tokens == 0),
            ("judge-repeats", self.judge_repeats == Some(0)),
        ] {
            if zero {
                return Err((key.into(), "must be at least 1".into()));
            }
        }
        Ok(())
    }
}

/// One line of `responses.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ResponseLine {
    index: usize,
    prompt: String,
    reference: String,
    responses: Vec<String>,
}

/// One line of `judgements.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct JudgementLine {
    index: usize,
    response: usize,
    judgement: Option<Judgement>,
    error: Option<String>,
}

fn settings(ctx: &LoopContext) -> Result<LlamaDuoSettings, LoopError> {
    ctx.section.llamaduo.clone().ok_or(LoopError::NotALoop)
}

/// The train and test splits of the coverage dataset.
fn splits(ctx: &LoopContext, s: &LlamaDuoSettings) -> Result<(Vec<Example>, Vec<Example>), LoopError> {
    let path = super::config::resolve(&ctx.config.base_dir, &s.data);
    let records = read_records(&path)?;
    let mut all = Vec::new();
    for (i, r) in records.iter().enumerate() {
        all.push(Example {
            prompt: text_field(&path, r, i, &s.prompt_field)?,
            response: text_field(&path, r, i, &s.response_field)?,
        });
    }
    let test_size = s.test_size.unwrap_or((all.len() / 5).max(1));
    if test_size >= all.len() {
        return Err(LoopError::Data {
            path,
            message: format!(
                "{} examples leave nothing to train on with a test split of {test_size}: lower loop.llamaduo.test-size or add examples",
                all.len()
            ),
        });
    }
    let test = all.split_off(all.len() - test_size);
    Ok((all, test))
}

/// The synthetic examples kept in rounds before `round`.
fn synthetic_before(ctx: &LoopContext, round: u32) -> Result<Vec<Example>, LoopError> {
    let mut out = Vec::new();
    for r in 1..round {
        let path = ctx.dir.join(format!("round-{r:03}")).join("synthetic.jsonl");
        out.extend(read_jsonl::<Example>(&path).map_err(LoopError::io(&path))?);
    }
    Ok(out)
}

fn overrides(s: &LlamaDuoSettings) -> Vec<(&'static str, String)> {
    s.judge_repeats.map(|m| vec![("judge-repeats", m.to_string())]).unwrap_or_default()
}

/// One round.
pub(crate) async fn run_round(ctx: &mut LoopContext, round: u32) -> Result<RoundOutcome, LoopError> {
    let s = settings(ctx)?;
    let (train, test) = splits(ctx, &s)?;
    let dir = ctx.round_dir(round)?;
    let rounds = ctx.section.rounds.unwrap_or(ctx.section.kind.default_rounds());

    if !ctx.step_done(round, "train") {
        let synthetic = synthetic_before(ctx, round)?;
        let data: Vec<serde_json::Value> = train
            .iter()
            .chain(&synthetic)
            .map(|e| serde_json::json!({ "prompt": e.prompt, "completion": e.response }))
            .collect();
        let path = dir.join("train.jsonl");
        write_jsonl(&path, &data).map_err(LoopError::io(&path))?;
        let base = ctx.state.base_model.clone();
        let report = ctx.train(round, techne_training::TrainKind::Sft, &path, &base, None).await?;
        ctx.complete_step(
            round,
            "train",
            &[
                ("train_examples", report.examples as f64),
                ("synthetic_total", synthetic.len() as f64),
                ("train_steps", report.steps.len() as f64),
                ("final_loss", report.final_loss.unwrap_or(f64::NAN)),
                ("train_tokens_per_s", report.tokens_per_second),
            ],
        )?;
    }

    let responses_path = dir.join("responses.jsonl");
    if !ctx.step_done(round, "infer") {
        let models = ctx.models()?;
        let prompts: Vec<String> = test.iter().map(|e| e.prompt.clone()).collect();
        let sampling = Sampling {
            max_tokens: s.response_max_tokens,
            temperature: s.response_temperature,
            n: s.responses_per_prompt,
            seed: crate::sandbox::item_seed(ctx.config.run.seed, &format!("r{round}-infer")),
            ..Sampling::default()
        };
        let answers = generate_answers(ctx, round, "infer", &models, &prompts, sampling).await?;
        let lines: Vec<ResponseLine> = test
            .iter()
            .zip(answers)
            .enumerate()
            .map(|(index, (e, responses))| ResponseLine {
                index,
                prompt: e.prompt.clone(),
                reference: e.response.clone(),
                responses,
            })
            .collect();
        write_jsonl(&responses_path, &lines).map_err(LoopError::io(&responses_path))?;
        let count: usize = lines.iter().map(|l| l.responses.len()).sum();
        ctx.complete_step(round, "infer", &[("responses", count as f64)])?;
    }

    if !ctx.step_done(round, "judge") {
        let path = dir.join("judgements.jsonl");
        let responses: Vec<ResponseLine> = read_jsonl(&responses_path).map_err(LoopError::io(&responses_path))?;
        // Responses judged before a kill are kept; failed ones are tried again.
        let done: Vec<JudgementLine> = read_jsonl(&path).map_err(LoopError::io(&path))?;
        let seen: BTreeSet<(usize, usize)> =
            done.iter().filter(|l| l.judgement.is_some()).map(|l| (l.index, l.response)).collect();
        let models = ctx.models()?;
        let plugin = ctx.strategy(&models, &overrides(&s)).await?;
        let service = s.service_model.clone();
        let mut pending = Vec::new();
        for line in &responses {
            for (k, response) in line.responses.iter().enumerate() {
                if !seen.contains(&(line.index, k)) {
                    let reference = Example { prompt: line.prompt.clone(), response: line.reference.clone() };
                    let item = ctx.work_item(format!("r{round}-judge-{}-{k}", line.index));
                    pending.push((line.index, k, reference, response.clone(), item));
                }
            }
        }
        let work =
            move |(index, k, reference, response, item): (usize, usize, Example, String, crate::sandbox::WorkItem)| {
                let plugin = plugin.clone();
                let service = service.clone();
                async move {
                    let result = match plugin.instantiate(&item).await {
                        Ok(mut instance) => instance.judge(&reference, &response, &service).await,
                        Err(e) => Err(e),
                    };
                    match result {
                        Ok(j) => JudgementLine { index, response: k, judgement: Some(j), error: None },
                        Err(e) => JudgementLine { index, response: k, judgement: None, error: Some(e.to_string()) },
                    }
                }
            };
        let mut failures = Vec::new();
        let stop = ctx.stop_signal();
        let outcome = map_concurrent(
            &stop,
            &ctx.dir.clone(),
            ctx.config.run.concurrency,
            pending,
            work,
            |line: JudgementLine| {
                append_jsonl(&path, &line).map_err(LoopError::io(&path))?;
                if let Some(reason) = &line.error {
                    failures.push((format!("test-{}-response-{}", line.index, line.response), reason.clone()));
                }
                Ok(())
            },
        )
        .await;
        for (item, reason) in failures {
            ctx.record_failure(round, "judge", &item, &reason)?;
        }
        outcome?;
        let mut latest: BTreeMap<(usize, usize), JudgementLine> = BTreeMap::new();
        for line in read_jsonl::<JudgementLine>(&path).map_err(LoopError::io(&path))? {
            latest.insert((line.index, line.response), line);
        }
        let lines: Vec<JudgementLine> = latest.into_values().collect();
        let judged: Vec<Judgement> = lines.iter().filter_map(|l| l.judgement).collect();
        if judged.is_empty() {
            return Err(LoopError::Strategy {
                round,
                step: "judge".into(),
                message: format!(
                    "no response could be judged ({} failed; reasons in {}): check the service model",
                    lines.len(),
                    dir.join("failures.jsonl").display()
                ),
            });
        }
        let n = judged.len() as f64;
        let similarity = judged.iter().map(|j| j.similarity).sum::<f64>() / n;
        let precision = judged.iter().map(|j| j.precision).sum::<f64>() / n;
        let reached = similarity >= s.threshold && precision >= s.threshold;
        ctx.complete_step(
            round,
            "judge",
            &[
                ("similarity", similarity),
                ("precision", precision),
                ("judged", n),
                ("judge_failed", (lines.len() - judged.len()) as f64),
                ("threshold_reached", f64::from(u8::from(reached))),
            ],
        )?;
    }

    let metric = |name: &str| ctx.state.round(round).and_then(|r| r.metrics.get(name)).copied().unwrap_or(0.0);
    if metric("threshold_reached") > 0.0 {
        return Ok(RoundOutcome::Finished(format!(
            "round {round}: similarity {:.1} and precision {:.1} reached the threshold {}",
            metric("similarity"),
            metric("precision"),
            s.threshold
        )));
    }
    if round >= rounds {
        return Ok(RoundOutcome::Continue);
    }

    let candidates_path = dir.join("candidates.jsonl");
    if !ctx.step_done(round, "synthesize") {
        let models = ctx.models()?;
        let plugin = ctx.strategy(&models, &overrides(&s)).await?;
        let item = ctx.work_item(format!("r{round}-synthesize"));
        let result = match plugin.instantiate(&item).await {
            Ok(mut instance) => instance.synthesize(&train, s.synthetic_per_round, &s.service_model, round - 1).await,
            Err(e) => Err(e),
        };
        let candidates = match result {
            Ok(c) => c,
            Err(e) => {
                ctx.record_failure(round, "synthesize", "synthesize", &e.to_string())?;
                Vec::new()
            }
        };
        write_jsonl(&candidates_path, &candidates).map_err(LoopError::io(&candidates_path))?;
        ctx.complete_step(round, "synthesize", &[("synthesized", candidates.len() as f64)])?;
    }

    if !ctx.step_done(round, "curate") {
        let candidates: Vec<Example> = read_jsonl(&candidates_path).map_err(LoopError::io(&candidates_path))?;
        let mut existing = train.clone();
        existing.extend(synthetic_before(ctx, round)?);
        let test_prompts: Vec<String> = test.iter().map(|e| e.prompt.clone()).collect();
        let kept: Vec<Example> = if candidates.is_empty() {
            Vec::new()
        } else {
            let models = ctx.models()?;
            let plugin = ctx.strategy(&models, &overrides(&s)).await?;
            let item = ctx.work_item(format!("r{round}-curate"));
            let result = match plugin.instantiate(&item).await {
                Ok(mut instance) => instance.curate(&candidates, &existing, &test_prompts).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(indices) => indices.iter().map(|&i| candidates[i as usize].clone()).collect(),
                Err(e) => {
                    ctx.record_failure(round, "curate", "curate", &e.to_string())?;
                    Vec::new()
                }
            }
        };
        let path = dir.join("synthetic.jsonl");
        write_jsonl(&path, &kept).map_err(LoopError::io(&path))?;
        let total = synthetic_before(ctx, round)?.len() + kept.len();
        ctx.complete_step(
            round,
            "curate",
            &[
                ("kept", kept.len() as f64),
                ("dropped", (candidates.len() - kept.len()) as f64),
                ("synthetic_after", total as f64),
            ],
        )?;
    }
    Ok(RoundOutcome::Continue)
}
