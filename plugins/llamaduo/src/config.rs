//! The plugin's parameters: their declarations and their checked, typed
//! reading, per role function. No host calls, so it is unit-tested
//! natively.

use techne_plugin_sdk::{Parameter, Params, PluginError};

use crate::curate::{Dedupe, DedupeField, DedupeMethod};
use crate::judge;
use crate::synth;

/// Default judge repeats per response: M = 10, the official
/// implementation's `eval_repeat`.
pub const DEFAULT_JUDGE_REPEATS: i64 = 10;

/// Every parameter the plugin reads, with its default.
pub fn parameters() -> Vec<Parameter> {
    vec![
        Parameter::integer(
            "judge-repeats",
            "judge: M, judgements per response, averaged (LlamaDuo's official code: 10).",
            DEFAULT_JUDGE_REPEATS,
        ),
        Parameter::float(
            "judge-temperature",
            "judge: sampling temperature of the judge (the service's usual default, 1.0).",
            1.0,
        ),
        Parameter::text(
            "judge-prompt",
            "judge: prompt template; `{instruction}`, `{reference}`, `{response}`.",
            judge::DEFAULT_JUDGE_PROMPT,
        ),
        Parameter::integer("max-tokens", "Token budget of each service reply (official code: 2048).", 2048),
        Parameter::float("temperature", "synthesize: sampling temperature of the service model.", 1.0),
        Parameter::integer("examples-per-call", "synthesize: seed examples shown per call (official code: 1).", 1),
        Parameter::integer("pairs-per-call", "synthesize: new pairs asked for per call.", 5),
        Parameter::integer("max-calls", "synthesize: most service calls per synthesize request.", 16),
        Parameter::text("topic", "synthesize: the task's topic or category, named in the prompt; empty to omit.", ""),
        Parameter::text(
            "synthesis-prompt",
            "synthesize: prompt template; `{count}`, `{examples}`, `{topic}` (a sentence, or nothing).",
            synth::DEFAULT_SYNTHESIS_PROMPT,
        ),
        Parameter::text("dedupe-method", "curate: `minhash` or `ngram` (exact Jaccard of word n-grams).", "minhash"),
        Parameter::float(
            "dedupe-threshold",
            "curate: Jaccard similarity (estimated with minhash) at or above which two examples are duplicates.",
            0.8,
        ),
        Parameter::text(
            "dedupe-field",
            "curate: what is compared: `prompt` or `both` (prompt and response).",
            "prompt",
        ),
        Parameter::integer("ngram-size", "curate: words per shingle.", 3),
        Parameter::integer("minhash-permutations", "curate: MinHash hash functions.", 128),
        Parameter::text(
            "embedding-model",
            "curate: embedding model for decontamination; empty falls back to n-gram overlap (with a warning).",
            "",
        ),
        Parameter::float(
            "decontamination-threshold",
            "curate: cosine similarity to a test prompt at or above which a candidate is contaminated.",
            0.9,
        ),
        Parameter::float(
            "ngram-decontamination-threshold",
            "curate: without embeddings, n-gram Jaccard similarity to a test prompt at or above which a candidate \
             is contaminated.",
            0.5,
        ),
    ]
}

/// The checked parameters of `judge`.
#[derive(Clone, Debug, PartialEq)]
pub struct JudgeConfig {
    /// M, judgements per response.
    pub repeats: u32,
    /// Judge temperature.
    pub temperature: f32,
    /// Judge prompt template.
    pub prompt: String,
    /// Token budget of each judgement.
    pub max_tokens: u32,
}

impl JudgeConfig {
    /// Reads and checks the parameters `judge` uses.
    pub fn from_params(params: &Params) -> Result<Self, PluginError> {
        let config = JudgeConfig {
            repeats: params.u32("judge-repeats")?,
            temperature: params.f32("judge-temperature")?,
            prompt: params.text("judge-prompt")?,
            max_tokens: params.u32("max-tokens")?,
        };
        Params::check((1..=128).contains(&config.repeats), "parameter `judge-repeats` must be from 1 to 128")?;
        Params::check(config.temperature >= 0.0, "parameter `judge-temperature` must be 0 or more")?;
        Params::check(config.max_tokens >= 1, "parameter `max-tokens` must be at least 1")?;
        Params::check(
            ["{instruction}", "{reference}", "{response}"].iter().all(|p| config.prompt.contains(p)),
            "parameter `judge-prompt` must contain `{instruction}`, `{reference}` and `{response}`",
        )?;
        Ok(config)
    }
}

/// The checked parameters of `synthesize`.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthConfig {
    /// Service temperature.
    pub temperature: f32,
    /// Token budget of each reply.
    pub max_tokens: u32,
    /// Seeds shown per call.
    pub examples_per_call: usize,
    /// Pairs asked for per call.
    pub pairs_per_call: usize,
    /// Most calls.
    pub max_calls: usize,
    /// The task's topic.
    pub topic: String,
    /// Synthesis prompt template.
    pub prompt: String,
}

