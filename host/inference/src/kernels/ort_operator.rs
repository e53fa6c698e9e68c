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

use ort::operator::{ComputeContext, Kernel, KernelContext, Operator, OperatorDomain, OperatorInput, OperatorOutput};
use ort::value::TensorElementType;

use super::block_quant_matmul::{self, BlockQuantShape, MatMulError};

/// The operator domain of techne's kernels.
pub const DOMAIN: &str = "ai.techne";
/// The domain's version that exported graphs import.
pub const DOMAIN_VERSION: i64 = 1;
/// The block-quantised matrix product.
pub const BLOCK_QUANT_MATMUL: &str = "BlockQuantMatMul";

/// The domain with every techne operator, to register in a session of
/// `threads` intra-op threads.
pub fn operator_domain(threads: usize) -> ort::Result<OperatorDomain> {
    OperatorDomain::new(DOMAIN)?.add(BlockQuantMatMulOperator { batches: 2 * threads.max(1) })
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
        let attr = |name: &str| -> ort::Result<usize> {
            let v: i64 = kctx
                .get(name)
                .ok_or_else(|| ort::Error::new(format!("{BLOCK_QUANT_MATMUL}: missing attribute `{name}`")))?;
            usize::try_from(v).map_err(|_| ort::Error::new(format!("{BLOCK_QUANT_MATMUL}: `{name}` = {v}")))
        };
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
