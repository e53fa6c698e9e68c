//! Role `prompt-policy`: write the prompt(s) to send to the answering model
//! for a query. Export with [`export_prompt_policy!`](crate::export_prompt_policy).

use crate::{Params, Plugin, PluginError};

/// A prompt policy (world `prompt-policy-plugin`).
pub trait PromptPolicy: Plugin {
    /// Return complete prompts for `query`, best first. The pipeline sends
    /// the first one to the answering model as the user message.
    fn propose(query: &str, params: &Params) -> Result<Vec<String>, PluginError>;
}

/// Exports `$plugin` (a type implementing [`Plugin`] and [`PromptPolicy`])
/// as the component's `describe` and `prompt-policy` interfaces. Invoke it
/// once, in the plugin crate's `lib.rs`.
///
/// ```no_run
/// use techne_plugin_sdk::{export_prompt_policy, Metadata, Params, Plugin, PluginError, PromptPolicy};
///
/// struct StepByStep;
///
/// impl Plugin for StepByStep {
///     fn metadata() -> Metadata {
///         Metadata::new("step-by-step", "0.1.0", "Zero-shot chain of thought.")
///     }
/// }
///
/// impl PromptPolicy for StepByStep {
///     fn propose(query: &str, _params: &Params) -> Result<Vec<String>, PluginError> {
///         Ok(vec![format!("{query}\nLet's think step by step.")])
///     }
/// }
///
/// export_prompt_policy!(StepByStep);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export_prompt_policy {
    ($plugin:ty) => {
        $crate::__techne_export_role! {
            plugin: $plugin,
            world: "techne:plugin/prompt-policy-plugin",
            with: {},
            interface prompt_policy: $crate::PromptPolicy {
                fn propose(borrowed query: ::std::string::String) -> ::std::vec::Vec<::std::string::String>;
            }
        }
    };
}
