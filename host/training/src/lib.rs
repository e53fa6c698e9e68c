//! Native training for techne: LoRA supervised fine-tuning and DPO of
//! llama-architecture GGUF models, on the CPU, with
//! [candle](https://github.com/huggingface/candle) for tensors and autograd.
//!
//! The flow of a run ([`train_sft`] / [`train_dpo`]):
//!
//! 1. the base GGUF is dequantised to f32 by techne-inference's
//!    [`techne_inference::gguf`] module and loaded into [`model::Llama`];
//! 2. the JSONL data (TRL formats) is chat-templated and tokenized with the
//!    model's own tokenizer ([`data`]);
//! 3. LoRA adapters ([`lora`]) are trained with AdamW, a warmup + cosine
//!    schedule, gradient accumulation and clipping ([`optim`]), with atomic
//!    checkpoints that resume bit-identically ([`checkpoint`]);
//! 4. the adapters are merged into the weights, written as GGUF and imported
//!    into the registry with the same exporter as `techne models import`,
//!    with a `lineage.json` ([`export`]).
//!
//! ```no_run
//! use techne_training::{Control, TrainConfig, train_sft};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cfg = TrainConfig {
//!     model: "SmolLM2-135M-Instruct.Q4_1.gguf".into(),
//!     data: "train.jsonl".into(),
//!     output_dir: "runs/sft".into(),
//!     out_name: Some("smollm2-sft".into()),
//!     ..TrainConfig::default()
//! };
//! let report = train_sft(&cfg, |event| {
//!     println!("{event:?}");
//!     Control::Continue
//! })?;
//! println!("final loss {:?}, {:.0} tokens/s", report.final_loss, report.tokens_per_second);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod checkpoint;
pub mod data;
pub mod error;
pub mod export;
pub mod lora;
pub mod model;
pub mod ops;
pub mod optim;
pub mod rng;
pub mod trainer;

pub use data::TemplateMode;
pub use error::{Result, TrainError};
pub use export::{Lineage, ResolvedModel, WeightFormat, resolve_model};
pub use lora::{LoraAdapters, LoraConfig};
pub use model::{Llama, Proj};
pub use optim::{OptimConfig, Schedule};
pub use trainer::{
    Control, DpoStats, RegisteredModel, StepRecord, TrainConfig, TrainEvent, TrainKind, TrainReport, train_dpo,
    train_sft,
};
