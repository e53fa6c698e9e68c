//! The AVX-512 path: 16 columns per register, up to 4 rows × 2 tiles
//! accumulated at once.

use std::arch::x86_64::*;

use super::{BLOCK, BlockQuantShape, Operands, ROWS_PER_PASS, TILE, code_bytes, record_bytes, record_index};

/// See [`super::tile_pair`].
///
/// # Safety
/// AVX-512F must be available; bounds as in [`super::tile_pair`].
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn tile_pair(ops: Operands<'_>, row0: usize, rows: usize, t0: usize, y: *mut f32) {
    let mut m = row0;
    let end = row0 + rows;
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

/// Tiles `t0` and `t0 + 1`.
const T: usize = 2;

/// `R` rows from `m`, tiles `t0` and `t0 + 1`.
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn pass<const R: usize>(ops: Operands<'_>, m: usize, t0: usize, y: *mut f32) {
    let Operands { shape, packed, x, sums, .. } = ops;
    let (k, nb) = (shape.k, shape.blocks());
    let rec = record_bytes(shape.bits);
    let cb = code_bytes(shape.bits);
    let four = shape.bits == 4;
    let table = _mm512_setr_ps(0., 1., 2., 3., 4., 5., 6., 7., 8., 9., 10., 11., 12., 13., 14., 15.);
    let mut acc = [[_mm512_setzero_ps(); R]; T];
    let xp = x.as_ptr();
    let sp = sums.as_ptr();
    let wp = packed.as_ptr();
    for b in 0..nb {
        super::prefetch_pair_ahead(packed, nb, rec, t0, b);
        let mut even = [[_mm512_setzero_ps(); R]; T];
        let mut odd = [[_mm512_setzero_ps(); R]; T];
        let mut base = [wp; T];
        let mut s = [_mm512_setzero_ps(); T];
        let mut o = [_mm512_setzero_ps(); T];
        for t in 0..T {
            // SAFETY: record (t0 + t, b) lies inside `packed`.
            unsafe {
                base[t] = wp.add(record_index(nb, t0 + t, b) * rec);
                s[t] = _mm512_cvtph_ps(_mm256_loadu_si256(base[t].add(cb).cast()));
                o[t] = _mm512_cvtph_ps(_mm256_loadu_si256(base[t].add(cb + 2 * TILE).cast()));
            }
        }
        for p in 0..BLOCK / 2 {
            let kk = b * BLOCK + 2 * p;
            for t in 0..T {
                // SAFETY: code bytes of the record; activations of rows
                // m..m+R, inputs kk and kk+1 < k.
                unsafe {
                    let (w0, w1) = if four {
                        let v = _mm512_cvtepu8_epi32(_mm_loadu_si128(base[t].add(p * TILE).cast()));
                        (_mm512_permutexvar_ps(v, table), _mm512_permutexvar_ps(_mm512_srli_epi32::<4>(v), table))
                    } else {
                        let v0 = _mm512_cvtepu8_epi32(_mm_loadu_si128(base[t].add(2 * p * TILE).cast()));
                        let v1 = _mm512_cvtepu8_epi32(_mm_loadu_si128(base[t].add((2 * p + 1) * TILE).cast()));
                        (_mm512_cvtepi32_ps(v0), _mm512_cvtepi32_ps(v1))
                    };
                    for r in 0..R {
                        let xr = xp.add((m + r) * k + kk);
                        even[t][r] = _mm512_fmadd_ps(_mm512_set1_ps(*xr), w0, even[t][r]);
                        odd[t][r] = _mm512_fmadd_ps(_mm512_set1_ps(*xr.add(1)), w1, odd[t][r]);
                    }
                }
            }
        }
        for t in 0..T {
            for r in 0..R {
                // SAFETY: row m + r's block sums are in `sums`.
                let sb = _mm512_set1_ps(unsafe { *sp.add((m + r) * nb + b) });
                let block = _mm512_add_ps(even[t][r], odd[t][r]);
                acc[t][r] = _mm512_fmadd_ps(o[t], sb, _mm512_fmadd_ps(s[t], block, acc[t][r]));
            }
        }
    }
    // SAFETY: forwarded from the caller.
    unsafe { store_pair(shape, [&acc[0], &acc[1]], m, t0, y) }
}

/// Writes rows `m..m + R` of tiles `t0` and `t0 + 1` (`tiles`), or with
/// SwiGLU their `silu(gate)·up`.
///
/// # Safety
/// AVX-512F must be available; rows `m..m + R` and the pair's columns must
/// lie inside `y` (`[rows][outputs]`), written by this caller alone.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn store_pair<const R: usize>(
    shape: &BlockQuantShape,
    tiles: [&[__m512; R]; 2],
    m: usize,
    t0: usize,
    y: *mut f32,
) {
    if shape.swiglu {
        let outputs = shape.outputs();
        let col0 = (t0 / 2) * TILE;
        for (r, (&gate, &up)) in tiles[0].iter().zip(tiles[1]).enumerate() {
            let v = _mm512_mul_ps(silu(gate), up);
            // SAFETY: row m + r, columns col0..col0+16 ≤ outputs are in `y`.
            unsafe { _mm512_storeu_ps(y.add((m + r) * outputs + col0), v) };
        }
        return;
    }
    let n = shape.n;
    for (t, tile) in tiles.iter().enumerate() {
        let col0 = (t0 + t) * TILE;
        let valid = n.saturating_sub(col0).min(TILE);
        let mask: __mmask16 = if valid == TILE { 0xFFFF } else { (1u16 << valid) - 1 };
        for (r, &v) in tile.iter().enumerate() {
            // SAFETY: row m + r, columns col0..col0+valid are in `y`.
            unsafe { _mm512_mask_storeu_ps(y.add((m + r) * n + col0), mask, v) };
        }
    }
}

/// `g / (1 + exp(−g))` lane by lane, the operations of
/// [`super::swiglu`].
#[target_feature(enable = "avx512f")]
#[inline]
fn silu(g: __m512) -> __m512 {
    let e = crate::kernels::exp::x86::exp512(_mm512_sub_ps(_mm512_setzero_ps(), g));
    _mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.0), e))
}
