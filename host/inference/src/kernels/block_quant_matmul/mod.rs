//! `y = x · Wᵀ` for a weight matrix stored in 4- or 8-bit blocks, computed in
//! f32 without ever materialising the f32 weights: the kernel behind techne's
//! `BlockQuantMatMul` operator ([`super::ort_operator`]).
//!
//! ONNX Runtime's `MatMulNBits` with f32 compute decodes one row well but, for
//! two or more rows, dequantises the whole matrix on every call; its int8
//! kernels round the activations, which turns last-bit differences between a
//! one-token decode step and a many-token pass into visible log-probability
//! differences. This kernel decodes each block of weights once per group of
//! up to [`ROWS_PER_PASS`] rows, straight into registers, and computes every
//! output element in one fixed order whatever the number of rows, the
//! thread count or the code path (AVX-512 or portable): a row of a batch is
//! bit-identical to the same row alone, and to [`reference`].
//!
//! # Packed layout
//! The `N` output columns are cut into pairs of tiles of [`TILE`] columns
//! (the last ones padded with zero weights), the `K` inputs into blocks of
//! [`BLOCK`]. For each pair of tiles, then each block, then each tile of the
//! pair, one record of [`record_bytes`] bytes, so that a pair (the unit of
//! parallel work) reads one contiguous stream:
//! - the codes: for 4 bits, 16 groups of 16 bytes, group `p` holding
//!   column `j`'s codes of inputs `2p` (low nibble) and `2p+1` (high
//!   nibble) in byte `j`; for 8 bits, 32 groups of 16 bytes, one per input;
//! - 16 scales `s`, then 16 offsets `o`, as little-endian IEEE f16.
//!
//! A weight is `w = s·c + o`: Q4_1's `d·q + m` directly, Q4_0's and Q8_0's
//! `d·(q − zp)` as `o = −d·zp`.
//!
//! With [`BlockQuantShape::int8`] the codes of a record are arranged for
//! 4-byte integer dot products instead: chunks of 64 bytes in which byte
//! `4j + i` belongs to column `j`. For 8 bits, chunk `g` holds inputs
//! `4g + i`; for 4 bits, chunk `g` holds inputs `4g + i` in its low nibbles
//! and `16 + 4g + i` in its high nibbles.
//!
//! # SwiGLU
//! With [`BlockQuantShape::swiglu`] the two tiles of each pair are a gate
//! tile and its up tile (the exporter interleaves `gate‖up` that way), and
//! the output has `N/2` columns, `silu(gate)·up` with
//! `silu(g) = g / (1 + exp(−g))` and [`super::exp::exp_f32`]: the feed-forward block's
//! product and activation in one pass, with no `[rows, 2·ff]` intermediate.
//!
//! # Order of operations
//! For output column `n` of row `x`, with `S_b` the sum of the row's inputs
//! in block `b` (added in increasing `k` from 0.0) and `y` starting at 0.0,
//! for each block in turn: `even` and `odd` accumulate `x[k]·c[n][k]` with
//! `fma` over the block's even and odd inputs in increasing `k` from 0.0,
//! then `y = fma(o, S_b, fma(s, even + odd, y))`. Decoding a weight takes no
//! arithmetic beyond turning its code into a float.
//!
//! # int8 activations
//! With [`BlockQuantShape::int8`] each row's inputs are first rounded to
//! int8 per block, as llama.cpp rounds its activations ([`quantize_block`]):
//! `d_b = max|x| / 127`, `q = round(x / d_b)` (ties to even), and `S_b` is
//! `d_b · Σq`. For each block in turn, `dot = Σ c·q` in exact integer
//! arithmetic, then `y = fma(o, S_b, fma(s, dot · d_b, y))`. A row is still
//! rounded and computed alike in any batch and on any path, but the
//! rounding makes the result depend on the inputs' last bits more than the
//! f32 product does.

use half::f16;

use super::SharedOut;
use super::exp::exp_f32;

/// The version of the packed layout below; an operator node records the
/// version its weights were packed with, and a kernel refuses others.
pub const LAYOUT_VERSION: i64 = 1;

/// Inputs per block (one scale and one offset per block and column).
pub const BLOCK: usize = 32;
/// Output columns per tile (one AVX-512 register of f32).
pub const TILE: usize = 16;
/// Rows decoded together against one pass over the weights.
pub const ROWS_PER_PASS: usize = 4;
/// Rows per unit of parallel work (keeps a group of activations in cache).
const ROWS_PER_ITEM: usize = 64;

/// Bytes of the codes of one (tile, block) record.
pub const fn code_bytes(bits: u8) -> usize {
    BLOCK * TILE * bits as usize / 8
}

/// Bytes of one (tile, block) record: codes, then 16 f16 scales and 16 f16
/// offsets.
pub const fn record_bytes(bits: u8) -> usize {
    code_bytes(bits) + 2 * TILE * 2
}

/// Bytes per chunk of the int8 code arrangement: 4 bytes per column.
const CHUNK: usize = 4 * TILE;

/// Where input `kk` of column `j` sits in the codes of an int8-arranged
/// record: the byte, and whether it is the high nibble (4 bits only).
const fn int8_code_position(bits: u8, j: usize, kk: usize) -> (usize, bool) {
    if bits == 4 {
        (((kk % 16) / 4) * CHUNK + 4 * j + kk % 4, kk >= 16)
    } else {
        ((kk / 4) * CHUNK + 4 * j + kk % 4, false)
    }
}

