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
    /// The Prompt-OIRL baseline: the best of `candidate-prompts` under the
    /// learned reward model given in parameter `reward-model`.
    PromptOirl,
    /// A zero-training stand-in for Prompt-OIRL's reward model: the best of
    /// `candidate-prompts` under a judge model's likelihood of "Yes, the
    /// answer will be correct".
    PromptOirlJudge,
}

impl Mode {
    /// Parses the parameter's value: `qpo`, `prompt-oirl` or
    /// `prompt-oirl-judge`.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "qpo" => Ok(Mode::Qpo),
            "prompt-oirl" => Ok(Mode::PromptOirl),
            "prompt-oirl-judge" => Ok(Mode::PromptOirlJudge),
            other => {
                Err(format!("parameter `mode` must be `qpo`, `prompt-oirl` or `prompt-oirl-judge`, got `{other}`"))
            }
        }
    }

    /// Whether the mode chooses among `candidate-prompts`.
    pub fn uses_candidates(self) -> bool {
        matches!(self, Mode::PromptOirl | Mode::PromptOirlJudge)
    }
}

/// Default template of the policy's input after the reward prefix.
pub const DEFAULT_POLICY_TEMPLATE: &str = "Query: {query}\nPrompt:";
/// Default template of the prompt sent to the answering model.
pub const DEFAULT_PROMPT_TEMPLATE: &str = "{prompt}\n\n{query}";

/// Every parameter the plugin reads, with its default.
pub fn parameters() -> Vec<Parameter> {
    vec![
        Parameter::text(
            "mode",
            "`qpo` (the policy model writes the prompt), `prompt-oirl` (the best known prompt under the learned \
             reward model) or `prompt-oirl-judge` (the same choice under a zero-training judge).",
            "qpo",
        ),
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
            "prompt-oirl: the learned reward model, the JSON that `techne collect oirl-reward-model` writes (give \
             the file with `[plugins.NAME.param-files] reward-model = \"FILE\"`).",
            "",
        ),
        Parameter::text(
            "embedding-model",
            "prompt-oirl: the embedding model of the reward model's features; empty means the one the reward model \
             was fitted with. Required when fitting.",
            "",
        ),
        Parameter::integer(
            "oirl-cv-folds",
            "prompt-oirl fitting: folds (grouped by query) of the cross-validation that chooses the L2 penalty \
             from `oirl-l2-grid`; 1 uses `oirl-l2` as given.",
            5,
        ),
        Parameter::text(
            "oirl-l2-grid",
            "prompt-oirl fitting: JSON list of the L2 penalties the cross-validation tries.",
            "[0.001, 0.01, 0.1, 1, 10, 100]",
        ),
        Parameter::float("oirl-l2", "prompt-oirl fitting: L2 penalty when `oirl-cv-folds` is 1.", 0.01),
        Parameter::integer("oirl-iterations", "prompt-oirl fitting: most gradient-descent iterations.", 500),
        Parameter::text(
            "judge-model",
            "prompt-oirl-judge: model whose log-likelihood of a \"Yes, correct\" judgement is the reward; empty \
             means the plugin's default-model.",
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
    /// prompt-oirl: the learned reward model's JSON (may be blank).
    pub reward_model: String,
    /// prompt-oirl: the configured embedding model (may be blank).
    pub embedding_model: String,
    /// prompt-oirl-judge: the configured judge model (may be blank).
    pub judge_model: String,
}

impl Config {
    /// Reads and checks every parameter (the candidates only in the
    /// Prompt-OIRL modes).
    pub fn from_params(params: &Params) -> Result<Self, PluginError> {
        let mode = Mode::parse(&params.text("mode")?).map_err(PluginError::InvalidInput)?;
        let candidates = if mode.uses_candidates() {
            prompts::parse_candidates(&params.text("candidate-prompts")?).map_err(PluginError::InvalidInput)?
        } else {
            Vec::new()
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
            embedding_model: params.text("embedding-model")?,
            judge_model: params.text("judge-model")?,
        };
        Params::check((1..=128).contains(&config.num_prompts), "parameter `num-prompts` must be from 1 to 128")?;
        Params::check(config.temperature >= 0.0, "parameter `temperature` must be 0 or more")?;
        Params::check(config.top_p > 0.0 && config.top_p <= 1.0, "parameter `top-p` must be in (0, 1]")?;
        Params::check(config.max_tokens >= 1, "parameter `max-tokens` must be at least 1")?;
        Params::check(
            config.policy_template.contains("{query}"),
            "parameter `policy-template` must contain `{query}`",
        )?;
        Params::check(
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
        Params::with_defaults(&parameters(), overrides).unwrap()
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
        let judge = Config::from_params(&with(&[("mode", "Prompt-OIRL-judge"), ("judge-model", "j")])).unwrap();
        assert_eq!((judge.mode, judge.judge_model.as_str(), judge.candidates.len()), (Mode::PromptOirlJudge, "j", 6));
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
