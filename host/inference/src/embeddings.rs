//! Sentence embeddings (placeholder).
/// Errors.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddingError { }
/// Embedder.
pub struct Embedder;