impl SynthConfig {
    /// Reads and checks the parameters `synthesize` uses.
    pub fn from_params(params: &Params) -> Result<Self, PluginError> {
        let config = SynthConfig {
            temperature: params.f32("temperature")?,
            max_tokens: params.u32("max-tokens")?,
            examples_per_call: params.u32("examples-per-call")? as usize,
            pairs_per_call: params.u32("pairs-per-call")? as usize,
            max_calls: params.u32("max-calls")? as usize,
            topic: params.text("topic")?,
            prompt: params.text("synthesis-prompt")?,
        };
        Params::check(config.temperature >= 0.0, "parameter `temperature` must be 0 or more")?;
        Params::check(config.max_tokens >= 1, "parameter `max-tokens` must be at least 1")?;
        Params::check(config.examples_per_call >= 1, "parameter `examples-per-call` must be at least 1")?;
        Params::check(config.pairs_per_call >= 1, "parameter `pairs-per-call` must be at least 1")?;
        Params::check(config.max_calls >= 1, "parameter `max-calls` must be at least 1")?;
        Params::check(config.prompt.contains("{examples}"), "parameter `synthesis-prompt` must contain `{examples}`")?;
        Ok(config)
    }
}

/// The checked parameters of `curate`.
#[derive(Clone, Debug, PartialEq)]
pub struct CurateConfig {
    /// The deduplication rule.
    pub dedupe: Dedupe,
    /// What is compared for deduplication.
    pub field: DedupeField,
    /// The embedding model (blank: n-gram fallback).
    pub embedding_model: String,
    /// Cosine threshold of decontamination.
    pub decontamination_threshold: f64,
    /// N-gram Jaccard threshold of the fallback decontamination.
    pub ngram_decontamination_threshold: f64,
}

impl CurateConfig {
    /// Reads and checks the parameters `curate` uses.
    pub fn from_params(params: &Params) -> Result<Self, PluginError> {
        let method = DedupeMethod::parse(&params.text("dedupe-method")?).map_err(PluginError::InvalidInput)?;
        let config = CurateConfig {
            dedupe: Dedupe {
                method,
                ngram_size: params.u32("ngram-size")? as usize,
                permutations: params.u32("minhash-permutations")? as usize,
                threshold: params.f64("dedupe-threshold")?,
            },
            field: DedupeField::parse(&params.text("dedupe-field")?).map_err(PluginError::InvalidInput)?,
            embedding_model: params.text("embedding-model")?.trim().to_owned(),
            decontamination_threshold: params.f64("decontamination-threshold")?,
            ngram_decontamination_threshold: params.f64("ngram-decontamination-threshold")?,
        };
        let unit = |x: f64| (0.0..=1.0).contains(&x);
        Params::check(unit(config.dedupe.threshold), "parameter `dedupe-threshold` must be from 0 to 1")?;
        Params::check((1..=16).contains(&config.dedupe.ngram_size), "parameter `ngram-size` must be from 1 to 16")?;
        Params::check(
            (1..=4096).contains(&config.dedupe.permutations),
            "parameter `minhash-permutations` must be from 1 to 4096",
        )?;
        Params::check(
            (-1.0..=1.0).contains(&config.decontamination_threshold),
            "parameter `decontamination-threshold` must be from -1 to 1",
        )?;
        Params::check(
            unit(config.ngram_decontamination_threshold),
            "parameter `ngram-decontamination-threshold` must be from 0 to 1",
        )?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(overrides: &[(&str, &str)]) -> Params {
        Params::with_defaults(&parameters(), overrides).unwrap()
    }

    fn invalid<T: core::fmt::Debug>(result: Result<T, PluginError>) -> String {
        match result {
            Err(PluginError::InvalidInput(m)) => m,
            other => panic!("expected invalid input, got {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let j = JudgeConfig::from_params(&with(&[])).unwrap();
        assert_eq!((j.repeats, j.temperature, j.max_tokens), (10, 1.0, 2048));
        let s = SynthConfig::from_params(&with(&[])).unwrap();
        assert_eq!((s.examples_per_call, s.pairs_per_call, s.max_calls, s.temperature), (1, 5, 16, 1.0));
        let c = CurateConfig::from_params(&with(&[])).unwrap();
        assert_eq!(
            c.dedupe,
            Dedupe { method: DedupeMethod::MinHash, ngram_size: 3, permutations: 128, threshold: 0.8 }
        );
        assert_eq!((c.field, c.embedding_model.as_str()), (DedupeField::Prompt, ""));
        assert_eq!((c.decontamination_threshold, c.ngram_decontamination_threshold), (0.9, 0.5));
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(invalid(JudgeConfig::from_params(&with(&[("judge-repeats", "0")]))).contains("`judge-repeats`"));
        assert!(
            invalid(JudgeConfig::from_params(&with(&[("judge-prompt", "{instruction}")]))).contains("`judge-prompt`")
        );
        assert!(
            invalid(SynthConfig::from_params(&with(&[("examples-per-call", "0")]))).contains("`examples-per-call`")
        );
        assert!(
            invalid(SynthConfig::from_params(&with(&[("synthesis-prompt", "Go.")]))).contains("`synthesis-prompt`")
        );
        assert!(invalid(CurateConfig::from_params(&with(&[("dedupe-threshold", "2")]))).contains("`dedupe-threshold`"));
        assert!(invalid(CurateConfig::from_params(&with(&[("dedupe-method", "exact")]))).contains("`dedupe-method`"));
        assert!(invalid(CurateConfig::from_params(&with(&[("ngram-size", "0")]))).contains("`ngram-size`"));
    }
}
