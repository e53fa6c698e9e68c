//! The OpenAI-compatible service backend (`backend = "openai"`): chat and
//! text completions, scoring through echoed prompt log-probabilities, and
//! embeddings, from OpenAI or any server speaking its API (vLLM, llama.cpp's
//! `llama-server`, ...).
//!
//! - `config`: the `[models.NAME]` settings and the `[network] allow-hosts` checks;
//! - `client`: the HTTP client and the one retry loop;
//! - `retry`: backoff with full jitter, `Retry-After`, the cooldown;
//! - `rate_limit`: concurrency cap, requests and tokens per minute;
//! - `wire`: the JSON sent and read;
//! - `fallback`: the wrapper that routes a failing model's requests to its fallbacks.
//!
//! The API key is read from the environment variable that `api-key-env`
//! names, when the backend is built; it is sent as a bearer token and never
//! logged nor written to configurations, reports or error messages.

mod client;
mod config;
mod fallback;
mod rate_limit;
mod retry;
mod wire;

use std::sync::atomic::{AtomicBool, Ordering};

pub use client::{ApiKey, CallError};
pub use config::{OpenAiModelConfig, check_allow_host, host_allowed};
pub use fallback::{FallbackBackend, with_fallbacks};
pub use rate_limit::{Limits, TokenBucket};
pub use retry::{CircuitBreaker, RetryPolicy, parse_retry_after, status_is_retryable};

use super::{BackendError, ContinuationScore, Generation, GenerationRequest, ModelBackend, Prompt, ScoringRequest};
use client::Endpoint;

/// Texts per `/embeddings` request.
const EMBEDDING_BATCH: usize = 128;

/// Why an OpenAI-compatible model could not be set up. Each message says how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum OpenAiBackendError {
    /// The environment variable named by `api-key-env` is unset or empty.
    #[error(
        "the environment variable {var} (named by `api-key-env`) is not set: export it with the API key, e.g. `export {var}=...`"
    )]
    MissingApiKey {
        /// The variable.
        var: String,
    },
    /// The settings cannot make a client.
    #[error("{0}")]
    Client(String),
}

/// A model behind an OpenAI-compatible endpoint.
#[derive(Debug)]
pub struct OpenAiBackend {
    model: String,
    api_key_env: Option<String>,
    endpoint: Endpoint,
    /// Set once the server showed it cannot score (no echoed prompt log-probabilities).
    scoring_unsupported: AtomicBool,
}

impl OpenAiBackend {
    /// The backend for `config`, reading the API key from the environment
    /// variable that `api-key-env` names.
    pub fn new(config: &OpenAiModelConfig) -> Result<Self, OpenAiBackendError> {
        let key = match &config.api_key_env {
            Some(var) => match std::env::var(var) {
                Ok(key) if !key.trim().is_empty() => Some(key.trim().to_string()),
                _ => return Err(OpenAiBackendError::MissingApiKey { var: var.clone() }),
            },
            None => None,
        };
        Self::with_api_key(config, key)
    }

    /// The backend for `config` with the given key (for embedders and tests;
    /// [`OpenAiBackend::new`] reads it from the environment).
    pub fn with_api_key(config: &OpenAiModelConfig, api_key: Option<String>) -> Result<Self, OpenAiBackendError> {
        let endpoint = Endpoint::new(config, api_key.map(ApiKey::new)).map_err(OpenAiBackendError::Client)?;
        Ok(Self {
            model: config.model.clone(),
            api_key_env: config.api_key_env.clone(),
            endpoint,
            scoring_unsupported: AtomicBool::new(false),
        })
    }

    /// The error a failed call becomes, with what to do about it.
    fn backend_error(&self, path: &str, error: CallError) -> BackendError {
        let url = self.endpoint.url(path);
        let model = &self.model;
        match error {
            CallError::Status { status: status @ (401 | 403), message } => {
                BackendError::Failed(match &self.api_key_env {
                    Some(var) => format!(
                        "{url} refused the request (HTTP {status}: {message}): check the API key in the environment \
                     variable {var} and that it may use model '{model}'"
                    ),
                    None => format!(
                        "{url} refused the request (HTTP {status}: {message}): the endpoint wants an API key; put it in \
                     an environment variable and name that variable in `api-key-env`"
                    ),
                })
            }
            CallError::Status { status: 404, message } => BackendError::Failed(format!(
                "{url} answered 404 ({message}): check `base-url` (most servers want the API root ending in /v1) \
                 and that the endpoint serves model '{model}'"
            )),
            CallError::Status { status, message } if matches!(status, 400 | 413 | 422) => {
                BackendError::InvalidRequest(format!("{url} rejected the request (HTTP {status}): {message}"))
            }
            CallError::Status { status, message } => {
                BackendError::Failed(format!("{url} answered HTTP {status}: {message}"))
            }
            CallError::Exhausted { attempts, last } => BackendError::Failed(format!(
                "{url} failed {attempts} time(s), the last: {last}; if the endpoint is overloaded lower \
                 `max-concurrency` or `requests-per-minute`, or raise `max-retries`; `fallbacks` can route \
                 requests to another model"
            )),
            e @ CallError::CoolingDown { .. } => BackendError::Failed(format!(
                "{url} is {e}; requests fail fast until then (`cooldown-after-failures`, `cooldown-ms`); \
                 `fallbacks` can route them to another model meanwhile"
            )),
            CallError::Unsupported(message) => BackendError::Unsupported(format!(
                "{url} does not support this request ({message}); use another model for it"
            )),
            CallError::RedirectRefused(message) => BackendError::Failed(format!(
                "{message}; set `base-url` to the address the server redirects to (and allow its host in \
                 [network] allow-hosts)"
            )),
            CallError::Request(message) => BackendError::Failed(format!("{url}: {message}")),
        }
    }

