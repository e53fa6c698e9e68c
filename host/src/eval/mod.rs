//! Evaluation: metrics that score answers against references, the LLM
//! judge, and the statistics (bootstrap intervals, paired tests) that say
//! how sure a comparison is.

pub mod judge;
pub mod metrics;
pub mod statistics;

pub use judge::{Judge, JudgeConfig, JudgeOutcome};
pub use metrics::Metric;
pub use statistics::{MeanWithInterval, PairedComparison, bootstrap_mean, paired_bootstrap};

/// A metric a run scores with: a reference metric computed from the text
/// alone, or the LLM judge (`llm-judge`, configured in `[evaluation.judge]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMetric {
    /// A pure function of answer and reference.
    Reference(Metric),
    /// The judge model's score, averaged over repeats.
    LlmJudge,
    /// K-QA comprehensiveness: the share of the item's must-have statements
    /// the judge finds entailed by the answer (higher is better).
    KqaComprehensiveness,
    /// K-QA contradiction: how many of the item's statements the judge finds
    /// contradicted by the answer (lower is better).
    KqaContradiction,
}

/// Name of [`RunMetric::KqaComprehensiveness`].
pub const KQA_COMPREHENSIVENESS: &str = "k-qa-comprehensiveness";
/// Name of [`RunMetric::KqaContradiction`].
pub const KQA_CONTRADICTION: &str = "k-qa-contradiction";

impl RunMetric {
    /// The metric's name as written in configurations and results.
    pub fn name(self) -> &'static str {
        match self {
            RunMetric::Reference(m) => m.name(),
            RunMetric::LlmJudge => judge::METRIC_NAME,
            RunMetric::KqaComprehensiveness => KQA_COMPREHENSIVENESS,
            RunMetric::KqaContradiction => KQA_CONTRADICTION,
        }
    }

    /// Whether the metric asks the judge model of `[evaluation.judge]`.
    pub fn needs_judge(self) -> bool {
        !matches!(self, RunMetric::Reference(_))
    }
}

impl<'de> serde::Deserialize<'de> for RunMetric {
    /// Reads through `Metric`'s own names, so a metric added there is known here.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        match name.as_str() {
            judge::METRIC_NAME => return Ok(RunMetric::LlmJudge),
            KQA_COMPREHENSIVENESS => return Ok(RunMetric::KqaComprehensiveness),
            KQA_CONTRADICTION => return Ok(RunMetric::KqaContradiction),
            _ => {}
        }
        Metric::deserialize(serde::de::value::StrDeserializer::<D::Error>::new(&name))
            .map(RunMetric::Reference)
            .map_err(|_| {
                let known: Vec<&str> = Metric::ALL
                    .iter()
                    .map(|m| m.name())
                    .chain([judge::METRIC_NAME, KQA_COMPREHENSIVENESS, KQA_CONTRADICTION])
                    .collect();
                serde::de::Error::custom(format!("unknown metric `{name}`; known metrics: {}", known.join(", ")))
            })
    }
}

impl std::fmt::Display for RunMetric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
