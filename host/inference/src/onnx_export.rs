//! Export of llama-architecture GGUF models to ONNX graphs built from ONNX
//! Runtime's fused CPU operators and techne's own operators.
//!
//! Graph layout (per decoder layer `i`; `QMatMul` is techne's
//! `ai.techne.BlockQuantMatMul` ([`crate::kernels`]) for Q4_0/Q4_1/Q8_0-like
//! blocks of 32 with f16 scales, `MatMulNBits` otherwise, with
//! [`ExportOptions::stock_operators`] and on CPUs without the kernel's SIMD
//! paths; attention is techne's `ai.techne.CausalAttention`, or with
//! `stock_operators` ONNX Runtime's `GroupQueryAttention`):
//!
//! ```text
//! input_ids ─ Gather(embed) ─┐
//!                            ├ SimplifiedLayerNorm / SkipSimplifiedLayerNorm(attn_norm)
//!                            ├ QMatMul(q‖k‖v fused)          [MatMulNBits: + block-min correction]
//!                            ├ CausalAttention(packed qkv, past_key_values.i.*, rotary inside,
//!                            │                 seqlens_k from attention_mask)
//!                            ├ QMatMul(o)
//!                            ├ SkipSimplifiedLayerNorm(ffn_norm)
//!                            ├ BlockQuantMatMul(gate‖up, SwiGLU output) — or QMatMul(gate‖up fused)
//!                            │   → Split → Sigmoid·Mul (SiLU) · up
//!                            └ QMatMul(down)
//! final SkipSimplifiedLayerNorm(output_norm) → Slice(last logits_to_keep positions; 0 = all)
//!       → QMatMul(lm_head) → logits
//! ```
//!
//! Quantised weights are not requantised. `BlockQuantMatMul` takes the
//! codes with an f16 scale and offset per block (`s·c + o`). Otherwise every ggml type handled by
//! [`crate::quant`] is an affine block format `x = s·(c − zp) + m`, which maps
//! onto `MatMulNBits` codes, scales and (uint8) zero points. Where a format has
//! a per-block additive min `m` (Q4_1, Q5_1, Q2_K, Q4_K, Q5_K), the graph adds
//! the exact correction `Σ_blocks m·Σx` with a `ReduceSum` over the activation
//! blocks followed by a small `MatMul` (ORT's float zero points would disable
//! its pre-packed fast kernels). 5- and 6-bit codes are stored as 8-bit.
//! Float weights (F32/F16/BF16) become plain `MatMul`s. A quantised token
//! embedding stays quantised too (byte codes, scales and mins gathered per
//! token, then `s·(c − zp) + m`), bit-identical to a dequantised table.
//!
//! GGUF stores the llama Q/K projections permuted for ggml's interleaved
//! ("normal") rotary mode, so `GroupQueryAttention` runs with
//! `rotary_interleaved = 1` on the weights as stored.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use prost::Message;
use serde::{Deserialize, Serialize};

use crate::gguf::{GgufError, GgufFile, TensorInfo};
use crate::kernels::block_quant_matmul::{self, BlockQuantShape};
use crate::kernels::ort_operator::{BLOCK_QUANT_MATMUL, CAUSAL_ATTENTION, DOMAIN, DOMAIN_VERSION};
use crate::onnx_proto::{self as pb, Dim, attr_f, attr_i, data_type, value_info};
use crate::quant::{self, GgmlType};

/// Errors raised while exporting a model.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The GGUF file is missing data or malformed.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// The architecture is not supported.
    #[error("architecture `{0}` is not supported (supported: llama)")]
    UnsupportedArchitecture(String),
    /// A tensor type cannot be converted.
    #[error("tensor `{name}`: {message}")]
    Tensor {
        /// The tensor.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The hyperparameters are inconsistent.
    #[error("invalid model configuration: {0}")]
    Config(String),
    /// Writing the model failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// A result with an [`ExportError`].
pub type Result<T, E = ExportError> = std::result::Result<T, E>;

/// The version of the exported graph layout; bumped whenever the exporter's
/// output changes so that registries re-import stale models.
pub const GRAPH_VERSION: u32 = 7;

/// The first graph version whose attention is techne's `CausalAttention`
/// (unless exported with stock operators).
pub const FIRST_GRAPH_WITH_TECHNE_ATTENTION: u32 = 7;

/// The largest context the exported graph supports unless
/// [`ExportOptions::max_context`] asks for more (it sizes the rotary caches).
pub const DEFAULT_MAX_CONTEXT_CAP: usize = 32768;

/// Options for [`export_llama`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportOptions {
    /// Largest context to support (size of the rotary caches); defaults to the
    /// model's context length, capped at [`DEFAULT_MAX_CONTEXT_CAP`].
    pub max_context: Option<usize>,
    /// Accuracy level of the quantised products ([`default_accuracy_level`]
    /// by default).
    ///
    /// 4 rounds each row's activations to int8 blocks of 32, as llama.cpp
    /// does, and multiplies them with exact integer dot products: on
    /// techne's `BlockQuantMatMul` with AVX-512 VNNI or AVX2 (see
    /// [`ExportOptions::uses_block_quant_kernel`]), else on `MatMulNBits`'
    /// int8 kernels. The output projection (the logits) keeps f32
    /// activations. With techne's operators, a row computes alike in any
    /// batch and a position alike in a one-token step and in a many-token
    /// pass, so scoring a text gives exactly its generation
    /// log-probabilities; on `MatMulNBits` (and in the stock-operator
    /// export) they differ by ~0.03 on average.
    ///
    /// 0 computes in f32: on techne's `BlockQuantMatMul` where it takes the
    /// weights, else on `MatMulNBits`, whose 8-bit codes are then split into
    /// two exact 4-bit matrices because ONNX Runtime has no pre-packed f32
    /// kernel for 8-bit weights. Log-probabilities are closer to exact
    /// arithmetic (by ~0.02–0.06 per token); several rows at a time decode
    /// slower than at level 4.
    pub accuracy_level: i64,
    /// Only ONNX Runtime's own operators, so that any ONNX Runtime runs the
    /// file: every quantised product becomes `MatMulNBits` and attention
    /// `GroupQueryAttention`. Without it, Q4_0, Q4_1 and Q8_0 blocks run on
    /// techne's `ai.techne.BlockQuantMatMul` and attention on
    /// `ai.techne.CausalAttention` ([`crate::kernels`]), which compute every
    /// row the same in any batch and every position the same in any pass.
    #[serde(default)]
    pub stock_operators: bool,
}

impl Default for ExportOptions {
    fn default() -> Self {
        Self { max_context: None, accuracy_level: default_accuracy_level(), stock_operators: false }
    }
}

