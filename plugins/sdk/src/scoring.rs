//! Log-likelihood of text under a model: certainty, perplexity and IFD.
//!
//! ```no_run
//! use techne_plugin_sdk::scoring;
//! # fn demo() -> Result<(), techne_plugin_sdk::PluginError> {
//! let scores = scoring::score("local", "The capital of France is", &[" Paris"])?;
//! let ppl = scoring::perplexity(&scores[0]);
//! # let _ = ppl; Ok(()) }
//! ```

use crate::HostError;
#[cfg(target_arch = "wasm32")]
use crate::bindings::techne::plugin::scoring as wit;
use crate::llm::Message;

pub use crate::bindings::techne::plugin::scoring::ContinuationScore;

/// Score each of `continuations` after the raw `prompt` (which may be
/// empty), one [`ContinuationScore`] per continuation, in order.
pub fn score(
    model: &str,
    prompt: &str,
    continuations: &[impl AsRef<str>],
) -> Result<Vec<ContinuationScore>, HostError> {
    let continuations = owned(continuations);
    #[cfg(target_arch = "wasm32")]
    {
        wit::score(model, prompt, &continuations).map_err(HostError::from)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (model, prompt, continuations);
        Err(HostError::native("scoring::score"))
    }
}

/// Score each of `continuations` as the assistant's reply to `messages`,
/// rendered with the model's chat template.
pub fn score_chat(
    model: &str,
    messages: &[Message],
    continuations: &[impl AsRef<str>],
) -> Result<Vec<ContinuationScore>, HostError> {
    let continuations = owned(continuations);
    #[cfg(target_arch = "wasm32")]
    {
        wit::score_chat(model, messages, &continuations).map_err(HostError::from)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        let _ = (model, messages, continuations);
        Err(HostError::native("scoring::score_chat"))
    }
}

/// Mean log-probability per token of a scored continuation (0 for an empty
/// continuation).
pub fn mean_logprob(score: &ContinuationScore) -> f64 {
    if score.token_count == 0 { 0.0 } else { score.logprob_sum / f64::from(score.token_count) }
}

/// Perplexity of a scored continuation: `exp(-mean_logprob)` (1 for an empty
/// continuation).
pub fn perplexity(score: &ContinuationScore) -> f64 {
    (-mean_logprob(score)).exp()
}

impl ContinuationScore {
    /// Same as [`mean_logprob`].
    pub fn mean_logprob(&self) -> f64 {
        mean_logprob(self)
    }

    /// Same as [`perplexity`].
    pub fn perplexity(&self) -> f64 {
        perplexity(self)
    }
}

fn owned(texts: &[impl AsRef<str>]) -> Vec<String> {
    texts.iter().map(|t| t.as_ref().to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_perplexity() {
        let s = ContinuationScore { logprob_sum: -2.0, token_count: 4, token_logprobs: vec![-0.5; 4] };
        assert_eq!(mean_logprob(&s), -0.5);
        assert!((perplexity(&s) - 0.5f64.exp()).abs() < 1e-12);
        let empty = ContinuationScore { logprob_sum: 0.0, token_count: 0, token_logprobs: vec![] };
        assert_eq!(empty.mean_logprob(), 0.0);
        assert_eq!(empty.perplexity(), 1.0);
    }

    #[test]
    fn natively_scoring_is_unsupported() {
        assert!(matches!(score("m", "p", &["c"]), Err(HostError::Unsupported(_))));
    }
}
