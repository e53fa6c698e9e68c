//! `techne-test-prompt-policy-trainer-v0`: a prompt policy with the
//! `prompt-policy-trainer` extension but without `reward-model-trainer`,
//! i.e. a component built against `techne:plugin@0.1.0` before that
//! interface was added to world `prompt-policy-trainer-plugin`. Written
//! without the SDK (whose export macro now exports `reward-model-trainer`
//! too), against an inline world listing the old exports.
//!
//! The host must keep loading it as a prompt-policy trainer and refuse only
//! the reward-model fit, naming the missing interface.
//!
//! `propose(query)` returns "Think it through.\n\n" + the query;
//! `propose-for-training` returns that prompt once; `curate-records` keeps
//! every outcome with reward 1 for correct and 0 otherwise;
//! `training-example` maps a record to (query → prompt).

mod bindings {
    wit_bindgen::generate!({
        inline: r#"
            package techne:test-v0;

            world prompt-policy-trainer-before-reward-model {
                export techne:plugin/describe@0.1.0;
                export techne:plugin/prompt-policy@0.1.0;
                export techne:plugin/prompt-policy-trainer@0.1.0;
            }
        "#,
        path: "wit",
        generate_all,
    });
}

use bindings::exports::techne::plugin::prompt_policy_trainer::{
    OfflineRecord, PolicyExample, PolicyPrompt, PromptOutcome,
};
use bindings::exports::techne::plugin::{describe, prompt_policy, prompt_policy_trainer};
use bindings::techne::plugin::types::{ParameterValue, PluginError, PluginMetadata};

/// The one prompt this policy knows.
const PROMPT: &str = "Think it through.";

struct PolicyTrainerV0;

impl describe::Guest for PolicyTrainerV0 {
    fn metadata() -> PluginMetadata {
        PluginMetadata {
            name: "prompt-policy-trainer-v0".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            description: "Test plugin for the techne host: a prompt-policy trainer without reward-model-trainer."
                .to_owned(),
            parameters: Vec::new(),
        }
    }
}

impl prompt_policy::Guest for PolicyTrainerV0 {
    fn propose(query: String, _params: Vec<ParameterValue>) -> Result<Vec<String>, PluginError> {
        Ok(vec![format!("{PROMPT}\n\n{query}")])
    }
}

impl prompt_policy_trainer::Guest for PolicyTrainerV0 {
    fn propose_for_training(
        query: String,
        _target_reward: f64,
        _count: u32,
        _params: Vec<ParameterValue>,
    ) -> Result<Vec<PolicyPrompt>, PluginError> {
        Ok(vec![PolicyPrompt { prompt: PROMPT.to_owned(), full_prompt: format!("{PROMPT}\n\n{query}") }])
    }

    fn curate_records(
        outcomes: Vec<PromptOutcome>,
        _existing: Vec<OfflineRecord>,
        _params: Vec<ParameterValue>,
    ) -> Result<Vec<OfflineRecord>, PluginError> {
        Ok(outcomes
            .into_iter()
            .map(|o| OfflineRecord { query: o.query, prompt: o.prompt, reward: if o.correct { 1.0 } else { 0.0 } })
            .collect())
    }

    fn training_example(record: OfflineRecord, _params: Vec<ParameterValue>) -> Result<PolicyExample, PluginError> {
        Ok(PolicyExample { input: record.query, target: record.prompt, chat: true })
    }
}

bindings::export!(PolicyTrainerV0 with_types_in bindings);