/// The accuracy level exports use unless told otherwise: 4 (int8
/// activations) where techne's int8 kernel has a SIMD path on this CPU
/// (AVX-512 VNNI or AVX2),
/// since several rows then decode much faster and scores still equal
/// generations; 0 (f32) elsewhere, where int8 products would run on ONNX
/// Runtime's kernels and lose that equality.
pub fn default_accuracy_level() -> i64 {
    if kernel_has_simd_path(true) { 4 } else { 0 }
}

/// Whether techne's `BlockQuantMatMul` has an AVX-512 or AVX2 path on this
/// CPU for products with f32 or (`int8`) int8 activations.
fn kernel_has_simd_path(int8: bool) -> bool {
    use block_quant_matmul::{BLOCK, Isa, TILE};
    let shape = BlockQuantShape { int8, ..BlockQuantShape::new(BLOCK, TILE, 4) };
    [Isa::Avx512, Isa::Avx2].iter().any(|isa| isa.runs(&shape))
}

impl ExportOptions {
    /// Whether the export's attention runs on techne's `CausalAttention`
    /// (every export but `stock_operators`), whose one-token steps and
    /// many-token passes give the same bits, instead of ONNX Runtime's
    /// `GroupQueryAttention`.
    pub fn uses_techne_attention(&self) -> bool {
        !self.stock_operators
    }

    /// Whether the export runs its quantised products on techne's
    /// `BlockQuantMatMul`: at accuracy level 0 when this CPU has one of the
    /// kernel's f32 SIMD paths (AVX-512 or AVX2), at level 4 when it has
    /// AVX-512 VNNI or AVX2, never with `stock_operators`; elsewhere ONNX Runtime's
    /// `MatMulNBits` (with its NEON kernels, for example) is faster than the
    /// portable path.
    pub fn uses_block_quant_kernel(&self) -> bool {
        !self.stock_operators && matches!(self.accuracy_level, 0 | 4) && kernel_has_simd_path(self.accuracy_level == 4)
    }
}

/// Hyperparameters of a llama-architecture model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// Decoder layers.
    pub n_layers: usize,
    /// Hidden size.
    pub hidden: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Size of one head.
    pub head_dim: usize,
    /// Feed-forward size.
    pub ff: usize,
    /// Vocabulary size (rows of the embedding).
    pub vocab: usize,
    /// The context length the model was trained for.
    pub context_length: usize,
    /// The context supported by the exported graph.
    pub max_context: usize,
    /// RoPE base frequency.
    pub rope_theta: f64,
    /// Dimensions rotated per head.
    pub rope_dim: usize,
    /// Linear RoPE scaling factor (1 = none).
    pub rope_linear_factor: f64,
    /// RMS norm epsilon.
    pub rms_eps: f32,
    /// Whether the output projection is tied to the embedding.
    pub tied_embeddings: bool,
}

impl LlamaConfig {
    /// Reads the hyperparameters from GGUF metadata and tensor shapes.
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let arch = g.architecture()?;
        if arch != "llama" {
            return Err(ExportError::UnsupportedArchitecture(arch.to_string()));
        }
        let k = |s: &str| format!("{arch}.{s}");
        let as_usize = |v: u64, what: &str| {
            usize::try_from(v)
                .ok()
                .filter(|&v| v > 0 && v < (1 << 24))
                .ok_or_else(|| ExportError::Config(format!("{what} = {v}")))
        };
        let n_layers = as_usize(g.get_u64(&k("block_count"))?, "block_count")?;
        let hidden = as_usize(g.get_u64(&k("embedding_length"))?, "embedding_length")?;
        let n_heads = as_usize(g.get_u64(&k("attention.head_count"))?, "head_count")?;
        let n_kv_heads = match g.get(&k("attention.head_count_kv")) {
            Some(_) => as_usize(g.get_u64(&k("attention.head_count_kv"))?, "head_count_kv")?,
            None => n_heads,
        };
        let head_dim = match g.get(&k("attention.key_length")) {
            Some(_) => as_usize(g.get_u64(&k("attention.key_length"))?, "key_length")?,
            None => hidden / n_heads,
        };
        let ff = as_usize(g.get_u64(&k("feed_forward_length"))?, "feed_forward_length")?;
        let context_length = as_usize(g.get_u64(&k("context_length"))?, "context_length")?;
        let rope_theta = if g.get(&k("rope.freq_base")).is_some() { g.get_f64(&k("rope.freq_base"))? } else { 10000.0 };
        let rope_dim = match g.get(&k("rope.dimension_count")) {
            Some(_) => as_usize(g.get_u64(&k("rope.dimension_count"))?, "rope.dimension_count")?,
            None => head_dim,
        };
        let rms_eps = if g.get(&k("attention.layer_norm_rms_epsilon")).is_some() {
            g.get_f64(&k("attention.layer_norm_rms_epsilon"))? as f32
        } else {
            1e-5
        };
        let mut rope_linear_factor = 1.0;
        if let Some(v) = g.get(&k("rope.scaling.type")) {
            match v.as_str() {
                Some("none") | None => {}
                Some("linear") => {
                    rope_linear_factor = g.get_f64(&k("rope.scaling.factor"))?;
                }
                Some(other) => return Err(ExportError::Config(format!("RoPE scaling `{other}` is not supported"))),
            }
        }
        let embd = g.require_tensor("token_embd.weight")?;
        if embd.dims.len() != 2 || embd.dims[0] != hidden as u64 {
            return Err(ExportError::Config(format!("token_embd.weight has shape {:?}", embd.dims)));
        }
        let vocab = as_usize(embd.dims[1], "vocabulary size")?;
        if n_heads % n_kv_heads != 0 {
            return Err(ExportError::Config(format!("{n_heads} heads are not a multiple of {n_kv_heads} kv heads")));
        }
        if head_dim == 0 || rope_dim == 0 || head_dim % 16 != 0 || rope_dim > head_dim || rope_dim % 16 != 0 {
            return Err(ExportError::Config(format!(
                "head size {head_dim} with rotary size {rope_dim} is not supported by GroupQueryAttention (multiples of 16 needed)"
            )));
        }
        if !(rope_theta.is_finite() && rope_theta > 0.0 && rope_linear_factor.is_finite() && rope_linear_factor > 0.0) {
            return Err(ExportError::Config("invalid RoPE parameters".into()));
        }
        Ok(Self {
            n_layers,
            hidden,
            n_heads,
            n_kv_heads,
            head_dim,
            ff,
            vocab,
            context_length,
            max_context: context_length.min(DEFAULT_MAX_CONTEXT_CAP),
            rope_theta,
            rope_dim,
            rope_linear_factor,
            rms_eps,
            tied_embeddings: g.tensor("output.weight").is_none(),
        })
    }
}