/// The position of the record of tile `t`, block `b` among a matrix's
/// records (`nb` blocks per tile).
const fn record_index(nb: usize, t: usize, b: usize) -> usize {
    ((t / 2) * nb + b) * 2 + t % 2
}

/// How many blocks ahead of the one being computed the weights are
/// prefetched.
#[cfg(target_arch = "x86_64")]
const PREFETCH_BLOCKS: usize = 12;

/// Asks for the records of tile pair `t`, `t + 1` (`t` even) at block
/// `b + PREFETCH_BLOCKS` to be brought into cache: a pair's records are
/// contiguous and a work item's pairs follow one another, so the weights
/// arrive while block `b` is computed. Addresses past the end are only
/// hints.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse")]
#[inline]
fn prefetch_pair_ahead(packed: &[u8], nb: usize, rec: usize, t: usize, b: usize) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    let ahead = packed.as_ptr().wrapping_add((record_index(nb, t, b) + 2 * PREFETCH_BLOCKS) * rec);
    for line in (0..2 * rec).step_by(64) {
        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line).cast());
    }
}

/// Why a weight matrix cannot be packed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PackError {
    /// Only 4- and 8-bit codes are supported.
    #[error("{0}-bit codes are not supported (4 or 8)")]
    Bits(u8),
    /// `K` must be a positive multiple of [`BLOCK`].
    #[error("K = {0} is not a positive multiple of {BLOCK}")]
    K(usize),
    /// The arrays do not match the shape.
    #[error("expected {expected} {what}, found {found}")]
    Length {
        /// Which array.
        what: &'static str,
        /// The length the shape implies.
        expected: usize,
        /// The length given.
        found: usize,
    },
    /// The packed size would not fit in memory.
    #[error("a {k}×{n} matrix is too large to pack")]
    TooLarge {
        /// Inputs.
        k: usize,
        /// Columns.
        n: usize,
    },
    /// A SwiGLU product needs whole (gate, up) tile pairs.
    #[error("a SwiGLU product needs a multiple of 32 columns, not {0}")]
    SwiGlu(usize),
    /// A code does not fit in the bit width.
    #[error("code {0} does not fit in {1} bits")]
    Code(u8, u8),
    /// A scale or offset is not exactly representable as f16.
    #[error("{what} {value} of block {block} is not exactly representable as f16")]
    NotF16 {
        /// Scale or offset.
        what: &'static str,
        /// The value.
        value: f32,
        /// Its block index (`n · K/32 + block`).
        block: usize,
    },
}

/// The shape of a packed weight matrix: `n` outputs of `k` inputs, `bits`
/// per code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockQuantShape {
    /// Inputs (a multiple of [`BLOCK`]).
    pub k: usize,
    /// Weight columns.
    pub n: usize,
    /// Bits per code: 4 or 8.
    pub bits: u8,
    /// Each pair of tiles is (gate, up) and the product returns
    /// `silu(gate)·up`: `n / 2` outputs (`n` a multiple of 32).
    pub swiglu: bool,
    /// The activations are rounded to int8 blocks and multiplied with
    /// integer dot products (see the module documentation); the codes are
    /// packed for that.
    pub int8: bool,
}

impl BlockQuantShape {
    /// A plain product's shape.
    pub fn new(k: usize, n: usize, bits: u8) -> Self {
        Self { k, n, bits, swiglu: false, int8: false }
    }

    /// Output columns: `n`, or `n / 2` with [`BlockQuantShape::swiglu`].
    pub fn outputs(&self) -> usize {
        if self.swiglu { self.n / 2 } else { self.n }
    }

    /// Tiles of [`TILE`] output columns, padded to an even count (pairs of
    /// tiles are the unit of work).
    pub fn tiles(&self) -> usize {
        self.n.div_ceil(2 * TILE) * 2
    }

    /// Blocks of [`BLOCK`] inputs.
    pub fn blocks(&self) -> usize {
        self.k / BLOCK
    }

    /// The length of the packed weights in bytes.
    pub fn packed_len(&self) -> usize {
        self.tiles() * self.blocks() * record_bytes(self.bits)
    }

    /// Checks the bit width, `K`, the SwiGLU pairing and that the packed
    /// size fits in memory arithmetic (a corrupt model's attributes must not
    /// wrap the length checks around).
    pub fn validate(&self) -> Result<(), PackError> {
        if self.bits != 4 && self.bits != 8 {
            return Err(PackError::Bits(self.bits));
        }
        if self.k == 0 || !self.k.is_multiple_of(BLOCK) {
            return Err(PackError::K(self.k));
        }
        if self.swiglu && !self.n.is_multiple_of(2 * TILE) {
            return Err(PackError::SwiGlu(self.n));
        }
        let fits = self
            .n
            .checked_add(2 * TILE)
            .and_then(|n| (n / TILE).checked_mul(self.blocks()))
            .and_then(|records| records.checked_mul(record_bytes(self.bits)))
            .is_some_and(|bytes| bytes <= isize::MAX as usize);
        if !fits {
            return Err(PackError::TooLarge { k: self.k, n: self.n });
        }
        Ok(())
    }
}

fn exact_f16(what: &'static str, value: f32, block: usize) -> Result<f16, PackError> {
    let h = f16::from_f32(value);
    if h.to_f32() == value || (value.is_nan() && h.is_nan()) {
        Ok(h)
    } else {
        Err(PackError::NotF16 { what, value, block })
    }
}

