//! Role `prompt-policy`: write the prompt(s) to send to the answering model
//! for a query. Export with [`export_prompt_policy!`](crate::export_prompt_policy).

use crate::__private::WitPluginError;
use crate::{ParameterValue, Params, Plugin, PluginError};

/// A prompt policy (world `prompt-policy-plugin`).
pub trait PromptPolicy: Plugin {
    /// Return complete prompts for `query`, best first. The pipeline sends
    /// the first one to the answering model as the user message.
    fn propose(query: &str, params: &Params) -> Result<Vec<String>, PluginError>;
}

#[doc(hidden)]
pub fn __propose<T: PromptPolicy>(query: String, params: Vec<ParameterValue>) -> Result<Vec<String>, WitPluginError> {
    T::propose(&query, &Params::new(params)).map_err(Into::into)
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
        #[doc(hidden)]
        type __TechnePlugin = $plugin;

        #[doc(hidden)]
        #[allow(dead_code, unused_imports, unsafe_op_in_unsafe_fn, missing_docs, clippy::all)]
        mod __techne_plugin_export {
            $crate::__techne_generate_role_world!("techne:plugin/prompt-policy-plugin", {});

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

            export!(Export);
        }
    };
}
