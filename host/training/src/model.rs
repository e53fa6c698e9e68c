//! The llama forward pass on candle (CPU, f32), with optional LoRA adapters.
//!
//! Weights come from a GGUF file, dequantised to f32 by techne-inference's
//! [`techne_inference::gguf`] module, and are used **as GGUF stores them**:
//! matrices are row-major `[out, in]` and the Q/K projections keep ggml's
//! permutation for interleaved ("normal" mode) rotary embeddings, so rotary
//! rotates the pairs `(2i, 2i+1)` of each head — the same convention as the
//! ONNX graph that techne-inference exports (`rotary_interleaved = 1`). The
//! cos/sin tables are [`techne_inference::onnx_export::rotary_caches`], so
//! `rope.freq_base`, linear scaling and `rope_freqs.weight` match the engine.
//!
//! The base weights are frozen. Their matrix products go through
//! [`FrozenLinear`], a custom op whose backward pass only returns the
//! gradient of the activations: candle's generic `matmul` would also compute
//! the (discarded) gradient of every frozen weight, a third of the work.
//!
//! Layout of one decoder layer (pre-norm, SwiGLU):
//!
//! ```text
//! h = x + o_proj(attn(rope(q_proj(n)), rope(k_proj(n)), v_proj(n)))    n = rms_norm(x)·attn_norm
//! y = h + down_proj(silu(gate_proj(m)) · up_proj(m))                   m = rms_norm(h)·ffn_norm
//! ```

use std::sync::Arc;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, D, DType, Device, Layout, Shape, Storage, Tensor};
use serde::{Deserialize, Serialize};
use techne_inference::gguf::GgufFile;
use techne_inference::onnx_export::{LlamaConfig, rotary_caches};

use crate::error::{Result, TrainError};
use crate::lora::LoraAdapters;
use crate::ops::{CausalSoftmax, DropMask, LoraLinear, RmsNorm, Rope, TargetLogprob};
use crate::rng::Rng;

/// The seven linear projections of a llama decoder layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Proj {
    /// Attention query projection (`attn_q`).
    QProj,
    /// Attention key projection (`attn_k`).
    KProj,
    /// Attention value projection (`attn_v`).
    VProj,
    /// Attention output projection (`attn_output`).
    OProj,
    /// Feed-forward gate projection (`ffn_gate`).
    GateProj,
    /// Feed-forward up projection (`ffn_up`).
    UpProj,
    /// Feed-forward down projection (`ffn_down`).
    DownProj,
}

impl Proj {
    /// All projections, in layer order.
    pub const ALL: [Proj; 7] =
        [Proj::QProj, Proj::KProj, Proj::VProj, Proj::OProj, Proj::GateProj, Proj::UpProj, Proj::DownProj];

    /// The HuggingFace/PEFT module name (`q_proj`, …).
    pub fn name(self) -> &'static str {
        match self {
            Proj::QProj => "q_proj",
            Proj::KProj => "k_proj",
            Proj::VProj => "v_proj",
            Proj::OProj => "o_proj",
            Proj::GateProj => "gate_proj",
            Proj::UpProj => "up_proj",
            Proj::DownProj => "down_proj",
        }
    }

    /// The GGUF tensor name inside a block (`attn_q`, …).
    pub fn gguf_name(self) -> &'static str {
        match self {
            Proj::QProj => "attn_q",
            Proj::KProj => "attn_k",
            Proj::VProj => "attn_v",
            Proj::OProj => "attn_output",
            Proj::GateProj => "ffn_gate",
            Proj::UpProj => "ffn_up",
            Proj::DownProj => "ffn_down",
        }
    }

    /// The GGUF tensor name of this projection in layer `layer`.
    pub fn gguf_tensor(self, layer: usize) -> String {
        format!("blk.{layer}.{}.weight", self.gguf_name())
    }

    /// Parses a module name (`q_proj` or the GGUF `attn_q`).
    pub fn parse(s: &str) -> Option<Proj> {
        Proj::ALL.into_iter().find(|p| p.name() == s || p.gguf_name() == s)
    }

    /// The position in [`Proj::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// `(out, in)`: the shape of the weight matrix as `[out][in]`.
    pub fn shape(self, cfg: &LlamaConfig) -> (usize, usize) {
        let (h, q, kv, ff) = (cfg.hidden, cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim, cfg.ff);
        match self {
            Proj::QProj => (q, h),
            Proj::KProj | Proj::VProj => (kv, h),
            Proj::OProj => (h, q),
            Proj::GateProj | Proj::UpProj => (ff, h),
            Proj::DownProj => (h, ff),
        }
    }
}

