//! `qpo-policy`: the inference side of QPO (*QPO: Query-dependent Prompt
//! Optimization via Multi-Loop Offline Reinforcement Learning*, Kong et al.,
//! arXiv 2408.10504) as a techne prompt-policy plugin (world
//! `prompt-policy-plugin`), with the Prompt-OIRL baseline (Sun et al.,
//! arXiv 2309.06553).
//!
//! **QPO** fine-tunes a small policy model, offline and over several loops,
//! to write a prompt for each query; like a decision transformer it is
//! conditioned on a target reward (return-to-go) given as a prefix of its
//! input. At inference this plugin builds the input
//!
//! ```text
//! Reward: 20.00
//! Query: <the query>
//! Prompt:
//! ```
//!
//! ([`reward::encode_reward_prefix`] followed by `policy-template`), lets
//! `policy-model` continue it (raw completion; chat with `policy-chat`),
//! cleans each of the `num-prompts` outputs ([`prompts::clean`]: first
//! paragraph, no label, no quotes), drops duplicates and returns each prompt
//! with the query embedded through `prompt-template` (default
//! `{prompt}\n\n{query}`), so the answering model gets a complete prompt.
//! Prompts come in the order they were sampled. When the policy writes
//! nothing usable, the query alone is returned (with a warning), so the item
//! is still answered, without a prompt.
//!
//! The reward that QPO's offline data is labelled with, `10 · correct + 10 ·
//! average accuracy of the prompt − perplexity of the label`, and the reward
//! prefix are pure functions in [`reward`], for the training-side data
//! collection.
//!
//! **Prompt-OIRL** (`mode = "prompt-oirl"`) picks, per query, the best of a
//! set of known prompts (`candidate-prompts`) under a reward model. The
//! paper learns that reward model offline from prompting demonstrations;
//! this plugin, which has no such model, uses a zero-training proxy instead,
//! and says so: the reward of a candidate is `log P("Yes" | "Yes" or "No")`
//! that `reward-model` assigns, through the host's scoring, to the question
//! "If you answer the question following the instruction, will your final
//! answer be correct?" ([`prompts::judgement_question`]). The best
//! `num-prompts` candidates are returned, best first, each with the query
//! embedded.
//!
//! **Offline data** (world `prompt-policy-trainer-plugin`, so the component
//! also serves as a plain prompt policy): [`collection`] holds QPO's
//! collection decisions. `propose-for-training` samples prompts at a given
//! target reward (`collect-temperature`, `collect-top-p`);
//! `curate-records` rewards the host's outcomes with the paper's formula
//! (the prompt's accuracy taken over the whole collection step), keeps
//! those with a reward of at least `min-reward` and drops duplicates;
//! `training-example` formats a record as the policy's training example, the
//! same input the policy gets at inference.
//!
//! Parameters (`[plugins.NAME.params]`):
//!
//! | name | kind | default | meaning |
//! | --- | --- | --- | --- |
//! | `mode` | text | `qpo` | `qpo` or `prompt-oirl` |
//! | `policy-model` | text | empty | the policy model; empty = the plugin's `default-model` |
//! | `target-reward` | float | 20.0 | return-to-go of the reward prefix: the reward's top, 10 + 10 |
//! | `num-prompts` | integer | 1 | prompts returned (n sampled choices; best n candidates in prompt-oirl) |
//! | `temperature` | float | 0.0 | policy sampling temperature (0 = greedy) |
//! | `top-p` | float | 1.0 | policy nucleus mass |
//! | `max-tokens` | integer | 64 | token budget of one prompt |
//! | `policy-template` | text | `Query: {query}\nPrompt:` | policy input after the reward prefix |
//! | `policy-chat` | boolean | false | call the policy through chat instead of raw completion |
//! | `prompt-template` | text | `{prompt}\n\n{query}` | the complete prompt for the answering model |
//! | `candidate-prompts` | text | six known reasoning prompts (JSON) | prompt-oirl: the candidates |
//! | `reward-model` | text | empty | prompt-oirl: the scoring model; empty = the plugin's `default-model` |
//! | `collect-temperature` | float | 1.0 | offline data: sampling temperature of the policy |
//! | `collect-top-p` | float | 1.0 | offline data: nucleus mass of the policy |
//! | `min-reward` | float | 0.0 | offline data: records below this reward are dropped |
//!
//! The policy's input format and sampling settings must match how the policy
//! was trained (the training loop is a separate, later piece); the defaults
//! are this plugin's.

#![warn(missing_docs)]

use techne_plugin_sdk::prelude::*;
use techne_plugin_sdk::prompt_policy_trainer::{OfflineRecord, PolicyExample, PolicyPrompt, PromptOutcome};

pub mod collection;
pub mod config;
pub mod prompts;
pub mod reward;

use config::{Config, Mode};

/// The QPO / Prompt-OIRL prompt-policy plugin.
pub struct QpoPolicy;

