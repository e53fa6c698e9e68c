//! The training extensions a rewriter or a prompt policy may export next to
//! its role (`rewriter-trainer`, `prompt-policy-trainer`, and next to the
//! latter the optional `reward-model-trainer`): detection at load time and
//! the calls into them, with the same deadline, boundary caps and output
//! checks as the role calls.

use wasmtime::Store;
use wasmtime::component::InstancePre;

use super::{CallError, PluginInstance, Role, StoreData, WIT_PACKAGE, params_bytes, reported, techne_version};
use crate::bindings::guest;

/// A training extension a plugin exports next to its role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrainerExtension {
    /// `techne:plugin/rewriter-trainer`, next to `rewriter`.
    RewriterTrainer,
    /// `techne:plugin/prompt-policy-trainer`, next to `prompt-policy`.
    PromptPolicyTrainer,
}

impl TrainerExtension {
    /// The interface's name in the WIT package.
    pub fn interface(self) -> &'static str {
        match self {
            TrainerExtension::RewriterTrainer => "rewriter-trainer",
            TrainerExtension::PromptPolicyTrainer => "prompt-policy-trainer",
        }
    }

    /// The role the extension belongs to.
    pub fn role(self) -> Role {
        match self {
            TrainerExtension::RewriterTrainer => Role::Rewriter,
            TrainerExtension::PromptPolicyTrainer => Role::PromptPolicy,
        }
    }
}

impl std::fmt::Display for TrainerExtension {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.interface())
    }
}

/// Prompt-OIRL's reward-model extension of `prompt-policy-trainer`.
pub const REWARD_MODEL_TRAINER: &str = "reward-model-trainer";

/// Export indices of the extension, resolved once per plugin.
/// `PromptPolicy`'s second field: `reward-model-trainer`, when exported
/// (components built before it was added to the package lack it).
#[derive(Clone)]
pub(super) enum TrainerIndices {
    Rewriter(guest::rewriter_trainer::GuestIndices),
    PromptPolicy(guest::prompt_policy_trainer::GuestIndices, Option<guest::reward_model_trainer::GuestIndices>),
}

/// The extension's guest side in one instance.
#[derive(Clone)]
pub(super) enum TrainerGuest {
    Rewriter(guest::rewriter_trainer::Guest),
    PromptPolicy(guest::prompt_policy_trainer::Guest, Option<guest::reward_model_trainer::Guest>),
}

impl TrainerIndices {
    /// The extension of `role` among `exports`, if the component exports it.
    pub(super) fn new(role: Role, exports: &[String], pre: &InstancePre<StoreData>) -> wasmtime::Result<Option<Self>> {
        let exported = |name: &str| {
            exports.iter().any(|e| techne_version(e).is_some() && e.starts_with(&format!("{WIT_PACKAGE}/{name}@")))
        };
        Ok(match role {
            Role::Rewriter if exported(TrainerExtension::RewriterTrainer.interface()) => {
                Some(TrainerIndices::Rewriter(guest::rewriter_trainer::GuestIndices::new(pre)?))
            }
            Role::PromptPolicy if exported(TrainerExtension::PromptPolicyTrainer.interface()) => {
                let reward_model = if exported(REWARD_MODEL_TRAINER) {
                    Some(guest::reward_model_trainer::GuestIndices::new(pre)?)
                } else {
                    None
                };
                Some(TrainerIndices::PromptPolicy(guest::prompt_policy_trainer::GuestIndices::new(pre)?, reward_model))
            }
            _ => None,
        })
    }

    pub(super) fn extension(&self) -> TrainerExtension {
        match self {
            TrainerIndices::Rewriter(_) => TrainerExtension::RewriterTrainer,
            TrainerIndices::PromptPolicy(..) => TrainerExtension::PromptPolicyTrainer,
        }
    }

    /// Whether the component also exports `reward-model-trainer`.
    pub(super) fn fits_reward_model(&self) -> bool {
        matches!(self, TrainerIndices::PromptPolicy(_, Some(_)))
    }

