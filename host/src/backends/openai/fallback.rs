//! Fallback chains: a model with `fallbacks = ["b", "c"]` is served by a
//! wrapper that tries the model itself, then `b`, then `c`, moving on
//! whenever one fails (after its own retries, or at once while it cools
//! down). Requests a model rejects as invalid or cannot serve at all are
//! answered as they are: another model would not make them valid.
//!
//! The chain is flattened when the run's models are built: `b`'s own
//! fallbacks follow `b`, each model at most once, so chains that point at
//! each other cannot loop.

use std::sync::Arc;

use crate::backends::{
    BackendError, ContinuationScore, Generation, GenerationRequest, ModelBackend, ModelSet, ScoringRequest,
};
use crate::config::{ModelConfig, RunConfig};

/// A model and the models that stand in for it, tried in order.
pub struct FallbackBackend {
    chain: Vec<(String, Arc<dyn ModelBackend>)>,
}

impl FallbackBackend {
    /// A wrapper over `chain` (the primary first). Panics never; an empty chain fails every request.
    pub fn new(chain: Vec<(String, Arc<dyn ModelBackend>)>) -> Self {
        Self { chain }
    }

    /// The names of the chain, the primary first.
    pub fn names(&self) -> Vec<&str> {
        self.chain.iter().map(|(name, _)| name.as_str()).collect()
    }

    async fn run<T, F, Fut>(&self, call: F) -> Result<T, BackendError>
    where
        F: Fn(Arc<dyn ModelBackend>) -> Fut,
        Fut: std::future::Future<Output = Result<T, BackendError>>,
    {
        let mut failures: Vec<String> = Vec::new();
        for (i, (name, backend)) in self.chain.iter().enumerate() {
            match call(backend.clone()).await {
                Ok(value) => {
                    if i > 0 {
                        tracing::warn!(model = %name, "served by fallback after: {}", failures.join("; "));
                    }
                    return Ok(value);
                }
                Err(BackendError::Failed(message)) => failures.push(format!("model '{name}' failed: {message}")),
                // Not a failure of the model: the request itself is the problem.
                Err(other) if i == 0 => return Err(other),
                Err(other) => failures.push(format!("fallback '{name}' could not serve it: {other}")),
            }
        }
        Err(BackendError::Failed(if failures.is_empty() {
            "no model to serve the request: the fallback chain is empty".into()
        } else {
            format!("every model of the fallback chain failed: {}", failures.join("; "))
        }))
    }
}

#[async_trait::async_trait]
impl ModelBackend for FallbackBackend {
    fn describe(&self) -> String {
        match self.chain.split_first() {
            Some(((_, primary), rest)) if !rest.is_empty() => format!(
                "{} (fallbacks: {})",
                primary.describe(),
                rest.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
            ),
            Some(((_, primary), _)) => primary.describe(),
            None => "empty fallback chain".into(),
        }
    }

    async fn generate(&self, request: GenerationRequest) -> Result<Generation, BackendError> {
        self.run(|backend| {
            let request = request.clone();
            async move { backend.generate(request).await }
        })
        .await
    }

    async fn score(&self, request: ScoringRequest) -> Result<Vec<ContinuationScore>, BackendError> {
        self.run(|backend| {
            let request = request.clone();
            async move { backend.score(request).await }
        })
        .await
    }

    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, BackendError> {
        self.run(|backend| {
            let texts = texts.clone();
            async move { backend.embed(texts).await }
        })
        .await
    }
}

/// The `fallbacks` of a configured model (only `backend = "openai"` has them).
fn fallbacks_of(model: &ModelConfig) -> &[String] {
    match model {
        ModelConfig::Openai(openai) => &openai.fallbacks,
        _ => &[],
    }
}

/// Wrap every model of `config` that has `fallbacks` in a [`FallbackBackend`]
/// over the backends already in `models` (call it once all models are built).
/// A fallback name missing from `models` (possible only for configurations
/// that skipped validation) is left out of the chain with a warning.
pub fn with_fallbacks(config: &RunConfig, mut models: ModelSet) -> ModelSet {
    let originals = models.clone();
    for (name, model) in &config.models {
        if fallbacks_of(model).is_empty() {
            continue;
        }
        // Depth-first: each fallback followed by its own fallbacks, each model once.
        let mut order: Vec<String> = Vec::new();
        let mut stack: Vec<String> = vec![name.clone()];
        while let Some(next) = stack.pop() {
            if order.contains(&next) {
                continue;
            }
            if let Some(more) = config.models.get(&next).map(fallbacks_of) {
                stack.extend(more.iter().rev().cloned());
            }
            order.push(next);
        }
        let chain: Vec<(String, Arc<dyn ModelBackend>)> = order
            .into_iter()
            .filter_map(|n| match originals.get(&n) {
                Some(backend) => Some((n, backend.clone())),
                None => {
                    tracing::warn!(model = %name, "fallback model '{n}' is not configured; leaving it out");
                    None
                }
            })
            .collect();
        if chain.first().is_some_and(|(first, _)| first == name) {
            models.insert(name.clone(), Arc::new(FallbackBackend::new(chain)));
        }
    }
    models
}
