//! Extension `rewriter-trainer`: the training side of a rewriter, i.e. the
//! decisions of a rewriter's data collection (sample rewrites, turn judged
//! answers into DPO preference pairs). Export a type that implements both
//! [`Rewriter`](crate::Rewriter) and [`RewriterTrainer`] with
//! [`export_rewriter_trainer!`](crate::export_rewriter_trainer).

use crate::{Params, PluginError, Rewriter};

pub use crate::bindings::exports::techne::plugin::rewriter_trainer::{CriterionScore, JudgedQuestion, PreferencePair};

/// A rewriter that collects its own training data (world
/// `rewriter-trainer-plugin`).
pub trait RewriterTrainer: Rewriter {
    /// Sample distinct rewrites of `question`, without duplicates and
    /// without the original question.
    fn sample_rewrites(question: &str, params: &Params) -> Result<Vec<String>, PluginError>;

    /// The preference pairs of one question from its judged original and
    /// judged rewrites (empty when no pair can be made).
    fn build_pairs(
        original: &JudgedQuestion,
        rewrites: &[JudgedQuestion],
        params: &Params,
    ) -> Result<Vec<PreferencePair>, PluginError>;
}

impl CriterionScore {
    /// A score on criterion `name`.
    pub fn new(name: impl Into<String>, value: f64, higher_is_better: bool) -> Self {
        CriterionScore { name: name.into(), value, higher_is_better }
    }
}

impl JudgedQuestion {
    /// A question with its answer and the answer's scores.
    pub fn new(question: impl Into<String>, answer: impl Into<String>, scores: Vec<CriterionScore>) -> Self {
        JudgedQuestion { question: question.into(), answer: answer.into(), scores }
    }
}

impl PreferencePair {
    /// A pair: after `prompt`, `chosen` is preferred to `rejected`.
    pub fn new(prompt: impl Into<String>, chosen: impl Into<String>, rejected: impl Into<String>) -> Self {
        PreferencePair { prompt: prompt.into(), chosen: chosen.into(), rejected: rejected.into() }
    }
}

/// Exports `$plugin` (a type implementing [`Plugin`](crate::Plugin),
/// [`Rewriter`] and [`RewriterTrainer`]) as the component's `describe`,
/// `rewriter` and `rewriter-trainer` interfaces (world
/// `rewriter-trainer-plugin`). The component loads wherever a rewriter does.
/// Invoke it once, in the plugin crate's `lib.rs`, instead of
/// [`export_rewriter!`](crate::export_rewriter).
#[macro_export]
macro_rules! export_rewriter_trainer {
    ($plugin:ty) => {
        $crate::__techne_export_role! {
            plugin: $plugin,
            world: "techne:plugin/rewriter-trainer-plugin",
            with: {
                "techne:plugin/rewriter-trainer@0.1.0/criterion-score": ::techne_plugin_sdk::__private::bindings::exports::techne::plugin::rewriter_trainer::CriterionScore,
                "techne:plugin/rewriter-trainer@0.1.0/judged-question": ::techne_plugin_sdk::__private::bindings::exports::techne::plugin::rewriter_trainer::JudgedQuestion,
                "techne:plugin/rewriter-trainer@0.1.0/preference-pair": ::techne_plugin_sdk::__private::bindings::exports::techne::plugin::rewriter_trainer::PreferencePair,
            },
            interface rewriter: $crate::Rewriter {
                fn rewrite(borrowed question: ::std::string::String) -> ::std::string::String;
            }
            interface rewriter_trainer: $crate::RewriterTrainer {
                fn sample_rewrites(borrowed question: ::std::string::String) -> ::std::vec::Vec<::std::string::String>;
                fn build_pairs(
                    borrowed original: $crate::rewriter_trainer::JudgedQuestion,
                    borrowed rewrites: ::std::vec::Vec<$crate::rewriter_trainer::JudgedQuestion>
                ) -> ::std::vec::Vec<$crate::rewriter_trainer::PreferencePair>;
            }
        }
    };
}
