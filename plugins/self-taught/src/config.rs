//! The plugin's parameters: their declarations (names, kinds, defaults) and
//! their checked, typed reading. No host calls, so it is unit-tested
//! natively.

use techne_plugin_sdk::{Parameter, Params, PluginError};

use crate::answer::AnswerFormat;
use crate::certainty::CertaintyMethod;
use crate::prompts::{self, Demo};

/// Which method the solver runs (parameter `mode`): SELF-TAUGHT or one of
/// the paper's baselines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// SELF-TAUGHT: identify knowledge, create certain pseudo-demonstrations,
    /// solve with them.
    SelfTaught,
    /// Baseline: ask for the answer directly.
    ZeroShot,
    /// Baseline: "Let's think step by step."
    ZeroShotCot,
    /// Baseline: fixed chain-of-thought demonstrations from `demos`.
    FewShotCot,
}

impl Mode {
    /// Parses the parameter's value.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "self-taught" => Ok(Mode::SelfTaught),
            "zero-shot" => Ok(Mode::ZeroShot),
            "zero-shot-cot" => Ok(Mode::ZeroShotCot),
            "few-shot-cot" => Ok(Mode::FewShotCot),
            other => Err(format!(
                "parameter `mode` must be `self-taught`, `zero-shot`, `zero-shot-cot` or `few-shot-cot`, got `{other}`"
            )),
        }
    }
}

/// Paper default: pseudo-problems per target problem (N = 3).
pub const DEFAULT_PSEUDO_PROBLEMS: i64 = 3;
/// Default certainty a pseudo-solution must reach before regeneration stops.
pub const DEFAULT_CERTAINTY_THRESHOLD: f64 = 0.9;
/// Default number of tries per pseudo-problem.
pub const DEFAULT_MAX_ATTEMPTS: i64 = 3;
/// Default samples per self-consistency attempt.
pub const DEFAULT_CONSISTENCY_SAMPLES: i64 = 5;
/// Default sampling temperature of pseudo-solutions.
pub const DEFAULT_TEMPERATURE: f64 = 0.7;
/// Default token budget of each generation.
pub const DEFAULT_MAX_TOKENS: i64 = 512;
/// Most samples one request may ask for (the host's limit).
pub const MAX_SAMPLES: u32 = 128;

/// Every parameter the plugin reads, with its default.
pub fn parameters() -> Vec<Parameter> {
    vec![
        Parameter::text(
            "mode",
            "`self-taught` (the technique), or a baseline: `zero-shot`, `zero-shot-cot`, `few-shot-cot`.",
            "self-taught",
        ),
        Parameter::text("model", "Model that solves; empty means the plugin's default-model.", ""),
        Parameter::text(
            "answer-format",
            "Final answer to extract: `number` (GSM8K-style), `letter` (multiple choice A-J) or `text`.",
            "number",
        ),
        Parameter::integer(
            "pseudo-problems",
            "N, pseudo-problems created per problem (paper: 3).",
            DEFAULT_PSEUDO_PROBLEMS,
        ),
        Parameter::text(
            "certainty",
            "Certainty of a pseudo-solution: `logprob` (exp of the mean token log-probability, from the host's \
             scoring) or `self-consistency` (agreement of answers over `consistency-samples` samples).",
            "logprob",
        ),
        Parameter::float(
            "certainty-threshold",
            "A pseudo-solution is regenerated until its certainty reaches this value (0 to 1) or attempts run out.",
            DEFAULT_CERTAINTY_THRESHOLD,
        ),
        Parameter::integer(
            "max-attempts",
            "Most pseudo-solutions generated per pseudo-problem; the most certain is kept.",
            DEFAULT_MAX_ATTEMPTS,
        ),
        Parameter::integer(
            "consistency-samples",
            "Samples per attempt when certainty = self-consistency.",
            DEFAULT_CONSISTENCY_SAMPLES,
        ),
        Parameter::float(
            "temperature",
            "Sampling temperature of pseudo-solutions (other steps are greedy); 0 allows only one attempt.",
            DEFAULT_TEMPERATURE,
        ),
        Parameter::integer("max-tokens", "Token budget of each generation.", DEFAULT_MAX_TOKENS),
        Parameter::text(
            "demos",
            "few-shot-cot demonstrations: a JSON list of {\"question\": ..., \"answer\": ...} (answers with \
             their reasoning, ending in \"The answer is ...\").",
            "[]",
        ),
    ]
}

