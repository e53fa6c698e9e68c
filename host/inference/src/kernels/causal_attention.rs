//! Causal self-attention with rotary position embeddings over a key/value
//! cache, computed so that a query gives the same bits whether it comes in a
//! one-token decode step or in a many-token pass: the kernel behind techne's
//! `CausalAttention` operator ([`super::ort_operator`]).
//!
//! ONNX Runtime's `GroupQueryAttention` runs a many-token pass through matrix
//! products and a one-token step through other loops, so the two differ in
//! their last bits; once activations are rounded to int8
//! ([`super::block_quant_matmul`]), such differences grow into visible
//! log-probability differences between scoring a text and generating it.
//! Here every query is computed by one function, in one order, whatever
//! the number of queries, rows or threads.
//!
//! # What it computes
//! `qkv` is `[rows, seq, (heads + 2·kv_heads)·head_dim]`: each position's
//! queries, then keys, then values. Row `b` already holds `past[b]`
//! positions in the cache (`[rows, kv_heads, capacity, head_dim]` for keys
//! and for values), and its `seq` new positions are `past[b] ..
//! past[b] + seq`. For each new position `p`:
//! 1. the first `rotary_dim` elements of its queries and keys are rotated
//!    in interleaved pairs: `(x₀, x₁) → (x₀·cos − x₁·sin, x₀·sin + x₁·cos)`
//!    with `cos[p][i]`, `sin[p][i]` for pair `i`;
//! 2. its keys and values are written to the cache at `p`;
//! 3. each query head `h` (on key/value head `h / (heads / kv_heads)`)
//!    attends to positions `0 ..= p`: scores `s_j = q · k_j`, weights
//!    `e^((s_j − max s)·scale)` ([`super::exp`]), and the output
//!    `(Σ_j w_j·v_j) · (1 / Σ_j w_j)`.
//!
//! # Order of operations
//! Sums of products (`q · k_j`, the weights' sum) run in 16 lanes, element
//! `i` into lane `i mod 16` in increasing `i`, then the lanes are added
//! pairwise (8 pairs, 4, 2, 1). `Σ_j w_j·v_j` adds positions in increasing
//! `j`. Products and sums are separate operations (no fused multiply-add),
//! so the compiler's SIMD forms give the same bits as scalar code.

use super::SharedOut;

/// Why attention cannot be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AttentionError {
    /// The head counts or sizes do not fit together.
    #[error("invalid attention shape: {0}")]
    Shape(String),
    /// An array has the wrong length.
    #[error("{what}: expected {expected} values, found {found}")]
    Length {
        /// Which array.
        what: &'static str,
        /// The length the shape implies.
        expected: usize,
        /// The length given.
        found: usize,
    },
    /// A row's positions run past the cache or the rotary tables.
    #[error("row {row}: positions up to {needed} do not fit in {available}")]
    Overflow {
        /// The row.
        row: usize,
        /// Positions it needs.
        needed: usize,
        /// Positions there are.
        available: usize,
    },
}

/// The sizes of one attention layer and its cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (a divisor of `heads`).
    pub kv_heads: usize,
    /// Elements per head.
    pub head_dim: usize,
    /// Elements of each head that are rotated (even, at most `head_dim`).
    pub rotary_dim: usize,
    /// Positions per row of the cache.
    pub capacity: usize,
}

impl AttentionShape {
    /// Checks that the sizes fit together.
    pub fn validate(&self) -> Result<(), AttentionError> {
        let bad = |m: String| Err(AttentionError::Shape(m));
        if self.heads == 0 || self.kv_heads == 0 || !self.heads.is_multiple_of(self.kv_heads) {
            return bad(format!("{} query heads cannot share {} key/value heads", self.heads, self.kv_heads));
        }
        if self.head_dim == 0 || self.rotary_dim > self.head_dim || !self.rotary_dim.is_multiple_of(2) {
            return bad(format!("rotary size {} with head size {}", self.rotary_dim, self.head_dim));
        }
        let fits = (self.heads + 2 * self.kv_heads)
            .checked_mul(self.head_dim)
            .and_then(|w| w.checked_mul(self.capacity.max(1)))
            .is_some_and(|n| n <= isize::MAX as usize / 4);
        if !fits {
            return bad("too large".into());
        }
        Ok(())
    }

    /// Elements of one position of `qkv`.
    pub fn qkv_width(&self) -> usize {
        (self.heads + 2 * self.kv_heads) * self.head_dim
    }

