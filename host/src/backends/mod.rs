//! Model backends: the implementations behind the LLM, scoring and embedding
//! capabilities. Each backend implements [`ModelBackend`]; the
//! [`ModelSet`] maps the model names of a run configuration to backends.
//!
//! The types here are the host's own, independent of the WIT bindings: the
//! capability layer (`crate::capabilities`) converts between the two.

pub mod cache;
pub mod local;
pub mod meter;
pub mod openai;
#[cfg(feature = "test-doubles")]
pub mod scripted;

use std::collections::BTreeMap;
use std::sync::Arc;

use cache::CallCache;
use meter::UsageMeter;

/// Who speaks a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions for the model.
    System,
    /// The user's turn.
    User,
    /// The model's turn.
    Assistant,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ChatMessage {
    /// Who speaks.
    pub role: Role,
    /// What is said.
    pub content: String,
}

impl ChatMessage {
    /// A message with the given role and content.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self { role, content: content.into() }
    }
}

/// Sampling parameters of a generation request, already validated.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sampling {
    /// Upper bound on generated tokens per choice (at least 1).
    pub max_tokens: u32,
    /// 0 is greedy decoding.
    pub temperature: f32,
    /// Nucleus mass in (0, 1].
    pub top_p: f32,
    /// Stop sequences; generation ends before them.
    pub stop: Vec<String>,
    /// Sampling seed. The capability layer always fills it, deriving it from
    /// the work item when the plugin gave none.
    pub seed: u64,
    /// Number of choices (at least 1).
    pub n: u32,
    /// Whether to return per-token log-probabilities.
    pub logprobs: bool,
}

impl Default for Sampling {
    fn default() -> Self {
        Self { max_tokens: 256, temperature: 0.0, top_p: 1.0, stop: Vec::new(), seed: 0, n: 1, logprobs: false }
    }
}

/// What a generation request asks for: a chat or a raw completion.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Prompt {
    /// Chat messages; the backend applies the model's chat template.
    Chat(Vec<ChatMessage>),
    /// Raw text continued without a template.
    Text(String),
}

/// A generation request to one model.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GenerationRequest {
    /// What to continue.
    pub prompt: Prompt,
    /// How to sample.
    pub sampling: Sampling,
}

/// Why a choice ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// End of turn or a stop sequence.
    Stop,
    /// `max_tokens` reached.
    Length,
}

/// The log-probability of one generated token.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TokenLogprob {
    /// The token's text.
    pub token: String,
    /// Natural-log probability.
    pub logprob: f32,
}

/// One generated choice.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Choice {
    /// The generated text.
    pub text: String,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Per-token log-probabilities, empty unless requested.
    pub logprobs: Vec<TokenLogprob>,
}

/// A backend's answer to a [`GenerationRequest`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Generation {
    /// The choices, `sampling.n` of them.
    pub choices: Vec<Choice>,
    /// Tokens in the prompt.
    pub prompt_tokens: u32,
    /// Tokens generated over all choices.
    pub completion_tokens: u32,
}

/// How likely a continuation is after a prompt.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ContinuationScore {
    /// Sum of the continuation tokens' natural-log probabilities.
    pub logprob_sum: f64,
    /// Per-token log-probabilities.
    pub token_logprobs: Vec<f32>,
}

/// A scoring request: continuations after a prompt.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScoringRequest {
    /// The conditioning context.
    pub prompt: Prompt,
    /// Texts to score after the prompt.
    pub continuations: Vec<String>,
}

/// Why a backend could not serve a request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BackendError {
    /// The backend cannot do this kind of request at all.
    #[error("{0}")]
    Unsupported(String),
    /// The request is invalid for this backend (e.g. prompt longer than the context).
    #[error("{0}")]
    InvalidRequest(String),
    /// The backend failed; the message says why.
    #[error("{0}")]
    Failed(String),
}

/// A model behind a name in the run configuration.
#[async_trait::async_trait]
pub trait ModelBackend: Send + Sync {
    /// A short description for logs and reports, e.g. `local smollm2-135m`.
    fn describe(&self) -> String;

    /// What identifies the model's behaviour for the model-call cache (e.g.
    /// the weights' hash, or endpoint and model name); defaults to `describe`.
    fn identity(&self) -> String {
        self.describe()
    }

    /// Generate choices for a chat or text prompt.
    async fn generate(&self, request: GenerationRequest) -> Result<Generation, BackendError>;

