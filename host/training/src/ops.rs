//! Fused CPU operations with their backward passes, for the parts of the
//! forward pass where candle's generic element-wise ops would allocate and
//! traverse several full-size intermediates (each of which autograd keeps
//! alive until the backward pass):
//!
//! * [`RmsNorm`] — `x·w / √(mean(x²) + ε)` with a frozen weight;
//! * [`Rope`] — interleaved rotary embedding (backward: the inverse rotation);
//! * [`CausalSoftmax`] — `softmax(scale·x)` over the last dimension with a causal mask;
//! * [`TargetLogprob`] — `log_softmax(logits)[target]` per row (the cross-entropy
//!   of the answer tokens) without materialising the log-softmax.
//!
//! Each op is a candle [`CustomOp1`]: autograd still drives the backward pass,
//! these ops only supply their local derivative. Rows are processed in
//! parallel with rayon; every output element is computed by one thread in a
//! fixed order, so results are deterministic. The ops are checked against
//! the composed candle expressions (values and gradients) in the tests.

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Storage, Tensor};
use rayon::prelude::*;

/// Rows per rayon task: large enough to amortise scheduling.
const ROW_CHUNK: usize = 16;

fn contiguous_f32<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    let data = s.as_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{op}: the input must be contiguous"),
    }
}

/// Runs `f` on the contiguous f32 data of a tensor.
fn with_f32<R>(t: &Tensor, op: &str, f: impl FnOnce(&[f32]) -> candle_core::Result<R>) -> candle_core::Result<R> {
    let t = t.contiguous()?;
    let (s, l) = t.storage_and_layout();
    let Storage::Cpu(s) = &*s else {
        candle_core::bail!("{op} runs on the CPU only");
    };
    f(contiguous_f32(s, l, op)?)
}

fn last_dim(l: &Layout) -> candle_core::Result<usize> {
    match l.dims().last() {
        Some(&n) if n > 0 => Ok(n),
        _ => candle_core::bail!("expected a tensor with a non-empty last dimension"),
    }
}

/// RMS normalisation over the last dimension with a frozen weight.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    /// The weight, one value per feature.
    pub weight: Vec<f32>,
    /// ε added to the mean square.
    pub eps: f32,
}

impl RmsNorm {
    fn inv_rms(&self, row: &[f32]) -> f32 {
        let ms = row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32;
        1.0 / (ms + self.eps).sqrt()
    }
}

impl CustomOp1 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, "rms-norm")?;
        let n = last_dim(l)?;
        if n != self.weight.len() {
            candle_core::bail!("rms-norm: {n} features, weight has {}", self.weight.len());
        }
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(n * ROW_CHUNK).zip(x.par_chunks(n * ROW_CHUNK)).for_each(|(yc, xc)| {
            for (yr, xr) in yc.chunks_mut(n).zip(xc.chunks(n)) {
                let r = self.inv_rms(xr);
                for ((o, v), w) in yr.iter_mut().zip(xr).zip(&self.weight) {
                    *o = v * r * w;
                }
            }
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let n = self.weight.len();
        let out = with_f32(arg, "rms-norm", |x| {
            with_f32(grad, "rms-norm", |g| {
                let mut dx = vec![0f32; x.len()];
                dx.par_chunks_mut(n * ROW_CHUNK)
                    .zip(x.par_chunks(n * ROW_CHUNK).zip(g.par_chunks(n * ROW_CHUNK)))
                    .for_each(|(dc, (xc, gc))| {
                        for ((dr, xr), gr) in dc.chunks_mut(n).zip(xc.chunks(n)).zip(gc.chunks(n)) {
                            let r = self.inv_rms(xr);
                            // dx_j = r·w_j·g_j − x_j·r³/n·Σ_i w_i·g_i·x_i
                            let dot: f32 = xr.iter().zip(gr).zip(&self.weight).map(|((x, g), w)| x * g * w).sum();
                            let c = r * r * r * dot / n as f32;
                            for (((d, x), g), w) in dr.iter_mut().zip(xr).zip(gr).zip(&self.weight) {
                                *d = r * w * g - x * c;
                            }
                        }
                    });
                Ok(dx)
            })
        })?;
        Ok(Some(Tensor::from_vec(out, arg.shape(), arg.device())?))
    }
}

