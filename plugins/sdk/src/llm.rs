//! Chat and text completion with the models the plugin is allowed to use.
//!
//! ```no_run
//! use techne_plugin_sdk::llm::{self, Message, Sampling};
//! # fn demo() -> Result<(), techne_plugin_sdk::PluginError> {
//! let model = llm::resolve_model("")?; // the plugin's default model
//! let reply = llm::chat(&model, &[Message::user("What is 2 + 2?")], &Sampling::default())?;
//! println!("{}", reply.text());
//! # Ok(()) }
//! ```

#[cfg(target_arch = "wasm32")]
use crate::bindings::techne::plugin::llm as wit;
use crate::{HostError, PluginError};

pub use crate::bindings::techne::plugin::llm::{
    Choice, Completion, FinishReason, Message, Role, Sampling, TokenLogprob, Usage,
};

/// Chat with `model`; the host applies the model's chat template.
///
/// The model must be one of the plugin's `allowed-models`.
pub fn chat(model: &str, messages: &[Message], sampling: &Sampling) -> Result<Completion, HostError> {
    #[cfg(target_arch = "wasm32")]
    {
        wit::chat(model, messages, sampling).map_err(HostError::from)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (model, messages, sampling);
        Err(HostError::native("llm::chat"))
    }
}

/// Continue the raw `prompt` with `model`, without a chat template.
pub fn complete(model: &str, prompt: &str, sampling: &Sampling) -> Result<Completion, HostError> {
    #[cfg(target_arch = "wasm32")]
    {
        wit::complete(model, prompt, sampling).map_err(HostError::from)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (model, prompt, sampling);
        Err(HostError::native("llm::complete"))
    }
}

/// The model the run configuration names as this plugin's `default-model`,
/// if any. (`None` in native unit tests.)
pub fn default_model() -> Option<String> {
    #[cfg(target_arch = "wasm32")]
    {
        wit::default_model()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        None
    }
}

/// Every model this plugin may call (its `allowed-models`). (Empty in native
/// unit tests.)
pub fn allowed_models() -> Vec<String> {
    #[cfg(target_arch = "wasm32")]
    {
        wit::allowed_models()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        Vec::new()
    }
}

/// The model to call: `configured` (typically a `model` parameter) when it
/// is not blank, else the plugin's `default-model`.
///
/// Fails with [`PluginError::InvalidInput`] saying how to configure one when
/// neither is set.
pub fn resolve_model(configured: &str) -> Result<String, PluginError> {
    let configured = configured.trim();
    if !configured.is_empty() {
        return Ok(configured.to_owned());
    }
    match default_model() {
        Some(model) if !model.trim().is_empty() => Ok(model),
        _ => Err(PluginError::InvalidInput(
            "no model to call: set the plugin's `model` parameter in [plugins.NAME.params] \
             or `default-model` in [plugins.NAME] of the run configuration"
                .to_owned(),
        )),
    }
}

impl Message {
    /// A message with `role` and `content`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Message { role, content: content.into() }
    }

    /// A system message (instructions for the model).
    pub fn system(content: impl Into<String>) -> Self {
        Message::new(Role::System, content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Message::new(Role::User, content)
    }

    /// An assistant message (the model's earlier turn).
    pub fn assistant(content: impl Into<String>) -> Self {
        Message::new(Role::Assistant, content)
    }
}

impl Default for Sampling {
    /// max-tokens 256, temperature 0 (greedy), top-p 1, no stop, no seed
    /// (the host derives one from the run seed and the work item), n 1, no
    /// logprobs.
    fn default() -> Self {
        Sampling { max_tokens: 256, temperature: 0.0, top_p: 1.0, stop: Vec::new(), seed: None, n: 1, logprobs: false }
    }
}

impl Sampling {
    /// Greedy decoding with the defaults (same as [`Sampling::default`]).
    pub fn greedy() -> Self {
        Sampling::default()
    }