/// Packs a matrix given as one code per byte (`[n][k]`, row-major) and one
/// scale and offset per block (`[n][k / 32]`), so that
/// `w[n][k] = fma(scale, code, offset)`. Scales and offsets must be exact
/// f16 values (they are for ggml's Q4_0, Q4_1 and Q8_0).
pub fn pack(shape: BlockQuantShape, codes: &[u8], scales: &[f32], offsets: &[f32]) -> Result<Vec<u8>, PackError> {
    shape.validate()?;
    let (k, n, nb) = (shape.k, shape.n, shape.blocks());
    let check = |what, expected, found| {
        if expected == found { Ok(()) } else { Err(PackError::Length { what, expected, found }) }
    };
    check("codes", n * k, codes.len())?;
    check("scales", n * nb, scales.len())?;
    check("offsets", n * nb, offsets.len())?;
    if let Some(&c) = codes.iter().find(|&&c| shape.bits == 4 && c > 15) {
        return Err(PackError::Code(c, shape.bits));
    }
    let rec = record_bytes(shape.bits);
    let cb = code_bytes(shape.bits);
    let mut out = vec![0u8; shape.packed_len()];
    for t in 0..shape.tiles() {
        for b in 0..nb {
            let r = &mut out[record_index(nb, t, b) * rec..][..rec];
            for j in 0..TILE {
                let col = t * TILE + j;
                if col >= n {
                    continue;
                }
                let src = &codes[col * k + b * BLOCK..][..BLOCK];
                if shape.int8 {
                    for (kk, &c) in src.iter().enumerate() {
                        let (at, high) = int8_code_position(shape.bits, j, kk);
                        r[at] |= if high { c << 4 } else { c };
                    }
                } else if shape.bits == 4 {
                    for p in 0..BLOCK / 2 {
                        r[p * TILE + j] = src[2 * p] | (src[2 * p + 1] << 4);
                    }
                } else {
                    for (kk, &c) in src.iter().enumerate() {
                        r[kk * TILE + j] = c;
                    }
                }
                let block = col * nb + b;
                let s = exact_f16("scale", scales[block], block)?;
                let o = exact_f16("offset", offsets[block], block)?;
                r[cb + 2 * j..][..2].copy_from_slice(&s.to_le_bytes());
                r[cb + 2 * TILE + 2 * j..][..2].copy_from_slice(&o.to_le_bytes());
            }
        }
    }
    Ok(out)
}

/// Why a product cannot be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MatMulError {
    /// The shape is invalid.
    #[error(transparent)]
    Shape(#[from] PackError),
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
}

fn check_lengths(shape: &BlockQuantShape, packed: &[u8], x: &[f32], rows: usize, y: &[f32]) -> Result<(), MatMulError> {
    shape.validate()?;
    for (what, expected, found) in [
        ("packed weights", shape.packed_len(), packed.len()),
        ("activations", rows * shape.k, x.len()),
        ("output", rows * shape.outputs(), y.len()),
    ] {
        if expected != found {
            return Err(MatMulError::Length { what, expected, found });
        }
    }
    Ok(())
}

/// The portable definition of the product (`y` is `[rows][n]`, `x` is
/// `[rows][k]`), in the order every code path follows.
pub fn reference(
    shape: &BlockQuantShape,
    packed: &[u8],
    x: &[f32],
    rows: usize,
    y: &mut [f32],
) -> Result<(), MatMulError> {
    check_lengths(shape, packed, x, rows, y)?;
    let outputs = shape.outputs();
    let prepared = PreparedRows::new(shape, x);
    let ops = prepared.operands(shape, packed, x);
    for m in 0..rows {
        for col in 0..outputs {
            y[m * outputs + col] = output_column(ops.row(m), col);
        }
    }
    Ok(())
}

/// What the product needs of each row besides its inputs: block sums, and
/// for [`BlockQuantShape::int8`] the rounded inputs and block scales.
struct PreparedRows {
    /// `S_b`, `[rows][k / 32]`.
    sums: Vec<f32>,
    /// The int8 inputs, `[rows][k]` (empty in f32).
    q: Vec<i8>,
    /// `d_b`, `[rows][k / 32]` (empty in f32).
    d: Vec<f32>,
}

impl PreparedRows {
    fn new(shape: &BlockQuantShape, x: &[f32]) -> Self {
        if !shape.int8 {
            return Self { sums: block_sums(x), q: Vec::new(), d: Vec::new() };
        }
        let blocks = x.len() / BLOCK;
        let mut prepared = Self { sums: vec![0.0; blocks], q: vec![0; x.len()], d: vec![0.0; blocks] };
        // The SIMD forms give the same bits as `quantize_block`.
        let round: fn(&[f32], &mut [i8]) -> (f32, f32) = match Isa::best() {
            // SAFETY: the CPU has AVX-512F; blocks hold 32 elements.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => |x, q| unsafe { avx512_vnni::quantize_block(x, q) },
            // SAFETY: the CPU has AVX2; blocks hold 32 elements.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => |x, q| unsafe { avx2::quantize_block(x, q) },
            _ => quantize_block,
        };
        for (((xb, qb), d), s) in x
            .chunks_exact(BLOCK)
            .zip(prepared.q.chunks_exact_mut(BLOCK))
            .zip(prepared.d.iter_mut())
            .zip(prepared.sums.iter_mut())
        {
            (*d, *s) = round(xb, qb);
        }
        prepared
    }

    fn operands<'a>(&'a self, shape: &'a BlockQuantShape, packed: &'a [u8], x: &'a [f32]) -> Operands<'a> {
        Operands { shape, packed, x, sums: &self.sums, q: &self.q, d: &self.d }
    }
}

