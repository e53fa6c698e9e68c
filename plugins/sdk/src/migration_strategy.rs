//! Role `migration-strategy`: the decisions of a service-to-local migration
//! loop: judge the local model, synthesise and curate training data with the
//! service model. Export with
//! [`export_migration_strategy!`](crate::export_migration_strategy).

use crate::{Params, Plugin, PluginError};

pub use crate::bindings::exports::techne::plugin::migration_strategy::{Example, Judgement};

/// A migration strategy (world `migration-strategy-plugin`).
pub trait MigrationStrategy: Plugin {
    /// Judge the local model's `response` to `reference.prompt` against
    /// `reference.response`, using `service_model`.
    fn judge(
        reference: &Example,
        response: &str,
        service_model: &str,
        params: &Params,
    ) -> Result<Judgement, PluginError>;

    /// Write about `count` new examples in the style of `seeds` with
    /// `service_model` (`round` is 0-based).
    fn synthesize(
        seeds: &[Example],
        count: u32,
        service_model: &str,
        round: u32,
        params: &Params,
    ) -> Result<Vec<Example>, PluginError>;

    /// Choose which `candidates` to keep: not duplicates of each other or of
    /// `existing`, not contaminated by `test_prompts`. Returns indices into
    /// `candidates`.
    fn curate(
        candidates: &[Example],
        existing: &[Example],
        test_prompts: &[String],
        params: &Params,
    ) -> Result<Vec<u32>, PluginError>;
}

impl Example {
    /// A prompt with its reference response.
    pub fn new(prompt: impl Into<String>, response: impl Into<String>) -> Self {
        Example { prompt: prompt.into(), response: response.into() }
    }
}

impl Judgement {
    /// Scores from 1 to 100 (values outside are clamped).
    pub fn new(similarity: f64, precision: f64) -> Self {
        Judgement { similarity: similarity.clamp(1.0, 100.0), precision: precision.clamp(1.0, 100.0) }
    }
}

/// Exports `$plugin` (a type implementing [`Plugin`] and
/// [`MigrationStrategy`]) as the component's `describe` and
/// `migration-strategy` interfaces. Invoke it once, in the plugin crate's
/// `lib.rs`.
///
/// ```no_run
/// use techne_plugin_sdk::{export_migration_strategy, Example, Judgement, Metadata, MigrationStrategy, Params, Plugin, PluginError};
///
/// struct Naive;
///
/// impl Plugin for Naive {
///     fn metadata() -> Metadata {
///         Metadata::new("naive", "0.1.0", "Exact-match judge, no synthesis, keeps everything.")
///     }
/// }
///
/// impl MigrationStrategy for Naive {
///     fn judge(reference: &Example, response: &str, _m: &str, _p: &Params) -> Result<Judgement, PluginError> {
///         let score = if reference.response.trim() == response.trim() { 100.0 } else { 1.0 };
///         Ok(Judgement::new(score, score))
///     }
///     fn synthesize(_s: &[Example], _c: u32, _m: &str, _r: u32, _p: &Params) -> Result<Vec<Example>, PluginError> {
///         Ok(Vec::new())
///     }
///     fn curate(candidates: &[Example], _e: &[Example], _t: &[String], _p: &Params) -> Result<Vec<u32>, PluginError> {
///         Ok((0..candidates.len() as u32).collect())
///     }
/// }
///
/// export_migration_strategy!(Naive);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export_migration_strategy {
    ($plugin:ty) => {
        $crate::__techne_export_role! {
            plugin: $plugin,
            world: "techne:plugin/migration-strategy-plugin",
            with: {
                "techne:plugin/migration-strategy@0.1.0/example": ::techne_plugin_sdk::__private::bindings::exports::techne::plugin::migration_strategy::Example,
                "techne:plugin/migration-strategy@0.1.0/judgement": ::techne_plugin_sdk::__private::bindings::exports::techne::plugin::migration_strategy::Judgement,
            },
            interface migration_strategy: $crate::MigrationStrategy {
                fn judge(
                    borrowed reference: $crate::migration_strategy::Example,
                    borrowed response: ::std::string::String,
                    borrowed service_model: ::std::string::String
                ) -> $crate::migration_strategy::Judgement;
                fn synthesize(
                    borrowed seeds: ::std::vec::Vec<$crate::migration_strategy::Example>,
                    owned count: u32,
                    borrowed service_model: ::std::string::String,
                    owned round: u32
                ) -> ::std::vec::Vec<$crate::migration_strategy::Example>;
                fn curate(
                    borrowed candidates: ::std::vec::Vec<$crate::migration_strategy::Example>,
                    borrowed existing: ::std::vec::Vec<$crate::migration_strategy::Example>,
                    borrowed test_prompts: ::std::vec::Vec<::std::string::String>
                ) -> ::std::vec::Vec<u32>;
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judgement_scores_are_clamped() {
        let j = Judgement::new(0.0, 250.0);
        assert_eq!((j.similarity, j.precision), (1.0, 100.0));
        assert_eq!(Example::new("p", "r").response, "r");
    }
}
