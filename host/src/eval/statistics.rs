//! Uncertainty of scores: percentile bootstrap confidence intervals of a
//! mean, and a paired bootstrap test between two techniques scored on the
//! same items. Resampling is seeded, so reports are reproducible.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// A mean with its 95 % bootstrap confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MeanWithInterval {
    /// The sample mean.
    pub mean: f64,
    /// 2.5th percentile of the bootstrap means.
    pub low: f64,
    /// 97.5th percentile of the bootstrap means.
    pub high: f64,
    /// Number of items.
    pub n: usize,
}

/// Bootstrap resamples used by default.
pub const DEFAULT_RESAMPLES: usize = 2000;

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() { 0.0 } else { values.iter().sum::<f64>() / values.len() as f64 }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let pos = (sorted.len() - 1) as f64 * q;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// The mean of `values` with a 95 % percentile-bootstrap interval.
pub fn bootstrap_mean(values: &[f64], resamples: usize, seed: u64) -> MeanWithInterval {
    let n = values.len();
    if n == 0 {
        return MeanWithInterval { mean: 0.0, low: 0.0, high: 0.0, n };
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut means: Vec<f64> =
        (0..resamples.max(1)).map(|_| (0..n).map(|_| values[rng.random_range(0..n)]).sum::<f64>() / n as f64).collect();
    means.sort_by(f64::total_cmp);
    MeanWithInterval { mean: mean(values), low: percentile(&means, 0.025), high: percentile(&means, 0.975), n }
}

/// The result of a paired comparison of technique B against technique A.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PairedComparison {
    /// mean(B − A) with its 95 % bootstrap interval.
    pub difference: MeanWithInterval,
    /// Two-sided p-value of the paired bootstrap test of mean(B − A) = 0.
    pub p_value: f64,
}

/// Compare paired scores (`a[i]` and `b[i]` are the same item): the mean
/// difference with its interval, and a two-sided p-value from the bootstrap
/// distribution of the difference shifted to mean 0.
pub fn paired_bootstrap(a: &[f64], b: &[f64], resamples: usize, seed: u64) -> PairedComparison {
    let diffs: Vec<f64> = a.iter().zip(b).map(|(x, y)| y - x).collect();
    let difference = bootstrap_mean(&diffs, resamples, seed);
    let n = diffs.len();
    if n == 0 || diffs.iter().all(|d| *d == diffs[0]) {
        let p_value = if n > 0 && diffs[0] != 0.0 { 0.0 } else { 1.0 };
        return PairedComparison { difference, p_value };
    }
    let observed = difference.mean;
    let centred: Vec<f64> = diffs.iter().map(|d| d - observed).collect();
    let mut rng = StdRng::seed_from_u64(seed ^ 0xB007);
    let resamples = resamples.max(1);
    let extreme = (0..resamples)
        .filter(|_| {
            let m = (0..n).map(|_| centred[rng.random_range(0..n)]).sum::<f64>() / n as f64;
            m.abs() >= observed.abs() - 1e-12
        })
        .count();
    PairedComparison { difference, p_value: (extreme as f64 + 1.0) / (resamples as f64 + 1.0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_brackets_the_mean_and_is_reproducible() {
        let values: Vec<f64> = (0..100).map(|i| f64::from(u8::from(i % 3 == 0))).collect();
        let ci = bootstrap_mean(&values, 2000, 7);
        assert!((ci.mean - 0.34).abs() < 1e-12);
        assert!(ci.low < ci.mean && ci.mean < ci.high, "{ci:?}");
        // Binomial standard error ≈ 0.047: the interval is about ±0.09.
        assert!(ci.high - ci.low > 0.12 && ci.high - ci.low < 0.25, "{ci:?}");
        assert_eq!(ci, bootstrap_mean(&values, 2000, 7));
        assert_eq!(bootstrap_mean(&[1.0; 10], 100, 1), MeanWithInterval { mean: 1.0, low: 1.0, high: 1.0, n: 10 });
    }

    #[test]
    fn paired_test_separates_real_from_null_differences() {
        let a: Vec<f64> = (0..200).map(|i| f64::from(u8::from(i % 2 == 0))).collect();
        let better: Vec<f64> = (0..200).map(|i| f64::from(u8::from(i % 2 == 0 || i % 5 == 0))).collect();
        let strong = paired_bootstrap(&a, &better, 2000, 3);
        assert!(strong.difference.mean > 0.09 && strong.p_value < 0.01, "{strong:?}");
        let shuffled: Vec<f64> = (0..200).map(|i| f64::from(u8::from((i / 2) % 2 == 0))).collect();
        let null = paired_bootstrap(&a, &shuffled, 2000, 3);
        assert!(null.difference.mean.abs() < 1e-12 && null.p_value > 0.5, "{null:?}");
        assert_eq!(paired_bootstrap(&a, &a, 100, 1).p_value, 1.0);
    }
}
