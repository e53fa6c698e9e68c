//! The `rewriter-dpo` loop kind (Question Rewriter, arXiv 2408.10573): DPO
//! of the rewriter on preference pairs of rewrites, keeping the model with
//! the best validation preference score.
//!
//! Per round:
//! 1. `collect`: the pairs, from `[loop.rewriter-dpo] pairs` in round 1 when
//!    given, else collected with the current rewriter by
//!    [`crate::collect::rewriter_pairs`] (`[collect]`: answer-model,
//!    judge-model; `[dataset]`: K-QA-style records).
//! 2. `split`: the pairs of a `validation-share` of the original questions
//!    (chosen by a hash of the question, so the split is stable) are held
//!    out for validation; the rest is the training set.
//! 3. `score-before`: the validation preference score of the current model.
//! 4. `train`: DPO from the current model (`[loop.training]`), evaluated
//!    on the validation pairs at every checkpoint (`checkpoint-every`) and
//!    after the last step; the checkpoint whose DPO reward accuracy on them
//!    is highest (ties: lower held-out loss) becomes the round's model
//!    (`kept_step` in the round's metrics).
//! 5. `validate`: the trained model's validation preference score. The
//!    model with the better score stays the current model (the trained one
//!    on a tie), so the loop always ends with its best model.
//!
//! The **validation preference score** is the share of validation pairs
//! where the model's log-likelihood of the chosen rewrite after the pair's
//! prompt (as the assistant's reply, through the host's scoring) exceeds
//! that of the rejected rewrite; the mean margin is reported beside it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{LoopContext, LoopError, RoundOutcome};
use crate::backends::{ChatMessage, ModelSet, Prompt, Role, ScoringRequest};
use crate::collect::rewriter_pairs;
use crate::sandbox::plugin::PreferencePair;

/// `[loop.rewriter-dpo]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RewriterDpoSettings {
    /// Pairs collected before (prompt/chosen/rejected JSONL, e.g. by `techne
    /// collect rewriter-pairs`), used in round 1 instead of collecting.
    pub pairs: Option<PathBuf>,
    /// Share of the original questions whose pairs are held out.
    #[serde(default = "default_validation_share")]
    pub validation_share: f64,
}

fn default_validation_share() -> f64 {
    0.2
}

impl RewriterDpoSettings {
    /// Checks the settings; returns the key and how to fix it.
    pub(crate) fn validate(&self, config: &crate::config::RunConfig) -> Result<(), (String, String)> {
        if !(self.validation_share > 0.0 && self.validation_share < 1.0) {
            return Err(("validation-share".into(), "must be between 0 and 1 (exclusive)".into()));
        }
        if self.pairs.is_none() && config.collect.as_ref().is_none_or(|c| c.judge_model.is_none()) {
            return Err((
                "pairs".into(),
                "give collected `pairs`, or a [collect] table with answer-model and judge-model to collect them".into(),
            ));
        }
        Ok(())
    }
}