/// Rounds one block of 32 inputs to int8 as llama.cpp's Q8 activations:
/// returns `(d, d · Σq)` with `d = max|x| / 127` and `q = round(x / d)`
/// (ties to even; all zero when `d` is 0). NaN inputs are left out of the
/// maximum and become 0. The AVX-512 and AVX2 forms give the same bits.
pub fn quantize_block(x: &[f32], q: &mut [i8]) -> (f32, f32) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let (d, inverse) = block_scale(amax);
    // Adding and subtracting 1.5·2²³ rounds a float of magnitude below 2²²
    // to the nearest integer, ties to even, in plain IEEE arithmetic (no
    // libm call per element, and the loop vectorises); `x / d` lies in
    // [−127, 127], or is NaN, which the cast turns into 0.
    const ROUND: f32 = 12_582_912.0;
    let mut sum = 0i32;
    for (q, &v) in q.iter_mut().zip(x) {
        *q = (((v * inverse) + ROUND) - ROUND).clamp(-127.0, 127.0) as i8;
        sum += i32::from(*q);
    }
    (d, d * sum as f32)
}

/// `d = amax / 127` and the factor that rounds inputs onto it (0 for a
/// block of zeros).
fn block_scale(amax: f32) -> (f32, f32) {
    let d = amax / 127.0;
    (d, if d == 0.0 { 0.0 } else { 1.0 / d })
}

/// Output `col` of one row: a weight column, or with SwiGLU
/// `silu(gate)·up` from the two tiles of its pair.
fn output_column(row: Operands<'_>, col: usize) -> f32 {
    let dot = |c| if row.shape.int8 { dot_column_int8(row, c) } else { dot_column(row, c) };
    if row.shape.swiglu {
        let gate = (col / TILE) * 2 * TILE + col % TILE;
        swiglu(dot(gate), dot(gate + TILE))
    } else {
        dot(col)
    }
}

/// `silu(gate)·up`, as every path computes it.
pub fn swiglu(gate: f32, up: f32) -> f32 {
    gate / (1.0 + exp_f32(-gate)) * up
}

/// `S_b` for every row and block (`[rows][k / 32]`; `x` holds whole rows of
/// a multiple of 32 inputs).
fn block_sums(x: &[f32]) -> Vec<f32> {
    x.chunks_exact(BLOCK).map(|b| b.iter().fold(0f32, |acc, &v| acc + v)).collect()
}

/// Column `j`'s scale and offset in a record whose codes take `cb` bytes.
fn scale_and_offset(record: &[u8], cb: usize, j: usize) -> (f32, f32) {
    let f16_at = |at: usize| f16::from_le_bytes([record[at], record[at + 1]]).to_f32();
    (f16_at(cb + 2 * j), f16_at(cb + 2 * TILE + 2 * j))
}

/// Output column `col` of one row, in the documented order.
fn dot_column(row: Operands<'_>, col: usize) -> f32 {
    let Operands { shape, packed, x: xr, sums, .. } = row;
    let nb = shape.blocks();
    let rec = record_bytes(shape.bits);
    let cb = code_bytes(shape.bits);
    let (t, j) = (col / TILE, col % TILE);
    let mut y = 0f32;
    for b in 0..nb {
        let (mut even, mut odd) = (0f32, 0f32);
        let r = &packed[record_index(nb, t, b) * rec..][..rec];
        let (s, o) = scale_and_offset(r, cb, j);
        for p in 0..BLOCK / 2 {
            let (c0, c1) = if shape.bits == 4 {
                let byte = r[p * TILE + j];
                (byte & 0xF, byte >> 4)
            } else {
                (r[2 * p * TILE + j], r[(2 * p + 1) * TILE + j])
            };
            even = xr[b * BLOCK + 2 * p].mul_add(f32::from(c0), even);
            odd = xr[b * BLOCK + 2 * p + 1].mul_add(f32::from(c1), odd);
        }
        y = o.mul_add(sums[b], s.mul_add(even + odd, y));
    }
    y
}

/// Output column `col` of one row with int8 activations, in the documented
/// order.
fn dot_column_int8(row: Operands<'_>, col: usize) -> f32 {
    let Operands { shape, packed, sums, q, d, .. } = row;
    let nb = shape.blocks();
    let rec = record_bytes(shape.bits);
    let cb = code_bytes(shape.bits);
    let (t, j) = (col / TILE, col % TILE);
    let mut y = 0f32;
    for b in 0..nb {
        let r = &packed[record_index(nb, t, b) * rec..][..rec];
        let (s, o) = scale_and_offset(r, cb, j);
        let mut dot = 0i32;
        for kk in 0..BLOCK {
            let (at, high) = int8_code_position(shape.bits, j, kk);
            let c = if high {
                r[at] >> 4
            } else if shape.bits == 4 {
                r[at] & 0xF
            } else {
                r[at]
            };
            dot += i32::from(c) * i32::from(q[b * BLOCK + kk]);
        }
        y = o.mul_add(sums[b], s.mul_add(dot as f32 * d[b], y));
    }
    y
}

/// What every code path of one product reads: the shape, the packed
/// weights, the activations (`[rows][k]`) and their block sums
/// (`[rows][k / 32]`), and with int8 activations the rounded inputs
/// (`[rows][k]`) and block scales (`[rows][k / 32]`), with lengths checked
/// by [`matmul_on`].
#[derive(Clone, Copy)]
struct Operands<'a> {
    shape: &'a BlockQuantShape,
    packed: &'a [u8],
    x: &'a [f32],
    sums: &'a [f32],
    q: &'a [i8],
    d: &'a [f32],
}

