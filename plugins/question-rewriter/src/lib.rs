//! `question-rewriter`: the Question Rewriter technique (*Putting People in
//! LLMs' Shoes: Generating Better Answers via Question Rewriter*, arXiv
//! 2408.10573) as a techne rewriter plugin (world `rewriter-plugin`).
//!
//! The paper trains a rewriter model to turn a user's question into one that
//! the answering model answers better; at inference the rewriter is prompted
//! with
//!
//! > Rewriting question to make it more understandable, just give me the
//! > rewritten question without any other word: QUESTION
//!
//! and its greedy output replaces the question. This plugin does exactly
//! that: one greedy chat turn with the plugin's model (a base model, or the
//! rewriter trained with the paper's method), then a light clean-up
//! ([`rewrite::clean`]): trim, drop a leading `Rewritten question:`-style
//! label and surrounding quotes. An empty reply falls back to the original
//! question (with a warning in the run log).
//!
//! **Training data** (the paper's section 3; world
//! `rewriter-trainer-plugin`, so the component also serves as a plain
//! rewriter): [`RewriterTrainer::sample_rewrites`] samples
//! `rewrites-per-question` distinct rewrites with the rewriting prompt
//! (temperature 1, top-p 0.999 as in the paper, at most `max-attempts`
//! sampling requests); after the host has answered the original and every
//! rewrite and scored the answers on the dataset's criteria,
//! [`RewriterTrainer::build_pairs`] applies the dominance rule and pairs the
//! top `better-pairs` better rewrites with `worse-pairs` random worse ones
//! ([`training`]). Each pair's prompt is the rewriting prompt with the
//! original question, so DPO trains exactly the inference call above.
//!
//! Parameters (`[plugins.NAME.params]`):
//!
//! | name | kind | default | meaning |
//! | --- | --- | --- | --- |
//! | `model` | text | empty | model to call; empty = the plugin's `default-model` |
//! | `max-tokens` | integer | 256 | token budget of the rewrite |
//! | `temperature` | float | 0 | 0 = greedy, as in the paper |
//! | `top-p` | float | 1.0 | nucleus mass (irrelevant when greedy) |
//! | `prompt` | text | the paper's prompt | instruction; the question is appended, or replaces `{question}` if present |
//! | `rewrites-per-question` | integer | 100 | training: distinct rewrites sampled per question (K) |
//! | `sample-temperature` | float | 1.0 | training: temperature of the sampled rewrites |
//! | `sample-top-p` | float | 0.999 | training: nucleus mass of the sampled rewrites |
//! | `max-attempts` | integer | 10 | training: sampling requests per question before giving up on K |
//! | `better-pairs` | integer | 10 | training: better rewrites paired per question (N+) |
//! | `worse-pairs` | integer | 20 | training: worse rewrites drawn for each better one (N−) |

use techne_plugin_sdk::prelude::*;
use techne_plugin_sdk::rewriter_trainer::{JudgedQuestion, PreferencePair};

pub mod rewrite;
pub mod training;

/// The Question Rewriter plugin.
pub struct QuestionRewriter;

