//! `self-taught`: SELF-TAUGHT (*Large Language Models Are Self-Taught
//! Reasoners: Enhancing LLM Applications via Tailored Problem-Solving
//! Demonstrations*, Ong, Kwon and Yeo, arXiv 2408.12315) as a techne solver
//! plugin (world `solver-plugin`).
//!
//! SELF-TAUGHT builds, for every target problem, demonstrations tailored to
//! it, zero-shot, in three phases:
//!
//! 1. **Information identification**: the model states, abstractly, the
//!    knowledge the problem needs (trace step `knowledge`).
//! 2. **Tailored demonstration creation**: the model writes N pseudo-problems
//!    that need that knowledge (`pseudo-problems`, paper: 3; trace steps
//!    `pseudo-problem`) and solves each step by step. A pseudo-solution is
//!    regenerated until its certainty reaches `certainty-threshold` or
//!    `max-attempts` are spent, and the most certain is kept (trace steps
//!    `pseudo-solution`, with the certainty). Certainty is either
//!    `logprob`, `exp(mean token log-probability)` of the solution under the
//!    model, from the host's scoring (the geometric mean of the token
//!    probabilities), or `self-consistency`, the share of
//!    `consistency-samples` samples at `temperature` that agree with the
//!    most common extracted answer.
//! 3. **Self-directed problem solving**: the model solves the target problem
//!    greedily with the pseudo-problems and their solutions as
//!    chain-of-thought demonstrations (trace step `answer`: the full reply).
//!
//! The final answer is extracted from the reply ([`answer`]): a GSM8K-style
//! number, a multiple-choice letter or free text. When nothing can be
//! extracted the last line of the reply is returned (with a warning).
//!
//! `mode` also runs the paper's baselines with the same extraction:
//! `zero-shot` (answer directly), `zero-shot-cot` ("Let's think step by
//! step.") and `few-shot-cot` (fixed demonstrations from `demos`).
//!
//! Parameters (`[plugins.NAME.params]`):
//!
//! | name | kind | default | meaning |
//! | --- | --- | --- | --- |
//! | `mode` | text | `self-taught` | `self-taught`, `zero-shot`, `zero-shot-cot` or `few-shot-cot` |
//! | `model` | text | empty | model to call; empty = the plugin's `default-model` |
//! | `answer-format` | text | `number` | `number`, `letter` (A–J) or `text` |
//! | `pseudo-problems` | integer | 3 | N, pseudo-problems per problem (the paper's value) |
//! | `certainty` | text | `logprob` | `logprob` or `self-consistency` |
//! | `certainty-threshold` | float | 0.9 | certainty that stops regeneration, 0 to 1 |
//! | `max-attempts` | integer | 3 | most pseudo-solutions per pseudo-problem |
//! | `consistency-samples` | integer | 5 | samples per self-consistency attempt |
//! | `temperature` | float | 0.7 | temperature of pseudo-solutions; other steps are greedy; 0 allows one attempt only |
//! | `max-tokens` | integer | 512 | token budget of each generation |
//! | `demos` | text | `[]` | `few-shot-cot` demonstrations: JSON list of `{"question", "answer"}` |
//!
//! `pseudo-problems` is the paper's N. The paper fixes the filtering rule
//! (regenerate below a certainty threshold, keep the most certain), not
//! values this implementation could check; `certainty-threshold`,
//! `max-attempts`, `consistency-samples`, `temperature` and `max-tokens` are
//! this plugin's defaults: set them to the values of the setting you
//! reproduce.
//!
//! Cost per problem in `self-taught` mode: 3 + N × attempts chat requests,
//! plus one scoring request per attempt with `logprob` certainty.

#![warn(missing_docs)]

use techne_plugin_sdk::prelude::*;
use techne_plugin_sdk::solver::TraceStep;

pub mod answer;
pub mod certainty;
pub mod config;
pub mod prompts;

use answer::AnswerFormat;
use certainty::{Attempt, CertaintyMethod};
use config::{Config, Mode};
use prompts::Demo;

