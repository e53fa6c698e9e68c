//! Evaluation: metrics that score answers against references, and the
//! statistics (bootstrap intervals, paired tests) that say how sure a
//! comparison is.

pub mod metrics;
pub mod statistics;

pub use metrics::Metric;
pub use statistics::{MeanWithInterval, PairedComparison, bootstrap_mean, paired_bootstrap};