impl std::fmt::Display for Proj {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `y = x · Wᵀ` for a frozen weight `W` (`[out, in]`): the backward pass
/// returns only `∂L/∂x = ∂L/∂y · W`, never a gradient for `W`.
#[derive(Debug, Clone)]
pub struct FrozenLinear {
    w: Tensor,
}

impl FrozenLinear {
    /// Wraps a contiguous `[out, in]` f32 weight.
    pub fn new(w: Tensor) -> candle_core::Result<Self> {
        let w = w.contiguous()?;
        w.dims2()?;
        Ok(Self { w })
    }

    /// Applies the projection to `x` (`[…, in]` → `[…, out]`).
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.contiguous()?.apply_op1(self.clone())
    }
}

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = l.dims();
        let (n, k) = self.w.dims2()?;
        let Some((&last, lead)) = dims.split_last() else {
            candle_core::bail!("frozen-linear: the input is a scalar");
        };
        if last != k {
            candle_core::bail!("frozen-linear: input has {last} features, the weight expects {k}");
        }
        if !l.is_contiguous() {
            candle_core::bail!("frozen-linear: the input must be contiguous");
        }
        let m: usize = lead.iter().product();
        let xl = Layout::contiguous_with_offset((m, k), l.start_offset());
        let wt = self.w.t()?;
        let (ws, wl) = wt.storage_and_layout();
        let Storage::Cpu(ws) = &*ws else {
            candle_core::bail!("frozen-linear runs on the CPU only");
        };
        let out = s.matmul(ws, (1, m, n, k), &xl, wl)?;
        let mut od = lead.to_vec();
        od.push(n);
        Ok((out, Shape::from(od)))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (n, _) = self.w.dims2()?;
        let m = grad.elem_count() / n;
        Ok(Some(grad.contiguous()?.reshape((m, n))?.matmul(&self.w)?.reshape(arg.shape())?))
    }
}

struct Layer {
    attn_norm: RmsNorm,
    ffn_norm: RmsNorm,
    proj: Vec<FrozenLinear>,
    weights: Vec<Tensor>,
}

/// A llama-architecture model with frozen f32 weights.
pub struct Llama {
    cfg: LlamaConfig,
    embed: Tensor,
    lm_head: FrozenLinear,
    norm: RmsNorm,
    layers: Vec<Layer>,
    freq_factors: Option<Vec<f32>>,
    device: Device,
}

impl std::fmt::Debug for Llama {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Llama").field("config", &self.cfg).finish()
    }
}

fn dequant(g: &GgufFile, name: &str, want: &[u64]) -> Result<Vec<f32>> {
    let t = g.require_tensor(name)?;
    if t.dims != want {
        return Err(TrainError::Model(format!(
            "tensor `{name}` has shape {:?}, expected {want:?}: the GGUF file does not match its own hyperparameters",
            t.dims
        )));
    }
    Ok(g.dequantize(t)?)
}

/// `x / sqrt(mean(x²) + eps) · w` over the last dimension.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> candle_core::Result<Tensor> {
    let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
    let r = ms.affine(1.0, f64::from(eps))?.sqrt()?.recip()?;
    x.broadcast_mul(&r)?.broadcast_mul(w)
}

/// Softmax over the last dimension (the max is subtracted without gradient).
pub fn softmax_last(x: &Tensor) -> candle_core::Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&m)?.exp()?;
    let s = e.sum_keepdim(D::Minus1)?;
    e.broadcast_div(&s)
}

/// Log-softmax over the last dimension.
pub fn log_softmax_last(x: &Tensor) -> candle_core::Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&m)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}

/// Dropout and LoRA application state threaded through one forward pass.
pub struct ForwardOptions<'a> {
    /// Adapters to add to the frozen projections (`None`: the base model).
    pub lora: Option<&'a LoraAdapters>,
    /// Generator for LoRA dropout masks; `None` disables dropout (evaluation).
    pub dropout_rng: Option<&'a mut Rng>,
}

impl ForwardOptions<'_> {
    /// The base model, no dropout.
    pub fn base() -> Self {
        Self { lora: None, dropout_rng: None }
    }
}

impl<'a> ForwardOptions<'a> {
    /// Base model plus adapters, no dropout.
    pub fn with_lora(lora: &'a LoraAdapters) -> Self {
        Self { lora: Some(lora), dropout_rng: None }
    }
}