    /// Upper bound on generated tokens per choice.
    pub fn max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = max_tokens;
        self
    }

    /// Sampling temperature; 0 is greedy.
    pub fn temperature(mut self, temperature: f32) -> Self {
        self.temperature = temperature;
        self
    }

    /// Nucleus sampling mass in (0, 1].
    pub fn top_p(mut self, top_p: f32) -> Self {
        self.top_p = top_p;
        self
    }

    /// Stop before any of `stop` (replaces earlier stop strings).
    pub fn stop<S: Into<String>>(mut self, stop: impl IntoIterator<Item = S>) -> Self {
        self.stop = stop.into_iter().map(Into::into).collect();
        self
    }

    /// Adds one stop string.
    pub fn stop_at(mut self, stop: impl Into<String>) -> Self {
        self.stop.push(stop.into());
        self
    }

    /// An explicit sampling seed (by default the host derives one from the
    /// run's seed and the work item).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Number of independent choices (at least 1).
    pub fn n(mut self, n: u32) -> Self {
        self.n = n;
        self
    }

    /// Whether to return per-token log-probabilities.
    pub fn logprobs(mut self, logprobs: bool) -> Self {
        self.logprobs = logprobs;
        self
    }
}

impl Completion {
    /// The text of the first choice (empty when there is none).
    pub fn text(&self) -> &str {
        self.choices.first().map(|c| c.text.as_str()).unwrap_or("")
    }

    /// The text of every choice, in order.
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        self.choices.iter().map(|c| c.text.as_str())
    }
}

impl Choice {
    /// Sum of the per-token log-probabilities (0 when logprobs were not
    /// requested).
    pub fn logprob_sum(&self) -> f64 {
        self.logprobs.iter().map(|t| f64::from(t.logprob)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_defaults_match_the_contract() {
        let s = Sampling::default();
        assert_eq!(s.max_tokens, 256);
        assert_eq!(s.temperature, 0.0);
        assert_eq!(s.top_p, 1.0);
        assert!(s.stop.is_empty());
        assert_eq!(s.seed, None);
        assert_eq!(s.n, 1);
        assert!(!s.logprobs);
    }

    #[test]
    fn sampling_builder_sets_fields() {
        let s = Sampling::default()
            .max_tokens(64)
            .temperature(0.7)
            .top_p(0.9)
            .stop(["\n\n"])
            .stop_at("###")
            .seed(7)
            .n(3)
            .logprobs(true);
        assert_eq!((s.max_tokens, s.n, s.seed, s.logprobs), (64, 3, Some(7), true));
        assert_eq!(s.stop, ["\n\n", "###"]);
        assert_eq!((s.temperature, s.top_p), (0.7, 0.9));
    }

    #[test]
    fn message_constructors_set_roles() {
        assert_eq!(Message::system("s").role, Role::System);
        assert_eq!(Message::user("u").role, Role::User);
        assert_eq!(Message::assistant("a").content, "a");
    }

    #[test]
    fn completion_text_is_the_first_choice() {
        let mut c =
            Completion { model: "m".into(), choices: vec![], usage: Usage { prompt_tokens: 1, completion_tokens: 0 } };
        assert_eq!(c.text(), "");
        c.choices.push(Choice {
            text: "first".into(),
            finish_reason: FinishReason::Stop,
            logprobs: vec![
                TokenLogprob { token: "a".into(), logprob: -0.5 },
                TokenLogprob { token: "b".into(), logprob: -1.5 },
            ],
        });
        assert_eq!(c.text(), "first");
        assert_eq!(c.choices[0].logprob_sum(), -2.0);
    }

    #[test]
    fn natively_host_calls_fail_cleanly() {
        assert!(matches!(chat("m", &[], &Sampling::default()), Err(HostError::Unsupported(_))));
        assert_eq!(default_model(), None);
        assert!(allowed_models().is_empty());
        assert_eq!(resolve_model(" qwen ").unwrap(), "qwen");
        assert!(matches!(resolve_model(""), Err(PluginError::InvalidInput(m)) if m.contains("default-model")));
    }
}
