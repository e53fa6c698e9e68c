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
//! **Prompt-OIRL** (`mode = "prompt-oirl"`, Sun et al., arXiv 2309.06553)
//! picks, per query, the best of a set of known prompts
//! (`candidate-prompts`) under a reward model learned offline ([`oirl`]):
//! logistic regression on sentence-embedding features `[q, p, q⊙p, |q−p|]`
//! of the query and the prompt, predicting whether the target model
//! answers correctly. The model is fitted once, offline, from logged
//! outcomes of the known prompts (`fit-reward-model` of interface
//! `reward-model-trainer`, run by `techne collect oirl-reward-model`), and
//! given to this mode as the JSON text of parameter `reward-model` (usually
//! with `[plugins.NAME.param-files] reward-model = "model.json"`). Per query
//! the plugin embeds the query and the candidates with `embedding-model`
//! (default: the model the reward model was fitted with) and returns the
//! best `num-prompts` candidates, best first, each with the query embedded.
//! The logged outcomes come from the same plugin: in `prompt-oirl` mode,
//! `propose-for-training` returns the known candidates, so `techne collect
//! qpo-records` evaluates every candidate on every query and logs each
//! outcome (`*.outcomes.jsonl`).
//!
//! `mode = "prompt-oirl-judge"` is a zero-training stand-in, kept for
//! comparison: the reward of a candidate is `log P("Yes" | "Yes" or "No")`
//! that `judge-model` assigns, through the host's scoring, to the question
//! "If you answer the question following the instruction, will your final
//! answer be correct?" ([`prompts::judgement_question`]).
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
//! | `mode` | text | `qpo` | `qpo`, `prompt-oirl` or `prompt-oirl-judge` |
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
//! | `reward-model` | text | empty | prompt-oirl: the learned reward model's JSON (see above) |
//! | `embedding-model` | text | empty | prompt-oirl: embedding model of the features; empty = the reward model's |
//! | `oirl-cv-folds` | integer | 5 | prompt-oirl fitting: cross-validation folds (by query) choosing the L2 penalty; 1 = `oirl-l2` |
//! | `oirl-l2-grid` | text | `[0.001, 0.01, 0.1, 1, 10, 100]` | prompt-oirl fitting: penalties tried |
//! | `oirl-l2` | float | 0.01 | prompt-oirl fitting: L2 penalty when `oirl-cv-folds` is 1 |
//! | `oirl-iterations` | integer | 500 | prompt-oirl fitting: most gradient-descent iterations |
//! | `judge-model` | text | empty | prompt-oirl-judge: the judge; empty = the plugin's `default-model` |
//! | `collect-temperature` | float | 1.0 | offline data: sampling temperature of the policy |
//! | `collect-top-p` | float | 1.0 | offline data: nucleus mass of the policy |
//! | `min-reward` | float | 0.0 | offline data: records below this reward are dropped |
//!
//! The policy's input format and sampling settings must match how the policy
//! was trained (the training loop is a separate, later piece); the defaults
//! are this plugin's.

#![warn(missing_docs)]

use techne_plugin_sdk::prelude::*;
use techne_plugin_sdk::prompt_policy_trainer::{
    LabelledPrompt, OfflineRecord, PolicyExample, PolicyPrompt, PromptOutcome,
};

pub mod collection;
pub mod config;
pub mod oirl;
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
             2309.06553): the best of known prompts under a reward model learned offline (logistic regression on \
             sentence embeddings of query and prompt, fitted by `techne collect oirl-reward-model`).",
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
            Mode::PromptOirlJudge => prompt_oirl_judge(query, &config),
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

/// The candidates' indices from best to worst reward, as prompts with the
/// query embedded, `num-prompts` of them.
fn best_candidates(query: &str, config: &Config, rewards: &[f64]) -> Vec<String> {
    prompts::rank(rewards)
        .into_iter()
        .take(config.num_prompts as usize)
        .map(|i| prompts::embed(&config.prompt_template, &config.candidates[i], query))
        .collect()
}