/// A stable 64-bit hash (FNV-1a) of a text.
fn stable_hash(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Splits `pairs` by their prompt (one prompt = one original question):
/// the `share` of prompts with the lowest hashes go to validation (at least
/// one prompt, and at least one left for training when there are two or
/// more). Returns (training, validation).
pub fn split_pairs(pairs: Vec<PreferencePair>, share: f64) -> (Vec<PreferencePair>, Vec<PreferencePair>) {
    let mut prompts: Vec<&str> = pairs.iter().map(|p| p.prompt.as_str()).collect();
    prompts.sort_unstable();
    prompts.dedup();
    prompts.sort_by_key(|p| stable_hash(p));
    let n = prompts.len();
    let held = if n < 2 { 0 } else { ((n as f64 * share).round() as usize).clamp(1, n - 1) };
    let validation: std::collections::HashSet<String> = prompts[..held].iter().map(|p| (*p).to_owned()).collect();
    pairs.into_iter().partition(|p| !validation.contains(&p.prompt))
}

/// The validation preference score of `model`: (share of pairs whose
/// chosen completion has the higher log-likelihood, mean margin).
pub async fn preference_score(
    models: &ModelSet,
    model: &str,
    pairs: &[PreferencePair],
) -> Result<(f64, f64), crate::backends::BackendError> {
    if pairs.is_empty() {
        return Ok((0.0, 0.0));
    }
    let (mut wins, mut margin_sum) = (0usize, 0.0);
    for pair in pairs {
        let request = ScoringRequest {
            prompt: Prompt::Chat(vec![ChatMessage::new(Role::User, pair.prompt.clone())]),
            continuations: vec![pair.chosen.clone(), pair.rejected.clone()],
        };
        let scores = models.score(model, "rewriter-dpo-validation", request).await?;
        let [chosen, rejected] = scores.as_slice() else {
            return Err(crate::backends::BackendError::InvalidRequest("expected two scores".into()));
        };
        let margin = chosen.logprob_sum - rejected.logprob_sum;
        wins += usize::from(margin > 0.0);
        margin_sum += margin;
    }
    Ok((wins as f64 / pairs.len() as f64, margin_sum / pairs.len() as f64))
}

fn read_pairs(path: &Path) -> Result<Vec<PreferencePair>, LoopError> {
    crate::collect::read_jsonl(path).map_err(|e| LoopError::Data { path: path.to_path_buf(), message: e.to_string() })
}

fn write_pairs(path: &Path, pairs: &[PreferencePair]) -> Result<(), LoopError> {
    crate::collect::write_jsonl(path, pairs)
        .map_err(|e| LoopError::Data { path: path.to_path_buf(), message: e.to_string() })
}

async fn score_step(ctx: &mut LoopContext, round: u32, step: &str, validation: &Path) -> Result<(f64, f64), LoopError> {
    let models = ctx.models()?;
    let pairs = read_pairs(validation)?;
    let model = ctx.section.model.clone();
    preference_score(&models, &model, &pairs).await.map_err(|e| LoopError::Model {
        round,
        step: step.into(),
        model,
        message: e.to_string(),
    })
}

/// Run one round (see the module docs).
pub(crate) async fn run_round(ctx: &mut LoopContext, round: u32) -> Result<RoundOutcome, LoopError> {
    let settings = ctx.section.rewriter_dpo.clone().ok_or(LoopError::NotALoop)?;
    let dir = ctx.round_dir(round)?;
    let (all, train, validation) = (dir.join("pairs.jsonl"), dir.join("train.jsonl"), dir.join("validation.jsonl"));
    if !ctx.step_done(round, "collect") {
        let count = match (&settings.pairs, round) {
            (Some(given), 1) => {
                let given = super::config::resolve(&ctx.config.base_dir, given);
                let pairs = read_pairs(&given)?;
                write_pairs(&all, &pairs)?;
                pairs.len()
            }
            _ => {
                let models = ctx.models()?;
                let mut collect = ctx.config.collect.clone().ok_or(LoopError::NotALoop)?;
                collect.plugin = ctx.section.strategy.clone();
                let summary = rewriter_pairs::collect(&ctx.config, &collect, &models, all.clone(), &mut |q| {
                    tracing::info!("question {}: {} rewrites, {} pairs", q.id, q.rewrites, q.pairs)
                })
                .await
                .map_err(|e| LoopError::Strategy {
                    round,
                    step: "collect".into(),
                    message: e.to_string(),
                })?;
                summary.pairs
            }
        };
        ctx.complete_step(round, "collect", &[("pairs", count as f64)])?;
    }
    if !ctx.step_done(round, "split") {
        let (train_pairs, validation_pairs) = split_pairs(read_pairs(&all)?, settings.validation_share);
        if train_pairs.is_empty() || validation_pairs.is_empty() {
            return Err(LoopError::NoData {
                round,
                message: format!(
                    "{} training and {} validation pairs: DPO needs pairs from at least two questions; collect on \
                     more questions or with more rewrites (rewrites-per-question)",
                    train_pairs.len(),
                    validation_pairs.len()
                ),
            });
        }
        write_pairs(&train, &train_pairs)?;
        write_pairs(&validation, &validation_pairs)?;
        ctx.complete_step(
            round,
            "split",
            &[("train_pairs", train_pairs.len() as f64), ("validation_pairs", validation_pairs.len() as f64)],
        )?;
    }
    if !ctx.step_done(round, "score-before") {
        let (score, margin) = score_step(ctx, round, "score-before", &validation).await?;
        ctx.complete_step(round, "score-before", &[("preference_before", score), ("margin_before", margin)])?;
    }
    ctx.check_stop()?;
    let before_model = ctx.state.current_model.clone();
    if !ctx.step_done(round, "train") {
        let report =
            ctx.train(round, techne_training::TrainKind::Dpo, &train, &before_model, Some(&validation)).await?;
        let last_loss = report.steps.last().map(|s| s.loss).unwrap_or(f64::NAN);
        let kept_step = report.selected_step.or(report.steps.last().map(|s| s.step)).unwrap_or(0);
        ctx.complete_step(
            round,
            "train",
            &[("train_steps", report.steps.len() as f64), ("final_loss", last_loss), ("kept_step", kept_step as f64)],
        )?;
    }
    if !ctx.step_done(round, "validate") {
        let (score, margin) = score_step(ctx, round, "validate", &validation).await?;
        let before = ctx.state.round(round).and_then(|r| r.metrics.get("preference_before").copied()).unwrap_or(0.0);
        let kept = score >= before;
        if !kept {
            // The round's model validates worse: keep the previous one.
            let previous = if round == 1 {
                ctx.state.base_model.clone()
            } else {
                ctx.state.round(round - 1).and_then(|r| r.model.clone()).unwrap_or_else(|| ctx.state.base_model.clone())
            };
            ctx.state.current_model = previous;
        }
        ctx.complete_step(
            round,
            "validate",
            &[("preference_after", score), ("margin_after", margin), ("kept_trained", f64::from(u8::from(kept)))],
        )?;
    }
    Ok(RoundOutcome::Continue)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(prompt: &str, n: usize) -> PreferencePair {
        PreferencePair { prompt: prompt.into(), chosen: format!("c{n}"), rejected: format!("r{n}") }
    }

    #[test]
    fn split_holds_out_whole_questions() {
        let pairs: Vec<PreferencePair> = (0..20).map(|i| pair(&format!("question {}", i % 5), i)).collect();
        let (train, validation) = split_pairs(pairs.clone(), 0.2);
        assert_eq!(train.len() + validation.len(), 20);
        let held: std::collections::BTreeSet<&str> = validation.iter().map(|p| p.prompt.as_str()).collect();
        assert_eq!(held.len(), 1, "20% of 5 questions");
        assert!(train.iter().all(|p| !held.contains(p.prompt.as_str())));
        // Stable: the same split again.
        assert_eq!(split_pairs(pairs, 0.2).1, validation);
        // One question: nothing to hold out without emptying the training set.
        let (train, validation) = split_pairs(vec![pair("q", 0), pair("q", 1)], 0.5);
        assert_eq!((train.len(), validation.len()), (2, 0));
    }
}
