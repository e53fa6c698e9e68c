//! The `scoring` interface: log-likelihood of continuations after a prompt.

use crate::backends::{Prompt, ScoringRequest};
use crate::bindings::capabilities::llm::Message;
use crate::bindings::capabilities::scoring::{ContinuationScore, Host};
use crate::bindings::capabilities::types::Error as WitError;

use super::llm::host_messages;
use super::{CapabilityContext, backend_error, strings_bytes};

impl CapabilityContext {
    async fn score_prompt(
        &mut self,
        model: String,
        prompt: Prompt,
        continuations: Vec<String>,
    ) -> Result<Vec<ContinuationScore>, WitError> {
        let prompt_bytes = match &prompt {
            Prompt::Text(t) => t.len() as u64,
            Prompt::Chat(ms) => ms.iter().map(|m| m.content.len() as u64 + 1).sum(),
        };
        self.traffic.send_out(model.len() as u64 + prompt_bytes + strings_bytes(&continuations))?;
        if continuations.is_empty() {
            return Ok(Vec::new());
        }
        self.check_model(&model)?;
        let scores = self
            .models
            .score(&model, &self.grant.caller, ScoringRequest { prompt, continuations })
            .await
            .map_err(|e| backend_error(&model, e))?;
        self.traffic.send_in(scores.iter().map(|s| 12 + 4 * s.token_logprobs.len() as u64).sum())?;
        Ok(scores
            .into_iter()
            .map(|s| ContinuationScore {
                logprob_sum: s.logprob_sum,
                token_count: s.token_logprobs.len() as u32,
                token_logprobs: s.token_logprobs,
            })
            .collect())
    }
}

impl Host for CapabilityContext {
    async fn score(
        &mut self,
        model: String,
        prompt: String,
        continuations: Vec<String>,
    ) -> Result<Vec<ContinuationScore>, WitError> {
        self.score_prompt(model, Prompt::Text(prompt), continuations).await
    }

    async fn score_chat(
        &mut self,
        model: String,
        messages: Vec<Message>,
        continuations: Vec<String>,
    ) -> Result<Vec<ContinuationScore>, WitError> {
        self.score_prompt(model, Prompt::Chat(host_messages(messages)), continuations).await
    }
}