    /// Elements of one row of the key (or value) cache.
    pub fn cache_row(&self) -> usize {
        self.kv_heads * self.capacity * self.head_dim
    }
}

/// The inputs of one call: `rows` rows of `seq` new positions.
#[derive(Debug, Clone, Copy)]
pub struct AttentionInputs<'a> {
    /// `[rows, seq, qkv_width]`.
    pub qkv: &'a [f32],
    /// New positions per row.
    pub seq: usize,
    /// Positions each row already holds in the cache (`rows` values).
    pub past: &'a [usize],
    /// `[positions, rotary_dim / 2]` cosines.
    pub cos: &'a [f32],
    /// `[positions, rotary_dim / 2]` sines.
    pub sin: &'a [f32],
    /// The softmax scale (usually `1/√head_dim`).
    pub scale: f32,
}

/// Computes attention for every new position (`out` is `[rows, seq,
/// heads·head_dim]`), writing the new keys and values into `keys` and
/// `values` (`[rows, kv_heads, capacity, head_dim]` each).
///
/// `parallel(items, f)` must call `f(i)` once for every `i < items`, in any
/// order and on any threads, and return when all calls have returned. The
/// result does not depend on how the items are scheduled.
pub fn causal_attention<E>(
    shape: &AttentionShape,
    inputs: AttentionInputs<'_>,
    keys: &mut [f32],
    values: &mut [f32],
    out: &mut [f32],
    parallel: impl FnOnce(usize, &(dyn Fn(usize) + Sync + Send)) -> Result<(), E>,
) -> Result<(), E>
where
    E: From<AttentionError>,
{
    shape.validate()?;
    let AttentionInputs { qkv, seq, past, cos, sin, scale } = inputs;
    let rows = past.len();
    let (hd, half) = (shape.head_dim, shape.rotary_dim / 2);
    let positions = cos.len().checked_div(half).unwrap_or(usize::MAX);
    for (what, expected, found) in [
        ("qkv", rows * seq * shape.qkv_width(), qkv.len()),
        ("keys", rows * shape.cache_row(), keys.len()),
        ("values", rows * shape.cache_row(), values.len()),
        ("output", rows * seq * shape.heads * hd, out.len()),
        ("sines", cos.len(), sin.len()),
    ] {
        if expected != found {
            return Err(AttentionError::Length { what, expected, found }.into());
        }
    }
    for (row, &p) in past.iter().enumerate() {
        let needed = p.saturating_add(seq);
        let available = shape.capacity.min(positions);
        if needed > available {
            return Err(AttentionError::Overflow { row, needed, available }.into());
        }
    }
    if rows == 0 || seq == 0 {
        return Ok(());
    }
    // New keys (rotated) and values into the cache.
    let width = shape.qkv_width();
    for (b, &p0) in past.iter().enumerate() {
        for i in 0..seq {
            let p = p0 + i;
            let at = &qkv[(b * seq + i) * width..][..width];
            for g in 0..shape.kv_heads {
                let dst = (b * shape.kv_heads + g) * shape.capacity * hd + p * hd;
                let k = &at[(shape.heads + g) * hd..][..hd];
                let v = &at[(shape.heads + shape.kv_heads + g) * hd..][..hd];
                rotate(k, &cos[p * half..][..half], &sin[p * half..][..half], &mut keys[dst..][..hd]);
                values[dst..][..hd].copy_from_slice(v);
            }
        }
    }
    // Then every (row, key/value head, group of new positions) on its own:
    // the query heads that share a key/value head read its cache together.
    let groups = seq.div_ceil(QUERIES_PER_ITEM);
    let items = rows * shape.kv_heads * groups;
    let sharing = shape.heads / shape.kv_heads;
    let (keys, values) = (&*keys, &*values);
    let out_ptr = SharedOut::new(out);
    let path = Path::best();
    let item = move |it: usize| {
        let (b, rest) = (it / (shape.kv_heads * groups), it % (shape.kv_heads * groups));
        let (g, group) = (rest / groups, rest % groups);
        let cache = (b * shape.kv_heads + g) * shape.capacity * hd;
        let last = ((group + 1) * QUERIES_PER_ITEM).min(seq);
        let mut q = vec![0f32; hd];
        let mut scores = vec![0f32; past[b] + last];
        let mut acc = vec![0f32; hd];
        for i in group * QUERIES_PER_ITEM..last {
            let p = past[b] + i;
            let (keys, values) = (&keys[cache..][..(p + 1) * hd], &values[cache..][..(p + 1) * hd]);
            for h in g * sharing..(g + 1) * sharing {
                let src = &qkv[(b * seq + i) * width + h * hd..][..hd];
                rotate(src, &cos[p * half..][..half], &sin[p * half..][..half], &mut q);
                path.attend(Query { q: &q, keys, values, scale }, &mut scores[..=p], &mut acc);
                // SAFETY: element range (b, i, h) of `out` is in bounds
                // (length checked above) and written by this item alone.
                unsafe {
                    std::ptr::copy_nonoverlapping(acc.as_ptr(), out_ptr.at(((b * seq + i) * shape.heads + h) * hd), hd)
                };
            }
        }
    };
    parallel(items, &item)
}

