//! The AVX-512 VNNI path for int8 activations: 16 columns per register,
//! 4-byte integer dot products (`vpdpbusd`, unsigned codes × signed
//! inputs), up to 4 rows × 2 tiles at once.

use std::arch::x86_64::*;

use super::{BLOCK, CHUNK, Operands, ROWS_PER_PASS, TILE, code_bytes, record_bytes, record_index};

/// How many blocks ahead of the one being computed the weights are
/// prefetched.
const PREFETCH_BLOCKS: usize = 12;

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
    let (k, n, nb) = (shape.k, shape.n, shape.blocks());
    let rec = record_bytes(shape.bits);
    let cb = code_bytes(shape.bits);
    let four = shape.bits == 4;
    let nibble = _mm512_set1_epi8(0x0F);
    let mut acc = [[_mm512_setzero_ps(); R]; T];
    let (qp, dp, sp, wp) = (q.as_ptr(), d.as_ptr(), sums.as_ptr(), packed.as_ptr());
    for b in 0..nb {
        let ahead = wp.wrapping_add((record_index(nb, t0, b) + 2 * PREFETCH_BLOCKS) * rec);
        for line in (0..2 * rec).step_by(64) {
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line).cast());
        }
        let mut dot = [[_mm512_setzero_si512(); R]; T];
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
                        dot[t][r] = _mm512_dpbusd_epi32(dot[t][r], hi, high[r]);
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
                        dot[t][r] = _mm512_dpbusd_epi32(dot[t][r], v, inputs[r]);
                    }
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
    if shape.swiglu {
        let outputs = shape.outputs();
        let col0 = (t0 / 2) * TILE;
        for (r, (&gate, &up)) in acc[0].iter().zip(&acc[1]).enumerate() {
            let v = _mm512_mul_ps(super::avx512::silu(gate), up);
            // SAFETY: row m + r, columns col0..col0+16 ≤ outputs are in `y`.
            unsafe { _mm512_storeu_ps(y.add((m + r) * outputs + col0), v) };
        }
        return;
    }
    for (t, tile) in acc.iter().enumerate() {
        let col0 = (t0 + t) * TILE;
        let valid = n.saturating_sub(col0).min(TILE);
        let mask: __mmask16 = if valid == TILE { 0xFFFF } else { (1u16 << valid) - 1 };
        for (r, &v) in tile.iter().enumerate() {
            // SAFETY: row m + r, columns col0..col0+valid are in `y`.
            unsafe { _mm512_mask_storeu_ps(y.add((m + r) * n + col0), mask, v) };
        }
    }
}
