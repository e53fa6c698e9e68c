//! techne's kernels as ONNX Runtime custom operators.
//!
//! `ai.techne.BlockQuantMatMul(X: float[..., K], W: uint8[packed]) → float[..., N]`
//! (`N/2` outputs with `swiglu = 1`: `silu(gate)·up` of each (gate, up) pair
//! of tiles) with integer attributes `K`, `N`, `bits` (4 or 8), `layout` and
//! optionally `swiglu`: `W` is
//! packed by [`crate::kernels::block_quant_matmul::pack`] in layout
//! [`crate::kernels::block_quant_matmul::LAYOUT_VERSION`]. The product runs on
//! ONNX Runtime's intra-op thread pool (`par_for`), in twice as many
//! contiguous batches of tile pairs as the session has threads.
//!
//! `ai.techne.CausalAttention(qkv: float[B, S, (H + 2·G)·D], past_key,
//! past_value: float[B, G, C, D], seqlens_k: int32[B], cos_cache, sin_cache:
//! float[P, R/2]) → (output: float[B, S, H·D], present_key, present_value:
//! float[B, G, C, D])` with attributes `num_heads` (H), `kv_num_heads` (G)
//! and optionally `scale` (default `1/√D`):
//! [`crate::kernels::causal_attention`], with `GroupQueryAttention`'s
//! conventions for the inputs (row `b` has `seqlens_k[b] + 1` positions
//! after the step). The cache is updated in place when `present_*` are bound
//! to the same buffers as `past_*` (techne's engine does that), else copied
//! first.

use ort::operator::{ComputeContext, Kernel, KernelContext, Operator, OperatorDomain, OperatorInput, OperatorOutput};
use ort::value::TensorElementType;

use super::block_quant_matmul::{self, BlockQuantShape, MatMulError};
use super::causal_attention::{self, AttentionError, AttentionInputs, AttentionShape};

/// The operator domain of techne's kernels.
pub const DOMAIN: &str = "ai.techne";
/// The domain's version that exported graphs import.
pub const DOMAIN_VERSION: i64 = 1;
/// The block-quantised matrix product.
pub const BLOCK_QUANT_MATMUL: &str = "BlockQuantMatMul";
/// Causal attention over the key/value cache.
pub const CAUSAL_ATTENTION: &str = "CausalAttention";

/// The domain with every techne operator, to register in a session of
/// `threads` intra-op threads.
pub fn operator_domain(threads: usize) -> ort::Result<OperatorDomain> {
    let batches = 2 * threads.max(1);
    OperatorDomain::new(DOMAIN)?.add(BlockQuantMatMulOperator { batches })?.add(CausalAttentionOperator { batches })
}

/// Integer attribute `name` of an `op` node, required and at least `min`.
fn count_attribute(kctx: &KernelContext<'_>, op: &str, name: &str, min: usize) -> ort::Result<usize> {
    let v: i64 = kctx.get(name).ok_or_else(|| ort::Error::new(format!("{op}: missing attribute `{name}`")))?;
    usize::try_from(v).ok().filter(|&v| v >= min).ok_or_else(|| ort::Error::new(format!("{op}: `{name}` = {v}")))
}

/// [`BLOCK_QUANT_MATMUL`] as an ONNX Runtime operator.
struct BlockQuantMatMulOperator {
    /// Contiguous batches of work items per product (each thread then
    /// streams its own part of the weights; two per thread even out
    /// threads that start late).
    batches: usize,
}

/// One node's kernel: the weight shape from the node's attributes.
struct BlockQuantMatMulKernel {
    shape: BlockQuantShape,
    batches: usize,
}

impl From<MatMulError> for ort::Error {
    fn from(e: MatMulError) -> Self {
        ort::Error::new(format!("{BLOCK_QUANT_MATMUL}: {e}"))
    }
}

impl Operator for BlockQuantMatMulOperator {
    type Kernel<'attr> = BlockQuantMatMulKernel;

    fn name(&self) -> &str {
        BLOCK_QUANT_MATMUL
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        [OperatorInput::required(TensorElementType::Float32), OperatorInput::required(TensorElementType::Uint8)]
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [OperatorOutput::required(TensorElementType::Float32)]
    }

