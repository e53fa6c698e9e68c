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
//! Parameters (`[plugins.NAME.params]`):
//!
//! | name | kind | default | meaning |
//! | --- | --- | --- | --- |
//! | `model` | text | empty | model to call; empty = the plugin's `default-model` |
//! | `max-tokens` | integer | 256 | token budget of the rewrite |
//! | `temperature` | float | 0 | 0 = greedy, as in the paper |
//! | `top-p` | float | 1.0 | nucleus mass (irrelevant when greedy) |
//! | `prompt` | text | the paper's prompt | instruction; the question is appended, or replaces `{question}` if present |

use techne_plugin_sdk::prelude::*;

pub mod rewrite;

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
                log::warn(format!(
                    "model `{model}` returned an empty rewrite; keeping the original question"
                ));
                Ok(question.to_owned())
            }
        }
    }
}

export_rewriter!(QuestionRewriter);