/// Interleaved rotary embedding on `[B, S, H, D]` for positions `0..S`:
/// `(x₂ᵢ, x₂ᵢ₊₁) ↦ (x₂ᵢ·cos − x₂ᵢ₊₁·sin, x₂ᵢ·sin + x₂ᵢ₊₁·cos)` for
/// `i < rope_dim/2`; the other dimensions pass through.
#[derive(Debug, Clone)]
pub struct Rope {
    /// `[S, rope_dim/2]` cosines.
    pub cos: Vec<f32>,
    /// `[S, rope_dim/2]` sines.
    pub sin: Vec<f32>,
    /// Rotated dimensions per head (even).
    pub rope_dim: usize,
}

impl Rope {
    fn apply(&self, x: &[f32], dims: &[usize], inverse: bool) -> candle_core::Result<Vec<f32>> {
        let [_, s, h, d] = dims else {
            candle_core::bail!("rope: expected [B, S, H, D], got {dims:?}");
        };
        let (s, h, d) = (*s, *h, *d);
        let half = self.rope_dim / 2;
        if self.rope_dim > d || self.cos.len() < s * half {
            candle_core::bail!(
                "rope: tables for {} positions × {half} do not fit {dims:?}",
                self.cos.len() / half.max(1)
            );
        }
        let sign = if inverse { -1.0f32 } else { 1.0 };
        let mut y = x.to_vec();
        // One position (all heads) per task row.
        y.par_chunks_mut(h * d).enumerate().for_each(|(row, yr)| {
            let p = row % s;
            let (c, sn) = (&self.cos[p * half..(p + 1) * half], &self.sin[p * half..(p + 1) * half]);
            for head in yr.chunks_mut(d) {
                for i in 0..half {
                    let (a, b) = (head[2 * i], head[2 * i + 1]);
                    let si = sign * sn[i];
                    head[2 * i] = a * c[i] - b * si;
                    head[2 * i + 1] = a * si + b * c[i];
                }
            }
        });
        Ok(y)
    }
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "rope"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, "rope")?;
        Ok((CpuStorage::F32(self.apply(x, l.dims(), false)?), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let dx = with_f32(grad, "rope", |g| self.apply(g, arg.dims(), true))?;
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

/// `softmax(scale·x)` over the last dimension (keys) with a causal mask: in
/// row `r` of the second-to-last dimension the query position is `r mod seq`
/// and keys after it get probability 0. (Grouped-query attention stacks the
/// query heads of one key/value head along that dimension.)
#[derive(Debug, Clone)]
pub struct CausalSoftmax {
    /// The sequence length (= the last dimension).
    pub seq: usize,
    /// The factor applied to the scores.
    pub scale: f32,
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "causal-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, "causal-softmax")?;
        let n = last_dim(l)?;
        if n != self.seq {
            candle_core::bail!("causal-softmax: last dimension {n}, sequence {}", self.seq);
        }
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(n * ROW_CHUNK).zip(x.par_chunks(n * ROW_CHUNK)).enumerate().for_each(|(ci, (yc, xc))| {
            for (ri, (yr, xr)) in yc.chunks_mut(n).zip(xc.chunks(n)).enumerate() {
                let pos = (ci * ROW_CHUNK + ri) % self.seq;
                let live = &xr[..=pos];
                let m = live.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) * self.scale;
                let mut sum = 0f32;
                for (o, &v) in yr[..=pos].iter_mut().zip(live) {
                    *o = (v * self.scale - m).exp();
                    sum += *o;
                }
                let inv = 1.0 / sum;
                for o in &mut yr[..=pos] {
                    *o *= inv;
                }
            }
        });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let n = self.seq;
        let dx = with_f32(res, "causal-softmax", |y| {
            with_f32(grad, "causal-softmax", |g| {
                let mut dx = vec![0f32; y.len()];
                dx.par_chunks_mut(n * ROW_CHUNK)
                    .zip(y.par_chunks(n * ROW_CHUNK).zip(g.par_chunks(n * ROW_CHUNK)))
                    .enumerate()
                    .for_each(|(ci, (dc, (yc, gc)))| {
                        for (ri, ((dr, yr), gr)) in dc.chunks_mut(n).zip(yc.chunks(n)).zip(gc.chunks(n)).enumerate() {
                            let pos = (ci * ROW_CHUNK + ri) % n;
                            // dx = scale·y·(g − Σ g·y)
                            let dot: f32 = yr[..=pos].iter().zip(&gr[..=pos]).map(|(a, b)| a * b).sum();
                            for ((d, y), g) in dr[..=pos].iter_mut().zip(&yr[..=pos]).zip(&gr[..=pos]) {
                                *d = self.scale * y * (g - dot);
                            }
                        }
                    });
                Ok(dx)
            })
        })?;
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

/// `log_softmax(logits[t])[targets[t]]` for each row `t` of `[T, V]` logits;
/// the output is `[T]`. The backward pass is `g_t·(onehot − softmax)`.
#[derive(Debug, Clone)]
pub struct TargetLogprob {
    /// The target id of each row.
    pub targets: Vec<u32>,
}

fn logsumexp(row: &[f32]) -> f32 {
    let m = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let s: f32 = row.iter().map(|&v| (v - m).exp()).sum();
    m + s.ln()
}

impl CustomOp1 for TargetLogprob {
    fn name(&self) -> &'static str {
        "target-logprob"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, "target-logprob")?;
        let v = last_dim(l)?;
        let t = x.len() / v;
        if t != self.targets.len() {
            candle_core::bail!("target-logprob: {t} rows, {} targets", self.targets.len());
        }
        if let Some(bad) = self.targets.iter().find(|&&y| y as usize >= v) {
            candle_core::bail!("target-logprob: target {bad} outside a vocabulary of {v}");
        }
        let out: Vec<f32> =
            x.par_chunks(v).zip(self.targets.par_iter()).map(|(row, &y)| row[y as usize] - logsumexp(row)).collect();
        Ok((CpuStorage::F32(out), Shape::from(t)))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let v = arg.dims().last().copied().unwrap_or(1);
        let g = grad.contiguous()?.to_vec1::<f32>()?;
        let dx = with_f32(arg, "target-logprob", |x| {
            let mut dx = vec![0f32; x.len()];
            dx.par_chunks_mut(v).zip(x.par_chunks(v)).enumerate().for_each(|(t, (dr, xr))| {
                let lse = logsumexp(xr);
                let gt = g[t];
                for (d, &xv) in dr.iter_mut().zip(xr) {
                    *d = -gt * (xv - lse).exp();
                }
                dr[self.targets[t] as usize] += gt;
            });
            Ok(dx)
        })?;
        Ok(Some(Tensor::from_vec(dx, arg.shape(), arg.device())?))
    }
}