impl Llama {
    /// Loads and dequantises the weights of a llama-architecture GGUF file.
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let cfg = LlamaConfig::from_gguf(g)?;
        let device = Device::Cpu;
        let (h, v) = (cfg.hidden as u64, cfg.vocab as u64);
        let t = |data: Vec<f32>, shape: &[usize]| Tensor::from_vec(data, shape, &device);
        let embed = t(dequant(g, "token_embd.weight", &[h, v])?, &[cfg.vocab, cfg.hidden])?;
        let lm_head = match g.tensor("output.weight") {
            Some(_) => t(dequant(g, "output.weight", &[h, v])?, &[cfg.vocab, cfg.hidden])?,
            None => embed.clone(),
        };
        let rms = |w: Vec<f32>| RmsNorm { weight: w, eps: cfg.rms_eps };
        let norm = rms(dequant(g, "output_norm.weight", &[h])?);
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let attn_norm = rms(dequant(g, &format!("blk.{i}.attn_norm.weight"), &[h])?);
            let ffn_norm = rms(dequant(g, &format!("blk.{i}.ffn_norm.weight"), &[h])?);
            let mut weights = Vec::with_capacity(7);
            let mut proj = Vec::with_capacity(7);
            for p in Proj::ALL {
                let (out, inp) = p.shape(&cfg);
                let w = t(dequant(g, &p.gguf_tensor(i), &[inp as u64, out as u64])?, &[out, inp])?;
                proj.push(FrozenLinear::new(w.clone())?);
                weights.push(w);
            }
            layers.push(Layer { attn_norm, ffn_norm, proj, weights });
        }
        let freq_factors = match g.tensor("rope_freqs.weight") {
            Some(t) => Some(g.dequantize(t)?),
            None => None,
        };
        if cfg.rope_dim % 2 != 0 || cfg.n_heads % cfg.n_kv_heads != 0 {
            return Err(TrainError::Model(format!(
                "unsupported attention shape: rope_dim {}, {} heads, {} kv heads",
                cfg.rope_dim, cfg.n_heads, cfg.n_kv_heads
            )));
        }
        Ok(Self { cfg, embed, lm_head: FrozenLinear::new(lm_head)?, norm, layers, freq_factors, device })
    }

    /// The hyperparameters.
    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// The device (always the CPU).
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The frozen `[out, in]` weight of a projection.
    pub fn weight(&self, layer: usize, proj: Proj) -> Option<&Tensor> {
        self.layers.get(layer).map(|l| &l.weights[proj.index()])
    }

    /// The rotary tables for positions `0..seq` (techne-inference's, so
    /// `rope.freq_base`, linear scaling and `rope_freqs.weight` match the engine).
    fn rope(&self, seq: usize) -> Rope {
        let mut c = self.cfg.clone();
        c.max_context = seq;
        let (cos, sin) = rotary_caches(&c, self.freq_factors.as_deref());
        Rope { cos, sin, rope_dim: self.cfg.rope_dim }
    }

    fn linear(&self, layer: usize, p: Proj, x: &Tensor, opts: &mut ForwardOptions<'_>) -> Result<Tensor> {
        let base = &self.layers[layer].proj[p.index()];
        match opts.lora.and_then(|l| l.pair(layer, p).map(|pair| (l, pair))) {
            Some((l, pair)) => {
                let mask = match opts.dropout_rng.as_deref_mut() {
                    Some(rng) if l.config.dropout > 0.0 => {
                        Some(Arc::new(DropMask::sample(rng, x.elem_count(), l.config.dropout)))
                    }
                    _ => None,
                };
                let op = LoraLinear { base: base.clone(), scale: l.scale(), mask };
                Ok(x.contiguous()?.apply_op3(pair.a.as_tensor(), pair.b.as_tensor(), op)?)
            }
            None => Ok(base.forward(x)?),
        }
    }

    /// The final hidden states (after the output norm), `[B·S, hidden]`, for
    /// `ids` (`B` right-padded rows of `S` token ids, row-major). Padding
    /// must come after the real tokens: attention is causal only.
    pub fn forward_hidden(
        &self,
        ids: &[u32],
        batch: usize,
        seq: usize,
        opts: &mut ForwardOptions<'_>,
    ) -> Result<Tensor> {
        let c = &self.cfg;
        if ids.len() != batch * seq || seq == 0 {
            return Err(TrainError::Model(format!("{} token ids do not form {batch} rows of {seq}", ids.len())));
        }
        if let Some(bad) = ids.iter().find(|&&t| t as usize >= c.vocab) {
            return Err(TrainError::Model(format!("token id {bad} is outside the vocabulary of {}", c.vocab)));
        }
        let (nh, nkv, hd) = (c.n_heads, c.n_kv_heads, c.head_dim);
        let groups = nh / nkv;
        let ids_t = Tensor::from_slice(ids, batch * seq, &self.device)?;
        let mut x = self.embed.index_select(&ids_t, 0)?;
        let rope = self.rope(seq);
        let softmax = CausalSoftmax { seq, scale: (1.0 / (hd as f64).sqrt()) as f32 };
        for (i, layer) in self.layers.iter().enumerate() {
            let n = x.apply_op1(layer.attn_norm.clone())?;
            let q = self.linear(i, Proj::QProj, &n, opts)?.reshape((batch, seq, nh, hd))?;
            let k = self.linear(i, Proj::KProj, &n, opts)?.reshape((batch, seq, nkv, hd))?;
            let v = self.linear(i, Proj::VProj, &n, opts)?.reshape((batch, seq, nkv, hd))?;
            let q = q.apply_op1(rope.clone())?.transpose(1, 2)?.contiguous()?; // [B, nh, S, hd]
            let k = k.apply_op1(rope.clone())?.transpose(1, 2)?.contiguous()?; // [B, nkv, S, hd]
            let v = v.transpose(1, 2)?.contiguous()?;
            // Query heads of one kv head are adjacent: view them as one longer sequence.
            let q = q.reshape((batch, nkv, groups * seq, hd))?;
            let p = q.matmul(&k.t()?)?.apply_op1(softmax.clone())?;
            let a = p.matmul(&v)?.reshape((batch, nh, seq, hd))?.transpose(1, 2)?.reshape((batch * seq, nh * hd))?;
            let o = self.linear(i, Proj::OProj, &a, opts)?;
            x = (x + o)?;
            let m = x.apply_op1(layer.ffn_norm.clone())?;
            let gate = self.linear(i, Proj::GateProj, &m, opts)?;
            let up = self.linear(i, Proj::UpProj, &m, opts)?;
            let act = (gate.silu()? * up)?;
            let d = self.linear(i, Proj::DownProj, &act, opts)?;
            x = (x + d)?;
        }
        Ok(x.apply_op1(self.norm.clone())?)
    }

    /// Logits `[N, vocab]` for hidden states `[N, hidden]`.
    pub fn project_logits(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(self.lm_head.forward(hidden)?)
    }

    /// Logits for every position, `[B·S, vocab]`.
    pub fn logits(&self, ids: &[u32], batch: usize, seq: usize, opts: &mut ForwardOptions<'_>) -> Result<Tensor> {
        let h = self.forward_hidden(ids, batch, seq, opts)?;
        self.project_logits(&h)
    }

    /// Log-probabilities of the tokens at `targets` (flat positions into the
    /// `B·S` grid): position `p` is predicted from the hidden state at `p − 1`.
    /// Returns a `[targets.len()]` tensor. Only the needed rows go through
    /// the output projection.
    pub fn target_logprobs(&self, hidden: &Tensor, ids: &[u32], targets: &[u32]) -> Result<Tensor> {
        if targets.is_empty() {
            return Ok(Tensor::zeros(0, DType::F32, &self.device)?);
        }
        let mut from = Vec::with_capacity(targets.len());
        let mut tok = Vec::with_capacity(targets.len());
        for &t in targets {
            let t = t as usize;
            if t == 0 || t >= ids.len() {
                return Err(TrainError::Model(format!("target position {t} has no preceding token")));
            }
            from.push((t - 1) as u32);
            tok.push(ids[t]);
        }
        let n = targets.len();
        let rows = hidden.index_select(&Tensor::from_vec(from, n, &self.device)?, 0)?;
        Ok(self.project_logits(&rows)?.apply_op1(TargetLogprob { targets: tok })?)
    }

    /// A copy of the model with the weight of one projection replaced (for
    /// comparing merged weights with base + adapter forward passes).
    pub fn with_replaced_weight(&self, layer: usize, proj: Proj, w: Tensor) -> Result<Llama> {
        let mut layers = Vec::with_capacity(self.layers.len());
        for (i, l) in self.layers.iter().enumerate() {
            let mut weights = l.weights.clone();
            let mut projs = l.proj.clone();
            if i == layer {
                weights[proj.index()] = w.clone();
                projs[proj.index()] = FrozenLinear::new(w.clone())?;
            }
            layers.push(Layer { attn_norm: l.attn_norm.clone(), ffn_norm: l.ffn_norm.clone(), proj: projs, weights });
        }
        Ok(Llama {
            cfg: self.cfg.clone(),
            embed: self.embed.clone(),
            lm_head: self.lm_head.clone(),
            norm: self.norm.clone(),
            layers,
            freq_factors: self.freq_factors.clone(),
            device: self.device.clone(),
        })
    }
}