    fn create_kernel<'attr>(&self, kctx: &KernelContext<'attr>) -> ort::Result<Self::Kernel<'attr>> {
        let attr = |name: &str| count_attribute(kctx, BLOCK_QUANT_MATMUL, name, 0);
        let layout: i64 = kctx.get("layout").unwrap_or(0);
        if layout != block_quant_matmul::LAYOUT_VERSION {
            return Err(ort::Error::new(format!(
                "{BLOCK_QUANT_MATMUL}: weights packed with layout {layout}, this build reads layout {}: \
                 re-import the model (techne models import)",
                block_quant_matmul::LAYOUT_VERSION
            )));
        }
        let bits = attr("bits")?;
        let shape = BlockQuantShape {
            k: attr("K")?,
            n: attr("N")?,
            bits: u8::try_from(bits).map_err(|_| ort::Error::new(format!("{BLOCK_QUANT_MATMUL}: bits = {bits}")))?,
            swiglu: kctx.get::<i64>("swiglu").unwrap_or(0) != 0,
            int8: kctx.get::<i64>("int8").unwrap_or(0) != 0,
        };
        shape.validate().map_err(|e| ort::Error::new(format!("{BLOCK_QUANT_MATMUL}: {e}")))?;
        Ok(BlockQuantMatMulKernel { shape, batches: self.batches })
    }
}

impl Kernel for BlockQuantMatMulKernel {
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        let missing = |i: usize| ort::Error::new(format!("{BLOCK_QUANT_MATMUL}: input {i} is missing"));
        let x = ctx.input(0)?.ok_or_else(|| missing(0))?;
        let w = ctx.input(1)?.ok_or_else(|| missing(1))?;
        let (x_shape, x) = x.try_extract_tensor::<f32>()?;
        let (_, w) = w.try_extract_tensor::<u8>()?;
        let dims: Vec<i64> = x_shape.iter().copied().collect();
        let last = dims.last().copied().unwrap_or(0);
        if usize::try_from(last).ok() != Some(self.shape.k) {
            return Err(ort::Error::new(format!(
                "{BLOCK_QUANT_MATMUL}: input has shape {dims:?}, its last dimension must be K = {}",
                self.shape.k
            )));
        }
        let rows = x.len() / self.shape.k;
        let mut out_dims = dims;
        if let Some(l) = out_dims.last_mut() {
            *l = self.shape.outputs() as i64;
        }
        let mut y =
            ctx.output(0, out_dims)?.ok_or_else(|| ort::Error::new(format!("{BLOCK_QUANT_MATMUL}: no output")))?;
        let (_, y) = y.try_extract_tensor_mut::<f32>()?;
        block_quant_matmul::matmul(&self.shape, w, x, rows, y, |items, f| ctx.par_for(items, self.batches, f))
    }
}

/// [`CAUSAL_ATTENTION`] as an ONNX Runtime operator.
struct CausalAttentionOperator {
    /// Contiguous batches of work items per call.
    batches: usize,
}

/// One node's kernel: the head counts and scale from its attributes.
struct CausalAttentionKernel {
    heads: usize,
    kv_heads: usize,
    scale: Option<f32>,
    batches: usize,
}

impl From<AttentionError> for ort::Error {
    fn from(e: AttentionError) -> Self {
        ort::Error::new(format!("{CAUSAL_ATTENTION}: {e}"))
    }
}

impl Operator for CausalAttentionOperator {
    type Kernel<'attr> = CausalAttentionKernel;

    fn name(&self) -> &str {
        CAUSAL_ATTENTION
    }

    fn inputs(&self) -> impl IntoIterator<Item = OperatorInput> {
        use TensorElementType::{Float32, Int32};
        [Float32, Float32, Float32, Int32, Float32, Float32].map(OperatorInput::required)
    }

    fn outputs(&self) -> impl IntoIterator<Item = OperatorOutput> {
        [TensorElementType::Float32; 3].map(OperatorOutput::required)
    }

    fn create_kernel<'attr>(&self, kctx: &KernelContext<'attr>) -> ort::Result<Self::Kernel<'attr>> {
        let attr = |name: &str| count_attribute(kctx, CAUSAL_ATTENTION, name, 1);
        Ok(CausalAttentionKernel {
            heads: attr("num_heads")?,
            kv_heads: attr("kv_num_heads")?,
            scale: kctx.get::<f32>("scale"),
            batches: self.batches,
        })
    }
}

