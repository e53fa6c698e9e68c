//! The AVX-512 VNNI path for int8 activations: 16 columns per register,
//! 4-byte integer dot products (`vpdpbusd`, unsigned codes × signed
//! inputs), up to 4 rows × 2 tiles at once.

use std::arch::x86_64::*;

use super::{BLOCK, CHUNK, Operands, ROWS_PER_PASS, TILE, block_scale, code_bytes, record_bytes, record_index};

/// Tiles `t0` and `t0 + 1`.
const T: usize = 2;

/// See [`super::tile_pair`].
///
/// # Safety
/// AVX-512F, AVX-512BW and AVX-512 VNNI must be available; the shape has
/// int8 activations and `ops` holds them; bounds as in
/// [`super::tile_pair`].
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
pub(super) unsafe fn tile_pair(ops: Operands<'_>, row0: usize, rows: usize, t0: usize, y: *mut f32) {
    let mut m = row0;
    let end = row0 + rows;
    while end - m >= WIDE_ROWS {
        // SAFETY: forwarded from the caller.
        unsafe { wide_pass(ops, m, t0, y) };
        m += WIDE_ROWS;
    }
    while m < end {
        let r = (end - m).min(ROWS_PER_PASS);
        // SAFETY: forwarded from the caller.
        unsafe {
            match r {
                4 => pass::<4>(ops, m, t0, y),
                3 => pass::<3>(ops, m, t0, y),
                2 => pass::<2>(ops, m, t0, y),
                _ => pass::<1>(ops, m, t0, y),
            }
        }
        m += r;
    }
}

/// Rows of one wide pass: 8 rows × 1 tile, each input broadcast straight
/// from memory into its dot product (a narrow pass keeps the broadcasts of
/// 4 rows in registers for 2 tiles).
const WIDE_ROWS: usize = 8;

/// Rows `m..m + 8`, tiles `t0` and `t0 + 1`, one tile at a time.
///
/// # Safety
/// As [`tile_pair`], with 8 rows from `m`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn wide_pass(ops: Operands<'_>, m: usize, t0: usize, y: *mut f32) {
    let shape = ops.shape;
    // SAFETY: forwarded from the caller.
    let first = unsafe { wide_tile(ops, m, t0, true) };
    let second = unsafe { wide_tile(ops, m, t0 + 1, false) };
    // SAFETY: forwarded from the caller.
    unsafe { super::avx512::store_pair(shape, [&first, &second], m, t0, y) }
}

/// Tile `t` of rows `m..m + 8`, in the documented order. The first tile
/// of a pair prefetches the records of both (they are interleaved), so the
/// second finds them in cache.
///
/// # Safety
/// As [`wide_pass`].
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn wide_tile(ops: Operands<'_>, m: usize, t: usize, prefetch: bool) -> [__m512; WIDE_ROWS] {
    let Operands { shape, packed, sums, q, d, .. } = ops;
    let (k, nb) = (shape.k, shape.blocks());
    let rec = record_bytes(shape.bits);
    let cb = code_bytes(shape.bits);
    let nibble = _mm512_set1_epi8(0x0F);
    let mut acc = [_mm512_setzero_ps(); WIDE_ROWS];
    let (qp, dp, sp, wp) = (q.as_ptr(), d.as_ptr(), sums.as_ptr(), packed.as_ptr());
    for b in 0..nb {
        if prefetch {
            super::prefetch_pair_ahead(packed, nb, rec, t, b);
        }
        // SAFETY: record (t, b) lies inside `packed`.
        let base = unsafe { wp.add(record_index(nb, t, b) * rec) };
        let mut dot = [_mm512_setzero_si512(); WIDE_ROWS];
        let row = |r: usize| (m + r) * k + b * BLOCK;
        if shape.bits == 4 {
            for g in 0..4 {
                // SAFETY: chunk g of the record's codes.
                let v = unsafe { _mm512_loadu_si512(base.add(g * CHUNK).cast()) };
                let lo = _mm512_and_si512(v, nibble);
                let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(v), nibble);
                for (r, dot) in dot.iter_mut().enumerate() {
                    // SAFETY: row m + r's int8 inputs of this block.
                    unsafe {
                        *dot = _mm512_dpbusd_epi32(*dot, lo, inputs4(qp, row(r) + 4 * g));
                        *dot = _mm512_dpbusd_epi32(*dot, hi, inputs4(qp, row(r) + 16 + 4 * g));
                    }
                }
            }
        } else {
            for g in 0..BLOCK / 4 {
                // SAFETY: chunk g of the record's codes.
                let v = unsafe { _mm512_loadu_si512(base.add(g * CHUNK).cast()) };
                for (r, dot) in dot.iter_mut().enumerate() {
                    // SAFETY: row m + r's int8 inputs of this block.
                    *dot = _mm512_dpbusd_epi32(*dot, v, unsafe { inputs4(qp, row(r) + 4 * g) });
                }
            }
        }
        // SAFETY: the record's scales and offsets.
        let (s, o) = unsafe {
            (
                _mm512_cvtph_ps(_mm256_loadu_si256(base.add(cb).cast())),
                _mm512_cvtph_ps(_mm256_loadu_si256(base.add(cb + 2 * TILE).cast())),
            )
        };
        for (r, (acc, &dot)) in acc.iter_mut().zip(&dot).enumerate() {
            // SAFETY: row m + r's block scale and sum.
            let (db, sb) = unsafe { (*dp.add((m + r) * nb + b), *sp.add((m + r) * nb + b)) };
            let scaled = _mm512_mul_ps(_mm512_cvtepi32_ps(dot), _mm512_set1_ps(db));
            *acc = _mm512_fmadd_ps(o, _mm512_set1_ps(sb), _mm512_fmadd_ps(s, scaled, *acc));
        }
    }
    acc
}

