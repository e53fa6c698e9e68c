//! The error type of techne-training.
//!
//! Every variant says what went wrong and, where the user can do something
//! about it, how to fix it.

use std::path::PathBuf;

use techne_inference::gguf::GgufError;
use techne_inference::onnx_export::ExportError;
use techne_inference::registry::RegistryError;
use techne_inference::tokenizer::TokenizerError;

/// Errors raised while loading, training, checkpointing or exporting.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A line of a training data file is malformed.
    #[error("{path}:{line}: {message}")]
    Data {
        /// The data file.
        path: PathBuf,
        /// The 1-based line number (0 when the problem is the whole file).
        line: usize,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The training configuration is invalid.
    #[error("invalid training configuration: {0}")]
    Config(String),
    /// The model file cannot be trained (unsupported architecture or shapes).
    #[error("model: {0}")]
    Model(String),
    /// The GGUF file could not be read.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// The tokenizer or chat template failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// Exporting the merged model to ONNX failed.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// Registering the merged model failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// A tensor operation failed (a bug or an out-of-memory condition).
    #[error("tensor computation failed: {0}")]
    Tensor(#[from] candle_core::Error),
    /// A checkpoint is unreadable or does not belong to this run.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The checkpoint directory or file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The loss or the gradients stopped being finite numbers.
    #[error(
        "the loss or gradient norm became {value} at step {step}: lower the learning rate or enable gradient clipping, then resume from the last checkpoint"
    )]
    NonFinite {
        /// The optimizer step (1-based).
        step: usize,
        /// The offending value.
        value: f64,
    },
    /// The progress callback asked to abort (no checkpoint was written).
    #[error("training was aborted at step {step}; resume from the last checkpoint with `resume`")]
    Aborted {
        /// The last completed optimizer step.
        step: usize,
    },
}

/// A result with a [`TrainError`].
pub type Result<T, E = TrainError> = std::result::Result<T, E>;

/// Maps an I/O error on `path` into a [`TrainError::Io`].
pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io { path: path.to_path_buf(), source }
}