impl<'a> Operands<'a> {
    /// The operands of row `m` alone.
    fn row(&self, m: usize) -> Operands<'a> {
        let (k, nb) = (self.shape.k, self.shape.blocks());
        let int8 = self.shape.int8;
        Operands {
            shape: self.shape,
            packed: self.packed,
            x: &self.x[m * k..][..k],
            sums: &self.sums[m * nb..][..nb],
            q: if int8 { &self.q[m * k..][..k] } else { &[] },
            d: if int8 { &self.d[m * nb..][..nb] } else { &[] },
        }
    }
}

/// Whether this CPU has AVX-512 VNNI and BW (the int8 AVX-512 path).
fn avx512_vnni_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        has!("avx512bw") && has!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The instruction sets a product can run on. Every one computes the same
/// bits (the documented order, with IEEE `fma`); they differ in speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F: one register per tile, up to 4 rows × 2 tiles at once.
    Avx512,
    /// AVX2 with FMA and F16C: two registers per tile, up to 2 rows × 1 tile.
    Avx2,
    /// Plain Rust (`f32::mul_add`), for other CPUs.
    Portable,
}

impl Isa {
    /// The fastest instruction set this CPU supports.
    pub fn best() -> Isa {
        if Isa::Avx512.available() {
            Isa::Avx512
        } else if Isa::Avx2.available() {
            Isa::Avx2
        } else {
            Isa::Portable
        }
    }

    /// Whether this CPU runs products of `shape` on it: int8 activations
    /// on [`Isa::Avx512`] need AVX-512 VNNI and BW too.
    pub fn runs(self, shape: &BlockQuantShape) -> bool {
        self.available() && (!shape.int8 || self != Isa::Avx512 || avx512_vnni_available())
    }

    /// Whether this CPU can run it.
    pub fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                Isa::Portable => true,
                Isa::Avx2 => has!("avx2") && has!("fma") && has!("f16c"),
                Isa::Avx512 => has!("avx512f"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Isa::Portable
        }
    }
}

/// Computes `y = x · Wᵀ` (`x` is `[rows][k]`, `y` is `[rows][n]`) on the
/// fastest instruction set of this CPU ([`Isa::best`]).
///
/// `parallel(items, f)` must call `f(i)` once for every `i < items`, in any
/// order and on any threads, and return when all calls have returned (ONNX
/// Runtime's `par_for`, or a plain loop). The result does not depend on how
/// the items are scheduled.
pub fn matmul<E>(
    shape: &BlockQuantShape,
    packed: &[u8],
    x: &[f32],
    rows: usize,
    y: &mut [f32],
    parallel: impl FnOnce(usize, &(dyn Fn(usize) + Sync + Send)) -> Result<(), E>,
) -> Result<(), E>
where
    E: From<MatMulError>,
{
    matmul_on(Isa::best(), shape, packed, x, rows, y, parallel)
}

/// [`matmul`] on a chosen instruction set; one this CPU lacks (for these
/// products) falls back to [`Isa::Avx2`], else to [`Isa::Portable`].
pub fn matmul_on<E>(
    isa: Isa,
    shape: &BlockQuantShape,
    packed: &[u8],
    x: &[f32],
    rows: usize,
    y: &mut [f32],
    parallel: impl FnOnce(usize, &(dyn Fn(usize) + Sync + Send)) -> Result<(), E>,
) -> Result<(), E>
where
    E: From<MatMulError>,
{
    let isa = [isa, Isa::Avx2, Isa::Portable].into_iter().find(|i| i.runs(shape)).unwrap_or(Isa::Portable);
    check_lengths(shape, packed, x, rows, y)?;
    if rows == 0 || shape.n == 0 {
        return Ok(());
    }
    let pairs = shape.tiles() / 2;
    let row_items = rows.div_ceil(ROWS_PER_ITEM);
    let out = SharedOut::new(y);
    let prepared = PreparedRows::new(shape, x);
    let ops = prepared.operands(shape, packed, x);
    let item = move |i: usize| {
        let (ri, pair) = (i / pairs, i % pairs);
        let rows_here = ROWS_PER_ITEM.min(rows - ri * ROWS_PER_ITEM);
        // SAFETY: lengths were checked above; item `i` covers rows
        // `ri·64 ..` and tiles `2·pair ..= 2·pair + 1`, disjoint from every
        // other item's.
        unsafe { tile_pair(isa, ops, ri * ROWS_PER_ITEM, rows_here, 2 * pair, out) };
    };
    parallel(row_items * pairs, &item)
}

