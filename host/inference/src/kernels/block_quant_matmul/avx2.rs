//! The AVX2 path: each tile is two registers of 8 columns; up to 2 rows
//! of one tile at once (16 registers leave no room for more). With int8
//! activations, 4-input dot products from `vpmaddubsw` (unsigned 4-bit
//! codes × signed inputs, pairs summed in 16 bits: at most 2·15·127, so
//! never saturated) and `vpmaddwd`; 8-bit codes are split into two 4-bit
//! halves, `16·hi + lo`.

use std::arch::x86_64::*;

use super::{BLOCK, BlockQuantShape, CHUNK, Operands, TILE, block_scale, code_bytes, record_bytes, record_index};

/// See [`super::tile_pair`].
///
/// # Safety
/// AVX2, FMA and F16C must be available; bounds as in
/// [`super::tile_pair`].
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn tile_pair(ops: Operands<'_>, row0: usize, rows: usize, t0: usize, y: *mut f32) {
    let mut m = row0;
    while m < row0 + rows {
        // SAFETY: forwarded from the caller.
        unsafe {
            let int8 = ops.shape.int8;
            if row0 + rows - m >= 2 {
                let (a, b) = if int8 {
                    (pass_int8::<2>(ops, m, t0), pass_int8::<2>(ops, m, t0 + 1))
                } else {
                    (pass::<2>(ops, m, t0), pass::<2>(ops, m, t0 + 1))
                };
                store(ops.shape, &a, &b, m, t0, y);
                m += 2;
            } else {
                let (a, b) = if int8 {
                    (pass_int8::<1>(ops, m, t0), pass_int8::<1>(ops, m, t0 + 1))
                } else {
                    (pass::<1>(ops, m, t0), pass::<1>(ops, m, t0 + 1))
                };
                store(ops.shape, &a, &b, m, t0, y);
                m += 1;
            }
        }
    }
}

/// Writes rows `m..` of tiles `t0` (`a`) and `t0 + 1` (`b`), or their
/// SwiGLU.
///
/// # Safety
/// As [`super::tile_pair`].
unsafe fn store<const R: usize>(
    shape: &BlockQuantShape,
    a: &[[f32; TILE]; R],
    b: &[[f32; TILE]; R],
    m: usize,
    t0: usize,
    y: *mut f32,
) {
    let outputs = shape.outputs();
    for r in 0..R {
        // SAFETY (all below): row m + r and the columns written are
        // inside `y`, and only this item writes them.
        unsafe {
            let row = y.add((m + r) * outputs);
            if shape.swiglu {
                for j in 0..TILE {
                    *row.add((t0 / 2) * TILE + j) = super::swiglu(a[r][j], b[r][j]);
                }
            } else {
                for (t, lanes) in [(t0, &a[r]), (t0 + 1, &b[r])] {
                    let col0 = t * TILE;
                    for (j, &v) in lanes.iter().enumerate().take(outputs.saturating_sub(col0).min(TILE)) {
                        *row.add(col0 + j) = v;
                    }
                }
            }
        }
    }
}

