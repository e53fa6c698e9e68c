//! Extension `prompt-policy-trainer`: the training side of a prompt policy,
//! i.e. the decisions of its offline data collection (write prompts at a
//! target reward, reward outcomes, keep and dedupe records, format training
//! examples; fit Prompt-OIRL's reward model from logged outcomes). Export a
//! type that implements both
//! [`PromptPolicy`](crate::PromptPolicy) and [`PromptPolicyTrainer`] with
//! [`export_prompt_policy_trainer!`](crate::export_prompt_policy_trainer).

use crate::__private::WitPluginError;
use crate::{ParameterValue, Params, PluginError, PromptPolicy};

pub use crate::bindings::exports::techne::plugin::prompt_policy_trainer::{
    OfflineRecord, PolicyExample, PolicyPrompt, PromptOutcome,
};
pub use crate::bindings::exports::techne::plugin::reward_model_trainer::LabelledPrompt;

/// A prompt policy that collects its own offline data (world
/// `prompt-policy-trainer-plugin`).
pub trait PromptPolicyTrainer: PromptPolicy {
    /// Up to `count` distinct prompts for `query`, conditioned on
    /// `target_reward`.
    fn propose_for_training(
        query: &str,
        target_reward: f64,
        count: u32,
        params: &Params,
    ) -> Result<Vec<PolicyPrompt>, PluginError>;

    /// The new records to keep from `outcomes` (rewarded, filtered, without
    /// duplicates of each other or of `existing`).
    fn curate_records(
        outcomes: &[PromptOutcome],
        existing: &[OfflineRecord],
        params: &Params,
    ) -> Result<Vec<OfflineRecord>, PluginError>;

    /// The policy's training example for `record`.
    fn training_example(record: &OfflineRecord, params: &Params) -> Result<PolicyExample, PluginError>;

    /// Fit a reward model on logged outcomes of known prompts (interface
    /// `reward-model-trainer`, Prompt-OIRL) and return it serialised. The
    /// default says the plugin has none.
    fn fit_reward_model(examples: &[LabelledPrompt], params: &Params) -> Result<String, PluginError> {
        let _ = (examples, params);
        Err(PluginError::failed(
            "this prompt policy does not fit a reward model: implement PromptPolicyTrainer::fit_reward_model",
        ))
    }
}

#[doc(hidden)]
pub fn __propose_for_training<T: PromptPolicyTrainer>(
    query: String,
    target_reward: f64,
    count: u32,
    params: Vec<ParameterValue>,
) -> Result<Vec<PolicyPrompt>, WitPluginError> {
    T::propose_for_training(&query, target_reward, count, &Params::new(params)).map_err(Into::into)
}

#[doc(hidden)]
pub fn __curate_records<T: PromptPolicyTrainer>(
    outcomes: Vec<PromptOutcome>,
    existing: Vec<OfflineRecord>,
    params: Vec<ParameterValue>,
) -> Result<Vec<OfflineRecord>, WitPluginError> {
    T::curate_records(&outcomes, &existing, &Params::new(params)).map_err(Into::into)
}

#[doc(hidden)]
pub fn __training_example<T: PromptPolicyTrainer>(
    record: OfflineRecord,
    params: Vec<ParameterValue>,
) -> Result<PolicyExample, WitPluginError> {
    T::training_example(&record, &Params::new(params)).map_err(Into::into)
}

#[doc(hidden)]
pub fn __fit_reward_model<T: PromptPolicyTrainer>(
    examples: Vec<LabelledPrompt>,
    params: Vec<ParameterValue>,
) -> Result<String, WitPluginError> {
    T::fit_reward_model(&examples, &Params::new(params)).map_err(Into::into)
}

