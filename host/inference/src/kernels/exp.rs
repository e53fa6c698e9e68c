//! `e^x` in f32 that gives the same bits on every code path (portable,
//! AVX2, AVX-512): the SwiGLU output of `BlockQuantMatMul` and the sampler's
//! token weights use it, so that a result never depends on which
//! instructions the CPU has.
//!
//! Cephes' `expf`: `x = n·ln 2 + r` with `n` rounded to nearest-even and
//! `|r| ≤ ln2/2`, a degree-5 polynomial for `e^r`, then `2^n` from the
//! exponent bits; within about 1 ulp of the true value. Inputs are clamped
//! to [−87, 88], so the result is always a normal finite number.

pub(crate) const EXP_MIN: f32 = -87.0;
pub(crate) const EXP_MAX: f32 = 88.0;
pub(crate) const LN2_HI: f32 = 0.693_359_4;
pub(crate) const LN2_LO: f32 = -2.121_944_4e-4;
/// Cephes' `expf` coefficients, highest degree first.
pub(crate) const EXP_POLY: [f32; 6] = [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5];

/// `e^x` (`x` clamped to [−87, 88]).
pub fn exp_f32(x: f32) -> f32 {
    let x = x.clamp(EXP_MIN, EXP_MAX);
    let n = (x * std::f32::consts::LOG2_E).round_ties_even();
    let r = n.mul_add(-LN2_HI, x);
    let r = n.mul_add(-LN2_LO, r);
    let z = r * r;
    let mut p = EXP_POLY[0];
    for c in &EXP_POLY[1..] {
        p = p.mul_add(r, *c);
    }
    let y = p.mul_add(z, r) + 1.0;
    y * f32::from_bits((((n as i32) + 127) as u32) << 23)
}

/// `values[i] = e^((values[i] − shift) · scale)` for every element, with
/// the operations of [`exp_f32`] (the argument is computed as
/// `(v − shift) · scale` in f32 first), on the fastest path this CPU has.
pub fn exp_scaled_in_place(values: &mut [f32], shift: f32, scale: f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { x86::exp_scaled_avx512(values, shift, scale) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { x86::exp_scaled_avx2(values, shift, scale) };
        }
    }
    for v in values {
        *v = exp_f32((*v - shift) * scale);
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    //! The SIMD forms of [`super::exp_f32`], lane by lane the same
    //! operations.

    use std::arch::x86_64::*;

    use super::{EXP_MAX, EXP_MIN, EXP_POLY, LN2_HI, LN2_LO, exp_f32};

    /// `e^x` in each lane.
    #[target_feature(enable = "avx512f")]
    #[inline]
    pub(crate) fn exp512(x: __m512) -> __m512 {
        let x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(EXP_MIN)), _mm512_set1_ps(EXP_MAX));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
            x,
            _mm512_set1_ps(std::f32::consts::LOG2_E),
        ));
        let r = _mm512_fmadd_ps(n, _mm512_set1_ps(-LN2_HI), x);
        let r = _mm512_fmadd_ps(n, _mm512_set1_ps(-LN2_LO), r);
        let z = _mm512_mul_ps(r, r);
        let mut p = _mm512_set1_ps(EXP_POLY[0]);
        for c in &EXP_POLY[1..] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(*c));
        }
        let y = _mm512_add_ps(_mm512_fmadd_ps(p, z, r), _mm512_set1_ps(1.0));
        let scale = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(
            _mm512_cvtps_epi32(n),
            _mm512_set1_epi32(127),
        )));
        _mm512_mul_ps(y, scale)
    }

    /// `e^x` in each lane.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    pub(crate) fn exp256(x: __m256) -> __m256 {
        let x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(EXP_MIN)), _mm256_set1_ps(EXP_MAX));
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
            x,
            _mm256_set1_ps(std::f32::consts::LOG2_E),
        ));
        let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_HI), x);
        let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_LO), r);
        let z = _mm256_mul_ps(r, r);
        let mut p = _mm256_set1_ps(EXP_POLY[0]);
        for c in &EXP_POLY[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(*c));
        }
        let y = _mm256_add_ps(_mm256_fmadd_ps(p, z, r), _mm256_set1_ps(1.0));
        let scale = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        )));
        _mm256_mul_ps(y, scale)
    }

    /// [`super::exp_scaled_in_place`] on AVX-512.
    #[target_feature(enable = "avx512f")]
    pub(crate) fn exp_scaled_avx512(values: &mut [f32], shift: f32, scale: f32) {
        let mut chunks = values.chunks_exact_mut(16);
        let (sh, sc) = (_mm512_set1_ps(shift), _mm512_set1_ps(scale));
        for chunk in &mut chunks {
            // SAFETY: `chunk` holds 16 floats.
            unsafe {
                let v = _mm512_loadu_ps(chunk.as_ptr());
                _mm512_storeu_ps(chunk.as_mut_ptr(), exp512(_mm512_mul_ps(_mm512_sub_ps(v, sh), sc)));
            }
        }
        for v in chunks.into_remainder() {
            *v = exp_f32((*v - shift) * scale);
        }
    }

    /// [`super::exp_scaled_in_place`] on AVX2.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) fn exp_scaled_avx2(values: &mut [f32], shift: f32, scale: f32) {
        let mut chunks = values.chunks_exact_mut(8);
        let (sh, sc) = (_mm256_set1_ps(shift), _mm256_set1_ps(scale));
        for chunk in &mut chunks {
            // SAFETY: `chunk` holds 8 floats.
            unsafe {
                let v = _mm256_loadu_ps(chunk.as_ptr());
                _mm256_storeu_ps(chunk.as_mut_ptr(), exp256(_mm256_mul_ps(_mm256_sub_ps(v, sh), sc)));
            }
        }
        for v in chunks.into_remainder() {
            *v = exp_f32((*v - shift) * scale);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_f64_and_every_path_gives_the_same_bits() {
        let mut worst = 0f64;
        let xs: Vec<f32> = (0..17501).map(|i| -87.0 + i as f32 * 0.01).collect();
        for &x in &xs {
            let want = f64::from(x).exp();
            worst = worst.max(((f64::from(exp_f32(x)) - want) / want).abs());
        }
        assert!(worst < 2.0 * f64::from(f32::EPSILON), "relative error {worst:e}");
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-1000.0), exp_f32(-87.0));
        let scalar: Vec<u32> = xs.iter().map(|&x| exp_f32((x - 0.5) * 0.8).to_bits()).collect();
        let mut fast = xs.clone();
        exp_scaled_in_place(&mut fast, 0.5, 0.8);
        assert_eq!(fast.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), scalar, "best path");
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            let mut avx2 = xs.clone();
            // SAFETY: checked just above.
            unsafe { x86::exp_scaled_avx2(&mut avx2, 0.5, 0.8) };
            assert_eq!(avx2.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), scalar, "AVX2");
        }
    }
}