/// `R` rows from `m` of tile `t`: each row's 16 columns.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn pass<const R: usize>(ops: Operands<'_>, m: usize, t: usize) -> [[f32; TILE]; R] {
    let Operands { shape, packed, x, sums, .. } = ops;
    let (k, nb) = (shape.k, shape.blocks());
    let rec = record_bytes(shape.bits);
    let cb = code_bytes(shape.bits);
    let four = shape.bits == 4;
    let low = _mm256_set1_epi32(0xF);
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    let xp = x.as_ptr();
    let sp = sums.as_ptr();
    let wp = packed.as_ptr();
    for b in 0..nb {
        // SAFETY (all below): record (t, b) lies inside `packed`;
        // activations of rows m..m+R, inputs < k; sums of those rows.
        unsafe {
            let base = wp.add(record_index(nb, t, b) * rec);
            if t.is_multiple_of(2) {
                super::prefetch_pair_ahead(packed, nb, rec, t, b);
            }
            let mut even = [[_mm256_setzero_ps(); 2]; R];
            let mut odd = [[_mm256_setzero_ps(); 2]; R];
            for p in 0..BLOCK / 2 {
                let kk = b * BLOCK + 2 * p;
                for h in 0..2 {
                    let (c0, c1) = if four {
                        let v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(base.add(p * TILE + 8 * h).cast()));
                        (_mm256_cvtepi32_ps(_mm256_and_si256(v, low)), _mm256_cvtepi32_ps(_mm256_srli_epi32::<4>(v)))
                    } else {
                        let v0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(base.add(2 * p * TILE + 8 * h).cast()));
                        let v1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(base.add((2 * p + 1) * TILE + 8 * h).cast()));
                        (_mm256_cvtepi32_ps(v0), _mm256_cvtepi32_ps(v1))
                    };
                    for r in 0..R {
                        let xr = xp.add((m + r) * k + kk);
                        even[r][h] = _mm256_fmadd_ps(_mm256_set1_ps(*xr), c0, even[r][h]);
                        odd[r][h] = _mm256_fmadd_ps(_mm256_set1_ps(*xr.add(1)), c1, odd[r][h]);
                    }
                }
            }
            for h in 0..2 {
                let s = _mm256_cvtph_ps(_mm_loadu_si128(base.add(cb + 16 * h).cast()));
                let o = _mm256_cvtph_ps(_mm_loadu_si128(base.add(cb + 2 * TILE + 16 * h).cast()));
                for r in 0..R {
                    let sb = _mm256_set1_ps(*sp.add((m + r) * nb + b));
                    let block = _mm256_add_ps(even[r][h], odd[r][h]);
                    acc[r][h] = _mm256_fmadd_ps(o, sb, _mm256_fmadd_ps(s, block, acc[r][h]));
                }
            }
        }
    }
    columns(&acc)
}

/// Each row's two registers as its 16 columns.
#[target_feature(enable = "avx")]
#[inline]
fn columns<const R: usize>(acc: &[[__m256; 2]; R]) -> [[f32; TILE]; R] {
    let mut out = [[0f32; TILE]; R];
    for (lanes, halves) in out.iter_mut().zip(acc) {
        // SAFETY: `lanes` holds two registers.
        unsafe {
            _mm256_storeu_ps(lanes.as_mut_ptr(), halves[0]);
            _mm256_storeu_ps(lanes.as_mut_ptr().add(8), halves[1]);
        }
    }
    out
}

/// `Σ c·x` over each group of 4 bytes, in 32-bit lanes: `c` unsigned codes
/// of at most 15, `x` signed inputs (exact: the 16-bit pair sums stay
/// within ±3810).
#[target_feature(enable = "avx2")]
#[inline]
fn dot4(c: __m256i, x: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(c, x), _mm256_set1_epi16(1))
}

