//! Role `migration-strategy`: the decisions of a service-to-local migration
//! loop: judge the local model, synthesise and curate training data with the
//! service model. Export with
//! [`export_migration_strategy!`](crate::export_migration_strategy).

use crate::__private::WitPluginError;
use crate::{ParameterValue, Params, Plugin, PluginError};

pub use crate::bindings::exports::techne::plugin::migration_strategy::{Example, Judgement};

/// A migration strategy (world `migration-strategy-plugin`).
pub trait MigrationStrategy: Plugin {
    /// Judge the local model's `response` to `reference.prompt` against
    /// `reference.response`, using `service_model`.
    fn judge(reference: &Example, response: &str, service_model: &str, params: &Params) -> Result<Judgement, PluginError>;

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

#[doc(hidden)]
pub fn __judge<T: MigrationStrategy>(
    reference: Example,
    response: String,
    service_model: String,
    params: Vec<ParameterValue>,
) -> Result<Judgement, WitPluginError> {
    T::judge(&reference, &response, &service_model, &Params::new(params)).map_err(Into::into)
}

#[doc(hidden)]
pub fn __synthesize<T: MigrationStrategy>(
    seeds: Vec<Example>,
    count: u32,
    service_model: String,
    round: u32,
    params: Vec<ParameterValue>,
) -> Result<Vec<Example>, WitPluginError> {
    T::synthesize(&seeds, count, &service_model, round, &Params::new(params)).map_err(Into::into)
}

#[doc(hidden)]
pub fn __curate<T: MigrationStrategy>(
    candidates: Vec<Example>,
    existing: Vec<Example>,
    test_prompts: Vec<String>,
    params: Vec<ParameterValue>,
) -> Result<Vec<u32>, WitPluginError> {
    T::curate(&candidates, &existing, &test_prompts, &Params::new(params)).map_err(Into::into)
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
        #[doc(hidden)]
        type __TechnePlugin = $plugin;

        #[doc(hidden)]
        #[allow(dead_code, unused_imports, unsafe_op_in_unsafe_fn, missing_docs, clippy::all)]
        mod __techne_plugin_export {
            $crate::__techne_generate_role_world!("techne:plugin/migration-strategy-plugin", {
                "techne:plugin/migration-strategy@0.1.0/example": ::techne_plugin_sdk::__private::bindings::exports::techne::plugin::migration_strategy::Example,
                "techne:plugin/migration-strategy@0.1.0/judgement": ::techne_plugin_sdk::__private::bindings::exports::techne::plugin::migration_strategy::Judgement,
            });

            struct Export;

            impl exports::techne::plugin::describe::Guest for Export {
                fn metadata() -> $crate::Metadata {
                    <super::__TechnePlugin as $crate::Plugin>::metadata()
                }
            }

            impl exports::techne::plugin::migration_strategy::Guest for Export {
                fn judge(
                    reference: $crate::migration_strategy::Example,
                    response: ::std::string::String,
                    service_model: ::std::string::String,
                    params: ::std::vec::Vec<$crate::ParameterValue>,
                ) -> ::core::result::Result<$crate::migration_strategy::Judgement, $crate::__private::WitPluginError> {
                    $crate::migration_strategy::__judge::<super::__TechnePlugin>(reference, response, service_model, params)
                }

                fn synthesize(
                    seeds: ::std::vec::Vec<$crate::migration_strategy::Example>,
                    count: u32,
                    service_model: ::std::string::String,
                    round: u32,
                    params: ::std::vec::Vec<$crate::ParameterValue>,
                ) -> ::core::result::Result<::std::vec::Vec<$crate::migration_strategy::Example>, $crate::__private::WitPluginError> {
                    $crate::migration_strategy::__synthesize::<super::__TechnePlugin>(seeds, count, service_model, round, params)
                }

                fn curate(
                    candidates: ::std::vec::Vec<$crate::migration_strategy::Example>,
                    existing: ::std::vec::Vec<$crate::migration_strategy::Example>,
                    test_prompts: ::std::vec::Vec<::std::string::String>,
                    params: ::std::vec::Vec<$crate::ParameterValue>,
                ) -> ::core::result::Result<::std::vec::Vec<u32>, $crate::__private::WitPluginError> {
                    $crate::migration_strategy::__curate::<super::__TechnePlugin>(candidates, existing, test_prompts, params)
                }
            }

            export!(Export);
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
