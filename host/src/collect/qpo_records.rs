//! QPO's offline data (arXiv 2408.10504): the collection step of a loop and
//! the policy's SFT data. For each query of the dataset the plugin writes S
//! prompts at the target reward (`propose-for-training`); the target model
//! answers each complete prompt greedily, the task's metric says whether
//! the answer is correct, and the target model's scoring gives the label's
//! log-likelihood after the prompt. The plugin rewards those outcomes with
//! the paper's formula, keeps the ones above its minimum and drops
//! duplicates (`curate-records`); the new records are merged into the
//! offline dataset (`query`/`prompt`/`reward` JSONL) and every record is
//! turned into the policy's training example (`training-example`: reward
//! prefix + query → prompt), written as `prompt`/`completion` SFT JSONL.
//! Every outcome, kept or not, is also logged (`*.outcomes.jsonl`: query,
//! prompt, correct, label log-likelihood), merged like the records but
//! without outcomes already logged to the bit (a re-run step): the logged
//! data Prompt-OIRL's reward model is fitted on
//! ([`super::oirl_reward_model`]).

use std::path::{Path, PathBuf};

use crate::backends::{ChatMessage, GenerationRequest, ModelSet, Prompt, Role, Sampling, ScoringRequest};
use crate::config::RunConfig;
use crate::sandbox::plugin::{OfflineRecord, PromptOutcome, TrainerExtension};
use crate::sandbox::{WorkItem, item_seed};

use super::{CollectError, CollectSettings};

/// Caller tag of the target model's calls.
const CALLER: &str = "collect-qpo";

/// One line of the policy's SFT data (techne-training's prompt/completion form).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SftExample {
    /// The policy's input.
    pub prompt: String,
    /// The prompt it should write.
    pub completion: String,
}

/// The result of one collection step.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct QpoCollectSummary {
    /// Queries used.
    pub queries: usize,
    /// Prompts the policy wrote and the target model was run on.
    pub prompts: usize,
    /// Of those, answers the metric counted correct.
    pub correct: usize,
    /// Records the plugin kept (new ones only).
    pub new_records: usize,
    /// Mean reward of the new records (0 when there are none).
    pub new_mean_reward: f64,
    /// Records in the merged offline dataset.
    pub total_records: usize,
    /// Whether the SFT examples are chat turns (train with the chat
    /// template) or raw text (train with the raw template).
    pub chat: bool,
    /// The merged offline dataset.
    pub records_path: PathBuf,
    /// The SFT data made from it.
    pub sft_path: PathBuf,
    /// Every outcome of this step and of the merged dataset's earlier steps.
    pub outcomes_path: PathBuf,
    /// Outcomes in that file.
    pub total_outcomes: usize,
}

/// Where the offline dataset goes when `[collect] output` is not set.
pub fn default_records_path(config: &RunConfig) -> PathBuf {
    config.run.output_dir.clone().unwrap_or_else(|| config.base_dir.clone()).join("qpo-records.jsonl")
}

/// The SFT file written beside the records file.
pub fn sft_path(records_path: &Path) -> PathBuf {
    records_path.with_file_name(format!(
        "{}.sft.jsonl",
        records_path.file_stem().and_then(|s| s.to_str()).unwrap_or("qpo-records")
    ))
}

/// The outcome log written beside the records file.
pub fn outcomes_path(records_path: &Path) -> PathBuf {
    records_path.with_file_name(format!(
        "{}.outcomes.jsonl",
        records_path.file_stem().and_then(|s| s.to_str()).unwrap_or("qpo-records")
    ))
}