/// Computes tiles `t0` and `t0 + 1` (a pair) for `rows` rows from
/// `row0`.
///
/// # Safety
/// The lengths of the operands and of the buffer behind `out` must match the
/// shape (checked by [`matmul_on`]), and no other thread may write the same
/// elements of `out`.
unsafe fn tile_pair(isa: Isa, ops: Operands<'_>, row0: usize, rows: usize, t0: usize, out: SharedOut) {
    #[cfg(target_arch = "x86_64")]
    match isa {
        // SAFETY: `isa` is available (checked by `matmul_on`); bounds as
        // promised by the caller.
        Isa::Avx512 if ops.shape.int8 => return unsafe { avx512_vnni::tile_pair(ops, row0, rows, t0, out.at(0)) },
        Isa::Avx512 => return unsafe { avx512::tile_pair(ops, row0, rows, t0, out.at(0)) },
        Isa::Avx2 => return unsafe { avx2::tile_pair(ops, row0, rows, t0, out.at(0)) },
        Isa::Portable => {}
    }
    let (shape, outputs) = (ops.shape, ops.shape.outputs());
    // This pair's output columns.
    let cols =
        if shape.swiglu { (t0 / 2) * TILE..(t0 / 2 + 1) * TILE } else { t0 * TILE..((t0 + 2) * TILE).min(outputs) };
    for m in row0..row0 + rows {
        for col in cols.clone() {
            let v = output_column(ops.row(m), col);
            // SAFETY: row `m` and column `col < outputs` are in bounds of
            // the output, and this item alone writes them.
            unsafe { *out.at(m * outputs + col) = v };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512;

#[cfg(target_arch = "x86_64")]
mod avx2;

#[cfg(target_arch = "x86_64")]
mod avx512_vnni;

#[cfg(test)]
mod tests {
    use super::*;

    use crate::kernels::test_support::{Lcg, sequential};

    fn random_matrix(shape: BlockQuantShape, seed: u64) -> (Vec<u8>, Vec<f32>, Vec<f32>) {
        let mut g = Lcg(seed);
        let max = if shape.bits == 4 { 16 } else { 256 };
        let codes: Vec<u8> = (0..shape.n * shape.k).map(|_| (g.next() % max) as u8).collect();
        let nb = shape.n * shape.blocks();
        let scales: Vec<f32> = (0..nb).map(|_| f16::from_f32(g.f() * 0.05).to_f32()).collect();
        let offsets: Vec<f32> = (0..nb).map(|_| f16::from_f32(g.f() * 0.2).to_f32()).collect();
        (codes, scales, offsets)
    }

    /// `got` and `want` hold the same bits.
    fn assert_same_bits(got: &[f32], want: &[f32], context: &str) {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(got), bits(want), "{context}");
    }

    /// The f64 product of the dequantised weights, for a tolerance check.
    fn exact(
        codes: &[u8],
        scales: &[f32],
        offsets: &[f32],
        shape: BlockQuantShape,
        x: &[f32],
        rows: usize,
    ) -> Vec<f64> {
        let (k, n, nb) = (shape.k, shape.n, shape.blocks());
        let mut y = vec![0f64; rows * n];
        for m in 0..rows {
            for c in 0..n {
                let mut acc = 0f64;
                for i in 0..k {
                    let blk = c * nb + i / BLOCK;
                    let w = f64::from(scales[blk]) * f64::from(codes[c * k + i]) + f64::from(offsets[blk]);
                    acc += f64::from(x[m * k + i]) * w;
                }
                y[m * n + c] = acc;
            }
        }
        y
    }

    #[test]
    fn every_path_computes_the_reference_bit_for_bit_and_close_to_the_exact_product() {
        for (bits, k, n) in [(4u8, 64usize, 40usize), (4, 96, 16), (8, 64, 33), (4, 32, 5), (8, 128, 64)] {
            let shape = BlockQuantShape::new(k, n, bits);
            let (codes, scales, offsets) = random_matrix(shape, u64::from(bits) * 1000 + k as u64 + n as u64);
            let packed = pack(shape, &codes, &scales, &offsets).expect("pack");
            let rows = 71;
            let mut g = Lcg(7);
            let x: Vec<f32> = (0..rows * k).map(|_| g.f()).collect();
            let mut want = vec![0f32; rows * n];
            reference(&shape, &packed, &x, rows, &mut want).expect("reference");
            let exact = exact(&codes, &scales, &offsets, shape, &x, rows);
            for (w, e) in want.iter().zip(&exact) {
                assert!((f64::from(*w) - e).abs() < 1e-4 * (1.0 + e.abs()), "{w} vs {e}");
            }
            for isa in [Isa::Avx512, Isa::Avx2, Isa::Portable] {
                if !isa.available() {
                    eprintln!("{isa:?} is not available on this CPU: not compared");
                    continue;
                }
                let mut got = vec![f32::NAN; rows * n];
                matmul_on(isa, &shape, &packed, &x, rows, &mut got, sequential::<MatMulError>).expect("matmul");
                assert_same_bits(&got, &want, &format!("{isa:?}: bits {bits} k {k} n {n}"));
            }
            // Each row alone, in every batch size: the same bits.
            for m in [0usize, 3, 64, 70] {
                let mut one = vec![0f32; n];
                matmul(&shape, &packed, &x[m * k..][..k], 1, &mut one, sequential::<MatMulError>).expect("matmul");
                assert_eq!(one, want[m * n..][..n].to_vec(), "row {m}");
            }
            for batch in 2..=6 {
                let mut b = vec![0f32; batch * n];
                matmul(&shape, &packed, &x[..batch * k], batch, &mut b, sequential::<MatMulError>).expect("matmul");
                assert_eq!(b, want[..batch * n].to_vec(), "batch {batch}");
            }
        }
    }

    /// The activations as the int8 path sees them: `d·q` per block.
    fn dequantized_activations(x: &[f32]) -> Vec<f32> {
        let mut out = Vec::with_capacity(x.len());
        for xb in x.chunks_exact(BLOCK) {
            let mut q = [0i8; BLOCK];
            let (d, _) = quantize_block(xb, &mut q);
            out.extend(q.iter().map(|&v| d * f32::from(v)));
        }
        out
    }

    #[test]
    fn int8_activations_on_every_path_compute_the_reference_bit_for_bit() {
        for (bits, k, n, swiglu) in [
            (4u8, 64usize, 40usize, false),
            (8, 64, 33, false),
            (4, 32, 5, false),
            (8, 128, 64, false),
            (4, 96, 64, true),
            (8, 64, 32, true),
        ] {
            let plain = BlockQuantShape::new(k, n, bits);
            let shape = BlockQuantShape { swiglu, int8: true, ..plain };
            let (codes, scales, offsets) = random_matrix(plain, u64::from(bits) * 77 + k as u64 + n as u64);
            let packed = pack(shape, &codes, &scales, &offsets).expect("pack");
            let rows = 23;
            let mut g = Lcg(11);
            let x: Vec<f32> = (0..rows * k).map(|_| g.f() * 3.0).collect();
            let outputs = shape.outputs();
            let mut want = vec![0f32; rows * outputs];
            reference(&shape, &packed, &x, rows, &mut want).expect("reference");
            // The f64 product with the rounded activations.
            let exact = exact(&codes, &scales, &offsets, plain, &dequantized_activations(&x), rows);
            for m in 0..rows {
                for c in 0..outputs {
                    let e = if swiglu {
                        let gate = (c / TILE) * 2 * TILE + c % TILE;
                        let (gv, uv) = (exact[m * n + gate], exact[m * n + gate + TILE]);
                        gv / (1.0 + (-gv).exp()) * uv
                    } else {
                        exact[m * n + c]
                    };
                    let w = f64::from(want[m * outputs + c]);
                    assert!((w - e).abs() < 1e-4 * (1.0 + e.abs()), "row {m} col {c}: {w} vs {e}");
                }
            }
            for isa in [Isa::Avx512, Isa::Avx2, Isa::Portable] {
                if !isa.runs(&shape) {
                    eprintln!("{isa:?} does not run int8 activations on this CPU: not compared");
                    continue;
                }
                let mut got = vec![f32::NAN; rows * outputs];
                matmul_on(isa, &shape, &packed, &x, rows, &mut got, sequential::<MatMulError>).expect("matmul");
                assert_same_bits(&got, &want, &format!("{isa:?}: bits {bits} k {k} n {n} swiglu {swiglu}"));
                for m in [0usize, 5, 22] {
                    let mut one = vec![0f32; outputs];
                    matmul_on(isa, &shape, &packed, &x[m * k..][..k], 1, &mut one, sequential::<MatMulError>)
                        .expect("matmul");
                    assert_eq!(one, want[m * outputs..][..outputs].to_vec(), "{isa:?}: row {m} alone");
                }
            }
        }
    }

    #[test]
    fn the_simd_roundings_of_a_block_give_the_same_bits() {
        #[cfg(target_arch = "x86_64")]
        {
            if !Isa::Avx512.available() || !Isa::Avx2.available() {
                eprintln!("no AVX-512 and AVX2 on this CPU: not compared");
                return;
            }
            let mut g = Lcg(21);
            let mut blocks: Vec<Vec<f32>> = (0..200).map(|_| (0..BLOCK).map(|_| g.f() * 10.0).collect()).collect();
            // Ties at ±0.5 steps, zeros, NaN, infinities, subnormals.
            blocks.push((0..BLOCK).map(|i| (i as f32 - 16.0) * 0.5).collect());
            blocks.push(vec![0.0; BLOCK]);
            blocks.push((0..BLOCK).map(|i| if i == 3 { f32::NAN } else { i as f32 }).collect());
            blocks.push((0..BLOCK).map(|i| if i == 7 { f32::INFINITY } else { -(i as f32) }).collect());
            blocks.push(vec![f32::from_bits(1); BLOCK]);
            for x in &blocks {
                let (mut a, mut b) = ([0i8; BLOCK], [0i8; BLOCK]);
                let portable = quantize_block(x, &mut a);
                // SAFETY: checked above.
                let simd = unsafe { avx512_vnni::quantize_block(x, &mut b) };
                assert_eq!((portable.0.to_bits(), portable.1.to_bits()), (simd.0.to_bits(), simd.1.to_bits()), "{x:?}");
                assert_eq!(a, b, "{x:?}");
                let mut c = [0i8; BLOCK];
                {
                    // SAFETY: checked above.
                    let avx2 = unsafe { avx2::quantize_block(x, &mut c) };
                    assert_eq!((portable.0.to_bits(), portable.1.to_bits()), (avx2.0.to_bits(), avx2.1.to_bits()));
                    assert_eq!(a, c, "AVX2: {x:?}");
                }
            }
        }
    }

    #[test]
    fn int8_rounding_of_a_block() {
        let mut x = [0f32; BLOCK];
        x[0] = -2.54;
        x[1] = 1.27;
        x[2] = 0.01; // rounds to 0.5 → 0 (ties to even)
        x[3] = 0.03; // 1.5 → 2
        let mut q = [0i8; BLOCK];
        let (d, sum) = quantize_block(&x, &mut q);
        assert_eq!(d, 2.54 / 127.0);
        assert_eq!(&q[..4], &[-127, 64, 0, 2]);
        assert_eq!(sum, d * (-127 + 64 + 2) as f32);
        let (d, sum) = quantize_block(&[0.0; BLOCK], &mut q);
        assert_eq!((d, sum), (0.0, 0.0));
        assert!(q.iter().all(|&v| v == 0));
    }

    #[test]
    fn swiglu_edge_values() {
        assert_eq!(swiglu(0.0, 5.0), 0.0);
        assert!((swiglu(2.0, 3.0) - 2.0 / (1.0 + (-2f32).exp()) * 3.0).abs() < 1e-6);
        assert_eq!(swiglu(-200.0, 1.0), -200.0 / (1.0 + exp_f32(88.0)));
        assert_eq!(swiglu(200.0, 1.0), 200.0);
    }

    #[test]
    fn swiglu_products_match_the_reference_on_every_path_and_the_exact_activation() {
        for (bits, k, n) in [(4u8, 64usize, 64usize), (8, 96, 32), (4, 32, 96)] {
            let shape = BlockQuantShape { k, n, bits, swiglu: true, int8: false };
            let (codes, scales, offsets) = random_matrix(BlockQuantShape::new(k, n, bits), 99 + k as u64);
            let packed = pack(shape, &codes, &scales, &offsets).expect("pack");
            let rows = 11;
            let mut g = Lcg(5);
            let x: Vec<f32> = (0..rows * k).map(|_| g.f()).collect();
            let mut want = vec![0f32; rows * n / 2];
            reference(&shape, &packed, &x, rows, &mut want).expect("reference");
            // Against f64: column j of pair p is gate column 32p + j and up column 32p + 16 + j.
            let exact = exact(&codes, &scales, &offsets, BlockQuantShape::new(k, n, bits), &x, rows);
            for m in 0..rows {
                for c in 0..n / 2 {
                    let gate_col = (c / TILE) * 2 * TILE + c % TILE;
                    let (gv, uv) = (exact[m * n + gate_col], exact[m * n + gate_col + TILE]);
                    let e = gv / (1.0 + (-gv).exp()) * uv;
                    let w = f64::from(want[m * n / 2 + c]);
                    assert!((w - e).abs() < 1e-4 * (1.0 + e.abs()), "row {m} col {c}: {w} vs {e}");
                }
            }
            for isa in [Isa::Avx512, Isa::Avx2, Isa::Portable] {
                if !isa.available() {
                    continue;
                }
                let mut got = vec![f32::NAN; rows * n / 2];
                matmul_on(isa, &shape, &packed, &x, rows, &mut got, sequential::<MatMulError>).expect("matmul");
                assert_same_bits(&got, &want, &format!("{isa:?}: bits {bits} k {k} n {n}"));
                let mut one = vec![0f32; n / 2];
                matmul_on(isa, &shape, &packed, &x[7 * k..][..k], 1, &mut one, sequential::<MatMulError>)
                    .expect("matmul");
                assert_eq!(one, want[7 * n / 2..][..n / 2].to_vec(), "{isa:?}: a row alone");
            }
        }
        let odd = BlockQuantShape { k: 32, n: 48, bits: 4, swiglu: true, int8: false };
        assert_eq!(odd.validate(), Err(PackError::SwiGlu(48)));
    }

    #[test]
    fn scheduling_the_items_in_reverse_on_threads_changes_nothing() {
        let shape = BlockQuantShape::new(64, 100, 4);
        let (codes, scales, offsets) = random_matrix(shape, 3);
        let packed = pack(shape, &codes, &scales, &offsets).expect("pack");
        let rows = 130;
        let mut g = Lcg(9);
        let x: Vec<f32> = (0..rows * shape.k).map(|_| g.f()).collect();
        let mut want = vec![0f32; rows * shape.n];
        reference(&shape, &packed, &x, rows, &mut want).expect("reference");
        let mut got = vec![0f32; rows * shape.n];
        matmul(&shape, &packed, &x, rows, &mut got, |items, f| {
            std::thread::scope(|s| {
                let (a, b) = (0..items).rev().partition::<Vec<usize>, _>(|i| i % 2 == 0);
                s.spawn(|| a.into_iter().for_each(f));
                s.spawn(|| b.into_iter().for_each(f));
            });
            Ok::<(), MatMulError>(())
        })
        .expect("matmul");
        assert_eq!(got, want);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let shape = BlockQuantShape::new(48, 2, 4);
        assert_eq!(pack(shape, &[0; 96], &[0.0; 2], &[0.0; 2]), Err(PackError::K(48)));
        let huge = BlockQuantShape::new(1 << 40, usize::MAX - 8, 4);
        assert!(matches!(huge.validate(), Err(PackError::TooLarge { .. })));
        let shape = BlockQuantShape::new(32, 2, 5);
        assert_eq!(pack(shape, &[0; 64], &[0.0; 2], &[0.0; 2]), Err(PackError::Bits(5)));
        let shape = BlockQuantShape::new(32, 2, 4);
        assert_eq!(pack(shape, &[16; 64], &[0.0; 2], &[0.0; 2]), Err(PackError::Code(16, 4)));
        assert!(matches!(
            pack(shape, &[0; 64], &[0.1, 0.0], &[0.0; 2]),
            Err(PackError::NotF16 { what: "scale", block: 0, .. })
        ));
        assert!(matches!(pack(shape, &[0; 63], &[0.0; 2], &[0.0; 2]), Err(PackError::Length { what: "codes", .. })));
        let packed = pack(shape, &[1; 64], &[0.5; 2], &[0.0; 2]).expect("pack");
        let mut y = vec![0f32; 2];
        assert!(matches!(
            matmul(&shape, &packed, &[1.0; 31], 1, &mut y, sequential::<MatMulError>),
            Err(MatMulError::Length { what: "activations", .. })
        ));
        matmul(&shape, &packed, &[1.0; 32], 1, &mut y, sequential::<MatMulError>).expect("matmul");
        assert_eq!(y, vec![16.0, 16.0]);
    }
}