    pub(super) fn load(
        &self,
        store: &mut Store<StoreData>,
        instance: &wasmtime::component::Instance,
    ) -> wasmtime::Result<TrainerGuest> {
        Ok(match self {
            TrainerIndices::Rewriter(i) => TrainerGuest::Rewriter(i.load(store, instance)?),
            TrainerIndices::PromptPolicy(i, reward_model) => {
                let reward_model = match reward_model {
                    Some(r) => Some(r.load(&mut *store, instance)?),
                    None => None,
                };
                TrainerGuest::PromptPolicy(i.load(store, instance)?, reward_model)
            }
        })
    }
}

/// The score of an answer on one criterion of the dataset.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CriterionScore {
    /// The criterion, e.g. `comprehensiveness`.
    pub name: String,
    /// The score.
    pub value: f64,
    /// Whether higher is better.
    pub higher_is_better: bool,
}

/// A question with the answering model's answer and the answer's scores.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JudgedQuestion {
    /// The question as sent to the answering model.
    pub question: String,
    /// The answer.
    pub answer: String,
    /// One score per criterion.
    pub scores: Vec<CriterionScore>,
}

impl JudgedQuestion {
    fn to_wit(&self) -> guest::rewriter_trainer::JudgedQuestion {
        guest::rewriter_trainer::JudgedQuestion {
            question: self.question.clone(),
            answer: self.answer.clone(),
            scores: self
                .scores
                .iter()
                .map(|s| guest::rewriter_trainer::CriterionScore {
                    name: s.name.clone(),
                    value: s.value,
                    higher_is_better: s.higher_is_better,
                })
                .collect(),
        }
    }
    fn bytes(&self) -> u64 {
        (self.question.len() + self.answer.len() + self.scores.iter().map(|s| s.name.len() + 9).sum::<usize>()) as u64
    }
}

/// A DPO preference pair (`prompt`/`chosen`/`rejected`, the format
/// techne-training reads).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PreferencePair {
    /// The rewriter's input.
    pub prompt: String,
    /// The preferred completion.
    pub chosen: String,
    /// The dispreferred completion.
    pub rejected: String,
}

/// A prompt the policy wrote for a query.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PolicyPrompt {
    /// The prompt alone.
    pub prompt: String,
    /// The complete text for the target model.
    pub full_prompt: String,
}

/// How one prompt did on one query with the target model.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PromptOutcome {
    /// The query.
    pub query: String,
    /// The prompt alone.
    pub prompt: String,
    /// Whether the answer was correct under the task's metric.
    pub correct: bool,
    /// Log-likelihood of the label after the full prompt.
    pub label_logprob_sum: f64,
    /// Tokens of the label.
    pub label_token_count: u32,
}

/// An offline record of QPO: a prompt for a query and its reward.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OfflineRecord {
    /// The query.
    pub query: String,
    /// The prompt alone.
    pub prompt: String,
    /// Its reward.
    pub reward: f64,
}

impl OfflineRecord {
    fn to_wit(&self) -> guest::prompt_policy_trainer::OfflineRecord {
        guest::prompt_policy_trainer::OfflineRecord {
            query: self.query.clone(),
            prompt: self.prompt.clone(),
            reward: self.reward,
        }
    }
    fn bytes(&self) -> u64 {
        (self.query.len() + self.prompt.len() + 8) as u64
    }
}

/// One logged outcome for Prompt-OIRL's reward model: a prompt used on a
/// query and whether the answer was correct.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LabelledPrompt {
    /// The query.
    pub query: String,
    /// The prompt alone.
    pub prompt: String,
    /// Whether the target model's answer was correct.
    pub correct: bool,
}

/// The policy's supervised example for one record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PolicyExample {
    /// The policy's input.
    pub input: String,
    /// What it should write.
    pub target: String,
    /// Whether `input` is a chat user message (else raw text).
    pub chat: bool,
}