/// Runs one collection step with `settings`, merges the new records into
/// the dataset at `existing` (if given and present) and writes the merged
/// dataset to `records_path` and its SFT data beside it.
pub async fn collect(
    config: &RunConfig,
    settings: &CollectSettings,
    models: &ModelSet,
    existing: Option<&Path>,
    records_path: PathBuf,
) -> Result<QpoCollectSummary, CollectError> {
    let metric = settings.metric.ok_or_else(|| {
        CollectError::Config("QPO records need the task's metric: set `metric` in [collect] (e.g. \"numeric\")".into())
    })?;
    super::require_model(config, "answer-model", &settings.answer_model)?;
    if !(1..=128).contains(&settings.seeds) {
        return Err(CollectError::Config("[collect] seeds must be from 1 to 128".into()));
    }
    let items = crate::runs::load_work_items(config).map_err(Box::new)?;
    let plugin = super::load_trainer(config, &settings.plugin, TrainerExtension::PromptPolicyTrainer, models).await?;
    let plugin_error = |item: &str| {
        let (plugin, item) = (settings.plugin.clone(), item.to_owned());
        move |source| CollectError::Plugin { plugin, item, source: Box::new(source) }
    };
    let mut existing_records: Vec<OfflineRecord> = match existing {
        Some(path) if path.exists() => super::read_jsonl(path)?,
        _ => Vec::new(),
    };

    let mut outcomes = Vec::new();
    for item in &items {
        let Some(reference) = &item.reference else {
            return Err(CollectError::Config(format!(
                "item {} has no reference: QPO's reward needs labels; set `reference-field` in [dataset]",
                item.id
            )));
        };
        let work = WorkItem { id: item.id.clone(), seed: item_seed(config.run.seed, &item.id) };
        let mut instance = plugin.instantiate(&work).await.map_err(plugin_error(&item.id))?;
        let prompts = instance
            .propose_for_training(&item.input, settings.target_reward, settings.seeds)
            .await
            .map_err(plugin_error(&item.id))?;
        for prompt in prompts {
            let messages = vec![ChatMessage::new(Role::User, prompt.full_prompt.clone())];
            let request = GenerationRequest {
                prompt: Prompt::Chat(messages.clone()),
                sampling: Sampling { max_tokens: settings.answer_max_tokens, ..Sampling::default() },
            };
            let model_error = |source| CollectError::Model { model: settings.answer_model.clone(), source };
            let generation = models.generate(&settings.answer_model, CALLER, request).await.map_err(model_error)?;
            let answer = generation.choices.first().map(|c| c.text.as_str()).unwrap_or("");
            let correct = metric.score(answer, reference) >= 1.0 - 1e-9;
            let scoring = ScoringRequest { prompt: Prompt::Chat(messages), continuations: vec![reference.clone()] };
            let scores = models
                .score(&settings.answer_model, CALLER, scoring)
                .await
                .map_err(|source| CollectError::Model { model: settings.answer_model.clone(), source })?;
            let label = scores.first().ok_or_else(|| CollectError::Model {
                model: settings.answer_model.clone(),
                source: crate::backends::BackendError::InvalidRequest("no score for the label".into()),
            })?;
            outcomes.push(PromptOutcome {
                query: item.input.clone(),
                prompt: prompt.prompt,
                correct,
                label_logprob_sum: label.logprob_sum,
                label_token_count: label.token_logprobs.len() as u32,
            });
        }
    }

    let curate_item = WorkItem { id: "curate".into(), seed: item_seed(config.run.seed, "curate") };
    let mut instance = plugin.instantiate(&curate_item).await.map_err(plugin_error("curate"))?;
    let new_records = instance.curate_records(&outcomes, &existing_records).await.map_err(plugin_error("curate"))?;
    let new_mean_reward = if new_records.is_empty() {
        0.0
    } else {
        new_records.iter().map(|r| r.reward).sum::<f64>() / new_records.len() as f64
    };
    let new_count = new_records.len();
    existing_records.extend(new_records);

    let mut sft = Vec::with_capacity(existing_records.len());
    let mut chat = false;
    for record in &existing_records {
        let example = instance.training_example(record).await.map_err(plugin_error("training-example"))?;
        chat = example.chat;
        sft.push(SftExample { prompt: example.input, completion: example.target });
    }
    let sft_path = sft_path(&records_path);
    let outcomes_path = outcomes_path(&records_path);
    let mut all_outcomes: Vec<PromptOutcome> = match existing.map(self::outcomes_path) {
        Some(path) if path.exists() => super::read_jsonl(&path)?,
        _ => Vec::new(),
    };
    let correct = outcomes.iter().filter(|o| o.correct).count();
    let prompts = outcomes.len();
    merge_outcomes(&mut all_outcomes, outcomes);
    super::write_jsonl(&records_path, &existing_records)?;
    super::write_jsonl(&sft_path, &sft)?;
    super::write_jsonl(&outcomes_path, &all_outcomes)?;
    Ok(QpoCollectSummary {
        queries: items.len(),
        prompts,
        correct,
        new_records: new_count,
        new_mean_reward,
        total_records: existing_records.len(),
        chat,
        records_path,
        sft_path,
        outcomes_path,
        total_outcomes: all_outcomes.len(),
    })
}

/// Append `new` to the outcome log `log`, leaving out outcomes already in it
/// to the bit (the same query, prompt, verdict and label log-likelihood: a
/// greedy evaluation run again, e.g. the same collection step re-run into
/// the same dataset), so that re-running a step does not weigh its outcomes
/// twice when the reward model is fitted. Returns how many were added.
fn merge_outcomes(log: &mut Vec<PromptOutcome>, new: Vec<PromptOutcome>) -> usize {
    type Key = (String, String, bool, u64, u32);
    let key = |o: &PromptOutcome| -> Key {
        (o.query.clone(), o.prompt.clone(), o.correct, o.label_logprob_sum.to_bits(), o.label_token_count)
    };
    let mut seen: std::collections::HashSet<Key> = log.iter().map(key).collect();
    let before = log.len();
    for outcome in new {
        if seen.insert(key(&outcome)) {
            log.push(outcome);
        }
    }
    log.len() - before
}

#[cfg(test)]
mod merge_tests {
    use super::*;

    fn outcome(query: &str, prompt: &str, correct: bool, logprob: f64) -> PromptOutcome {
        PromptOutcome {
            query: query.into(),
            prompt: prompt.into(),
            correct,
            label_logprob_sum: logprob,
            label_token_count: 2,
        }
    }

    #[test]
    fn a_re_run_step_adds_only_outcomes_not_already_logged() {
        let mut log = vec![outcome("q1", "p1", true, -1.5), outcome("q1", "p2", false, -3.0)];
        let rerun = vec![outcome("q1", "p1", true, -1.5), outcome("q1", "p2", false, -3.0)];
        assert_eq!(merge_outcomes(&mut log, rerun), 0);
        assert_eq!(log.len(), 2);
        // A different verdict or likelihood is a different evaluation: kept.
        let new =
            vec![outcome("q1", "p1", false, -1.5), outcome("q1", "p1", true, -1.25), outcome("q2", "p1", true, -1.5)];
        assert_eq!(merge_outcomes(&mut log, new), 3);
        assert_eq!(log.len(), 5);
    }
}