/// Embeds `texts` with `model`, checking one vector per text.
fn embed_all(model: &str, texts: &[&str]) -> Result<Vec<Vec<f32>>, PluginError> {
    let vectors = embeddings::embed(model, texts)?;
    if vectors.len() != texts.len() {
        return Err(PluginError::failed(format!(
            "the host returned {} embeddings for {} texts",
            vectors.len(),
            texts.len()
        )));
    }
    Ok(vectors)
}

/// Prompt-OIRL: rank the known prompts by the learned reward model's
/// predicted probability that the target model answers correctly.
fn prompt_oirl(query: &str, config: &Config) -> Result<Vec<String>, PluginError> {
    if config.reward_model.trim().is_empty() {
        return Err(PluginError::invalid_input(
            "mode prompt-oirl needs the learned reward model: fit it with `techne collect oirl-reward-model` and \
             give the file with `[plugins.NAME.param-files] reward-model = \"model.json\"` (or use mode \
             prompt-oirl-judge, which needs no training)",
        ));
    }
    let model = oirl::RewardModel::from_json(&config.reward_model).map_err(PluginError::InvalidInput)?;
    let embedder = if config.embedding_model.trim().is_empty() {
        model.embedding_model.clone()
    } else {
        config.embedding_model.clone()
    };
    let known: Vec<&String> = config.candidates.iter().filter(|c| !model.training.prompts.contains(c)).collect();
    if !known.is_empty() {
        log::warn(format!(
            "{} candidate prompt(s) were not in the reward model's training data; its rewards for them are \
             extrapolations: {known:?}",
            known.len()
        ));
    }
    let mut texts: Vec<&str> = vec![query];
    texts.extend(config.candidates.iter().map(String::as_str));
    let vectors = embed_all(&embedder, &texts)?;
    let (q, candidates) = vectors.split_first().ok_or_else(|| PluginError::failed("no embedding for the query"))?;
    model.check_embeddings(&embedder, q.len()).map_err(PluginError::InvalidInput)?;
    let rewards: Vec<f64> = candidates.iter().map(|p| model.reward(q, p)).collect();
    for (candidate, reward) in config.candidates.iter().zip(&rewards) {
        log::debug(format!("prompt-oirl reward {reward:.4} for {candidate:?}"));
    }
    Ok(best_candidates(query, config, &rewards))
}

/// The zero-training stand-in: rank the known prompts by the judge model's
/// belief that following them answers the query correctly.
fn prompt_oirl_judge(query: &str, config: &Config) -> Result<Vec<String>, PluginError> {
    let model = llm::resolve_model(&config.judge_model)?;
    let mut rewards = Vec::with_capacity(config.candidates.len());
    for candidate in &config.candidates {
        let messages = [Message::user(prompts::judgement_question(candidate, query))];
        let scores = scoring::score_chat(&model, &messages, &[prompts::YES, prompts::NO])?;
        let [yes, no] = scores.as_slice() else {
            return Err(PluginError::failed(format!("the host returned {} scores for 2 continuations", scores.len())));
        };
        let reward = prompts::yes_reward(yes.logprob_sum, no.logprob_sum);
        log::debug(format!("prompt-oirl-judge reward {reward:.4} for {candidate:?}"));
        rewards.push(reward);
    }
    Ok(best_candidates(query, config, &rewards))
}