    async fn post(&self, path: &str, body: &serde_json::Value, tokens: u64) -> Result<serde_json::Value, BackendError> {
        self.endpoint.post(path, body, tokens).await.map_err(|e| self.backend_error(path, e))
    }

    fn parse<T: serde::de::DeserializeOwned>(&self, path: &str, value: serde_json::Value) -> Result<T, BackendError> {
        serde_json::from_value(value).map_err(|e| {
            BackendError::Failed(format!(
                "{} answered JSON of an unexpected shape ({e}); is `base-url` an OpenAI-compatible API root?",
                self.endpoint.url(path)
            ))
        })
    }

    /// One generation call; the choices in index order.
    async fn generation_call(
        &self,
        path: &str,
        body: &serde_json::Value,
        tokens: u64,
    ) -> Result<(Vec<super::Choice>, u64, u64), BackendError> {
        let value = self.post(path, body, tokens).await?;
        let mut response: wire::CompletionResponse = self.parse(path, value)?;
        response.choices.sort_by_key(|c| c.index);
        let usage = response.usage.unwrap_or_default();
        Ok((
            response.choices.into_iter().map(wire::WireChoice::into_choice).collect(),
            usage.prompt_tokens,
            usage.completion_tokens,
        ))
    }

    fn scoring_unsupported_error(&self, detail: &str) -> BackendError {
        BackendError::Unsupported(format!(
            "endpoint {} does not return prompt log-probabilities (echo + logprobs){detail}; use a local model \
             (backend = \"local\") for scoring",
            self.endpoint.url("completions")
        ))
    }
}

/// A rough token count of a text (about four characters a token), for the
/// tokens-per-minute budget before the server reports the real one.
fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4) + 1
}

#[async_trait::async_trait]
impl ModelBackend for OpenAiBackend {
    fn describe(&self) -> String {
        format!("openai {} at {}", self.model, self.endpoint.host())
    }

    async fn generate(&self, request: GenerationRequest) -> Result<Generation, BackendError> {
        let s = &request.sampling;
        let prompt_estimate = match &request.prompt {
            Prompt::Chat(messages) => messages.iter().map(|m| estimate_tokens(&m.content) + 3).sum(),
            Prompt::Text(text) => estimate_tokens(text),
        };
        let estimate = |s: &super::Sampling| prompt_estimate + u64::from(s.max_tokens) * u64::from(s.n);
        let build = |s: &super::Sampling| match &request.prompt {
            Prompt::Chat(messages) => wire::chat_body(&self.model, messages, s),
            Prompt::Text(text) => wire::completion_body(&self.model, text, s),
        };
        let path = match &request.prompt {
            Prompt::Chat(_) => "chat/completions",
            Prompt::Text(_) => "completions",
        };
        let (mut choices, prompt_tokens, mut completion_tokens) =
            self.generation_call(path, &build(s), estimate(s)).await?;
        // Some servers ignore `n`: ask for the missing choices one at a time, each with its own seed.
        let mut extra = 0u64;
        while choices.len() < s.n as usize && extra < u64::from(s.n) {
            extra += 1;
            let single = super::Sampling { n: 1, seed: s.seed.wrapping_add(extra), ..s.clone() };
            let (more, _, tokens) = self.generation_call(path, &build(&single), estimate(&single)).await?;
            if more.is_empty() {
                break;
            }
            completion_tokens += tokens;
            choices.extend(more.into_iter().take(1));
        }
        if choices.is_empty() {
            return Err(BackendError::Failed(format!(
                "{} answered without any choice; check that the endpoint serves model '{}'",
                self.endpoint.url(path),
                self.model
            )));
        }
        choices.truncate(s.n as usize);
        Ok(Generation {
            choices,
            prompt_tokens: u32::try_from(prompt_tokens).unwrap_or(u32::MAX),
            completion_tokens: u32::try_from(completion_tokens).unwrap_or(u32::MAX),
        })
    }

