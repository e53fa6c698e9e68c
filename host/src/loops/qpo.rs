//! The `qpo` loop kind (QPO, arXiv 2408.10504, multi-loop offline RL): the
//! policy model that writes a prompt per query, conditioned on a reward
//! prefix, is fine-tuned on reward-labelled (query, prompt) records.
//!
//! - Round 1 trains the policy on the offline dataset (`[loop.qpo]
//!   offline`; without one, round 1 first collects it with the base policy)
//!   for `first-epochs` (paper: 100) at `first-learning-rate` (paper: 1e-3).
//! - Every later round collects with the current policy (S = `[collect]
//!   seeds` prompts × each query of `[dataset]`, at `[collect]
//!   target-reward`, evaluated on `[collect] answer-model` with `[collect]
//!   metric`), merges the records the strategy keeps into the dataset, and
//!   fine-tunes the current policy on the merged data for `epochs` (paper:
//!   20) at `learning-rate` (paper: 1e-4).
//! - The last round ends with an `evaluate` step: one more collection with
//!   the final policy, not merged, for its accuracy and rewards.
//!
//! The strategy is a prompt-policy plugin with the `prompt-policy-trainer`
//! extension (qpo-policy); it is called through chat (`policy-chat =
//! true`), since the loop trains the policy with the chat template. The
//! collection is [`crate::collect::qpo_records`]; each round's files are in
//! `round-NNN/` (`records.jsonl`, `records.sft.jsonl`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{LoopContext, LoopError, RoundOutcome};
use crate::collect::{CollectSettings, qpo_records};
use crate::config::{ParamValue, RunConfig};

/// `[loop.qpo]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct QpoSettings {
    /// The initial offline dataset (query/prompt/reward JSONL, as `techne
    /// collect qpo-records` writes it); without one, round 1 collects it.
    pub offline: Option<PathBuf>,
    /// Epochs of round 1 (paper: 100).
    #[serde(default = "default_first_epochs")]
    pub first_epochs: usize,
    /// Learning rate of round 1 (paper: 1e-3).
    #[serde(default = "default_first_learning_rate")]
    pub first_learning_rate: f64,
    /// Epochs of each later round (paper: 20).
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    /// Learning rate of each later round (paper: 1e-4).
    #[serde(default = "default_learning_rate")]
    pub learning_rate: f64,
}

fn default_first_epochs() -> usize {
    100
}
fn default_first_learning_rate() -> f64 {
    1e-3
}
fn default_epochs() -> usize {
    20
}
fn default_learning_rate() -> f64 {
    1e-4
}

impl QpoSettings {
    /// Checks the settings; returns the key and how to fix it.
    pub(crate) fn validate(&self, config: &RunConfig) -> Result<(), (String, String)> {
        if self.first_epochs == 0 || self.epochs == 0 {
            return Err(("first-epochs".into(), "epochs must be at least 1".into()));
        }
        for (key, lr) in [("first-learning-rate", self.first_learning_rate), ("learning-rate", self.learning_rate)] {
            if !(lr > 0.0 && lr.is_finite()) {
                return Err((key.into(), "must be a positive number".into()));
            }
        }
        let Some(collect) = &config.collect else {
            return Err((
                "collect".into(),
                "a qpo loop collects with a [collect] table: answer-model (the target model), metric, seeds".into(),
            ));
        };
        if collect.metric.is_none() {
            return Err(("collect.metric".into(), "set the task's metric, e.g. \"numeric\"".into()));
        }
        if !config.models.contains_key(&collect.answer_model) {
            return Err((
                "collect.answer-model".into(),
                format!(
                    "model '{}' is not defined: add a [models.{}] table",
                    collect.answer_model, collect.answer_model
                ),
            ));
        }
        Ok(())
    }
}

/// The `[collect]` settings the loop collects with: the strategy as the plugin.
fn collect_settings(ctx: &LoopContext) -> Result<CollectSettings, LoopError> {
    let mut settings = ctx.config.collect.clone().ok_or(LoopError::NotALoop)?;
    settings.plugin = ctx.section.strategy.clone();
    Ok(settings)
}

/// The configuration the collection loads the strategy from: called
/// through chat, as the loop trains it.
fn collect_config(ctx: &LoopContext) -> RunConfig {
    let mut config = ctx.config.clone();
    if let Some(plugin) = config.plugins.get_mut(&ctx.section.strategy) {
        plugin.params.insert("policy-chat".into(), ParamValue::Boolean(true));
    }
    config
}

/// One collection with the current policy into `round_dir/<file>`, merged
/// into `existing` when given.
async fn collect(
    ctx: &mut LoopContext,
    round: u32,
    step: &str,
    existing: Option<PathBuf>,
    file: &str,
) -> Result<qpo_records::QpoCollectSummary, LoopError> {
    let models = ctx.models()?;
    let settings = collect_settings(ctx)?;
    let config = collect_config(ctx);
    let out = ctx.round_dir(round)?.join(file);
    if let Some(existing) = &existing
        && existing.exists()
        && existing != &out
    {
        std::fs::copy(existing, &out).map_err(LoopError::io(&out))?;
    }
    qpo_records::collect(&config, &settings, &models, Some(&out), out.clone()).await.map_err(|e| LoopError::Strategy {
        round,
        step: step.into(),
        message: e.to_string(),
    })
}