impl PluginInstance {
    fn trainer_mismatch(&self, wanted: TrainerExtension) -> CallError {
        CallError::InvalidOutput {
            reason: format!(
                "the plugin does not export `{wanted}`: build it with the SDK's export macro for the {} role's \
                 training side (e.g. export_{}!)",
                wanted.role(),
                wanted.interface().replace('-', "_")
            ),
        }
    }

    /// Sample distinct rewrites of `question` (rewriter trainers).
    pub async fn sample_rewrites(&mut self, question: &str) -> Result<Vec<String>, CallError> {
        let Some(TrainerGuest::Rewriter(g)) = self.trainer.clone() else {
            return Err(self.trainer_mismatch(TrainerExtension::RewriterTrainer));
        };
        let params = self.params.clone();
        let question = question.to_string();
        let input = question.len() as u64 + params_bytes(&params);
        let out = self
            .guarded(input, move |store| {
                Box::pin(async move { g.call_sample_rewrites(store, &question, &params).await })
            })
            .await?
            .map_err(reported)?;
        self.check_output(out.iter().map(|r| r.len() as u64).sum())?;
        if out.iter().any(|r| r.trim().is_empty()) {
            return Err(CallError::InvalidOutput { reason: "a sampled rewrite is empty".into() });
        }
        Ok(out)
    }

    /// The preference pairs of one question from its judged original and
    /// rewrites (rewriter trainers).
    pub async fn build_pairs(
        &mut self,
        original: &JudgedQuestion,
        rewrites: &[JudgedQuestion],
    ) -> Result<Vec<PreferencePair>, CallError> {
        let Some(TrainerGuest::Rewriter(g)) = self.trainer.clone() else {
            return Err(self.trainer_mismatch(TrainerExtension::RewriterTrainer));
        };
        let params = self.params.clone();
        let input = original.bytes() + rewrites.iter().map(JudgedQuestion::bytes).sum::<u64>() + params_bytes(&params);
        let original = original.to_wit();
        let rewrites: Vec<_> = rewrites.iter().map(JudgedQuestion::to_wit).collect();
        let out = self
            .guarded(input, move |store| {
                Box::pin(async move { g.call_build_pairs(store, &original, &rewrites, &params).await })
            })
            .await?
            .map_err(reported)?;
        self.check_output(out.iter().map(|p| (p.prompt.len() + p.chosen.len() + p.rejected.len()) as u64).sum())?;
        Ok(out
            .into_iter()
            .map(|p| PreferencePair { prompt: p.prompt, chosen: p.chosen, rejected: p.rejected })
            .collect())
    }

    /// Up to `count` prompts for `query` at `target_reward` (prompt-policy trainers).
    pub async fn propose_for_training(
        &mut self,
        query: &str,
        target_reward: f64,
        count: u32,
    ) -> Result<Vec<PolicyPrompt>, CallError> {
        let Some(TrainerGuest::PromptPolicy(g, _)) = self.trainer.clone() else {
            return Err(self.trainer_mismatch(TrainerExtension::PromptPolicyTrainer));
        };
        let params = self.params.clone();
        let query = query.to_string();
        let input = query.len() as u64 + 12 + params_bytes(&params);
        let out = self
            .guarded(input, move |store| {
                Box::pin(async move { g.call_propose_for_training(store, &query, target_reward, count, &params).await })
            })
            .await?
            .map_err(reported)?;
        self.check_output(out.iter().map(|p| (p.prompt.len() + p.full_prompt.len()) as u64).sum())?;
        if out.len() > count as usize {
            return Err(CallError::InvalidOutput {
                reason: format!("the policy returned {} prompts; {count} were asked for", out.len()),
            });
        }
        Ok(out.into_iter().map(|p| PolicyPrompt { prompt: p.prompt, full_prompt: p.full_prompt }).collect())
    }

