//! The plugin's parameters: their declarations and their checked, typed
//! reading. No host calls, so it is unit-tested natively.

use techne_plugin_sdk::{Parameter, Params, PluginError};

use crate::prompts;
use crate::reward;

/// Which policy runs (parameter `mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// QPO: the policy model writes the prompt, conditioned on the target
    /// reward.
    Qpo,
    /// The Prompt-OIRL baseline: the best of `candidate-prompts` under a
    /// reward model.
    PromptOirl,
}

impl Mode {
    /// Parses the parameter's value: `qpo` or `prompt-oirl`.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "qpo" => Ok(Mode::Qpo),
            "prompt-oirl" => Ok(Mode::PromptOirl),
            other => Err(format!("parameter `mode` must be `qpo` or `prompt-oirl`, got `{other}`")),
        }
    }
}

/// Default template of the policy's input after the reward prefix.
pub const DEFAULT_POLICY_TEMPLATE: &str = "Query: {query}\nPrompt:";
/// Default template of the prompt sent to the answering model.
pub const DEFAULT_PROMPT_TEMPLATE: &str = "{prompt}\n\n{query}";

/// Every parameter the plugin reads, with its default.
pub fn parameters() -> Vec<Parameter> {
    vec![
        Parameter::text("mode", "`qpo` (the policy model writes the prompt) or `prompt-oirl` (baseline).", "qpo"),
        Parameter::text("policy-model", "The QPO policy model; empty means the plugin's default-model.", ""),
        Parameter::float(
            "target-reward",
            "Return-to-go the policy is conditioned on (reward prefix); default the reward's top, 10 + 10.",
            reward::TOP_REWARD,
        ),
        Parameter::integer(
            "num-prompts",
            "Prompts to return (sampled as n choices in qpo mode; best n in prompt-oirl).",
            1,
        ),
        Parameter::float("temperature", "Sampling temperature of the policy; 0 is greedy.", 0.0),
        Parameter::float("top-p", "Nucleus sampling mass of the policy.", 1.0),
        Parameter::integer("max-tokens", "Token budget of one generated prompt.", 64),
        Parameter::text(
            "policy-template",
            "The policy's input after the reward prefix; `{query}` is the query.",
            DEFAULT_POLICY_TEMPLATE,
        ),
        Parameter::boolean(
            "policy-chat",
            "Send the policy input as a chat user message instead of raw text (for chat-tuned policies).",
            false,
        ),
        Parameter::text(
            "prompt-template",
            "The complete prompt for the answering model; `{prompt}` is the generated prompt, `{query}` the query.",
            DEFAULT_PROMPT_TEMPLATE,
        ),
        Parameter::text(
            "candidate-prompts",
            "prompt-oirl: JSON list of known prompts to choose from.",
            prompts::DEFAULT_CANDIDATES,
        ),
        Parameter::text(
            "reward-model",
            "prompt-oirl: model whose log-likelihood of a \"Yes, correct\" judgement is the reward; empty means \
             the plugin's default-model.",
            "",
        ),
        Parameter::float("collect-temperature", "Offline data: sampling temperature of the policy.", 1.0),
        Parameter::float("collect-top-p", "Offline data: nucleus sampling mass of the policy.", 1.0),
        Parameter::float("min-reward", "Offline data: records with a lower reward are not kept.", 0.0),
    ]
}

/// The checked parameters of one call.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Which policy runs.
    pub mode: Mode,
    /// The configured policy model (may be blank).
    pub policy_model: String,
    /// The return-to-go of the reward prefix.
    pub target_reward: f64,
    /// Prompts to return.
    pub num_prompts: u32,
    /// Policy temperature.
    pub temperature: f32,
    /// Policy nucleus mass.
    pub top_p: f32,
    /// Token budget of one prompt.
    pub max_tokens: u32,
    /// The policy input's template.
    pub policy_template: String,
    /// Whether the policy is called through chat.
    pub policy_chat: bool,
    /// The answering model's prompt template.
    pub prompt_template: String,
    /// Prompt-OIRL's candidates.
    pub candidates: Vec<String>,
    /// The configured reward model (may be blank).
    pub reward_model: String,
}