/// The SELF-TAUGHT solver plugin.
pub struct SelfTaught;

impl Plugin for SelfTaught {
    fn metadata() -> Metadata {
        let mut metadata = Metadata::new(
            "self-taught",
            env!("CARGO_PKG_VERSION"),
            "SELF-TAUGHT (Large Language Models Are Self-Taught Reasoners, arXiv 2408.12315): per problem, \
             identify the knowledge it needs, create N pseudo-problems on that knowledge and solve them, \
             regenerating each solution until its certainty (token log-probability or self-consistency) clears \
             a threshold, then solve the problem with those tailored demonstrations. Also runs the zero-shot, \
             zero-shot-CoT and few-shot-CoT baselines.",
        );
        for parameter in config::parameters() {
            metadata = metadata.parameter(parameter);
        }
        metadata
    }
}

impl Solver for SelfTaught {
    fn solve(problem: &str, params: &Params) -> Result<Solution, PluginError> {
        let config = Config::from_params(params)?;
        if problem.trim().is_empty() {
            return Err(PluginError::invalid_input("the problem is empty"));
        }
        let model = llm::resolve_model(&config.model)?;
        let format = config.answer_format;
        match config.mode {
            Mode::ZeroShot => finish(&model, &config, prompts::zero_shot_prompt(problem, format), Vec::new()),
            Mode::ZeroShotCot => finish(&model, &config, prompts::solve_prompt(problem, format), Vec::new()),
            Mode::FewShotCot => {
                let prompt = prompts::demonstrations_prompt(problem, &config.demos, format);
                finish(&model, &config, prompt, Vec::new())
            }
            Mode::SelfTaught => self_taught(problem, &model, &config),
        }
    }
}

/// The three phases of SELF-TAUGHT.
fn self_taught(problem: &str, model: &str, config: &Config) -> Result<Solution, PluginError> {
    let greedy = Sampling::default().max_tokens(config.max_tokens);
    let mut trace = Vec::new();

    // Phase I: information identification.
    let reply = llm::chat(model, &[Message::user(prompts::knowledge_prompt(problem))], &greedy)?;
    let knowledge = prompts::clean_knowledge(reply.text()).unwrap_or_else(|| {
        log::warn("the model identified no knowledge; asking for pseudo-problems without it");
        String::new()
    });
    trace.push(TraceStep::new("knowledge", knowledge.clone()));

    // Phase II: pseudo-problems, then certain pseudo-solutions.
    let prompt = prompts::pseudo_problems_prompt(problem, &knowledge, config.pseudo_problems);
    let reply = llm::chat(model, &[Message::user(prompt)], &greedy)?;
    let pseudo_problems = prompts::split_problems(reply.text(), config.pseudo_problems as usize);
    if pseudo_problems.len() < config.pseudo_problems as usize {
        log::warn(format!(
            "asked for {} pseudo-problems, the model wrote {} readable ones",
            config.pseudo_problems,
            pseudo_problems.len()
        ));
    }
    let mut demos = Vec::new();
    for pseudo_problem in pseudo_problems {
        trace.push(TraceStep::new("pseudo-problem", pseudo_problem.clone()));
        match pseudo_solution(&pseudo_problem, model, config)? {
            Some((best, attempts)) => {
                trace.push(TraceStep::new("pseudo-solution", certainty::trace_text(&best, attempts)));
                demos.push(Demo { question: pseudo_problem, answer: best.solution });
            }
            None => log::warn("every pseudo-solution of a pseudo-problem was empty; dropping it"),
        }
    }
    if demos.is_empty() {
        log::warn("no pseudo-demonstration was created; solving the problem zero-shot with chain of thought");
    }

    // Phase III: solve the target problem with the tailored demonstrations.
    let prompt = prompts::demonstrations_prompt(problem, &demos, config.answer_format);
    finish(model, config, prompt, trace)
}