/// Names of the graph inputs and outputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelIo {
    /// Graph inputs in order: `input_ids`, `attention_mask`, then
    /// `past_key_values.{i}.key` / `.value` per layer, then `logits_to_keep`
    /// (`[1]` int64: logits for that many last positions, 0 = all; graph
    /// version 2 and later).
    pub inputs: Vec<String>,
    /// Graph outputs in order: `logits`, then `present.{i}.key` / `.value`.
    pub outputs: Vec<String>,
}

impl ModelIo {
    /// The input/output names for a model with `n_layers` layers.
    pub fn for_layers(n_layers: usize) -> Self {
        let mut inputs = vec!["input_ids".to_string(), "attention_mask".to_string()];
        let mut outputs = vec!["logits".to_string()];
        for i in 0..n_layers {
            inputs.push(format!("past_key_values.{i}.key"));
            inputs.push(format!("past_key_values.{i}.value"));
            outputs.push(format!("present.{i}.key"));
            outputs.push(format!("present.{i}.value"));
        }
        inputs.push("logits_to_keep".to_string());
        Self { inputs, outputs }
    }
}

/// An exported model.
#[derive(Debug, Clone)]
pub struct ExportedModel {
    /// The ONNX model.
    pub model: pb::ModelProto,
    /// The hyperparameters.
    pub config: LlamaConfig,
    /// Input and output names.
    pub io: ModelIo,
}

/// The total size above which initializers are written to an external data
/// file (protobuf messages are limited to 2 GiB).
pub const EXTERNAL_DATA_THRESHOLD: u64 = 1_800_000_000;

impl ExportedModel {
    /// Writes the model to `path`. When the weights exceed
    /// [`EXTERNAL_DATA_THRESHOLD`], large initializers go to `<file>.data`
    /// next to it. Returns the files written.
    pub fn save(&self, path: &Path) -> Result<Vec<PathBuf>> {
        self.save_with_threshold(path, EXTERNAL_DATA_THRESHOLD)
    }

    /// [`ExportedModel::save`] with an explicit external-data threshold.
    pub fn save_with_threshold(&self, path: &Path, threshold: u64) -> Result<Vec<PathBuf>> {
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| ExportError::Io { path: p, source }
        };
        let total: u64 =
            self.model.graph.as_ref().map(|g| g.initializer.iter().map(|t| t.raw_data.len() as u64).sum()).unwrap_or(0);
        if total <= threshold {
            std::fs::write(path, self.model.encode_to_vec()).map_err(io(path))?;
            return Ok(vec![path.to_path_buf()]);
        }
        let file_name =
            path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "model.onnx".into());
        let data_name = format!("{file_name}.data");
        let data_path = path.with_file_name(&data_name);
        let mut model = self.model.clone();
        let mut data = std::io::BufWriter::new(std::fs::File::create(&data_path).map_err(io(&data_path))?);
        let mut offset = 0u64;
        if let Some(graph) = model.graph.as_mut() {
            for t in graph.initializer.iter_mut().filter(|t| t.raw_data.len() > 1024) {
                use std::io::Write;
                let pad = (4096 - offset % 4096) % 4096;
                data.write_all(&vec![0u8; pad as usize]).map_err(io(&data_path))?;
                offset += pad;
                data.write_all(&t.raw_data).map_err(io(&data_path))?;
                let entry = |k: &str, v: String| pb::StringStringEntryProto { key: k.into(), value: v };
                t.external_data = vec![
                    entry("location", data_name.clone()),
                    entry("offset", offset.to_string()),
                    entry("length", t.raw_data.len().to_string()),
                ];
                offset += t.raw_data.len() as u64;
                t.data_location = 1;
                t.raw_data = Vec::new();
            }
        }
        use std::io::Write;
        data.flush().map_err(io(&data_path))?;
        std::fs::write(path, model.encode_to_vec()).map_err(io(path))?;
        Ok(vec![path.to_path_buf(), data_path])
    }
}

/// A block-quantised weight matrix of `n` rows of `k` elements.
#[derive(Debug, Clone)]
pub(crate) struct QWeight {
    n: usize,
    k: usize,
    bits: u8,
    group: usize,
    codes: Vec<u8>,
    scales: Vec<f32>,
    zps: Vec<u8>,
    mins: Option<Vec<f32>>,
}