impl Plugin for QpoPolicy {
    fn metadata() -> Metadata {
        let mut metadata = Metadata::new(
            "qpo-policy",
            env!("CARGO_PKG_VERSION"),
            "QPO (Query-dependent Prompt Optimization via Multi-Loop Offline RL, arXiv 2408.10504): a policy model \
             writes a prompt for each query, conditioned on a target reward given as a return-to-go prefix; the \
             prompt is returned with the query embedded. Mode prompt-oirl runs the Prompt-OIRL baseline (arXiv \
             2309.06553): the best of known prompts under a reward model (here the host's scoring of a \
             \"correct?\" judgement).",
        );
        for parameter in config::parameters() {
            metadata = metadata.parameter(parameter);
        }
        metadata
    }
}

impl PromptPolicy for QpoPolicy {
    fn propose(query: &str, params: &Params) -> Result<Vec<String>, PluginError> {
        let config = Config::from_params(params)?;
        if query.trim().is_empty() {
            return Err(PluginError::invalid_input("the query is empty"));
        }
        match config.mode {
            Mode::Qpo => qpo(query, &config),
            Mode::PromptOirl => prompt_oirl(query, &config),
        }
    }
}

/// QPO: sample prompts from the reward-conditioned policy.
fn qpo(query: &str, config: &Config) -> Result<Vec<String>, PluginError> {
    let model = llm::resolve_model(&config.policy_model)?;
    let input = prompts::policy_input(config.target_reward, &config.policy_template, query);
    let sampling = Sampling::default()
        .max_tokens(config.max_tokens)
        .temperature(config.temperature)
        .top_p(config.top_p)
        .n(config.num_prompts);
    if config.num_prompts > 1 && config.temperature <= 0.0 {
        log::warn("num-prompts > 1 with temperature 0: every choice is the same greedy prompt");
    }
    let completion = if config.policy_chat {
        llm::chat(&model, &[Message::user(input)], &sampling)?
    } else {
        llm::complete(&model, &input, &sampling)?
    };
    let generated = prompts::dedupe(completion.texts().filter_map(prompts::clean).collect());
    if generated.is_empty() {
        log::warn(format!("policy `{model}` wrote no usable prompt; sending the query without a prompt"));
        return Ok(vec![query.to_owned()]);
    }
    Ok(generated.iter().map(|p| prompts::embed(&config.prompt_template, p, query)).collect())
}

/// Prompt-OIRL: rank the known prompts by the reward model's belief that
/// following them answers the query correctly.
fn prompt_oirl(query: &str, config: &Config) -> Result<Vec<String>, PluginError> {
    let model = llm::resolve_model(&config.reward_model)?;
    let mut rewards = Vec::with_capacity(config.candidates.len());
    for candidate in &config.candidates {
        let messages = [Message::user(prompts::judgement_question(candidate, query))];
        let scores = scoring::score_chat(&model, &messages, &[prompts::YES, prompts::NO])?;
        let [yes, no] = scores.as_slice() else {
            return Err(PluginError::failed(format!("the host returned {} scores for 2 continuations", scores.len())));
        };
        let reward = prompts::yes_reward(yes.logprob_sum, no.logprob_sum);
        log::debug(format!("prompt-oirl reward {reward:.4} for {candidate:?}"));
        rewards.push(reward);
    }
    Ok(prompts::rank(&rewards)
        .into_iter()
        .take(config.num_prompts as usize)
        .map(|i| prompts::embed(&config.prompt_template, &config.candidates[i], query))
        .collect())
}

impl PromptPolicyTrainer for QpoPolicy {
    fn propose_for_training(
        query: &str,
        target_reward: f64,
        count: u32,
        params: &Params,
    ) -> Result<Vec<PolicyPrompt>, PluginError> {
        let config = Config::from_params(params)?;
        if query.trim().is_empty() {
            return Err(PluginError::invalid_input("the query is empty"));
        }
        if !(1..=128).contains(&count) || !target_reward.is_finite() {
            return Err(PluginError::invalid_input(
                "the host asked for a prompt count outside 1 to 128 or a non-finite target reward",
            ));
        }
        let model = llm::resolve_model(&config.policy_model)?;
        let input = prompts::policy_input(target_reward, &config.policy_template, query);
        let sampling = Sampling::default()
            .max_tokens(config.max_tokens)
            .temperature(params.f32("collect-temperature")?)
            .top_p(params.f32("collect-top-p")?)
            .n(count);
        let completion = if config.policy_chat {
            llm::chat(&model, &[Message::user(input)], &sampling)?
        } else {
            llm::complete(&model, &input, &sampling)?
        };
        let generated = prompts::dedupe(completion.texts().filter_map(prompts::clean).collect());
        Ok(generated
            .into_iter()
            .map(|prompt| PolicyPrompt { full_prompt: prompts::embed(&config.prompt_template, &prompt, query), prompt })
            .collect())
    }

    fn curate_records(
        outcomes: &[PromptOutcome],
        existing: &[OfflineRecord],
        params: &Params,
    ) -> Result<Vec<OfflineRecord>, PluginError> {
        Ok(collection::curate(outcomes, existing, params.f64("min-reward")?))
    }

    fn training_example(record: &OfflineRecord, params: &Params) -> Result<PolicyExample, PluginError> {
        let config = Config::from_params(params)?;
        Ok(collection::policy_example(record, &config.policy_template, config.policy_chat))
    }
}

export_prompt_policy_trainer!(QpoPolicy);
