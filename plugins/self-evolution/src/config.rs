//! The plugin's parameters: their declarations and their checked, typed
//! reading. No host calls, so it is unit-tested natively.

use techne_plugin_sdk::{Parameter, Params, PluginError};

use crate::pairs;
use crate::select::{Reuse, Rule};

/// Paper default: temperature of question and answer writing.
pub const DEFAULT_TEMPERATURE: f64 = 0.5;
/// Paper default: nucleus mass of question and answer writing.
pub const DEFAULT_TOP_P: f64 = 0.95;

/// Every parameter the plugin reads, with its default.
pub fn parameters() -> Vec<Parameter> {
    vec![
        Parameter::float(
            "temperature",
            "Sampling temperature of question and answer writing (paper: 0.5).",
            DEFAULT_TEMPERATURE,
        ),
        Parameter::float("top-p", "Nucleus mass of question and answer writing (paper: 0.95).", DEFAULT_TOP_P),
        Parameter::integer("max-tokens", "Token budget of the question and of the answer.", 512),
        Parameter::text(
            "question-prompt",
            "Prompt that asks for one question about the fragment; `{fragment}` is the fragment.",
            pairs::DEFAULT_QUESTION_PROMPT,
        ),
        Parameter::text(
            "answer-prompt",
            "Prompt that asks for the answer with the fragment in context; `{fragment}`, `{question}`.",
            pairs::DEFAULT_ANSWER_PROMPT,
        ),
        Parameter::integer("top-k", "select: pairs of the current generation kept, highest IFD first.", 1000),
        Parameter::text(
            "mode",
            "select: re-use of earlier generations' pairs: `top` (reuse-k highest IFD), `random` (reuse-k at \
             random, seeded by the work item), `all` or `none`.",
            "top",
        ),
        Parameter::integer("reuse-k", "select: earlier pairs re-used by `top` and `random`; 0 means top-k.", 0),
        Parameter::float(
            "max-ifd",
            "select: pairs with an IFD above this are never chosen (IFD > 1: the question does not help).",
            1.0,
        ),
    ]
}

/// The checked parameters of `write-pair`.
#[derive(Clone, Debug, PartialEq)]
pub struct WriteConfig {
    /// Sampling temperature.
    pub temperature: f32,
    /// Nucleus mass.
    pub top_p: f32,
    /// Token budget of each generation.
    pub max_tokens: u32,
    /// The question prompt template.
    pub question_prompt: String,
    /// The answer prompt template.
    pub answer_prompt: String,
}

impl WriteConfig {
    /// Reads and checks the parameters `write-pair` uses.
    pub fn from_params(params: &Params) -> Result<Self, PluginError> {
        let config = WriteConfig {
            temperature: params.f32("temperature")?,
            top_p: params.f32("top-p")?,
            max_tokens: params.u32("max-tokens")?,
            question_prompt: params.text("question-prompt")?,
            answer_prompt: params.text("answer-prompt")?,
        };
        Params::check(config.temperature >= 0.0, "parameter `temperature` must be 0 or more")?;
        Params::check(config.top_p > 0.0 && config.top_p <= 1.0, "parameter `top-p` must be in (0, 1]")?;
        Params::check(config.max_tokens >= 1, "parameter `max-tokens` must be at least 1")?;
        Params::check(
            config.question_prompt.contains("{fragment}"),
            "parameter `question-prompt` must contain `{fragment}`",
        )?;
        Params::check(
            config.answer_prompt.contains("{fragment}") && config.answer_prompt.contains("{question}"),
            "parameter `answer-prompt` must contain `{fragment}` and `{question}`",
        )?;
        Ok(config)
    }
}

/// Reads and checks the parameters `select` uses.
pub fn rule_from_params(params: &Params) -> Result<Rule, PluginError> {
    let top_k = params.u32("top-k")? as usize;
    let reuse = Reuse::parse(&params.text("mode")?).map_err(PluginError::InvalidInput)?;
    let reuse_k = match params.u32("reuse-k")? as usize {
        0 => top_k,
        k => k,
    };
    let max_ifd = params.f64("max-ifd")?;
    if max_ifd <= 0.0 {
        return Err(PluginError::invalid_input("parameter `max-ifd` must be above 0"));
    }
    Ok(Rule { top_k, reuse, reuse_k, max_ifd })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(overrides: &[(&str, &str)]) -> Params {
        Params::with_defaults(&parameters(), overrides).unwrap()
    }

    #[test]
    fn defaults() {
        let w = WriteConfig::from_params(&with(&[])).unwrap();
        assert_eq!((w.temperature, w.top_p, w.max_tokens), (0.5, 0.95, 512));
        let r = rule_from_params(&with(&[])).unwrap();
        assert_eq!(r, Rule { top_k: 1000, reuse: Reuse::Top, reuse_k: 1000, max_ifd: 1.0 });
        let r = rule_from_params(&with(&[("reuse-k", "10"), ("mode", "random")])).unwrap();
        assert_eq!((r.reuse, r.reuse_k), (Reuse::Random, 10));
    }

    #[test]
    fn bad_values_are_rejected() {
        let write_err = |o: &[(&str, &str)]| match WriteConfig::from_params(&with(o)) {
            Err(PluginError::InvalidInput(m)) => m,
            other => panic!("expected invalid input, got {other:?}"),
        };
        assert!(write_err(&[("top-p", "1.5")]).contains("`top-p`"));
        assert!(write_err(&[("question-prompt", "Ask something.")]).contains("`question-prompt`"));
        assert!(write_err(&[("answer-prompt", "{fragment}")]).contains("`answer-prompt`"));
        assert!(
            matches!(rule_from_params(&with(&[("mode", "best")])), Err(PluginError::InvalidInput(m)) if m.contains("`mode`"))
        );
        assert!(
            matches!(rule_from_params(&with(&[("max-ifd", "0")])), Err(PluginError::InvalidInput(m)) if m.contains("`max-ifd`"))
        );
        assert!(rule_from_params(&with(&[("top-k", "-1")])).is_err());
    }
}