/// Generates pseudo-solutions of `pseudo_problem` until one is certain
/// enough or attempts run out; the most certain with the number of attempts
/// made, or `None` when every attempt was empty.
fn pseudo_solution(
    pseudo_problem: &str,
    model: &str,
    config: &Config,
) -> Result<Option<(Attempt, usize)>, PluginError> {
    let messages = [Message::user(prompts::solve_prompt(pseudo_problem, config.answer_format))];
    let sampling = Sampling::default().max_tokens(config.max_tokens).temperature(config.temperature);
    let max_attempts = certainty::effective_attempts(config.max_attempts, config.temperature);
    if config.temperature <= 0.0 && config.certainty == CertaintyMethod::SelfConsistency {
        log::warn("self-consistency with temperature 0: every sample is the same, so certainty is always 1");
    }
    let mut attempts = Vec::new();
    let mut made = 0;
    while made < max_attempts as usize {
        made += 1;
        let attempt = match config.certainty {
            CertaintyMethod::Logprob => logprob_attempt(model, &messages, &sampling)?,
            CertaintyMethod::SelfConsistency => consistency_attempt(
                model,
                &messages,
                &sampling.clone().n(config.consistency_samples),
                config.answer_format,
            )?,
        };
        let Some(attempt) = attempt else { continue };
        let done = certainty::clears(attempt.certainty, config.certainty_threshold);
        attempts.push(attempt);
        if done {
            break;
        }
    }
    Ok(certainty::most_certain(&attempts).cloned().map(|best| (best, made)))
}

/// One sampled solution scored by the host: certainty `exp(mean logprob)`.
fn logprob_attempt(model: &str, messages: &[Message], sampling: &Sampling) -> Result<Option<Attempt>, PluginError> {
    let reply = llm::chat(model, messages, sampling)?;
    let solution = reply.text().trim();
    if solution.is_empty() {
        return Ok(None);
    }
    let scores = scoring::score_chat(model, messages, &[solution]).map_err(|e| match e {
        HostError::Unsupported(m) => PluginError::failed(format!(
            "certainty = \"logprob\" needs the host's scoring, which model `{model}` does not offer ({m}); \
             set the parameter `certainty` to \"self-consistency\""
        )),
        other => PluginError::Host(other),
    })?;
    let score = scores.first().ok_or_else(|| PluginError::failed("the host returned no score for the solution"))?;
    let certainty = certainty::logprob_certainty(score.logprob_sum, score.token_count);
    Ok(Some(Attempt { solution: solution.to_owned(), certainty }))
}

/// `n` sampled solutions: certainty is the agreement of their answers.
fn consistency_attempt(
    model: &str,
    messages: &[Message],
    sampling: &Sampling,
    format: AnswerFormat,
) -> Result<Option<Attempt>, PluginError> {
    let reply = llm::chat(model, messages, sampling)?;
    let texts: Vec<&str> = reply.texts().map(str::trim).collect();
    let answers: Vec<Option<String>> = texts.iter().map(|t| answer::extract(t, format)).collect();
    let (majority, share) = certainty::consistency(&answers);
    Ok(certainty::representative(&texts, &answers, majority.as_deref())
        .map(|i| Attempt { solution: texts[i].to_owned(), certainty: share }))
}

/// Asks for the final solution greedily and extracts the answer.
fn finish(model: &str, config: &Config, prompt: String, mut trace: Vec<TraceStep>) -> Result<Solution, PluginError> {
    let sampling = Sampling::default().max_tokens(config.max_tokens);
    let reply = llm::chat(model, &[Message::user(prompt)], &sampling)?;
    let text = reply.text().trim();
    if text.is_empty() {
        return Err(PluginError::failed(format!("model `{model}` returned an empty solution")));
    }
    let answer = match answer::extract(text, config.answer_format) {
        Some(answer) => answer,
        None => {
            log::warn(format!("no {} answer found in the solution; using its last line", config.answer_format));
            answer::extract_text(text).unwrap_or_else(|| text.to_owned())
        }
    };
    trace.push(TraceStep::new("answer", text));
    Ok(Solution { answer, trace })
}

export_solver!(SelfTaught);
