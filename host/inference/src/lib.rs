//! Native inference for techne: the model registry, the GGUF importer and the
//! ONNX Runtime engine that generates, scores and embeds.

pub mod gguf;
pub mod quant;
pub mod tokenizer;
pub mod locate;