/// New positions one work item computes (of one row and key/value head).
const QUERIES_PER_ITEM: usize = 16;

/// Rotates the first `2·cos.len()` elements of `x` in interleaved pairs into
/// `out`, and copies the rest.
fn rotate(x: &[f32], cos: &[f32], sin: &[f32], out: &mut [f32]) {
    let rotated = 2 * cos.len();
    for (i, (&c, &s)) in cos.iter().zip(sin).enumerate() {
        let (x0, x1) = (x[2 * i], x[2 * i + 1]);
        out[2 * i] = x0 * c - x1 * s;
        out[2 * i + 1] = x0 * s + x1 * c;
    }
    out[rotated..].copy_from_slice(&x[rotated..]);
}

/// One query against the cached positions `0 ..= p` of its key/value head.
#[derive(Clone, Copy)]
struct Query<'a> {
    q: &'a [f32],
    /// `[p + 1, head_dim]`.
    keys: &'a [f32],
    /// `[p + 1, head_dim]`.
    values: &'a [f32],
    scale: f32,
}

/// The instruction sets the per-query loops are compiled for; the code is
/// the same, so the bits are too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

impl Path {
    fn best() -> Path {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Path::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                return Path::Avx2;
            }
        }
        Path::Portable
    }

    /// `acc` = the attention output of `query`; `scores` has `p + 1`
    /// elements of scratch.
    fn attend(self, query: Query<'_>, scores: &mut [f32], acc: &mut [f32]) {
        match self {
            // SAFETY: `best` chose these only where the CPU has them.
            #[cfg(target_arch = "x86_64")]
            Path::Avx512 => unsafe { attend_avx512(query, scores, acc) },
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => unsafe { attend_avx2(query, scores, acc) },
            Path::Portable => attend(query, scores, acc),
        }
    }
}

