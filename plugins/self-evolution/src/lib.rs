//! `self-evolution`: the per-generation decisions of Self-Evolution (arXiv
//! 2408.12247), an iterative loop in which a model writes its own
//! fine-tuning data from domain knowledge fragments and keeps the pairs it
//! finds hardest to follow, as a techne evolution-strategy plugin (world
//! `evolution-strategy-plugin`). The host drives the generations and the
//! fine-tuning; this plugin makes the two decisions inside a generation.
//!
//! **`write-pair`** (one knowledge fragment, the current generation's model):
//!
//! 1. the model writes one question the fragment answers
//!    (`question-prompt`, sampled at `temperature` 0.5, `top-p` 0.95, the
//!    paper's values);
//! 2. it answers that question with the fragment in context
//!    (`answer-prompt`, same sampling);
//! 3. the pair is scored by instruction-following difficulty ([`ifd`]):
//!    `IFD = loss(answer | question) / loss(answer)`, where `loss` is the
//!    negative mean token log-probability from the host's scoring: the
//!    answer as the chat reply to the question, and the answer after an
//!    empty prompt.
//!
//! **`select`** (all candidates of this and earlier generations): the
//! current generation's `top-k` pairs by IFD, highest first, plus earlier
//! generations' pairs according to `mode`: `top` (the `reuse-k` highest),
//! `random` (`reuse-k` drawn with [`randomness::item_seed`], reproducible),
//! `all` or `none`. Pairs with an IFD above `max-ifd` (default 1: the
//! question does not make the answer easier, the filter of the IFD paper)
//! or an undefined IFD are never chosen. Indices are returned ascending.
//!
//! The crate also holds BLEU-4 and ROUGE-1/2/L ([`metrics`]), the metrics the
//! paper reports, as pure functions for the host's evaluation to reuse.
//!
//! Parameters (`[plugins.NAME.params]`):
//!
//! | name | kind | default | meaning |
//! | --- | --- | --- | --- |
//! | `temperature` | float | 0.5 | question/answer sampling temperature (paper) |
//! | `top-p` | float | 0.95 | question/answer nucleus mass (paper) |
//! | `max-tokens` | integer | 512 | token budget of the question and of the answer |
//! | `question-prompt` | text | see [`pairs::DEFAULT_QUESTION_PROMPT`] | `{fragment}` |
//! | `answer-prompt` | text | see [`pairs::DEFAULT_ANSWER_PROMPT`] | `{fragment}`, `{question}` |
//! | `top-k` | integer | 1000 | current-generation pairs kept by IFD |
//! | `mode` | text | `top` | re-use of earlier generations: `top`, `random`, `all`, `none` |
//! | `reuse-k` | integer | 0 | earlier pairs re-used by `top`/`random`; 0 = `top-k` |
//! | `max-ifd` | float | 1.0 | pairs above this IFD are never chosen |
//!
//! `temperature` and `top-p` are the paper's; `top-k`, `mode`, `reuse-k` and
//! `max-tokens` are this plugin's defaults (size them to the fragment
//! corpus); `max-ifd` follows the IFD paper (Li et al. 2024).

#![warn(missing_docs)]

use techne_plugin_sdk::prelude::*;
use techne_plugin_sdk::template;

pub mod config;
pub mod ifd;
pub mod metrics;
pub mod pairs;
pub mod select;

use config::WriteConfig;

/// The Self-Evolution strategy plugin.
pub struct SelfEvolution;

impl Plugin for SelfEvolution {
    fn metadata() -> Metadata {
        let mut metadata = Metadata::new(
            "self-evolution",
            env!("CARGO_PKG_VERSION"),
            "Self-Evolution (arXiv 2408.12247): each generation's model writes a question per knowledge fragment \
             and answers it with the fragment in context (temperature 0.5, top-p 0.95); pairs are scored by \
             instruction-following difficulty, IFD = loss(answer | question) / loss(answer), and the fine-tuning \
             set is the top-k by IFD plus earlier generations' pairs re-used by mode (top, random, all, none).",
        );
        for parameter in config::parameters() {
            metadata = metadata.parameter(parameter);
        }
        metadata
    }
}

impl EvolutionStrategy for SelfEvolution {
    fn write_pair(fragment: &str, generation: u32, model: &str, params: &Params) -> Result<ScoredPair, PluginError> {
        let config = WriteConfig::from_params(params)?;
        if fragment.trim().is_empty() {
            return Err(PluginError::invalid_input("the knowledge fragment is empty"));
        }
        let model = llm::resolve_model(model)?;
        let sampling =
            Sampling::default().max_tokens(config.max_tokens).temperature(config.temperature).top_p(config.top_p);

        let prompt = template::fill(&config.question_prompt, &[("fragment", fragment)]);
        let reply = llm::chat(&model, &[Message::user(prompt)], &sampling)?;
        let question = pairs::parse_question(reply.text())
            .ok_or_else(|| PluginError::failed(format!("model `{model}` wrote no question for the fragment")))?;

        let prompt = template::fill(&config.answer_prompt, &[("fragment", fragment), ("question", &question)]);
        let reply = llm::chat(&model, &[Message::user(prompt)], &sampling)?;
        let answer = pairs::parse_answer(reply.text())
            .ok_or_else(|| PluginError::failed(format!("model `{model}` wrote no answer to its question")))?;

        let conditioned = first_score(scoring::score_chat(&model, &[Message::user(question.clone())], &[&answer])?)?;
        let unconditioned = first_score(scoring::score(&model, "", &[&answer])?)?;
        let ifd = ifd::ifd_from_scores(
            (conditioned.logprob_sum, conditioned.token_count),
            (unconditioned.logprob_sum, unconditioned.token_count),
        )
        .ok_or_else(|| {
            PluginError::failed(format!(
                "IFD is undefined for this pair: loss(answer) = {:.4} over {} tokens, loss(answer | question) \
                 = {:.4} over {} tokens",
                -unconditioned.logprob_sum,
                unconditioned.token_count,
                -conditioned.logprob_sum,
                conditioned.token_count
            ))
        })?;
        Ok(ScoredPair::new(QaPair::new(fragment, question, answer), ifd, generation))
    }

    fn select(candidates: &[ScoredPair], generation: u32, params: &Params) -> Result<Vec<u32>, PluginError> {
        let rule = config::rule_from_params(params)?;
        let view: Vec<select::Candidate> =
            candidates.iter().map(|c| select::Candidate { generation: c.generation, ifd: c.ifd }).collect();
        let seed = if rule.reuse == select::Reuse::Random { randomness::item_seed() } else { 0 };
        let chosen = select::select(&view, generation, &rule, seed).map_err(PluginError::InvalidInput)?;
        log::info(format!("generation {generation}: selected {} of {} candidates", chosen.len(), candidates.len()));
        Ok(chosen)
    }
}

/// The single score of a one-continuation scoring request.
fn first_score(scores: Vec<scoring::ContinuationScore>) -> Result<scoring::ContinuationScore, PluginError> {
    scores.into_iter().next().ok_or_else(|| PluginError::failed("the host returned no score for the answer"))
}

export_evolution_strategy!(SelfEvolution);