/// A dropout mask stored as bits (1 = keep), with the `1/(1−p)` scale of
/// the kept values.
#[derive(Debug, Clone)]
pub struct DropMask {
    bits: Vec<u64>,
    len: usize,
    scale: f32,
}

impl DropMask {
    /// Draws a mask of `len` elements keeping each with probability
    /// `1 − p` (one `next_f32` per element, in order).
    pub fn sample(rng: &mut crate::rng::Rng, len: usize, p: f64) -> Self {
        let keep = 1.0 - p;
        let mut bits = vec![0u64; len.div_ceil(64)];
        for i in 0..len {
            if f64::from(rng.next_f32()) < keep {
                bits[i / 64] |= 1 << (i % 64);
            }
        }
        Self { bits, len, scale: (1.0 / keep) as f32 }
    }

    /// `x ⊙ mask / (1 − p)`.
    pub fn apply(&self, x: &[f32]) -> Vec<f32> {
        x.iter()
            .enumerate()
            .map(|(i, &v)| if self.bits[i / 64] >> (i % 64) & 1 == 1 { v * self.scale } else { 0.0 })
            .collect()
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mask is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A frozen projection with a LoRA adapter, as one op on
/// `(x [.., in], A [r, in], B [out, r])`:
/// `y = x·Wᵀ + s·(dropout(x)·Aᵀ)·Bᵀ`. Only the dropout *bits* are kept for
/// the backward pass (the masked input is recomputed), and no gradient is
/// formed for `W` or for the mask — with candle's generic ops each adapted
/// projection would keep the mask, the masked input and their gradients.
#[derive(Debug, Clone)]
pub struct LoraLinear {
    /// The frozen weight.
    pub base: crate::model::FrozenLinear,
    /// `α / r`.
    pub scale: f64,
    /// The dropout mask of this call (`None`: no dropout).
    pub mask: Option<std::sync::Arc<DropMask>>,
}

impl LoraLinear {
    fn masked(&self, x: &[f32]) -> candle_core::Result<Vec<f32>> {
        match &self.mask {
            Some(m) if m.len() == x.len() => Ok(m.apply(x)),
            Some(m) => candle_core::bail!("lora-linear: mask of {} for {} inputs", m.len(), x.len()),
            None => Ok(x.to_vec()),
        }
    }
}

fn tensor_from(s: &CpuStorage, l: &Layout, op: &str) -> candle_core::Result<Tensor> {
    let data = contiguous_f32(s, l, op)?;
    Tensor::from_slice(data, l.shape(), &candle_core::Device::Cpu)
}

impl candle_core::CustomOp3 for LoraLinear {
    fn name(&self) -> &'static str {
        "lora-linear"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sa: &CpuStorage,
        la: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (base, shape) = self.base.cpu_fwd(sx, lx)?;
        let x = contiguous_f32(sx, lx, "lora-linear")?;
        let k = last_dim(lx)?;
        let m = x.len() / k;
        let xin = Tensor::from_vec(self.masked(x)?, (m, k), &candle_core::Device::Cpu)?;
        let a = tensor_from(sa, la, "lora-linear")?;
        let b = tensor_from(sb, lb, "lora-linear")?;
        let delta = xin.matmul(&a.t()?)?.matmul(&b.t()?)?.flatten_all()?.to_vec1::<f32>()?;
        let CpuStorage::F32(mut y) = base else {
            candle_core::bail!("lora-linear: expected f32");
        };
        if y.len() != delta.len() {
            candle_core::bail!("lora-linear: base output {} vs adapter output {}", y.len(), delta.len());
        }
        let s = self.scale as f32;
        for (o, d) in y.iter_mut().zip(delta) {
            *o += s * d;
        }
        Ok((CpuStorage::F32(y), shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (a, b) = (a.detach(), b.detach());
        let k = x.dims().last().copied().unwrap_or(1);
        let n = b.dim(0)?;
        let m = x.elem_count() / k;
        let g = grad.detach().contiguous()?.reshape((m, n))?;
        let xin = with_f32(x, "lora-linear", |xs| self.masked(xs))?;
        let xin = Tensor::from_vec(xin, (m, k), x.device())?;
        let gb = g.matmul(&b)?; // [m, r]
        let grad_a = (gb.t()?.matmul(&xin)? * self.scale)?;
        let r = xin.matmul(&a.t()?)?; // [m, r]
        let grad_b = (g.t()?.matmul(&r)? * self.scale)?;
        let gx_lora = (gb.matmul(&a)? * self.scale)?.flatten_all()?.to_vec1::<f32>()?;
        let gx_lora = self.masked(&gx_lora)?;
        let gx_base = self
            .base
            .bwd(x, x, grad)?
            .ok_or_else(|| candle_core::Error::Msg("lora-linear: no base gradient".into()))?;
        let gx = (gx_base + Tensor::from_vec(gx_lora, x.shape(), x.device())?)?;
        Ok((Some(gx), Some(grad_a), Some(grad_b)))
    }
}
