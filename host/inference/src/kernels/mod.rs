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

/// A pointer to an output buffer shared by the parallel work items of one
/// kernel call, each of which writes its own disjoint part.
#[derive(Clone, Copy)]
pub(crate) struct SharedOut(*mut f32);
// SAFETY: the kernels give every work item a disjoint set of elements to
// write, and their `parallel` callbacks return only when all items are done,
// while the buffer is still borrowed.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The buffer the work items write.
    pub(crate) fn new(out: &mut [f32]) -> Self {
        Self(out.as_mut_ptr())
    }

    /// Element `i` of the buffer.
    ///
    /// # Safety
    /// `i` must be in bounds of the buffer, and no other work item may
    /// write that element.
    pub(crate) unsafe fn at(self, i: usize) -> *mut f32 {
        // SAFETY: as promised by the caller.
        unsafe { self.0.add(i) }
    }
}

/// Helpers the kernels' unit tests share.
#[cfg(test)]
pub(crate) mod test_support {
    /// A deterministic pseudo-random stream.
    pub(crate) struct Lcg(pub(crate) u64);

    impl Lcg {
        /// The next 31-bit value.
        pub(crate) fn next(&mut self) -> u32 {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (self.0 >> 33) as u32
        }

        /// A value in [−1, 1] in steps of 1e-4.
        pub(crate) fn f(&mut self) -> f32 {
            (self.next() % 20001) as f32 / 10000.0 - 1.0
        }
    }

    /// A `parallel` callback that runs the items in order on this thread.
    pub(crate) fn sequential<E>(items: usize, f: &(dyn Fn(usize) + Sync + Send)) -> Result<(), E> {
        (0..items).for_each(f);
        Ok(())
    }
}