    /// Log-likelihood of each continuation after the prompt.
    async fn score(&self, request: ScoringRequest) -> Result<Vec<ContinuationScore>, BackendError>;

    /// L2-normalised embeddings of the texts.
    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, BackendError>;
}

/// The models of a run: configured name to backend, with the run's
/// model-call cache and usage meter. Every model call of a run goes through
/// [`ModelSet::generate`], [`ModelSet::score`] or [`ModelSet::embed`].
#[derive(Clone, Default)]
pub struct ModelSet {
    models: BTreeMap<String, Arc<dyn ModelBackend>>,
    cache: Option<Arc<CallCache>>,
    meter: Arc<UsageMeter>,
    prices: BTreeMap<String, meter::Price>,
}

impl ModelSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add (or replace) the backend serving `name`.
    pub fn insert(&mut self, name: impl Into<String>, backend: Arc<dyn ModelBackend>) {
        self.models.insert(name.into(), backend);
    }

    /// Use `cache` for every call.
    pub fn set_cache(&mut self, cache: Option<Arc<CallCache>>) {
        self.cache = cache;
    }

    /// Price the tokens of model `name` (for the cost estimate and budget).
    pub fn set_price(&mut self, name: impl Into<String>, price: meter::Price) {
        self.prices.insert(name.into(), price);
    }

    /// The cache in use, if any.
    pub fn cache(&self) -> Option<&Arc<CallCache>> {
        self.cache.as_ref()
    }

    /// The usage meter shared by every call through this set.
    pub fn meter(&self) -> &Arc<UsageMeter> {
        &self.meter
    }

    /// The backend serving `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn ModelBackend>> {
        self.models.get(name)
    }

    /// Every configured model name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.models.keys().map(String::as_str)
    }

    fn backend(&self, name: &str) -> Result<&Arc<dyn ModelBackend>, BackendError> {
        self.models.get(name).ok_or_else(|| BackendError::InvalidRequest(format!("no model named '{name}'")))
    }

    /// Run `call(request)` unless the cache answers; a call that reaches the
    /// backend is counted. The cache key is made of `kind`, the backend's
    /// identity, `caller` and the request.
    async fn through_cache<R, T, F, Fut>(
        &self,
        kind: &str,
        backend: &Arc<dyn ModelBackend>,
        caller: &str,
        request: R,
        call: F,
    ) -> Result<T, BackendError>
    where
        R: serde::Serialize,
        T: serde::Serialize + serde::de::DeserializeOwned,
        F: FnOnce(R) -> Fut,
        Fut: std::future::Future<Output = Result<T, BackendError>>,
    {
        let key = self.cache.as_ref().map(|_| CallCache::key(kind, &backend.identity(), caller, &request));
        let counted = async {
            self.meter.count_request();
            call(request).await
        };
        match (&self.cache, key) {
            (Some(cache), Some(key)) => cache.get_or_call(key, counted).await,
            _ => counted.await,
        }
    }

    /// Generate with model `name` on behalf of `caller` (a plugin's sha256, or `pipeline`).
    pub async fn generate(
        &self,
        name: &str,
        caller: &str,
        request: GenerationRequest,
    ) -> Result<Generation, BackendError> {
        let backend = self.backend(name)?;
        let price = self.prices.get(name).copied();
        let generation = self
            .through_cache("generate", backend, caller, request, |request| async move {
                let generation = backend.generate(request).await?;
                if let Some(price) = price {
                    self.meter.count_cost(price.cost(generation.prompt_tokens, generation.completion_tokens));
                }
                Ok(generation)
            })
            .await?;
        self.meter.count_tokens(generation.prompt_tokens, generation.completion_tokens);
        Ok(generation)
    }

    /// Score continuations with model `name` on behalf of `caller`.
    pub async fn score(
        &self,
        name: &str,
        caller: &str,
        request: ScoringRequest,
    ) -> Result<Vec<ContinuationScore>, BackendError> {
        let backend = self.backend(name)?;
        self.through_cache("score", backend, caller, request, |request| backend.score(request)).await
    }

    /// Embed texts with model `name` on behalf of `caller`.
    pub async fn embed(&self, name: &str, caller: &str, texts: Vec<String>) -> Result<Vec<Vec<f32>>, BackendError> {
        let backend = self.backend(name)?;
        self.through_cache("embed", backend, caller, texts, |texts| backend.embed(texts)).await
    }
}

impl std::fmt::Debug for ModelSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.models.iter().map(|(k, v)| (k, v.describe()))).finish()
    }
}