/// [`attend`] written out in AVX-512 registers (16 lanes are one
/// register), with the same operations in the same order.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn attend_avx512(query: Query<'_>, scores: &mut [f32], acc: &mut [f32]) {
    use std::arch::x86_64::*;
    let hd = query.q.len();
    let full = hd / LANES;
    let tail: __mmask16 = ((1u32 << (hd % LANES)) - 1) as __mmask16;
    // The lanes of a 16-lane sum added pairwise (8 pairs, 4, then scalar).
    let reduce = |v: __m512| -> f32 {
        let v = _mm512_add_ps(v, _mm512_shuffle_f32x4::<0b11_10_11_10>(v, v));
        let v = _mm512_add_ps(v, _mm512_shuffle_f32x4::<0b01_01_01_01>(v, v));
        let mut b = [0f32; LANES];
        // SAFETY: `b` holds 16 floats.
        unsafe { _mm512_storeu_ps(b.as_mut_ptr(), v) };
        (b[0] + b[2]) + (b[1] + b[3])
    };
    let qp = query.q.as_ptr();
    for (s, k) in scores.iter_mut().zip(query.keys.chunks_exact(hd)) {
        let kp = k.as_ptr();
        let mut lanes = _mm512_setzero_ps();
        for c in 0..full {
            // SAFETY: chunk c of 16 floats lies inside `q` and `k` (hd each).
            let (x, y) = unsafe { (_mm512_loadu_ps(qp.add(c * LANES)), _mm512_loadu_ps(kp.add(c * LANES))) };
            lanes = _mm512_add_ps(lanes, _mm512_mul_ps(x, y));
        }
        if tail != 0 {
            // SAFETY: the masked lanes lie inside `q` and `k`.
            let (x, y) = unsafe {
                (_mm512_maskz_loadu_ps(tail, qp.add(full * LANES)), _mm512_maskz_loadu_ps(tail, kp.add(full * LANES)))
            };
            lanes = _mm512_mask_add_ps(lanes, tail, lanes, _mm512_mul_ps(x, y));
        }
        *s = reduce(lanes);
    }
    let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
    super::exp::exp_scaled_in_place(scores, max, query.scale);
    let mut lanes = _mm512_setzero_ps();
    let chunks = scores.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        // SAFETY: 16 floats.
        lanes = _mm512_add_ps(lanes, unsafe { _mm512_loadu_ps(chunk.as_ptr()) });
    }
    if !rest.is_empty() {
        let m: __mmask16 = ((1u32 << rest.len()) - 1) as __mmask16;
        // SAFETY: the masked lanes lie inside `rest`.
        lanes = _mm512_mask_add_ps(lanes, m, lanes, unsafe { _mm512_maskz_loadu_ps(m, rest.as_ptr()) });
    }
    let inverse = 1.0 / reduce(lanes);
    let ap = acc.as_mut_ptr();
    for c in 0..hd.div_ceil(LANES) {
        let m: __mmask16 = if c < full { 0xFFFF } else { tail };
        let mut out = _mm512_setzero_ps();
        for (&w, v) in scores.iter().zip(query.values.chunks_exact(hd)) {
            // SAFETY: the masked lanes of chunk c lie inside `v`.
            let x = unsafe { _mm512_maskz_loadu_ps(m, v.as_ptr().add(c * LANES)) };
            out = _mm512_add_ps(out, _mm512_mul_ps(_mm512_set1_ps(w), x));
        }
        // SAFETY: the masked lanes of chunk c lie inside `acc`.
        unsafe { _mm512_mask_storeu_ps(ap.add(c * LANES), m, _mm512_mul_ps(out, _mm512_set1_ps(inverse))) };
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn attend_avx2(query: Query<'_>, scores: &mut [f32], acc: &mut [f32]) {
    attend(query, scores, acc)
}

/// Lanes of the fixed-order sums.
const LANES: usize = 16;

/// `Σ aᵢ·bᵢ` in the documented order.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..LANES {
            lanes[l] += x[l] * y[l];
        }
    }
    for (l, (x, y)) in ar.iter().zip(br).enumerate() {
        lanes[l] += x * y;
    }
    reduce(lanes)
}

/// `Σ aᵢ` in the documented order.
#[inline(always)]
fn sum(a: &[f32]) -> f32 {
    let mut lanes = [0f32; LANES];
    let chunks = a.chunks_exact(LANES);
    let rest = chunks.remainder();
    for x in chunks {
        for l in 0..LANES {
            lanes[l] += x[l];
        }
    }
    for (l, x) in rest.iter().enumerate() {
        lanes[l] += x;
    }
    reduce(lanes)
}

/// The lanes added pairwise: 8 pairs, 4, 2, 1.
#[inline(always)]
fn reduce(mut lanes: [f32; LANES]) -> f32 {
    let mut width = LANES / 2;
    while width > 0 {
        for l in 0..width {
            lanes[l] += lanes[l + width];
        }
        width /= 2;
    }
    lanes[0]
}