impl Config {
    /// Reads and checks every parameter (the candidates only in
    /// `prompt-oirl` mode).
    pub fn from_params(params: &Params) -> Result<Self, PluginError> {
        let mode = Mode::parse(&params.text("mode")?).map_err(PluginError::InvalidInput)?;
        let candidates = match mode {
            Mode::PromptOirl => {
                prompts::parse_candidates(&params.text("candidate-prompts")?).map_err(PluginError::InvalidInput)?
            }
            Mode::Qpo => Vec::new(),
        };
        let config = Config {
            mode,
            policy_model: params.text("policy-model")?,
            target_reward: params.f64("target-reward")?,
            num_prompts: params.u32("num-prompts")?,
            temperature: params.f32("temperature")?,
            top_p: params.f32("top-p")?,
            max_tokens: params.u32("max-tokens")?,
            policy_template: params.text("policy-template")?,
            policy_chat: params.bool("policy-chat")?,
            prompt_template: params.text("prompt-template")?,
            candidates,
            reward_model: params.text("reward-model")?,
        };
        let check = |ok: bool, message: &str| if ok { Ok(()) } else { Err(PluginError::invalid_input(message)) };
        check((1..=128).contains(&config.num_prompts), "parameter `num-prompts` must be from 1 to 128")?;
        check(config.temperature >= 0.0, "parameter `temperature` must be 0 or more")?;
        check(config.top_p > 0.0 && config.top_p <= 1.0, "parameter `top-p` must be in (0, 1]")?;
        check(config.max_tokens >= 1, "parameter `max-tokens` must be at least 1")?;
        check(config.policy_template.contains("{query}"), "parameter `policy-template` must contain `{query}`")?;
        check(
            config.prompt_template.contains("{prompt}") && config.prompt_template.contains("{query}"),
            "parameter `prompt-template` must contain both `{prompt}` and `{query}`",
        )?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(overrides: &[(&str, &str)]) -> Params {
        let mut pairs: Vec<(String, String)> = parameters().into_iter().map(|p| (p.name, p.default_value)).collect();
        for (name, value) in overrides {
            match pairs.iter_mut().find(|(n, _)| n == name) {
                Some(pair) => pair.1 = (*value).to_owned(),
                None => panic!("no parameter {name}"),
            }
        }
        Params::from_pairs(pairs)
    }

    #[test]
    fn defaults() {
        let c = Config::from_params(&with(&[])).unwrap();
        assert_eq!(c.mode, Mode::Qpo);
        assert_eq!(c.target_reward, 20.0);
        assert_eq!((c.num_prompts, c.temperature, c.top_p, c.max_tokens), (1, 0.0, 1.0, 64));
        assert_eq!(c.prompt_template, "{prompt}\n\n{query}");
        assert!(!c.policy_chat);
        assert!(c.candidates.is_empty());
    }

    #[test]
    fn prompt_oirl_reads_candidates() {
        let c = Config::from_params(&with(&[("mode", "prompt-oirl")])).unwrap();
        assert_eq!(c.candidates[0], "Let's think step by step.");
        let bad = Config::from_params(&with(&[("mode", "prompt-oirl"), ("candidate-prompts", "[]")]));
        assert!(matches!(bad, Err(PluginError::InvalidInput(m)) if m.contains("no prompt")));
    }

    #[test]
    fn bad_values_are_rejected() {
        let err = |o: &[(&str, &str)]| match Config::from_params(&with(o)) {
            Err(PluginError::InvalidInput(m)) => m,
            other => panic!("expected invalid input, got {other:?}"),
        };
        assert!(err(&[("mode", "ape")]).contains("`mode`"));
        assert!(err(&[("num-prompts", "0")]).contains("`num-prompts`"));
        assert!(err(&[("top-p", "0")]).contains("`top-p`"));
        assert!(err(&[("policy-template", "Prompt:")]).contains("`policy-template`"));
        assert!(err(&[("prompt-template", "{prompt}")]).contains("`prompt-template`"));
    }
}