/// `R` rows from `m` of tile `t` with int8 activations: each row's 16
/// columns, in the documented order.
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
unsafe fn pass_int8<const R: usize>(ops: Operands<'_>, m: usize, t: usize) -> [[f32; TILE]; R] {
    let Operands { shape, packed, sums, q, d, .. } = ops;
    let (k, nb) = (shape.k, shape.blocks());
    let rec = record_bytes(shape.bits);
    let cb = code_bytes(shape.bits);
    let nibble = _mm256_set1_epi8(0x0F);
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    let (qp, dp, sp, wp) = (q.as_ptr(), d.as_ptr(), sums.as_ptr(), packed.as_ptr());
    // The int8 inputs `at..at + 4`, in every 32-bit lane.
    let inputs4 = |at: usize| -> __m256i {
        // SAFETY: callers pass positions of this block's inputs.
        _mm256_set1_epi32(unsafe { qp.add(at).cast::<i32>().read_unaligned() })
    };
    for b in 0..nb {
        // SAFETY (all below): record (t, b) lies inside `packed`; inputs,
        // scales and sums of rows m..m+R, block b.
        unsafe {
            let base = wp.add(record_index(nb, t, b) * rec);
            if t.is_multiple_of(2) {
                super::prefetch_pair_ahead(packed, nb, rec, t, b);
            }
            let mut dot = [[_mm256_setzero_si256(); 2]; R];
            let row = |r: usize| (m + r) * k + b * BLOCK;
            if shape.bits == 4 {
                for g in 0..4 {
                    for h in 0..2 {
                        let v = _mm256_loadu_si256(base.add(g * CHUNK + 32 * h).cast());
                        let lo = _mm256_and_si256(v, nibble);
                        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), nibble);
                        for (r, dot) in dot.iter_mut().enumerate() {
                            let low = dot4(lo, inputs4(row(r) + 4 * g));
                            let high = dot4(hi, inputs4(row(r) + 16 + 4 * g));
                            dot[h] = _mm256_add_epi32(dot[h], _mm256_add_epi32(low, high));
                        }
                    }
                }
            } else {
                for g in 0..BLOCK / 4 {
                    for h in 0..2 {
                        let v = _mm256_loadu_si256(base.add(g * CHUNK + 32 * h).cast());
                        let lo = _mm256_and_si256(v, nibble);
                        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), nibble);
                        for (r, dot) in dot.iter_mut().enumerate() {
                            let x = inputs4(row(r) + 4 * g);
                            let sum = _mm256_add_epi32(_mm256_slli_epi32::<4>(dot4(hi, x)), dot4(lo, x));
                            dot[h] = _mm256_add_epi32(dot[h], sum);
                        }
                    }
                }
            }
            for h in 0..2 {
                let s = _mm256_cvtph_ps(_mm_loadu_si128(base.add(cb + 16 * h).cast()));
                let o = _mm256_cvtph_ps(_mm_loadu_si128(base.add(cb + 2 * TILE + 16 * h).cast()));
                for r in 0..R {
                    let db = _mm256_set1_ps(*dp.add((m + r) * nb + b));
                    let sb = _mm256_set1_ps(*sp.add((m + r) * nb + b));
                    let scaled = _mm256_mul_ps(_mm256_cvtepi32_ps(dot[r][h]), db);
                    acc[r][h] = _mm256_fmadd_ps(o, sb, _mm256_fmadd_ps(s, scaled, acc[r][h]));
                }
            }
        }
    }
    columns(&acc)
}

/// [`super::quantize_block`] on AVX2, with the same bits: the maximum
/// skips NaN lanes (`max` returns its second operand when the first is
/// NaN), `cvtps` rounds to nearest even as the portable form's
/// `+ 1.5·2²³ − 1.5·2²³` does, and NaN products become 0.
///
/// # Safety
/// AVX2 must be available; `x` and `q` hold 32 elements.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn quantize_block(x: &[f32], q: &mut [i8]) -> (f32, f32) {
    debug_assert!(x.len() == BLOCK && q.len() == BLOCK);
    // SAFETY: `x` holds 32 floats.
    let v: [__m256; 4] = std::array::from_fn(|i| unsafe { _mm256_loadu_ps(x.as_ptr().add(8 * i)) });
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFF_FFFF));
    let mut amax = _mm256_setzero_ps();
    for &v in &v {
        amax = _mm256_max_ps(_mm256_and_ps(v, abs), amax);
    }
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` holds 8 floats.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), amax) };
    let (d, inverse) = block_scale(lanes.iter().fold(0f32, |m, &l| m.max(l)));
    let inv = _mm256_set1_ps(inverse);
    let round = |v: __m256| {
        let scaled = _mm256_mul_ps(v, inv);
        let number = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_ORD_Q>(scaled, scaled));
        let r = _mm256_and_si256(_mm256_cvtps_epi32(scaled), number);
        _mm256_max_epi32(_mm256_min_epi32(r, _mm256_set1_epi32(127)), _mm256_set1_epi32(-127))
    };
    let r = v.map(round);
    // Pack 4 × 8 int32 into 32 int8 in order: the packs work within 128-bit
    // halves, the permutation restores the order.
    let bytes = _mm256_packs_epi16(_mm256_packs_epi32(r[0], r[1]), _mm256_packs_epi32(r[2], r[3]));
    let ordered = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    // SAFETY: `q` holds 32 bytes.
    unsafe { _mm256_storeu_si256(q.as_mut_ptr().cast(), ordered) };
    let total = _mm256_add_epi32(_mm256_add_epi32(r[0], r[1]), _mm256_add_epi32(r[2], r[3]));
    let mut sums = [0i32; 8];
    // SAFETY: `sums` holds 8 integers.
    unsafe { _mm256_storeu_si256(sums.as_mut_ptr().cast(), total) };
    let sum: i32 = sums.iter().sum();
    (d, d * sum as f32)
}