    /// The new offline records from one collection step's outcomes
    /// (prompt-policy trainers).
    pub async fn curate_records(
        &mut self,
        outcomes: &[PromptOutcome],
        existing: &[OfflineRecord],
    ) -> Result<Vec<OfflineRecord>, CallError> {
        let Some(TrainerGuest::PromptPolicy(g, _)) = self.trainer.clone() else {
            return Err(self.trainer_mismatch(TrainerExtension::PromptPolicyTrainer));
        };
        let params = self.params.clone();
        let input = outcomes.iter().map(|o| (o.query.len() + o.prompt.len() + 13) as u64).sum::<u64>()
            + existing.iter().map(OfflineRecord::bytes).sum::<u64>()
            + params_bytes(&params);
        let outcomes: Vec<_> = outcomes
            .iter()
            .map(|o| guest::prompt_policy_trainer::PromptOutcome {
                query: o.query.clone(),
                prompt: o.prompt.clone(),
                correct: o.correct,
                label_logprob_sum: o.label_logprob_sum,
                label_token_count: o.label_token_count,
            })
            .collect();
        let existing: Vec<_> = existing.iter().map(OfflineRecord::to_wit).collect();
        let out = self
            .guarded(input, move |store| {
                Box::pin(async move { g.call_curate_records(store, &outcomes, &existing, &params).await })
            })
            .await?
            .map_err(reported)?;
        let records: Vec<OfflineRecord> =
            out.into_iter().map(|r| OfflineRecord { query: r.query, prompt: r.prompt, reward: r.reward }).collect();
        self.check_output(records.iter().map(OfflineRecord::bytes).sum())?;
        if let Some(bad) = records.iter().find(|r| !r.reward.is_finite()) {
            return Err(CallError::InvalidOutput { reason: format!("record reward {} is not finite", bad.reward) });
        }
        Ok(records)
    }

    /// The policy's training example for `record` (prompt-policy trainers).
    pub async fn training_example(&mut self, record: &OfflineRecord) -> Result<PolicyExample, CallError> {
        let Some(TrainerGuest::PromptPolicy(g, _)) = self.trainer.clone() else {
            return Err(self.trainer_mismatch(TrainerExtension::PromptPolicyTrainer));
        };
        let params = self.params.clone();
        let input = record.bytes() + params_bytes(&params);
        let record = record.to_wit();
        let out = self
            .guarded(input, move |store| {
                Box::pin(async move { g.call_training_example(store, &record, &params).await })
            })
            .await?
            .map_err(reported)?;
        self.check_output((out.input.len() + out.target.len()) as u64)?;
        if out.target.trim().is_empty() {
            return Err(CallError::InvalidOutput { reason: "the training example's target is empty".into() });
        }
        Ok(PolicyExample { input: out.input, target: out.target, chat: out.chat })
    }

    /// Fit Prompt-OIRL's reward model on logged outcomes; returns the
    /// plugin's serialised model (prompt-policy trainers that export
    /// `reward-model-trainer`).
    pub async fn fit_reward_model(&mut self, examples: &[LabelledPrompt]) -> Result<String, CallError> {
        let Some(TrainerGuest::PromptPolicy(_, Some(g))) = self.trainer.clone() else {
            return Err(CallError::InvalidOutput {
                reason: format!(
                    "the plugin does not export `{REWARD_MODEL_TRAINER}`: rebuild it with the current SDK's \
                     export_prompt_policy_trainer! and implement PromptPolicyTrainer::fit_reward_model"
                ),
            });
        };
        let params = self.params.clone();
        let input =
            examples.iter().map(|e| (e.query.len() + e.prompt.len() + 1) as u64).sum::<u64>() + params_bytes(&params);
        let examples: Vec<_> = examples
            .iter()
            .map(|e| guest::reward_model_trainer::LabelledPrompt {
                query: e.query.clone(),
                prompt: e.prompt.clone(),
                correct: e.correct,
            })
            .collect();
        let out = self
            .guarded(input, move |store| {
                Box::pin(async move { g.call_fit_reward_model(store, &examples, &params).await })
            })
            .await?
            .map_err(reported)?;
        self.check_output(out.len() as u64)?;
        if out.trim().is_empty() {
            return Err(CallError::InvalidOutput { reason: "the fitted reward model is empty".into() });
        }
        Ok(out)
    }
}