impl QWeight {
    fn to_f32(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.codes.len());
        for (gi, chunk) in self.codes.chunks(self.group).enumerate() {
            let s = self.scales[gi];
            let zp = i32::from(self.zps[gi]);
            let m = self.mins.as_ref().map(|m| m[gi]);
            out.extend(chunk.iter().map(|&c| {
                let v = s * (i32::from(c) - zp) as f32;
                match m {
                    Some(m) => v + m,
                    None => v,
                }
            }));
        }
        out
    }

    /// Moves as much of each 4-bit group's minimum as whole steps allow into
    /// its integer zero point: `s·c + m = s·(c − z) + (m + s·z)` with
    /// `z = round(−m / s)` clamped to the code range. The value is the same,
    /// but the part `MatMulNBits` multiplies becomes centred on zero. That
    /// matters with int8 activations (accuracy level 4): their rounding error
    /// is multiplied by `s·(c − z)` while the remaining minimum multiplies the
    /// exact activations, so off-centre codes (`z = 0`, as Q4_1 stores them)
    /// amplify it about twofold over llama.cpp's Q4_1 × Q8_1 products.
    fn centre_zero_points(&mut self) {
        let Some(mins) = self.mins.as_mut() else { return };
        if self.bits != 4 {
            return;
        }
        for ((zp, m), &s) in self.zps.iter_mut().zip(mins.iter_mut()).zip(&self.scales) {
            if *zp != 0 || s == 0.0 || !s.is_finite() || !m.is_finite() {
                continue;
            }
            let z = (-*m / s).round().clamp(0.0, 15.0);
            *zp = z as u8;
            *m += s * z;
        }
    }

    /// The matrix packed for [`BLOCK_QUANT_MATMUL`], when its blocks fit:
    /// 4 or 8 bits, blocks of 32, scales and offsets `m − s·zp` exact in f16.
    /// With `swiglu`, each pair of 16-row tiles must be (gate, up): see
    /// [`QWeight::interleave_tiles`].
    fn block_quant_packed(&self, what: &str, swiglu: bool, int8: bool) -> Option<(BlockQuantShape, Vec<u8>)> {
        if self.group != block_quant_matmul::BLOCK {
            return None;
        }
        let shape = BlockQuantShape { k: self.k, n: self.n, bits: self.bits, swiglu, int8 };
        let offsets: Vec<f32> = match &self.mins {
            Some(mins) => {
                mins.iter().zip(&self.scales).zip(&self.zps).map(|((m, s), &z)| m - s * f32::from(z)).collect()
            }
            None => self.scales.iter().zip(&self.zps).map(|(s, &z)| -(s * f32::from(z))).collect(),
        };
        match block_quant_matmul::pack(shape, &self.codes, &self.scales, &offsets) {
            Ok(packed) => Some((shape, packed)),
            Err(e) => {
                tracing::debug!("{what}: MatMulNBits instead of {BLOCK_QUANT_MATMUL}: {e}");
                None
            }
        }
    }

    /// The rows of a fused `gate‖up` matrix (`2·half` rows) reordered so that
    /// 16-row tile `2j` is gate tile `j` and tile `2j + 1` up tile `j`, the
    /// pairing [`BLOCK_QUANT_MATMUL`]'s SwiGLU output takes. `half` must be
    /// a multiple of 16.
    fn interleave_tiles(&self, half: usize) -> QWeight {
        let tile = block_quant_matmul::TILE;
        let groups = self.k / self.group;
        let order =
            (0..half / tile).flat_map(|j| (j * tile..(j + 1) * tile).chain(half + j * tile..half + (j + 1) * tile));
        let mut out = QWeight { codes: Vec::new(), scales: Vec::new(), zps: Vec::new(), mins: None, ..self.clone() };
        let mut mins = self.mins.as_ref().map(|_| Vec::new());
        for row in order {
            out.codes.extend_from_slice(&self.codes[row * self.k..][..self.k]);
            out.scales.extend_from_slice(&self.scales[row * groups..][..groups]);
            out.zps.extend_from_slice(&self.zps[row * groups..][..groups]);
            if let (Some(dst), Some(src)) = (mins.as_mut(), self.mins.as_ref()) {
                dst.extend_from_slice(&src[row * groups..][..groups]);
            }
        }
        out.mins = mins;
        out
    }

    /// Splits groups to `group` elements and widens codes to `bits`.
    fn reshape(mut self, bits: u8, group: usize, want_mins: bool) -> Self {
        if group < self.group {
            let f = self.group / group;
            fn rep<T: Copy>(v: &[T], f: usize) -> Vec<T> {
                v.iter().flat_map(|x| std::iter::repeat_n(*x, f)).collect()
            }
            self.scales = rep(&self.scales, f);
            self.zps = rep(&self.zps, f);
            self.mins = self.mins.as_deref().map(|m| rep(m, f));
            self.group = group;
        }
        if want_mins && self.mins.is_none() {
            self.mins = Some(vec![0.0; self.scales.len()]);
        }
        if bits > self.bits {
            // Widen 4-bit codes to 8 bits; symmetric groups are re-centred on
            // 128 so that the zero point stays a multiple of 16 (see `linear`).
            for (gi, zp) in self.zps.iter_mut().enumerate() {
                if *zp != 0 {
                    let shift = 128 - *zp;
                    for c in &mut self.codes[gi * self.group..(gi + 1) * self.group] {
                        *c += shift;
                    }
                    *zp = 128;
                }
            }
            self.bits = bits;
        }
        self
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Weight {
    Quant(QWeight),
    /// Row-major `[n][k]`.
    Float {
        n: usize,
        k: usize,
        data: Vec<f32>,
    },
}

impl Weight {
    fn n(&self) -> usize {
        match self {
            Weight::Quant(q) => q.n,
            Weight::Float { n, .. } => *n,
        }
    }
    fn k(&self) -> usize {
        match self {
            Weight::Quant(q) => q.k,
            Weight::Float { k, .. } => *k,
        }
    }
}

fn tensor_err(t: &TensorInfo, message: impl Into<String>) -> ExportError {
    ExportError::Tensor { name: t.name.clone(), message: message.into() }
}

/// The token embedding rows of `input_ids` (`[B, S, hidden]`).
///
/// A quantised table stays quantised: one byte per code (`[vocab, groups,
/// group]`), one f32 scale (and min) per group; the gathered rows are
/// evaluated as `s·(c − zp) + m` in the same order as
/// [`quant::AffineBlocks::to_f32`], so the result is bit-identical to a
/// dequantised f32 table at about a quarter of its memory (SmolLM2: 35 MB
/// instead of 113 MB). Float tables are gathered as f32.
pub(crate) fn embedding(
    b: &mut Builder,
    g: &GgufFile,
    embd: &TensorInfo,
    vocab: usize,
    hidden: usize,
) -> Result<String> {
    let gather = vec![attr_i("axis", 0)];
    let format = embd.ty.affine_format().filter(|f| hidden.is_multiple_of(f.group));
    let Some(format) = format else {
        let table = g.dequantize(embd)?;
        let table = b.init(pb::tensor_f32("model.embed_tokens.weight", &[vocab as i64, hidden as i64], &table));
        return Ok(b.op("Gather", "", &[&table, "input_ids"], gather));
    };
    let data = g.tensor_data(embd)?;
    let a = quant::to_affine(embd.ty, data, vocab * hidden).map_err(|e| tensor_err(embd, e.to_string()))?;
    let (v, groups, group) = (vocab as i64, (hidden / format.group) as i64, format.group as i64);
    let codes = b.init(pb::tensor_raw("model.embed_tokens.codes", data_type::UINT8, &[v, groups, group], a.codes));
    let scales = b.init(pb::tensor_f32("model.embed_tokens.scales", &[v, groups, 1], &a.scales));
    let rows = b.op("Gather", "", &[&codes, "input_ids"], gather.clone());
    let mut x = b.op("Cast", "", &[&rows], vec![attr_i("to", data_type::FLOAT.into())]);
    if format.zero_point != 0 {
        let zp = b.name("embed_zero_point");
        let zp = b.init(pb::tensor_f32(&zp, &[], &[f32::from(format.zero_point)]));
        x = b.op("Sub", "", &[&x, &zp], vec![]);
    }
    let s = b.op("Gather", "", &[&scales, "input_ids"], gather.clone());
    x = b.op("Mul", "", &[&s, &x], vec![]);
    if format.has_min {
        let mins = b.init(pb::tensor_f32("model.embed_tokens.mins", &[v, groups, 1], &a.mins));
        let m = b.op("Gather", "", &[&mins, "input_ids"], gather);
        x = b.op("Add", "", &[&x, &m], vec![]);
    }
    let shape = b.const_i64("embed_shape", &[3], &[0, 0, hidden as i64]);
    Ok(b.op("Reshape", "", &[&x, &shape], vec![]))
}

pub(crate) fn load_weight(g: &GgufFile, t: &TensorInfo) -> Result<Weight> {
    if t.dims.len() != 2 {
        return Err(tensor_err(t, format!("expected a matrix, found shape {:?}", t.dims)));
    }
    let k = t.dims[0] as usize;
    let n = t.dims[1] as usize;
    let data = g.tensor_data(t)?;
    if let Some(fmt) = t.ty.affine_format() {
        let a = quant::to_affine(t.ty, data, n * k).map_err(|e| tensor_err(t, e.to_string()))?;
        let groups = a.scales.len();
        let mut q = QWeight {
            n,
            k,
            bits: fmt.bits,
            group: fmt.group,
            codes: a.codes,
            scales: a.scales,
            zps: vec![fmt.zero_point; groups],
            mins: if fmt.has_min { Some(a.mins) } else { None },
        };
        q.centre_zero_points();
        return Ok(Weight::Quant(q));
    }
    if t.ty.can_dequantize() {
        let data = quant::dequantize(t.ty, data, n * k).map_err(|e| tensor_err(t, e.to_string()))?;
        return Ok(Weight::Float { n, k, data });
    }
    Err(tensor_err(t, format!("ggml type {} is not supported", t.ty)))
}

/// Concatenates weights along the output dimension.
pub(crate) fn fuse(ws: Vec<Weight>) -> Weight {
    if ws.len() == 1 {
        return ws.into_iter().next().unwrap_or(Weight::Float { n: 0, k: 0, data: Vec::new() });
    }
    let k = ws[0].k();
    let n: usize = ws.iter().map(Weight::n).sum();
    if ws.iter().any(|w| matches!(w, Weight::Float { .. })) {
        let mut data = Vec::with_capacity(n * k);
        for w in ws {
            match w {
                Weight::Float { data: d, .. } => data.extend(d),
                Weight::Quant(q) => data.extend(q.to_f32()),
            }
        }
        return Weight::Float { n, k, data };
    }
    let qs: Vec<QWeight> = ws
        .into_iter()
        .filter_map(|w| match w {
            Weight::Quant(q) => Some(q),
            Weight::Float { .. } => None,
        })
        .collect();
    let bits = qs.iter().map(|q| q.bits).max().unwrap_or(4);
    let group = qs.iter().map(|q| q.group).min().unwrap_or(32);
    let mins = qs.iter().any(|q| q.mins.is_some());
    let mut out = QWeight {
        n,
        k,
        bits,
        group,
        codes: Vec::new(),
        scales: Vec::new(),
        zps: Vec::new(),
        mins: mins.then(Vec::new),
    };
    for q in qs {
        let q = q.reshape(bits, group, mins);
        out.codes.extend(q.codes);
        out.scales.extend(q.scales);
        out.zps.extend(q.zps);
        if let (Some(dst), Some(src)) = (out.mins.as_mut(), q.mins) {
            dst.extend(src);
        }
    }
    Weight::Quant(out)
}

pub(crate) struct Builder {
    pub(crate) nodes: Vec<pb::NodeProto>,
    pub(crate) inits: Vec<pb::TensorProto>,
    counter: usize,
    accuracy_level: i64,
    block_sums: HashMap<(String, usize), String>,
    /// Whether quantised products may use [`BLOCK_QUANT_MATMUL`].
    block_quant_kernel: bool,
}

pub(crate) const MS: &str = "com.microsoft";

impl Builder {
    /// The model of this graph (named `llama`, opset 21 plus
    /// `com.microsoft` 1) with its `inputs` and `outputs`, as `producer`.
    pub(crate) fn into_model(
        self,
        producer: &str,
        inputs: Vec<pb::ValueInfoProto>,
        outputs: Vec<pb::ValueInfoProto>,
    ) -> pb::ModelProto {
        let uses_techne_domain = self.nodes.iter().any(|n| n.domain == DOMAIN);
        pb::ModelProto {
            ir_version: 10,
            producer_name: producer.into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph: Some(pb::GraphProto {
                node: self.nodes,
                name: "llama".into(),
                initializer: self.inits,
                input: inputs,
                output: outputs,
                ..Default::default()
            }),
            opset_import: [
                pb::OperatorSetIdProto { domain: String::new(), version: 21 },
                pb::OperatorSetIdProto { domain: MS.into(), version: 1 },
            ]
            .into_iter()
            .chain(
                uses_techne_domain.then(|| pb::OperatorSetIdProto { domain: DOMAIN.into(), version: DOMAIN_VERSION }),
            )
            .collect(),
            ..Default::default()
        }
    }

    /// An empty graph whose `MatMulNBits` run at `accuracy_level`, with
    /// stock operators only.
    pub(crate) fn new(accuracy_level: i64) -> Self {
        Self {
            nodes: Vec::new(),
            inits: Vec::new(),
            counter: 0,
            accuracy_level,
            block_sums: HashMap::new(),
            block_quant_kernel: false,
        }
    }

    pub(crate) fn name(&mut self, prefix: &str) -> String {
        self.counter += 1;
        format!("{prefix}_{}", self.counter)
    }

    pub(crate) fn node(
        &mut self,
        op: &str,
        domain: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<pb::AttributeProto>,
    ) {
        let name = self.name(op);
        self.nodes.push(pb::NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            name,
            op_type: op.into(),
            attribute: attrs,
            domain: domain.into(),
            ..Default::default()
        });
    }

    /// Adds a one-output node and returns its output name.
    pub(crate) fn op(&mut self, op: &str, domain: &str, inputs: &[&str], attrs: Vec<pb::AttributeProto>) -> String {
        let out = self.name(&format!("{}_out", op.to_lowercase()));
        self.node(op, domain, inputs, &[&out], attrs);
        out
    }

    pub(crate) fn init(&mut self, t: pb::TensorProto) -> String {
        let name = t.name.clone();
        self.inits.push(t);
        name
    }

    pub(crate) fn const_i64(&mut self, prefix: &str, dims: &[i64], v: &[i64]) -> String {
        let name = self.name(prefix);
        self.init(pb::tensor_i64(&name, dims, v))
    }

    fn block_sum(&mut self, x: &str, k: usize, group: usize) -> String {
        if let Some(s) = self.block_sums.get(&(x.to_string(), group)) {
            return s.clone();
        }
        let shape = self.const_i64("blocks_shape", &[4], &[0, 0, (k / group) as i64, group as i64]);
        let r = self.op("Reshape", "", &[x, &shape], vec![]);
        let axes = self.const_i64("axes_last", &[1], &[-1]);
        let s = self.op("ReduceSum", "", &[&r, &axes], vec![attr_i("keepdims", 0)]);
        self.block_sums.insert((x.to_string(), group), s.clone());
        s
    }

    fn block_quant_node(&mut self, prefix: &str, x: &str, shape: BlockQuantShape, packed: Vec<u8>) -> String {
        let w = self.init(pb::tensor_raw(
            &format!("{prefix}.block_quant"),
            data_type::UINT8,
            &[packed.len() as i64],
            packed,
        ));
        let mut attrs = vec![
            attr_i("K", shape.k as i64),
            attr_i("N", shape.n as i64),
            attr_i("bits", shape.bits.into()),
            attr_i("layout", block_quant_matmul::LAYOUT_VERSION),
        ];
        if shape.swiglu {
            attrs.push(attr_i("swiglu", 1));
        }
        if shape.int8 {
            attrs.push(attr_i("int8", 1));
        }
        self.op(BLOCK_QUANT_MATMUL, DOMAIN, &[x, &w], attrs)
    }

    /// The feed-forward activation `silu(x·gateᵀ) · (x·upᵀ)` (`[.., ff]`): one
    /// [`BLOCK_QUANT_MATMUL`] with its SwiGLU output where the kernel takes
    /// the weights, else the fused `gate‖up` product, `Split`, `Sigmoid`
    /// and two `Mul`s.
    pub(crate) fn swiglu(&mut self, prefix: &str, x: &str, gate: Weight, up: Weight, ff: usize) -> String {
        let gu = fuse(vec![gate, up]);
        if self.block_quant_kernel
            && ff.is_multiple_of(block_quant_matmul::TILE)
            && let Weight::Quant(q) = &gu
            && let Some((shape, packed)) =
                q.interleave_tiles(ff).block_quant_packed(prefix, true, self.accuracy_level == 4)
        {
            return self.block_quant_node(prefix, x, shape, packed);
        }
        let gu = self.linear(prefix, x, gu);
        let split = self.const_i64("split", &[2], &[ff as i64, ff as i64]);
        let (gname, uname) = (self.name("gate"), self.name("up"));
        self.node("Split", "", &[&gu, &split], &[&gname, &uname], vec![attr_i("axis", -1)]);
        let sig = self.op("Sigmoid", "", &[&gname], vec![]);
        let silu = self.op("Mul", "", &[&gname, &sig], vec![]);
        self.op("Mul", "", &[&silu, &uname], vec![])
    }

    pub(crate) fn linear(&mut self, prefix: &str, x: &str, w: Weight) -> String {
        if self.block_quant_kernel
            && let Weight::Quant(q) = &w
            && let Some((shape, packed)) = q.block_quant_packed(prefix, false, self.accuracy_level == 4)
        {
            return self.block_quant_node(prefix, x, shape, packed);
        }
        match w {
            Weight::Float { n, k, data } => {
                let mut t = vec![0f32; n * k];
                for r in 0..n {
                    for c in 0..k {
                        t[c * n + r] = data[r * k + c];
                    }
                }
                let wname = self.init(pb::tensor_f32(&format!("{prefix}.weight"), &[k as i64, n as i64], &t));
                self.op("MatMul", "", &[x, &wname], vec![])
            }
            Weight::Quant(q) if q.bits == 8 && self.accuracy_level != 4 && q.zps.iter().all(|z| z % 16 == 0) => {
                // ONNX Runtime only pre-packs 8-bit weights for int8 compute, so for
                // f32 compute split each code c = 16·hi + lo into two exact 4-bit
                // matrices: s·(c − zp) + m = 16s·(hi − zp/16) + s·(lo − 0) + m.
                let hi = QWeight {
                    codes: q.codes.iter().map(|c| c >> 4).collect(),
                    scales: q.scales.iter().map(|s| s * 16.0).collect(),
                    zps: q.zps.iter().map(|z| z / 16).collect(),
                    mins: None,
                    bits: 4,
                    ..q.clone()
                };
                let lo = QWeight {
                    codes: q.codes.iter().map(|c| c & 0xF).collect(),
                    zps: vec![0; q.zps.len()],
                    bits: 4,
                    ..q
                };
                let a = self.linear(&format!("{prefix}.hi"), x, Weight::Quant(hi));
                let b = self.linear(&format!("{prefix}.lo"), x, Weight::Quant(lo));
                self.op("Add", "", &[&a, &b], vec![])
            }
            Weight::Quant(q) => {
                let nb = q.k / q.group;
                let blob = q.group * q.bits as usize / 8;
                let mut packed = Vec::with_capacity(q.n * nb * blob);
                if q.bits == 8 {
                    packed.extend_from_slice(&q.codes);
                } else {
                    for pair in q.codes.chunks(2) {
                        packed.push((pair[0] & 0xF) | ((pair.get(1).copied().unwrap_or(0) & 0xF) << 4));
                    }
                }
                let b = self.init(pb::tensor_raw(
                    &format!("{prefix}.qweight"),
                    data_type::UINT8,
                    &[q.n as i64, nb as i64, blob as i64],
                    packed,
                ));
                let s = self.init(pb::tensor_f32(&format!("{prefix}.scales"), &[q.n as i64, nb as i64], &q.scales));
                let default_zp = 1u8 << (q.bits - 1);
                let mut inputs = vec![x.to_string(), b, s];
                if q.zps.iter().any(|&z| z != default_zp) {
                    let zp_blob = (nb * q.bits as usize).div_ceil(8);
                    let mut zp = vec![0u8; q.n * zp_blob];
                    for r in 0..q.n {
                        for j in 0..nb {
                            let z = q.zps[r * nb + j];
                            if q.bits == 8 {
                                zp[r * zp_blob + j] = z;
                            } else {
                                zp[r * zp_blob + j / 2] |= (z & 0xF) << (4 * (j % 2));
                            }
                        }
                    }
                    inputs.push(self.init(pb::tensor_raw(
                        &format!("{prefix}.qzeros"),
                        data_type::UINT8,
                        &[q.n as i64, zp_blob as i64],
                        zp,
                    )));
                }
                let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                let attrs = vec![
                    attr_i("K", q.k as i64),
                    attr_i("N", q.n as i64),
                    attr_i("bits", q.bits.into()),
                    attr_i("block_size", q.group as i64),
                    // 8-bit weights only reach this point for int8 compute (or odd zero points).
                    attr_i("accuracy_level", if q.bits == 8 { 4 } else { self.accuracy_level }),
                ];
                let y = self.op("MatMulNBits", MS, &refs, attrs);
                match q.mins {
                    Some(mins) if mins.iter().any(|&m| m != 0.0) => {
                        let sums = self.block_sum(x, q.k, q.group);
                        let mut mt = vec![0f32; nb * q.n];
                        for r in 0..q.n {
                            for j in 0..nb {
                                mt[j * q.n + r] = mins[r * nb + j];
                            }
                        }
                        let m =
                            self.init(pb::tensor_f32(&format!("{prefix}.block_mins"), &[nb as i64, q.n as i64], &mt));
                        let corr = self.op("MatMul", "", &[&sums, &m], vec![]);
                        self.op("Add", "", &[&y, &corr], vec![])
                    }
                    _ => y,
                }
            }
        }
    }
}

