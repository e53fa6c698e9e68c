//! CPU kernels that techne adds to ONNX Runtime as custom operators, for the
//! products its stock operators compute slowly or inconsistently.
//!
//! - [`block_quant_matmul`]: the math, independent of ONNX Runtime (tested
//!   against its portable reference);
//! - [`causal_attention`]: attention over the key/value cache whose
//!   one-token steps and many-token passes give the same bits;
//! - [`exp`]: `e^x` with the same bits on every path (SwiGLU, attention,
//!   the sampler);
//! - [`ort_operator`]: the operators as ONNX Runtime sees them, in the
//!   [`ort_operator::DOMAIN`] domain that [`crate::runtime::Runtime`]
//!   registers in every session.

pub mod block_quant_matmul;
pub mod causal_attention;
pub mod exp;
pub mod ort_operator;