/// The checked parameters of one call.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Which method to run.
    pub mode: Mode,
    /// The configured model (may be blank: the default model).
    pub model: String,
    /// What kind of final answer to extract.
    pub answer_format: AnswerFormat,
    /// N, pseudo-problems per problem.
    pub pseudo_problems: u32,
    /// How certainty is measured.
    pub certainty: CertaintyMethod,
    /// The certainty that stops regeneration.
    pub certainty_threshold: f64,
    /// Most attempts per pseudo-problem.
    pub max_attempts: u32,
    /// Samples per self-consistency attempt.
    pub consistency_samples: u32,
    /// Temperature of pseudo-solutions.
    pub temperature: f32,
    /// Token budget of each generation.
    pub max_tokens: u32,
    /// few-shot-cot demonstrations.
    pub demos: Vec<Demo>,
}

impl Config {
    /// Reads and checks every parameter.
    pub fn from_params(params: &Params) -> Result<Self, PluginError> {
        let invalid = PluginError::InvalidInput;
        let config = Config {
            mode: Mode::parse(&params.text("mode")?).map_err(invalid)?,
            model: params.text("model")?,
            answer_format: AnswerFormat::parse(&params.text("answer-format")?).map_err(invalid)?,
            pseudo_problems: params.u32("pseudo-problems")?,
            certainty: CertaintyMethod::parse(&params.text("certainty")?).map_err(invalid)?,
            certainty_threshold: params.f64("certainty-threshold")?,
            max_attempts: params.u32("max-attempts")?,
            consistency_samples: params.u32("consistency-samples")?,
            temperature: params.f32("temperature")?,
            max_tokens: params.u32("max-tokens")?,
            demos: prompts::parse_demos(&params.text("demos")?).map_err(invalid)?,
        };
        Params::check((1..=64).contains(&config.pseudo_problems), "parameter `pseudo-problems` must be from 1 to 64")?;
        Params::check(
            (0.0..=1.0).contains(&config.certainty_threshold),
            "parameter `certainty-threshold` must be from 0 to 1",
        )?;
        Params::check(config.max_attempts >= 1, "parameter `max-attempts` must be at least 1")?;
        Params::check(
            (1..=MAX_SAMPLES).contains(&config.consistency_samples),
            "parameter `consistency-samples` must be from 1 to 128",
        )?;
        Params::check(config.temperature >= 0.0, "parameter `temperature` must be 0 or more")?;
        Params::check(config.max_tokens >= 1, "parameter `max-tokens` must be at least 1")?;
        Params::check(
            config.mode != Mode::FewShotCot || !config.demos.is_empty(),
            "mode `few-shot-cot` needs demonstrations: set the `demos` parameter to a JSON list of \
             {\"question\": ..., \"answer\": ...}",
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

    #[test]
    fn defaults_are_the_papers() {
        let c = Config::from_params(&with(&[])).unwrap();
        assert_eq!(c.mode, Mode::SelfTaught);
        assert_eq!(c.answer_format, AnswerFormat::Number);
        assert_eq!(c.pseudo_problems, 3);
        assert_eq!(c.certainty, CertaintyMethod::Logprob);
        assert_eq!((c.certainty_threshold, c.max_attempts, c.consistency_samples), (0.9, 3, 5));
        assert_eq!((c.temperature, c.max_tokens), (0.7, 512));
        assert!(c.demos.is_empty());
    }

    #[test]
    fn modes_parse() {
        assert_eq!(Mode::parse("zero-shot-cot"), Ok(Mode::ZeroShotCot));
        assert_eq!(Mode::parse(" Zero-Shot "), Ok(Mode::ZeroShot));
        assert!(Mode::parse("auto-cot").unwrap_err().contains("`auto-cot`"));
    }

    #[test]
    fn bad_values_are_rejected_with_the_parameter_named() {
        let err = |o: &[(&str, &str)]| match Config::from_params(&with(o)) {
            Err(PluginError::InvalidInput(m)) => m,
            other => panic!("expected invalid input, got {other:?}"),
        };
        assert!(err(&[("certainty-threshold", "1.5")]).contains("`certainty-threshold`"));
        assert!(err(&[("pseudo-problems", "0")]).contains("`pseudo-problems`"));
        assert!(err(&[("consistency-samples", "500")]).contains("`consistency-samples`"));
        assert!(err(&[("mode", "few-shot-cot")]).contains("`demos`"));
        assert!(err(&[("answer-format", "json")]).contains("`answer-format`"));
        assert!(err(&[("demos", "[1]")]).contains("item 0"));
    }

    #[test]
    fn few_shot_with_demos() {
        let c = Config::from_params(&with(&[
            ("mode", "few-shot-cot"),
            ("demos", r#"[{"question": "1+1?", "answer": "The answer is 2."}]"#),
        ]))
        .unwrap();
        assert_eq!(c.mode, Mode::FewShotCot);
        assert_eq!(c.demos.len(), 1);
    }
}
