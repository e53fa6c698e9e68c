//! Native inference for techne: the model registry, the GGUF importer and the
//! ONNX Runtime engine that generates, scores and embeds.

pub mod gguf;
pub mod quant;
pub mod tokenizer;
pub mod locate;
pub mod onnx_export;
pub mod onnx_proto;