    async fn score(&self, request: ScoringRequest) -> Result<Vec<ContinuationScore>, BackendError> {
        if self.scoring_unsupported.load(Ordering::Relaxed) {
            return Err(self.scoring_unsupported_error(""));
        }
        let prompt = match &request.prompt {
            Prompt::Text(text) => text,
            Prompt::Chat(_) => {
                return Err(BackendError::Unsupported(
                    "an OpenAI-compatible endpoint cannot score after chat messages (the chat template is the \
                     server's); score after a text prompt, or use a local model (backend = \"local\")"
                        .into(),
                ));
            }
        };
        let prompt_chars = prompt.chars().count();
        let mut scores = Vec::with_capacity(request.continuations.len());
        for continuation in &request.continuations {
            if continuation.is_empty() {
                scores.push(ContinuationScore { logprob_sum: 0.0, token_logprobs: Vec::new() });
                continue;
            }
            let text = format!("{prompt}{continuation}");
            let body = wire::scoring_body(&self.model, &text);
            let value = match self.endpoint.post("completions", &body, estimate_tokens(&text) + 1).await {
                Ok(value) => value,
                Err(CallError::Unsupported(message)) => {
                    self.scoring_unsupported.store(true, Ordering::Relaxed);
                    return Err(self.scoring_unsupported_error(&format!(": it answered \"{message}\"")));
                }
                Err(CallError::Status { status: status @ (400 | 422), message })
                    if message.to_ascii_lowercase().contains("echo")
                        || message.to_ascii_lowercase().contains("logprob") =>
                {
                    self.scoring_unsupported.store(true, Ordering::Relaxed);
                    return Err(self.scoring_unsupported_error(&format!(": it answered HTTP {status} \"{message}\"")));
                }
                Err(e) => return Err(self.backend_error("completions", e)),
            };
            let response: wire::CompletionResponse = self.parse("completions", value)?;
            let Some(choice) = response.choices.into_iter().next() else {
                return Err(BackendError::Failed(format!(
                    "{} answered a scoring request without any choice",
                    self.endpoint.url("completions")
                )));
            };
            let total_chars = prompt_chars + continuation.chars().count();
            let echoed = choice.text.as_deref().is_some_and(|t| t.starts_with(&text));
            let token_logprobs = choice
                .logprobs
                .as_ref()
                .filter(|_| echoed)
                .and_then(|l| wire::continuation_logprobs(l, prompt_chars, total_chars));
            let Some(token_logprobs) = token_logprobs else {
                self.scoring_unsupported.store(true, Ordering::Relaxed);
                return Err(self.scoring_unsupported_error(": its answer does not echo the prompt's tokens"));
            };
            let Some(token_logprobs) = token_logprobs.into_iter().collect::<Option<Vec<f64>>>() else {
                return Err(BackendError::Failed(format!(
                    "{} left a continuation token without a log-probability (the continuation may start the \
                     text: give a non-empty prompt)",
                    self.endpoint.url("completions")
                )));
            };
            scores.push(ContinuationScore {
                logprob_sum: token_logprobs.iter().sum(),
                token_logprobs: token_logprobs.into_iter().map(|l| l as f32).collect(),
            });
        }
        Ok(scores)
    }

    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, BackendError> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(EMBEDDING_BATCH) {
            let body = wire::embeddings_body(&self.model, batch);
            let tokens = batch.iter().map(|t| estimate_tokens(t)).sum();
            let value = self.post("embeddings", &body, tokens).await?;
            let mut response: wire::EmbeddingResponse = self.parse("embeddings", value)?;
            if response.data.len() != batch.len() {
                return Err(BackendError::Failed(format!(
                    "{} answered {} embeddings for {} texts; was the server started with embeddings enabled \
                     (llama-server: --embeddings)?",
                    self.endpoint.url("embeddings"),
                    response.data.len(),
                    batch.len()
                )));
            }
            response.data.sort_by_key(|item| item.index.unwrap_or(usize::MAX));
            for item in response.data {
                let mut v = item.embedding;
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                if norm > 0.0 {
                    v.iter_mut().for_each(|x| *x /= norm);
                }
                out.push(v);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_are_rough_but_positive() {
        assert_eq!(estimate_tokens(""), 1);
        assert_eq!(estimate_tokens("abcd"), 2);
        assert_eq!(estimate_tokens("abcde"), 3);
    }

    #[test]
    fn missing_key_variable_is_named() {
        let mut config = OpenAiModelConfig::new("http://127.0.0.1:9/v1", "m");
        config.api_key_env = Some("TECHNE_TEST_SURELY_UNSET_KEY_VAR".into());
        let err = OpenAiBackend::new(&config).unwrap_err().to_string();
        assert!(err.contains("TECHNE_TEST_SURELY_UNSET_KEY_VAR") && err.contains("export"), "{err}");
    }

    #[test]
    fn description_names_model_and_host_only() {
        let config = OpenAiModelConfig::new("https://api.example.com/v1", "gpt-x");
        let backend = OpenAiBackend::with_api_key(&config, Some("sk-very-secret".into())).unwrap();
        assert_eq!(backend.describe(), "openai gpt-x at api.example.com");
        assert!(!format!("{backend:?}").contains("sk-very-secret"));
    }
}