/// The int8 inputs `kk..kk + 4` of row `m`, in every 32-bit lane.
///
/// # Safety
/// `q` must hold them.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn inputs4(q: *const i8, at: usize) -> __m512i {
    // SAFETY: as promised by the caller.
    _mm512_set1_epi32(unsafe { q.add(at).cast::<i32>().read_unaligned() })
}

/// `R` rows from `m`, tiles `t0` and `t0 + 1`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn pass<const R: usize>(ops: Operands<'_>, m: usize, t0: usize, y: *mut f32) {
    let Operands { shape, packed, sums, q, d, .. } = ops;
    let (k, nb) = (shape.k, shape.blocks());
    let rec = record_bytes(shape.bits);
    let cb = code_bytes(shape.bits);
    let four = shape.bits == 4;
    let nibble = _mm512_set1_epi8(0x0F);
    let mut acc = [[_mm512_setzero_ps(); R]; T];
    let (qp, dp, sp, wp) = (q.as_ptr(), d.as_ptr(), sums.as_ptr(), packed.as_ptr());
    for b in 0..nb {
        super::prefetch_pair_ahead(packed, nb, rec, t0, b);
        let mut dot = [[_mm512_setzero_si512(); R]; T];
        // With few rows, a second set of sums halves the chains of
        // dependent dot products (integer sums: the same result).
        let split = R <= 2;
        let mut second = [[_mm512_setzero_si512(); R]; T];
        let mut base = [wp; T];
        for (t, base) in base.iter_mut().enumerate() {
            // SAFETY: record (t0 + t, b) lies inside `packed`.
            *base = unsafe { wp.add(record_index(nb, t0 + t, b) * rec) };
        }
        if four {
            for g in 0..4 {
                let (mut low, mut high) = ([_mm512_setzero_si512(); R], [_mm512_setzero_si512(); R]);
                for r in 0..R {
                    // SAFETY: row m + r's int8 inputs of this block.
                    unsafe {
                        low[r] = inputs4(qp, (m + r) * k + b * BLOCK + 4 * g);
                        high[r] = inputs4(qp, (m + r) * k + b * BLOCK + 16 + 4 * g);
                    }
                }
                for t in 0..T {
                    // SAFETY: chunk g of the record's codes.
                    let v = unsafe { _mm512_loadu_si512(base[t].add(g * CHUNK).cast()) };
                    let lo = _mm512_and_si512(v, nibble);
                    let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(v), nibble);
                    for r in 0..R {
                        dot[t][r] = _mm512_dpbusd_epi32(dot[t][r], lo, low[r]);
                        if split {
                            second[t][r] = _mm512_dpbusd_epi32(second[t][r], hi, high[r]);
                        } else {
                            dot[t][r] = _mm512_dpbusd_epi32(dot[t][r], hi, high[r]);
                        }
                    }
                }
            }
        } else {
            for g in 0..BLOCK / 4 {
                let mut inputs = [_mm512_setzero_si512(); R];
                for (r, v) in inputs.iter_mut().enumerate() {
                    // SAFETY: row m + r's int8 inputs of this block.
                    *v = unsafe { inputs4(qp, (m + r) * k + b * BLOCK + 4 * g) };
                }
                for t in 0..T {
                    // SAFETY: chunk g of the record's codes.
                    let v = unsafe { _mm512_loadu_si512(base[t].add(g * CHUNK).cast()) };
                    for r in 0..R {
                        if split && g % 2 == 1 {
                            second[t][r] = _mm512_dpbusd_epi32(second[t][r], v, inputs[r]);
                        } else {
                            dot[t][r] = _mm512_dpbusd_epi32(dot[t][r], v, inputs[r]);
                        }
                    }
                }
            }
        }
        if split {
            for (dot, second) in dot.iter_mut().zip(&second) {
                for (d, s) in dot.iter_mut().zip(second) {
                    *d = _mm512_add_epi32(*d, *s);
                }
            }
        }
        for t in 0..T {
            // SAFETY: the record's scales and offsets.
            let (s, o) = unsafe {
                (
                    _mm512_cvtph_ps(_mm256_loadu_si256(base[t].add(cb).cast())),
                    _mm512_cvtph_ps(_mm256_loadu_si256(base[t].add(cb + 2 * TILE).cast())),
                )
            };
            for r in 0..R {
                // SAFETY: row m + r's block scale and sum.
                let (db, sb) = unsafe { (*dp.add((m + r) * nb + b), *sp.add((m + r) * nb + b)) };
                let scaled = _mm512_mul_ps(_mm512_cvtepi32_ps(dot[t][r]), _mm512_set1_ps(db));
                acc[t][r] = _mm512_fmadd_ps(o, _mm512_set1_ps(sb), _mm512_fmadd_ps(s, scaled, acc[t][r]));
            }
        }
    }
    // SAFETY: forwarded from the caller.
    unsafe { super::avx512::store_pair(shape, [&acc[0], &acc[1]], m, t0, y) }
}