pub(crate) fn norm_weight(g: &GgufFile, name: &str, hidden: usize) -> Result<Vec<f32>> {
    let t = g.require_tensor(name)?;
    if t.n_elements() != hidden as u64 {
        return Err(tensor_err(t, format!("expected {hidden} elements, found shape {:?}", t.dims)));
    }
    g.dequantize(t).map_err(ExportError::from)
}

pub(crate) fn matrix<'a>(g: &'a GgufFile, name: &str, k: usize, n: usize) -> Result<&'a TensorInfo> {
    let t = g.require_tensor(name)?;
    if t.dims != [k as u64, n as u64] {
        return Err(tensor_err(t, format!("expected shape [{k}, {n}], found {:?}", t.dims)));
    }
    Ok(t)
}

/// The rotary cos/sin caches (`[max_context, rope_dim / 2]` each).
pub fn rotary_caches(cfg: &LlamaConfig, freq_factors: Option<&[f32]>) -> (Vec<f32>, Vec<f32>) {
    let half = cfg.rope_dim / 2;
    let mut cos = Vec::with_capacity(cfg.max_context * half);
    let mut sin = Vec::with_capacity(cfg.max_context * half);
    for p in 0..cfg.max_context {
        let pos = p as f64 / cfg.rope_linear_factor;
        for i in 0..half {
            let mut freq = cfg.rope_theta.powf(-2.0 * i as f64 / cfg.rope_dim as f64);
            if let Some(f) = freq_factors {
                freq /= f64::from(f.get(i).copied().unwrap_or(1.0));
            }
            let a = pos * freq;
            cos.push(a.cos() as f32);
            sin.push(a.sin() as f32);
        }
    }
    (cos, sin)
}