/// Fits Prompt-OIRL's reward model on logged outcomes: embeds every
/// distinct query and prompt once with `embedding-model`, builds the
/// features and fits the logistic regression ([`oirl::fit`]).
fn fit_reward_model(examples: &[LabelledPrompt], params: &Params) -> Result<oirl::RewardModel, PluginError> {
    let embedder = params.text("embedding-model")?;
    if embedder.trim().is_empty() {
        return Err(PluginError::invalid_input(
            "fitting the reward model needs parameter `embedding-model`: name a local-embeddings model of the \
             configuration (in the plugin's allowed-models)",
        ));
    }
    let mut settings = oirl::FitSettings {
        l2: params.f64("oirl-l2")?,
        max_iterations: params.u32("oirl-iterations")?,
        ..oirl::FitSettings::default()
    };
    let folds = params.u32("oirl-cv-folds")?;
    let grid: Vec<f64> = serde_json::from_str(&params.text("oirl-l2-grid")?)
        .ok()
        .filter(|g: &Vec<f64>| !g.is_empty() && g.iter().all(|x| x.is_finite() && *x >= 0.0))
        .ok_or_else(|| {
            PluginError::invalid_input("parameter `oirl-l2-grid` must be a JSON list of numbers, 0 or more")
        })?;
    if examples.iter().any(|e| e.query.trim().is_empty() || e.prompt.trim().is_empty()) {
        return Err(PluginError::invalid_input("an example has an empty query or prompt"));
    }
    // Every distinct text is embedded once.
    let mut texts: Vec<&str> = Vec::new();
    let mut positions: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    let mut pairs = Vec::with_capacity(examples.len());
    for example in examples {
        let mut indices = [0usize; 2];
        for (slot, text) in indices.iter_mut().zip([example.query.as_str(), example.prompt.as_str()]) {
            *slot = *positions.entry(text).or_insert_with(|| {
                texts.push(text);
                texts.len() - 1
            });
        }
        pairs.push((indices[0], indices[1]));
    }
    let prompts = prompts::dedupe(examples.iter().map(|e| e.prompt.trim().to_owned()).collect());
    let mut vectors = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(64) {
        vectors.extend(embed_all(&embedder, chunk)?);
    }
    let dim = vectors.first().map(Vec::len).unwrap_or(0);
    if dim == 0 || vectors.iter().any(|v| v.len() != dim) {
        return Err(PluginError::failed(format!("model `{embedder}` returned empty or ragged embeddings")));
    }
    let rows: Vec<Vec<f64>> = pairs.iter().map(|&(q, p)| oirl::features(&vectors[q], &vectors[p])).collect();
    let labels: Vec<bool> = examples.iter().map(|e| e.correct).collect();
    let invalid = |e: oirl::FitError| PluginError::invalid_input(e.to_string());
    let l2_selection = if folds >= 2 {
        // Fold by query: each distinct query's ordinal, in first-seen order.
        let mut ordinals: std::collections::BTreeMap<usize, usize> = std::collections::BTreeMap::new();
        let groups: Vec<usize> = pairs
            .iter()
            .map(|&(q, _)| {
                let next = ordinals.len();
                *ordinals.entry(q).or_insert(next)
            })
            .collect();
        let (l2, scores) =
            oirl::choose_l2(&rows, &labels, &groups, folds as usize, &grid, &settings).map_err(invalid)?;
        for score in &scores {
            log::info(format!("prompt-oirl l2 {}: cross-validated log-loss {:.4}", score.l2, score.cv_log_loss));
        }
        settings.l2 = l2;
        scores
    } else {
        Vec::new()
    };
    let (classifier, report) = oirl::fit(&rows, &labels, &settings).map_err(invalid)?;
    log::info(format!(
        "prompt-oirl reward model: {} examples, {} iterations, loss {:.4} -> {:.4}, training accuracy {:.3}",
        examples.len(),
        report.iterations,
        report.initial_loss,
        report.final_loss,
        report.train_accuracy
    ));
    Ok(oirl::RewardModel {
        format: oirl::FORMAT.into(),
        version: oirl::VERSION,
        embedding_model: embedder,
        embedding_dim: dim,
        feature_layout: oirl::FEATURE_LAYOUT.into(),
        classifier,
        training: oirl::TrainingSummary {
            examples: examples.len(),
            correct: labels.iter().filter(|&&l| l).count(),
            prompts,
            l2: settings.l2,
            l2_selection,
            fit: report,
        },
    })
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
        if config.mode.uses_candidates() {
            // Prompt-OIRL's offline data: the known prompts, each evaluated
            // on every query.
            return Ok(config
                .candidates
                .iter()
                .take(count as usize)
                .map(|prompt| PolicyPrompt {
                    full_prompt: prompts::embed(&config.prompt_template, prompt, query),
                    prompt: prompt.clone(),
                })
                .collect());
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

    fn fit_reward_model(examples: &[LabelledPrompt], params: &Params) -> Result<String, PluginError> {
        let model = fit_reward_model(examples, params)?;
        serde_json::to_string(&model).map_err(|e| PluginError::failed(format!("cannot write the reward model: {e}")))
    }
}

export_prompt_policy_trainer!(QpoPolicy);