/// [`super::quantize_block`] on AVX-512F, with the same bits: the maximum
/// skips NaN lanes (`max` returns its second operand when the first is
/// NaN), `cvtps` rounds to nearest even as the portable form's
/// `+ 1.5·2²³ − 1.5·2²³` does, and NaN products become 0.
///
/// # Safety
/// AVX-512F must be available; `x` and `q` hold 32 elements.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn quantize_block(x: &[f32], q: &mut [i8]) -> (f32, f32) {
    debug_assert!(x.len() == BLOCK && q.len() == BLOCK);
    // SAFETY: `x` holds 32 floats.
    let (a, b) = unsafe { (_mm512_loadu_ps(x.as_ptr()), _mm512_loadu_ps(x.as_ptr().add(16))) };
    let abs = |v: __m512| _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(0x7FFF_FFFF)));
    let mut amax = _mm512_max_ps(abs(a), _mm512_setzero_ps());
    amax = _mm512_max_ps(abs(b), amax);
    let (d, inverse) = block_scale(_mm512_reduce_max_ps(amax));
    let inv = _mm512_set1_ps(inverse);
    let round = |v: __m512| {
        let scaled = _mm512_mul_ps(v, inv);
        let number = _mm512_cmp_ps_mask::<_CMP_ORD_Q>(scaled, scaled);
        let r = _mm512_maskz_cvtps_epi32(number, scaled);
        _mm512_max_epi32(_mm512_min_epi32(r, _mm512_set1_epi32(127)), _mm512_set1_epi32(-127))
    };
    let (qa, qb) = (round(a), round(b));
    // SAFETY: `q` holds 32 bytes.
    unsafe {
        _mm_storeu_si128(q.as_mut_ptr().cast(), _mm512_cvtepi32_epi8(qa));
        _mm_storeu_si128(q.as_mut_ptr().add(16).cast(), _mm512_cvtepi32_epi8(qb));
    }
    let sum = _mm512_reduce_add_epi32(_mm512_add_epi32(qa, qb));
    (d, d * sum as f32)
}