impl Plugin for QuestionRewriter {
    fn metadata() -> Metadata {
        Metadata::new(
            "question-rewriter",
            env!("CARGO_PKG_VERSION"),
            "Question Rewriter (Putting People in LLMs' Shoes, arXiv 2408.10573): one greedy rewrite of the \
             user's question with the paper's prompt, so that the answering model understands it better.",
        )
        .parameter(Parameter::text(
            "model",
            "Model that rewrites the question; empty means the plugin's default-model.",
            "",
        ))
        .parameter(Parameter::integer("max-tokens", "Token budget of the rewritten question.", 256))
        .parameter(Parameter::float("temperature", "Sampling temperature; 0 is greedy, as in the paper.", 0.0))
        .parameter(Parameter::float("top-p", "Nucleus sampling mass; irrelevant when greedy.", 1.0))
        .parameter(Parameter::text(
            "prompt",
            "Instruction sent before the question (the question replaces `{question}` if present, else it is appended).",
            rewrite::PAPER_PROMPT,
        ))
        .parameter(Parameter::integer(
            "rewrites-per-question",
            "Training data: distinct rewrites sampled per question (K; the paper uses 100).",
            100,
        ))
        .parameter(Parameter::float("sample-temperature", "Training data: temperature of the sampled rewrites.", 1.0))
        .parameter(Parameter::float("sample-top-p", "Training data: nucleus mass of the sampled rewrites.", 0.999))
        .parameter(Parameter::integer(
            "max-attempts",
            "Training data: sampling requests per question before settling for fewer than K rewrites.",
            10,
        ))
        .parameter(Parameter::integer("better-pairs", "Training data: better rewrites paired per question (N+).", 10))
        .parameter(Parameter::integer(
            "worse-pairs",
            "Training data: worse rewrites drawn at random for each better one (N-).",
            20,
        ))
    }
}

impl Rewriter for QuestionRewriter {
    fn rewrite(question: &str, params: &Params) -> Result<String, PluginError> {
        let model = llm::resolve_model(&params.text("model")?)?;
        let sampling = Sampling::default()
            .max_tokens(params.u32("max-tokens")?)
            .temperature(params.f32("temperature")?)
            .top_p(params.f32("top-p")?);
        let prompt = rewrite::build_prompt(&params.text("prompt")?, question);
        let reply = llm::chat(&model, &[Message::user(prompt)], &sampling)?;
        match rewrite::clean(reply.text()) {
            Some(rewritten) => Ok(rewritten),
            None => {
                log::warn(format!("model `{model}` returned an empty rewrite; keeping the original question"));
                Ok(question.to_owned())
            }
        }
    }
}

impl RewriterTrainer for QuestionRewriter {
    fn sample_rewrites(question: &str, params: &Params) -> Result<Vec<String>, PluginError> {
        let model = llm::resolve_model(&params.text("model")?)?;
        let want = params.u32("rewrites-per-question")?;
        let attempts = params.u32("max-attempts")?;
        if want == 0 || attempts == 0 {
            return Err(PluginError::invalid_input(
                "parameters `rewrites-per-question` and `max-attempts` must be at least 1",
            ));
        }
        let prompt = rewrite::build_prompt(&params.text("prompt")?, question);
        let base_seed = randomness::item_seed();
        let mut kept = Vec::new();
        for attempt in 0..attempts {
            let missing = want as usize - kept.len();
            if missing == 0 {
                break;
            }
            let sampling = Sampling::default()
                .max_tokens(params.u32("max-tokens")?)
                .temperature(params.f32("sample-temperature")?)
                .top_p(params.f32("sample-top-p")?)
                .n(missing as u32)
                .seed(base_seed.wrapping_add(u64::from(attempt)));
            let reply = llm::chat(&model, &[Message::user(prompt.clone())], &sampling)?;
            let cleaned: Vec<String> = reply.texts().filter_map(rewrite::clean).collect();
            training::add_unique(&mut kept, cleaned, question, want as usize);
        }
        if kept.len() < want as usize {
            log::info(format!("{} of {want} distinct rewrites after {attempts} sampling requests", kept.len()));
        }
        Ok(kept)
    }

    fn build_pairs(
        original: &JudgedQuestion,
        rewrites: &[JudgedQuestion],
        params: &Params,
    ) -> Result<Vec<PreferencePair>, PluginError> {
        let prompt = rewrite::build_prompt(&params.text("prompt")?, &original.question);
        training::build_pairs(
            &prompt,
            original,
            rewrites,
            params.u32("better-pairs")? as usize,
            params.u32("worse-pairs")? as usize,
            randomness::item_seed(),
        )
        .map_err(PluginError::InvalidInput)
    }
}

export_rewriter_trainer!(QuestionRewriter);