impl Kernel for CausalAttentionKernel {
    fn compute(&mut self, ctx: &ComputeContext) -> ort::Result<()> {
        let error = |m: String| ort::Error::new(format!("{CAUSAL_ATTENTION}: {m}"));
        let input = |i: usize| ctx.input(i)?.ok_or_else(|| error(format!("input {i} is missing")));
        let (qkv_in, past_k_in, past_v_in, seqlens_in, cos_in, sin_in) =
            (input(0)?, input(1)?, input(2)?, input(3)?, input(4)?, input(5)?);
        let (qkv_shape, qkv) = qkv_in.try_extract_tensor::<f32>()?;
        let (cache_shape, past_k) = past_k_in.try_extract_tensor::<f32>()?;
        let (v_shape, past_v) = past_v_in.try_extract_tensor::<f32>()?;
        let (_, seqlens) = seqlens_in.try_extract_tensor::<i32>()?;
        let (cos_shape, cos) = cos_in.try_extract_tensor::<f32>()?;
        let (_, sin) = sin_in.try_extract_tensor::<f32>()?;
        let dims = |s: &ort::value::Shape| s.iter().map(|&d| usize::try_from(d).unwrap_or(0)).collect::<Vec<_>>();
        let (q, c, r) = (dims(qkv_shape), dims(cache_shape), dims(cos_shape));
        let [rows, seq, width] = q[..] else {
            return Err(error(format!("qkv has shape {q:?}, expected 3 dimensions")));
        };
        let [crows, kv_heads, capacity, head_dim] = c[..] else {
            return Err(error(format!("past_key has shape {c:?}, expected 4 dimensions")));
        };
        let [_, half] = r[..] else { return Err(error(format!("cos_cache has shape {r:?}, expected 2 dimensions"))) };
        if crows != rows || kv_heads != self.kv_heads || width != (self.heads + 2 * self.kv_heads) * head_dim {
            return Err(error(format!(
                "qkv {q:?} and past_key {c:?} do not fit {} query and {} key/value heads",
                self.heads, self.kv_heads
            )));
        }
        if v_shape != cache_shape || seqlens.len() != rows {
            return Err(error(format!("past_value has shape {v_shape:?} and seqlens_k {} values", seqlens.len())));
        }
        let past = seqlens
            .iter()
            .map(|&l| {
                usize::try_from(i64::from(l) + 1 - seq as i64).map_err(|_| error(format!("seqlens_k {l} < {seq} − 1")))
            })
            .collect::<ort::Result<Vec<usize>>>()?;
        let shape = AttentionShape { heads: self.heads, kv_heads, head_dim, rotary_dim: 2 * half, capacity };
        let scale = self.scale.unwrap_or(1.0 / (head_dim as f32).sqrt());
        let inputs = AttentionInputs { qkv, seq, past: &past, cos, sin, scale };
        let (past_k, past_v) = ((past_k.as_ptr(), past_k.len()), (past_v.as_ptr(), past_v.len()));
        let cache_dims: Vec<i64> = cache_shape.iter().copied().collect();
        let mut out = ctx
            .output(0, vec![rows as i64, seq as i64, (self.heads * head_dim) as i64])?
            .ok_or_else(|| error("no output".into()))?;
        let mut present_k = ctx.output(1, cache_dims.clone())?.ok_or_else(|| error("no present_key".into()))?;
        let mut present_v = ctx.output(2, cache_dims)?.ok_or_else(|| error("no present_value".into()))?;
        let (_, out) = out.try_extract_tensor_mut::<f32>()?;
        let (_, keys) = present_k.try_extract_tensor_mut::<f32>()?;
        let (_, values) = present_v.try_extract_tensor_mut::<f32>()?;
        for ((from, len), to) in [(past_k, &mut *keys), (past_v, &mut *values)] {
            if from != to.as_ptr() {
                if len != to.len() {
                    return Err(error("present and past caches differ in size".into()));
                }
                // SAFETY: `from` points to the past input's `len` floats,
                // alive while the inputs are, and the present output is
                // another buffer of the same length.
                unsafe { std::ptr::copy_nonoverlapping(from, to.as_mut_ptr(), len) };
            }
        }
        causal_attention::causal_attention(&shape, inputs, keys, values, out, |items, f| {
            ctx.par_for(items, self.batches, f)
        })
    }
}