fn summary_metrics(prefix: &str, s: &qpo_records::QpoCollectSummary) -> Vec<(String, f64)> {
    let accuracy = if s.prompts == 0 { 0.0 } else { s.correct as f64 / s.prompts as f64 };
    vec![
        (format!("{prefix}_prompts"), s.prompts as f64),
        (format!("{prefix}_accuracy"), accuracy),
        (format!("{prefix}_new_records"), s.new_records as f64),
        (format!("{prefix}_new_mean_reward"), s.new_mean_reward),
        ("records".to_string(), s.total_records as f64),
    ]
}

fn named(metrics: &[(String, f64)]) -> Vec<(&str, f64)> {
    metrics.iter().map(|(k, v)| (k.as_str(), *v)).collect()
}

/// The merged dataset of round `round` (its records and SFT files).
fn records_path(ctx: &LoopContext, round: u32) -> Result<PathBuf, LoopError> {
    Ok(ctx.round_dir(round)?.join("records.jsonl"))
}

/// Run one round (see the module docs).
pub(crate) async fn run_round(ctx: &mut LoopContext, round: u32) -> Result<RoundOutcome, LoopError> {
    let settings = ctx.section.qpo.clone().ok_or(LoopError::NotALoop)?;
    let records = records_path(ctx, round)?;
    if !ctx.step_done(round, "collect") {
        let previous = if round == 1 {
            settings.offline.as_ref().map(|p| super::config::resolve(&ctx.config.base_dir, p))
        } else {
            Some(records_path(ctx, round - 1)?)
        };
        let metrics = if round == 1 && previous.is_some() {
            // Loop 1 trains on the offline data as given.
            let (source, out) = (previous.clone().unwrap_or_default(), records.clone());
            std::fs::copy(&source, &out).map_err(|e| LoopError::Data {
                path: source.clone(),
                message: format!("cannot copy the offline dataset: {e}; check [loop.qpo] offline"),
            })?;
            let rows: Vec<crate::sandbox::plugin::OfflineRecord> = crate::collect::read_jsonl(&out)
                .map_err(|e| LoopError::Data { path: source.clone(), message: e.to_string() })?;
            // The SFT data of the offline records comes from the strategy.
            let summary = sft_for(ctx, round, &out).await?;
            vec![("records".to_string(), rows.len() as f64), ("offline".to_string(), summary as f64)]
        } else {
            let summary = collect(ctx, round, "collect", previous, "records.jsonl").await?;
            summary_metrics("collect", &summary)
        };
        ctx.complete_step(round, "collect", &named(&metrics))?;
    }
    ctx.check_stop()?;
    if !ctx.step_done(round, "train") {
        let data = qpo_records::sft_path(&records);
        let examples = std::fs::read_to_string(&data).map(|t| t.lines().count()).unwrap_or(0);
        if examples == 0 {
            return Err(LoopError::NoData {
                round,
                message: "no QPO record was kept: lower the strategy's `min-reward`, raise [collect] seeds, or give \
                          [loop.qpo] offline data"
                    .into(),
            });
        }
        let (epochs, learning_rate) = if round == 1 {
            (settings.first_epochs, settings.first_learning_rate)
        } else {
            (settings.epochs, settings.learning_rate)
        };
        let saved = ctx.section.training.clone();
        ctx.section.training.epochs = epochs;
        ctx.section.training.learning_rate = learning_rate;
        let start = ctx.state.current_model.clone();
        let trained = ctx.train(round, techne_training::TrainKind::Sft, &data, &start, None).await;
        ctx.section.training = saved;
        let report = trained?;
        let last_loss = report.steps.last().map(|s| s.loss).unwrap_or(f64::NAN);
        ctx.complete_step(
            round,
            "train",
            &[
                ("train_examples", examples as f64),
                ("train_steps", report.steps.len() as f64),
                ("final_loss", last_loss),
            ],
        )?;
    }
    let rounds = ctx.section.rounds.unwrap_or(ctx.section.kind.default_rounds());
    if round == rounds && !ctx.step_done(round, "evaluate") {
        let summary = collect(ctx, round, "evaluate", None, "evaluation.jsonl").await?;
        let metrics = summary_metrics("eval", &summary);
        let metrics: Vec<(String, f64)> = metrics.into_iter().filter(|(k, _)| k != "records").collect();
        ctx.complete_step(round, "evaluate", &named(&metrics))?;
    }
    Ok(RoundOutcome::Continue)
}

/// Writes the SFT data of the records at `path` with the strategy's
/// `training-example`; returns how many examples.
async fn sft_for(ctx: &mut LoopContext, round: u32, path: &std::path::Path) -> Result<usize, LoopError> {
    let models = ctx.models()?;
    let strategy = ctx.strategy(&models, &[("policy-chat", "true".to_string())]).await?;
    let failed = |message: String| LoopError::Strategy { round, step: "collect".into(), message };
    let rows: Vec<crate::sandbox::plugin::OfflineRecord> =
        crate::collect::read_jsonl(path).map_err(|e| failed(e.to_string()))?;
    let mut instance =
        strategy.instantiate(&ctx.work_item(format!("r{round}/sft"))).await.map_err(|e| failed(e.to_string()))?;
    let mut sft = Vec::with_capacity(rows.len());
    for row in &rows {
        let example = instance.training_example(row).await.map_err(|e| failed(e.to_string()))?;
        sft.push(qpo_records::SftExample { prompt: example.input, completion: example.target });
    }
    let out = qpo_records::sft_path(path);
    crate::collect::write_jsonl(&out, &sft).map_err(|e| failed(e.to_string()))?;
    Ok(sft.len())
}
