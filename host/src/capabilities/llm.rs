//! The `llm` interface: chat and completion with allow-listed models.

use crate::backends::{self, ChatMessage, GenerationRequest, Prompt};
use crate::bindings::capabilities::llm::{
    Choice, Completion, FinishReason, Host, Message, Role, Sampling, TokenLogprob, Usage,
};
use crate::bindings::capabilities::types::Error as WitError;

use super::{CapabilityContext, backend_error, strings_bytes};

/// Most choices one request may ask for.
pub const MAX_CHOICES: u32 = 128;

/// Check sampling parameters and fill in the seed.
pub(crate) fn validate_sampling(options: Sampling, derived_seed: u64) -> Result<backends::Sampling, WitError> {
    let invalid = |m: String| Err(WitError::InvalidRequest(m));
    if options.n == 0 || options.n > MAX_CHOICES {
        return invalid(format!("n = {} is out of range: ask for 1 to {MAX_CHOICES} choices", options.n));
    }
    if options.max_tokens == 0 {
        return invalid("max-tokens = 0: ask for at least one token".into());
    }
    if !options.temperature.is_finite() || options.temperature < 0.0 {
        return invalid(format!(
            "temperature = {} is invalid: use 0 (greedy) or a positive number",
            options.temperature
        ));
    }
    if !options.top_p.is_finite() || options.top_p <= 0.0 || options.top_p > 1.0 {
        return invalid(format!("top-p = {} is invalid: use a number in (0, 1]", options.top_p));
    }
    if options.stop.iter().any(String::is_empty) {
        return invalid("an empty stop sequence would stop at once: remove it".into());
    }
    Ok(backends::Sampling {
        max_tokens: options.max_tokens,
        temperature: options.temperature,
        top_p: options.top_p,
        stop: options.stop,
        seed: options.seed.unwrap_or(derived_seed),
        n: options.n,
        logprobs: options.logprobs,
    })
}

/// Convert WIT chat messages to the host's.
pub(crate) fn host_messages(messages: Vec<Message>) -> Vec<ChatMessage> {
    messages
        .into_iter()
        .map(|m| {
            let role = match m.role {
                Role::System => backends::Role::System,
                Role::User => backends::Role::User,
                Role::Assistant => backends::Role::Assistant,
            };
            ChatMessage { role, content: m.content }
        })
        .collect()
}

impl CapabilityContext {
    async fn generate(&mut self, model: String, prompt: Prompt, options: Sampling) -> Result<Completion, WitError> {
        let prompt_bytes = match &prompt {
            Prompt::Text(t) => t.len() as u64,
            Prompt::Chat(ms) => ms.iter().map(|m| m.content.len() as u64 + 1).sum(),
        };
        self.traffic.send_out(model.len() as u64 + prompt_bytes + strings_bytes(&options.stop))?;
        self.check_model(&model)?;
        let seed = self.next_request_seed();
        let sampling = validate_sampling(options, seed)?;
        let generation = self
            .models
            .generate(&model, &self.grant.caller, GenerationRequest { prompt, sampling })
            .await
            .map_err(|e| backend_error(&model, e))?;
        let returned: u64 = generation
            .choices
            .iter()
            .map(|c| c.text.len() as u64 + c.logprobs.iter().map(|l| l.token.len() as u64 + 4).sum::<u64>())
            .sum();
        self.traffic.send_in(returned)?;
        Ok(Completion {
            model,
            usage: Usage { prompt_tokens: generation.prompt_tokens, completion_tokens: generation.completion_tokens },
            choices: generation
                .choices
                .into_iter()
                .map(|c| Choice {
                    text: c.text,
                    finish_reason: match c.finish_reason {
                        backends::FinishReason::Stop => FinishReason::Stop,
                        backends::FinishReason::Length => FinishReason::Length,
                    },
                    logprobs: c
                        .logprobs
                        .into_iter()
                        .map(|l| TokenLogprob { token: l.token, logprob: l.logprob })
                        .collect(),
                })
                .collect(),
        })
    }
}

impl Host for CapabilityContext {
    async fn chat(&mut self, model: String, messages: Vec<Message>, options: Sampling) -> Result<Completion, WitError> {
        if messages.is_empty() {
            return Err(WitError::InvalidRequest("no messages: send at least one user message".into()));
        }
        self.generate(model, Prompt::Chat(host_messages(messages)), options).await
    }

    async fn complete(&mut self, model: String, prompt: String, options: Sampling) -> Result<Completion, WitError> {
        self.generate(model, Prompt::Text(prompt), options).await
    }

    async fn default_model(&mut self) -> Option<String> {
        self.grant.default_model.clone()
    }

    async fn allowed_models(&mut self) -> Vec<String> {
        self.grant.allowed_models.iter().cloned().collect()
    }
}