/// Exports a llama-architecture GGUF model to ONNX.
pub fn export_llama(g: &GgufFile, opts: &ExportOptions) -> Result<ExportedModel> {
    let mut cfg = LlamaConfig::from_gguf(g)?;
    if let Some(m) = opts.max_context {
        if m == 0 {
            return Err(ExportError::Config("max_context must be positive".into()));
        }
        cfg.max_context = m;
    }
    let (h, hd, nh, nkv, ff) = (cfg.hidden, cfg.head_dim, cfg.n_heads, cfg.n_kv_heads, cfg.ff);
    let io = ModelIo::for_layers(cfg.n_layers);
    let mut b = Builder::new(opts.accuracy_level);
    b.block_quant_kernel = opts.uses_block_quant_kernel();

    // Embedding.
    let embd = g.require_tensor("token_embd.weight")?;
    let x0 = embedding(&mut b, g, embd, cfg.vocab, h)?;

    // seqlens_k = sum(attention_mask) - 1; total_sequence_length = attention_mask.shape[1].
    let axes1 = b.const_i64("axes_1", &[1], &[1]);
    let mask_sum = b.op("ReduceSum", "", &["attention_mask", &axes1], vec![attr_i("keepdims", 0)]);
    let one = b.const_i64("one", &[], &[1]);
    let seqlens = b.op("Sub", "", &[&mask_sum, &one], vec![]);
    let seqlens_k = b.op("Cast", "", &[&seqlens], vec![attr_i("to", data_type::INT32.into())]);
    // GroupQueryAttention (stock operators) also takes
    // total_sequence_length = attention_mask.shape[1]; without it, techne's
    // CausalAttention.
    let total_len = (!opts.uses_techne_attention()).then(|| {
        let mask_shape = b.op("Shape", "", &["attention_mask"], vec![]);
        let idx1 = b.const_i64("idx_1", &[], &[1]);
        let total = b.op("Gather", "", &[&mask_shape, &idx1], vec![attr_i("axis", 0)]);
        b.op("Cast", "", &[&total], vec![attr_i("to", data_type::INT32.into())])
    });

    let freq_factors = match g.tensor("rope_freqs.weight") {
        Some(t) => Some(g.dequantize(t)?),
        None => None,
    };
    let (cos, sin) = rotary_caches(&cfg, freq_factors.as_deref());
    let half = (cfg.rope_dim / 2) as i64;
    let cos = b.init(pb::tensor_f32("cos_cache", &[cfg.max_context as i64, half], &cos));
    let sin = b.init(pb::tensor_f32("sin_cache", &[cfg.max_context as i64, half], &sin));

    let eps = attr_f("epsilon", cfg.rms_eps);
    let mut residual = x0.clone();
    let mut pending: Option<String> = None; // output of the previous block, to be added to the residual
    for i in 0..cfg.n_layers {
        let p = format!("model.layers.{i}");
        let w = norm_weight(g, &format!("blk.{i}.attn_norm.weight"), h)?;
        let wn = b.init(pb::tensor_f32(&format!("{p}.input_layernorm.weight"), &[h as i64], &w));
        let x = match pending.take() {
            None => b.op("SimplifiedLayerNormalization", "", &[&residual, &wn], vec![eps.clone(), attr_i("axis", -1)]),
            Some(prev) => {
                let out = b.name("attn_norm_out");
                let sum = b.name("residual");
                b.node(
                    "SkipSimplifiedLayerNormalization",
                    MS,
                    &[&prev, &residual, &wn],
                    &[&out, "", "", &sum],
                    vec![eps.clone()],
                );
                residual = sum;
                out
            }
        };
        let q = load_weight(g, matrix(g, &format!("blk.{i}.attn_q.weight"), h, nh * hd)?)?;
        let k = load_weight(g, matrix(g, &format!("blk.{i}.attn_k.weight"), h, nkv * hd)?)?;
        let v = load_weight(g, matrix(g, &format!("blk.{i}.attn_v.weight"), h, nkv * hd)?)?;
        let qkv = b.linear(&format!("{p}.attn.qkv_proj"), &x, fuse(vec![q, k, v]));
        let attn = b.name("attn_out");
        let pk = format!("past_key_values.{i}.key");
        let pv = format!("past_key_values.{i}.value");
        let prk = format!("present.{i}.key");
        let prv = format!("present.{i}.value");
        match &total_len {
            None => b.node(
                CAUSAL_ATTENTION,
                DOMAIN,
                &[&qkv, &pk, &pv, &seqlens_k, &cos, &sin],
                &[&attn, &prk, &prv],
                vec![
                    attr_i("num_heads", nh as i64),
                    attr_i("kv_num_heads", nkv as i64),
                    attr_f("scale", 1.0 / (hd as f32).sqrt()),
                ],
            ),
            Some(total_len) => b.node(
                "GroupQueryAttention",
                MS,
                &[&qkv, "", "", &pk, &pv, &seqlens_k, total_len, &cos, &sin],
                &[&attn, &prk, &prv],
                vec![
                    attr_i("num_heads", nh as i64),
                    attr_i("kv_num_heads", nkv as i64),
                    attr_i("do_rotary", 1),
                    attr_i("rotary_interleaved", 1),
                    attr_f("scale", 1.0 / (hd as f32).sqrt()),
                ],
            ),
        }
        let o = load_weight(g, matrix(g, &format!("blk.{i}.attn_output.weight"), nh * hd, h)?)?;
        let o = b.linear(&format!("{p}.attn.o_proj"), &attn, o);
        let w = norm_weight(g, &format!("blk.{i}.ffn_norm.weight"), h)?;
        let wn = b.init(pb::tensor_f32(&format!("{p}.post_attention_layernorm.weight"), &[h as i64], &w));
        let x2 = b.name("ffn_norm_out");
        let sum = b.name("residual");
        b.node("SkipSimplifiedLayerNormalization", MS, &[&o, &residual, &wn], &[&x2, "", "", &sum], vec![eps.clone()]);
        residual = sum;
        let gate = load_weight(g, matrix(g, &format!("blk.{i}.ffn_gate.weight"), h, ff)?)?;
        let up = load_weight(g, matrix(g, &format!("blk.{i}.ffn_up.weight"), h, ff)?)?;
        let act = b.swiglu(&format!("{p}.mlp.gate_up_proj"), &x2, gate, up, ff);
        let down = load_weight(g, matrix(g, &format!("blk.{i}.ffn_down.weight"), ff, h)?)?;
        pending = Some(b.linear(&format!("{p}.mlp.down_proj"), &act, down));
    }
    let w = norm_weight(g, "output_norm.weight", h)?;
    let wn = b.init(pb::tensor_f32("model.norm.weight", &[h as i64], &w));
    let xf = match pending {
        Some(prev) => {
            let out = b.name("final_norm_out");
            b.node(
                "SkipSimplifiedLayerNormalization",
                MS,
                &[&prev, &residual, &wn],
                &[&out, "", "", ""],
                vec![eps.clone()],
            );
            out
        }
        None => b.op("SimplifiedLayerNormalization", "", &[&residual, &wn], vec![eps.clone(), attr_i("axis", -1)]),
    };
    // Logits only for the last `logits_to_keep` positions (0 keeps all):
    // generation needs one row, scoring all of them; a long prefill would
    // otherwise materialise `[S, vocab]` f32 logits and the head's partial
    // products (SmolLM2, 500 tokens: ~300 MB).
    let starts = b.op("Neg", "", &["logits_to_keep"], vec![]);
    let ends = b.const_i64("keep_ends", &[1], &[i64::MAX]);
    let axes = b.const_i64("keep_axes", &[1], &[1]);
    let kept = b.op("Slice", "", &[&xf, &starts, &ends, &axes], vec![]);
    let head = g.tensor("output.weight").unwrap_or(embd);
    let head = load_weight(g, matrix(g, &head.name, h, cfg.vocab)?)?;
    // The output projection keeps f32 activations at every accuracy level:
    // its logits are what sampling and scoring read, and rounding its inputs
    // to int8 cost agreement with llama.cpp (94.7 % instead of 95.4 % top-1
    // on the shipped prompts) to save ~5 % of an 8-row decode step.
    let level = std::mem::replace(&mut b.accuracy_level, 0);
    let logits = b.linear("lm_head", &kept, head);
    b.accuracy_level = level;
    b.node("Identity", "", &[&logits], &["logits"], vec![]);

    let kv_dims =
        |len: &str| -> Vec<Dim> { vec!["batch_size".into(), (nkv as i64).into(), len.into(), (hd as i64).into()] };
    let mut inputs = vec![
        value_info("input_ids", data_type::INT64, &["batch_size".into(), "sequence_length".into()]),
        value_info("attention_mask", data_type::INT64, &["batch_size".into(), "total_sequence_length".into()]),
    ];
    let mut outputs = vec![value_info(
        "logits",
        data_type::FLOAT,
        &["batch_size".into(), "logits_length".into(), (cfg.vocab as i64).into()],
    )];
    for i in 0..cfg.n_layers {
        for kind in ["key", "value"] {
            inputs.push(value_info(
                &format!("past_key_values.{i}.{kind}"),
                data_type::FLOAT,
                &kv_dims("past_sequence_length"),
            ));
            outputs.push(value_info(
                &format!("present.{i}.{kind}"),
                data_type::FLOAT,
                &kv_dims("total_sequence_length"),
            ));
        }
    }
    inputs.push(value_info("logits_to_keep", data_type::INT64, &[1i64.into()]));
    let config_json = serde_json::to_string(&cfg).unwrap_or_default();
    let mut model = b.into_model("techne-inference", inputs, outputs);
    model.metadata_props = vec![pb::StringStringEntryProto { key: "techne.llama_config".into(), value: config_json }];
    Ok(ExportedModel { model, config: cfg, io })
}