/// Exports `$plugin` (a type implementing [`Plugin`](crate::Plugin),
/// [`PromptPolicy`] and [`PromptPolicyTrainer`]) as the component's
/// `describe`, `prompt-policy`, `prompt-policy-trainer` and
/// `reward-model-trainer` interfaces (world
/// `prompt-policy-trainer-plugin`). The component loads wherever a prompt
/// policy does. Invoke it once, in the plugin crate's `lib.rs`, instead of
/// [`export_prompt_policy!`](crate::export_prompt_policy).
#[macro_export]
macro_rules! export_prompt_policy_trainer {
    ($plugin:ty) => {
        #[doc(hidden)]
        type __TechnePlugin = $plugin;

        #[doc(hidden)]
        #[allow(dead_code, unused_imports, unsafe_op_in_unsafe_fn, missing_docs, clippy::all)]
        mod __techne_plugin_export {
            $crate::__techne_generate_role_world!("techne:plugin/prompt-policy-trainer-plugin", {
                "techne:plugin/prompt-policy-trainer@0.1.0/policy-prompt": ::techne_plugin_sdk::__private::bindings::exports::techne::plugin::prompt_policy_trainer::PolicyPrompt,
                "techne:plugin/prompt-policy-trainer@0.1.0/prompt-outcome": ::techne_plugin_sdk::__private::bindings::exports::techne::plugin::prompt_policy_trainer::PromptOutcome,
                "techne:plugin/prompt-policy-trainer@0.1.0/offline-record": ::techne_plugin_sdk::__private::bindings::exports::techne::plugin::prompt_policy_trainer::OfflineRecord,
                "techne:plugin/prompt-policy-trainer@0.1.0/policy-example": ::techne_plugin_sdk::__private::bindings::exports::techne::plugin::prompt_policy_trainer::PolicyExample,
                "techne:plugin/reward-model-trainer@0.1.0/labelled-prompt": ::techne_plugin_sdk::__private::bindings::exports::techne::plugin::reward_model_trainer::LabelledPrompt,
            });

            struct Export;

            impl exports::techne::plugin::describe::Guest for Export {
                fn metadata() -> $crate::Metadata {
                    <super::__TechnePlugin as $crate::Plugin>::metadata()
                }
            }

            impl exports::techne::plugin::prompt_policy::Guest for Export {
                fn propose(
                    query: ::std::string::String,
                    params: ::std::vec::Vec<$crate::ParameterValue>,
                ) -> ::core::result::Result<
                    ::std::vec::Vec<::std::string::String>,
                    $crate::__private::WitPluginError,
                > {
                    $crate::prompt_policy::__propose::<super::__TechnePlugin>(query, params)
                }
            }

            impl exports::techne::plugin::prompt_policy_trainer::Guest for Export {
                fn propose_for_training(
                    query: ::std::string::String,
                    target_reward: f64,
                    count: u32,
                    params: ::std::vec::Vec<$crate::ParameterValue>,
                ) -> ::core::result::Result<
                    ::std::vec::Vec<$crate::prompt_policy_trainer::PolicyPrompt>,
                    $crate::__private::WitPluginError,
                > {
                    $crate::prompt_policy_trainer::__propose_for_training::<super::__TechnePlugin>(
                        query,
                        target_reward,
                        count,
                        params,
                    )
                }

                fn curate_records(
                    outcomes: ::std::vec::Vec<$crate::prompt_policy_trainer::PromptOutcome>,
                    existing: ::std::vec::Vec<$crate::prompt_policy_trainer::OfflineRecord>,
                    params: ::std::vec::Vec<$crate::ParameterValue>,
                ) -> ::core::result::Result<
                    ::std::vec::Vec<$crate::prompt_policy_trainer::OfflineRecord>,
                    $crate::__private::WitPluginError,
                > {
                    $crate::prompt_policy_trainer::__curate_records::<super::__TechnePlugin>(outcomes, existing, params)
                }

                fn training_example(
                    record: $crate::prompt_policy_trainer::OfflineRecord,
                    params: ::std::vec::Vec<$crate::ParameterValue>,
                ) -> ::core::result::Result<
                    $crate::prompt_policy_trainer::PolicyExample,
                    $crate::__private::WitPluginError,
                > {
                    $crate::prompt_policy_trainer::__training_example::<super::__TechnePlugin>(record, params)
                }
            }

            impl exports::techne::plugin::reward_model_trainer::Guest for Export {
                fn fit_reward_model(
                    examples: ::std::vec::Vec<$crate::prompt_policy_trainer::LabelledPrompt>,
                    params: ::std::vec::Vec<$crate::ParameterValue>,
                ) -> ::core::result::Result<::std::string::String, $crate::__private::WitPluginError> {
                    $crate::prompt_policy_trainer::__fit_reward_model::<super::__TechnePlugin>(examples, params)
                }
            }

            export!(Export);
        }
    };
}
