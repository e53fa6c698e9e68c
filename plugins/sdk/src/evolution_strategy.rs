//! Role `evolution-strategy`: the per-generation decisions of a
//! self-evolution loop: write QA pairs from knowledge fragments and choose
//! the fine-tuning set. Export with
//! [`export_evolution_strategy!`](crate::export_evolution_strategy).

use crate::{Params, Plugin, PluginError};

pub use crate::bindings::exports::techne::plugin::evolution_strategy::{QaPair, ScoredPair};

/// A self-evolution strategy (world `evolution-strategy-plugin`).
pub trait EvolutionStrategy: Plugin {
    /// Write one scored QA pair from `fragment` with `model`, the current
    /// generation's model (`generation` is 0-based).
    fn write_pair(fragment: &str, generation: u32, model: &str, params: &Params) -> Result<ScoredPair, PluginError>;

    /// Choose the fine-tuning set of `generation` among `candidates` (from
    /// this and earlier generations); returns indices into `candidates`.
    fn select(candidates: &[ScoredPair], generation: u32, params: &Params) -> Result<Vec<u32>, PluginError>;
}

impl QaPair {
    /// A pair written from `fragment`.
    pub fn new(fragment: impl Into<String>, question: impl Into<String>, answer: impl Into<String>) -> Self {
        QaPair { fragment: fragment.into(), question: question.into(), answer: answer.into() }
    }
}

impl ScoredPair {
    /// `pair` with its instruction-following difficulty `ifd`, written in
    /// `generation`.
    pub fn new(pair: QaPair, ifd: f64, generation: u32) -> Self {
        ScoredPair { pair, ifd, generation }
    }
}

/// Instruction-following difficulty: `loss(answer | question) /
/// loss(answer)`, from the mean log-probabilities of the answer with and
/// without the question (as returned by
/// [`scoring::mean_logprob`](crate::scoring::mean_logprob)). Returns `None`
/// when the unconditioned loss is 0 (IFD undefined).
pub fn ifd(conditioned_mean_logprob: f64, unconditioned_mean_logprob: f64) -> Option<f64> {
    let conditioned_loss = -conditioned_mean_logprob;
    let unconditioned_loss = -unconditioned_mean_logprob;
    if unconditioned_loss == 0.0 || !unconditioned_loss.is_finite() || !conditioned_loss.is_finite() {
        None
    } else {
        Some(conditioned_loss / unconditioned_loss)
    }
}

/// Exports `$plugin` (a type implementing [`Plugin`] and
/// [`EvolutionStrategy`]) as the component's `describe` and
/// `evolution-strategy` interfaces. Invoke it once, in the plugin crate's
/// `lib.rs`.
///
/// ```no_run
/// use techne_plugin_sdk::{export_evolution_strategy, EvolutionStrategy, Metadata, Params, Plugin, PluginError, QaPair, ScoredPair};
///
/// struct KeepAll;
///
/// impl Plugin for KeepAll {
///     fn metadata() -> Metadata {
///         Metadata::new("keep-all", "0.1.0", "Keeps every pair.")
///     }
/// }
///
/// impl EvolutionStrategy for KeepAll {
///     fn write_pair(fragment: &str, generation: u32, _model: &str, _params: &Params) -> Result<ScoredPair, PluginError> {
///         Ok(ScoredPair::new(QaPair::new(fragment, "What does it say?", fragment), 1.0, generation))
///     }
///     fn select(candidates: &[ScoredPair], _generation: u32, _params: &Params) -> Result<Vec<u32>, PluginError> {
///         Ok((0..candidates.len() as u32).collect())
///     }
/// }
///
/// export_evolution_strategy!(KeepAll);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export_evolution_strategy {
    ($plugin:ty) => {
        $crate::__techne_export_role! {
            plugin: $plugin,
            world: "techne:plugin/evolution-strategy-plugin",
            with: {
                "techne:plugin/evolution-strategy@0.1.0/qa-pair": ::techne_plugin_sdk::__private::bindings::exports::techne::plugin::evolution_strategy::QaPair,
                "techne:plugin/evolution-strategy@0.1.0/scored-pair": ::techne_plugin_sdk::__private::bindings::exports::techne::plugin::evolution_strategy::ScoredPair,
            },
            interface evolution_strategy: $crate::EvolutionStrategy {
                fn write_pair(
                    borrowed fragment: ::std::string::String,
                    owned generation: u32,
                    borrowed model: ::std::string::String
                ) -> $crate::evolution_strategy::ScoredPair;
                fn select(
                    borrowed candidates: ::std::vec::Vec<$crate::evolution_strategy::ScoredPair>,
                    owned generation: u32
                ) -> ::std::vec::Vec<u32>;
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifd_is_the_ratio_of_losses() {
        assert_eq!(ifd(-1.0, -2.0), Some(0.5));
        assert_eq!(ifd(-1.0, 0.0), None);
        let p = ScoredPair::new(QaPair::new("f", "q", "a"), 0.5, 2);
        assert_eq!((p.pair.question.as_str(), p.generation), ("q", 2));
    }
}
