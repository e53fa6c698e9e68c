//! Extension `prompt-policy-trainer`: the training side of a prompt policy,
//! i.e. the decisions of its offline data collection (write prompts at a
//! target reward, reward outcomes, keep and dedupe records, format training
//! examples; fit Prompt-OIRL's reward model from logged outcomes). Export a
//! type that implements both
//! [`PromptPolicy`](crate::PromptPolicy) and [`PromptPolicyTrainer`] with
//! [`export_prompt_policy_trainer!`](crate::export_prompt_policy_trainer).

use crate::{Params, PluginError, PromptPolicy};

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
        $crate::__techne_export_role! {
            plugin: $plugin,
            world: "techne:plugin/prompt-policy-trainer-plugin",
            with: {
                "techne:plugin/prompt-policy-trainer@0.1.0/policy-prompt": ::techne_plugin_sdk::__private::bindings::exports::techne::plugin::prompt_policy_trainer::PolicyPrompt,
                "techne:plugin/prompt-policy-trainer@0.1.0/prompt-outcome": ::techne_plugin_sdk::__private::bindings::exports::techne::plugin::prompt_policy_trainer::PromptOutcome,
                "techne:plugin/prompt-policy-trainer@0.1.0/offline-record": ::techne_plugin_sdk::__private::bindings::exports::techne::plugin::prompt_policy_trainer::OfflineRecord,
                "techne:plugin/prompt-policy-trainer@0.1.0/policy-example": ::techne_plugin_sdk::__private::bindings::exports::techne::plugin::prompt_policy_trainer::PolicyExample,
                "techne:plugin/reward-model-trainer@0.1.0/labelled-prompt": ::techne_plugin_sdk::__private::bindings::exports::techne::plugin::reward_model_trainer::LabelledPrompt,
            },
            interface prompt_policy: $crate::PromptPolicy {
                fn propose(borrowed query: ::std::string::String) -> ::std::vec::Vec<::std::string::String>;
            }
            interface prompt_policy_trainer: $crate::PromptPolicyTrainer {
                fn propose_for_training(
                    borrowed query: ::std::string::String,
                    owned target_reward: f64,
                    owned count: u32
                ) -> ::std::vec::Vec<$crate::prompt_policy_trainer::PolicyPrompt>;
                fn curate_records(
                    borrowed outcomes: ::std::vec::Vec<$crate::prompt_policy_trainer::PromptOutcome>,
                    borrowed existing: ::std::vec::Vec<$crate::prompt_policy_trainer::OfflineRecord>
                ) -> ::std::vec::Vec<$crate::prompt_policy_trainer::OfflineRecord>;
                fn training_example(
                    borrowed record: $crate::prompt_policy_trainer::OfflineRecord
                ) -> $crate::prompt_policy_trainer::PolicyExample;
            }
            interface reward_model_trainer: $crate::PromptPolicyTrainer {
                fn fit_reward_model(
                    borrowed examples: ::std::vec::Vec<$crate::prompt_policy_trainer::LabelledPrompt>
                ) -> ::std::string::String;
            }
        }
    };
}