/// One query's output, in the documented order.
#[inline(always)]
fn attend(query: Query<'_>, scores: &mut [f32], acc: &mut [f32]) {
    let hd = query.q.len();
    for (s, k) in scores.iter_mut().zip(query.keys.chunks_exact(hd)) {
        *s = dot(query.q, k);
    }
    let max = scores.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
    super::exp::exp_scaled_in_place(scores, max, query.scale);
    let total = sum(scores);
    acc.fill(0.0);
    for (&w, v) in scores.iter().zip(query.values.chunks_exact(hd)) {
        for (a, &x) in acc.iter_mut().zip(v) {
            *a += w * x;
        }
    }
    let inverse = 1.0 / total;
    for a in acc.iter_mut() {
        *a *= inverse;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::kernels::test_support::{Lcg, sequential};

    const SHAPE: AttentionShape = AttentionShape { heads: 4, kv_heads: 2, head_dim: 24, rotary_dim: 16, capacity: 40 };

    fn tables(positions: usize, half: usize) -> (Vec<f32>, Vec<f32>) {
        let mut cos = Vec::new();
        let mut sin = Vec::new();
        for p in 0..positions {
            for i in 0..half {
                let angle = p as f64 / 10000f64.powf(2.0 * i as f64 / (2 * half) as f64);
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        (cos, sin)
    }

    /// Attention in f64 with the rotation, for a tolerance check: the
    /// outputs of one row's positions `0..n` given all at once.
    fn exact(shape: &AttentionShape, qkv: &[f32], n: usize, cos: &[f32], sin: &[f32], scale: f32) -> Vec<f64> {
        let (hd, half, w) = (shape.head_dim, shape.rotary_dim / 2, shape.qkv_width());
        let rot = |x: &[f32], p: usize| -> Vec<f64> {
            let mut o: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
            for i in 0..half {
                let (c, s) = (f64::from(cos[p * half + i]), f64::from(sin[p * half + i]));
                let (x0, x1) = (o[2 * i], o[2 * i + 1]);
                o[2 * i] = x0 * c - x1 * s;
                o[2 * i + 1] = x0 * s + x1 * c;
            }
            o
        };
        let mut out = vec![0f64; n * shape.heads * hd];
        for p in 0..n {
            for h in 0..shape.heads {
                let g = h / (shape.heads / shape.kv_heads);
                let q = rot(&qkv[p * w + h * hd..][..hd], p);
                let scores: Vec<f64> = (0..=p)
                    .map(|j| {
                        let k = rot(&qkv[j * w + (shape.heads + g) * hd..][..hd], j);
                        q.iter().zip(&k).map(|(a, b)| a * b).sum::<f64>() * f64::from(scale)
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let ws: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let total: f64 = ws.iter().sum();
                for (j, wj) in ws.iter().enumerate() {
                    let v = &qkv[j * w + (shape.heads + shape.kv_heads + g) * hd..][..hd];
                    for d in 0..hd {
                        out[(p * shape.heads + h) * hd + d] += wj / total * f64::from(v[d]);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn a_many_position_pass_equals_one_position_steps_bit_for_bit_and_the_exact_attention() {
        let shape = SHAPE;
        let n = 37;
        let mut g = Lcg(3);
        let qkv: Vec<f32> = (0..n * shape.qkv_width()).map(|_| g.f() * 2.0).collect();
        let (cos, sin) = tables(shape.capacity, shape.rotary_dim / 2);
        let scale = 1.0 / (shape.head_dim as f32).sqrt();
        let out_width = shape.heads * shape.head_dim;
        // All positions in one pass.
        let (mut k1, mut v1) = (vec![0f32; shape.cache_row()], vec![0f32; shape.cache_row()]);
        let mut pass = vec![0f32; n * out_width];
        let inputs = AttentionInputs { qkv: &qkv, seq: n, past: &[0], cos: &cos, sin: &sin, scale };
        causal_attention(&shape, inputs, &mut k1, &mut v1, &mut pass, sequential::<AttentionError>).expect("pass");
        let exact = exact(&shape, &qkv, n, &cos, &sin, scale);
        for (a, e) in pass.iter().zip(&exact) {
            assert!((f64::from(*a) - e).abs() < 1e-5, "{a} vs {e}");
        }
        // A prefix of 10, then one position at a time, in reverse item order on two threads.
        let (mut k2, mut v2) = (vec![0f32; shape.cache_row()], vec![0f32; shape.cache_row()]);
        let mut steps = vec![0f32; n * out_width];
        let w = shape.qkv_width();
        let inputs = AttentionInputs { qkv: &qkv[..10 * w], seq: 10, past: &[0], cos: &cos, sin: &sin, scale };
        causal_attention(&shape, inputs, &mut k2, &mut v2, &mut steps[..10 * out_width], sequential::<AttentionError>)
            .expect("prefix");
        for p in 10..n {
            let inputs = AttentionInputs { qkv: &qkv[p * w..][..w], seq: 1, past: &[p], cos: &cos, sin: &sin, scale };
            let threads = |items: usize, f: &(dyn Fn(usize) + Sync + Send)| {
                std::thread::scope(|s| {
                    let (a, b) = (0..items).rev().partition::<Vec<usize>, _>(|i| i % 2 == 0);
                    s.spawn(|| a.into_iter().for_each(f));
                    s.spawn(|| b.into_iter().for_each(f));
                });
                Ok::<(), AttentionError>(())
            };
            causal_attention(&shape, inputs, &mut k2, &mut v2, &mut steps[p * out_width..][..out_width], threads)
                .expect("step");
        }
        assert_eq!(
            pass.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            steps.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(k1, k2);
        assert_eq!(v1, v2);
    }

    #[test]
    fn rows_of_a_batch_equal_each_row_alone() {
        let shape = SHAPE;
        let w = shape.qkv_width();
        let out_width = shape.heads * shape.head_dim;
        let (cos, sin) = tables(shape.capacity, shape.rotary_dim / 2);
        let mut g = Lcg(8);
        let past = [3usize, 0, 12];
        let caches: Vec<f32> = (0..past.len() * shape.cache_row()).map(|_| g.f()).collect();
        let qkv: Vec<f32> = (0..past.len() * w).map(|_| g.f()).collect();
        let (mut k, mut v) = (caches.clone(), caches.iter().map(|x| -x).collect::<Vec<_>>());
        let mut batch = vec![0f32; past.len() * out_width];
        let inputs = AttentionInputs { qkv: &qkv, seq: 1, past: &past, cos: &cos, sin: &sin, scale: 0.3 };
        causal_attention(&shape, inputs, &mut k, &mut v, &mut batch, sequential::<AttentionError>).expect("batch");
        for (b, &p) in past.iter().enumerate() {
            let row = shape.cache_row();
            let mut k1 = caches[b * row..][..row].to_vec();
            let mut v1: Vec<f32> = k1.iter().map(|x| -x).collect();
            let mut one = vec![0f32; out_width];
            let inputs =
                AttentionInputs { qkv: &qkv[b * w..][..w], seq: 1, past: &[p], cos: &cos, sin: &sin, scale: 0.3 };
            causal_attention(&shape, inputs, &mut k1, &mut v1, &mut one, sequential::<AttentionError>).expect("alone");
            assert_eq!(one, batch[b * out_width..][..out_width].to_vec(), "row {b}");
            assert_eq!(k1, k[b * row..][..row].to_vec());
        }
    }

    #[test]
    fn every_path_computes_a_query_with_the_same_bits() {
        let mut g = Lcg(17);
        for (hd, positions) in [(64usize, 1usize), (64, 37), (24, 16), (24, 5), (80, 100), (8, 3)] {
            let q: Vec<f32> = (0..hd).map(|_| g.f()).collect();
            let keys: Vec<f32> = (0..positions * hd).map(|_| g.f() * 3.0).collect();
            let values: Vec<f32> = (0..positions * hd).map(|_| g.f()).collect();
            let query = Query { q: &q, keys: &keys, values: &values, scale: 0.125 };
            let (mut s1, mut a1) = (vec![0f32; positions], vec![0f32; hd]);
            attend(query, &mut s1, &mut a1);
            for path in [
                #[cfg(target_arch = "x86_64")]
                Path::Avx512,
                #[cfg(target_arch = "x86_64")]
                Path::Avx2,
            ] {
                #[cfg(target_arch = "x86_64")]
                {
                    let has = match path {
                        Path::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
                        Path::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
                        Path::Portable => true,
                    };
                    if !has {
                        continue;
                    }
                }
                let (mut s2, mut a2) = (vec![0f32; positions], vec![0f32; hd]);
                path.attend(query, &mut s2, &mut a2);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&a1), bits(&a2), "{path:?}: head size {hd}, {positions} positions");
                assert_eq!(bits(&s1), bits(&s2), "{path:?}: weights");
            }
        }
    }

    #[test]
    fn bad_calls_are_errors() {
        let shape = SHAPE;
        let (cos, sin) = tables(8, shape.rotary_dim / 2);
        let w = shape.qkv_width();
        let (mut k, mut v) = (vec![0f32; shape.cache_row()], vec![0f32; shape.cache_row()]);
        let mut out = vec![0f32; shape.heads * shape.head_dim];
        let qkv = vec![0f32; w];
        let inputs = AttentionInputs { qkv: &qkv, seq: 1, past: &[8], cos: &cos, sin: &sin, scale: 1.0 };
        assert_eq!(
            causal_attention(&shape, inputs, &mut k, &mut v, &mut out, sequential::<AttentionError>),
            Err(AttentionError::Overflow { row: 0, needed: 9, available: 8 })
        );
        let inputs = AttentionInputs { qkv: &qkv[1..], seq: 1, past: &[0], cos: &cos, sin: &sin, scale: 1.0 };
        assert!(matches!(
            causal_attention(&shape, inputs, &mut k, &mut v, &mut out, sequential::<AttentionError>),
            Err(AttentionError::Length { what: "qkv", .. })
        ));
        let bad = AttentionShape { kv_heads: 3, ..shape };
        assert!(matches!(bad.validate(), Err(AttentionError::Shape(_))));
    }
}