/// Whether a ggml type can be exported without going through float.
pub fn is_native_quant(ty: GgmlType) -> bool {
    ty.affine_format().is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Q4_1-shaped weight: codes 0..15, zero point 0, a minimum per group.
    fn q4_1_like() -> QWeight {
        let (n, k, group) = (3, 64, 32);
        let codes: Vec<u8> = (0..n * k).map(|i| ((i * 7 + i / 5) % 16) as u8).collect();
        let scales = vec![0.01, 0.02, 0.5, 0.003, 0.04, 1e-3];
        // Typical (≈ −8 steps), out-of-range (below −15 steps), positive and zero minima.
        let mins = vec![-0.081, -0.15, -20.0, 0.002, 0.0, -0.0078];
        QWeight { n, k, bits: 4, group, codes, scales, zps: vec![0; 6], mins: Some(mins) }
    }

    fn assert_same_values(a: &[f32], b: &[f32]) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-6 * x.abs().max(1.0), "{x} vs {y}");
        }
    }

    #[test]
    fn centring_zero_points_keeps_every_value_and_centres_the_codes() {
        let before = q4_1_like();
        let mut after = before.clone();
        after.centre_zero_points();
        assert_same_values(&before.to_f32(), &after.to_f32());
        assert_eq!(after.zps, vec![8, 8, 15, 0, 0, 8]);
        let mins = after.mins.as_deref().unwrap_or_default();
        for ((&m, &s), &z) in mins.iter().zip(&after.scales).zip(&after.zps) {
            // What is left of the minimum is at most half a step, unless the
            // zero point hit the end of the code range.
            assert!(m.abs() <= s / 2.0 + 1e-7 || z == 0 || z == 15, "min {m} scale {s} zp {z}");
        }
    }

    #[test]
    fn centred_weights_widen_to_8_bits_with_the_same_values() {
        let mut q = q4_1_like();
        q.centre_zero_points();
        let values = q.to_f32();
        let wide = q.reshape(8, 32, true);
        assert_same_values(&values, &wide.to_f32());
        // Widened codes keep a zero point the f32 path can split into 4-bit halves.
        assert!(wide.zps.iter().all(|z| z % 16 == 0), "{:?}", wide.zps);
    }

    #[test]
    fn symmetric_and_8_bit_weights_are_left_alone() {
        let mut q = q4_1_like();
        q.mins = None;
        q.zps = vec![8; 6];
        let before = q.zps.clone();
        q.centre_zero_points();
        assert_eq!(q.zps, before);
        let mut q8 = q4_1_like();
        q8.bits = 8;
        q8.centre_zero_points();
        assert_eq!(q8.zps, vec![0; 6]);
    }
}
