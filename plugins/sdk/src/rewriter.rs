//! Role `rewriter`: rewrite a user question so the answering model answers
//! better. Export with [`export_rewriter!`](crate::export_rewriter).

use crate::__private::WitPluginError;
use crate::{ParameterValue, Params, Plugin, PluginError};

/// A question rewriter (world `rewriter-plugin`).
pub trait Rewriter: Plugin {
    /// Return the rewritten `question`.
    fn rewrite(question: &str, params: &Params) -> Result<String, PluginError>;
}

#[doc(hidden)]
pub fn __rewrite<T: Rewriter>(question: String, params: Vec<ParameterValue>) -> Result<String, WitPluginError> {
    T::rewrite(&question, &Params::new(params)).map_err(Into::into)
}

/// Exports `$plugin` (a type implementing [`Plugin`] and [`Rewriter`]) as
/// the component's `describe` and `rewriter` interfaces. Invoke it once, in
/// the plugin crate's `lib.rs`.
///
/// ```no_run
/// use techne_plugin_sdk::{export_rewriter, Metadata, Params, Plugin, PluginError, Rewriter};
///
/// struct Shout;
///
/// impl Plugin for Shout {
///     fn metadata() -> Metadata {
///         Metadata::new("shout", "0.1.0", "Upper-cases the question.")
///     }
/// }
///
/// impl Rewriter for Shout {
///     fn rewrite(question: &str, _params: &Params) -> Result<String, PluginError> {
///         Ok(question.to_uppercase())
///     }
/// }
///
/// export_rewriter!(Shout);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export_rewriter {
    ($plugin:ty) => {
        #[doc(hidden)]
        type __TechnePlugin = $plugin;

        #[doc(hidden)]
        #[allow(dead_code, unused_imports, unsafe_op_in_unsafe_fn, missing_docs, clippy::all)]
        mod __techne_plugin_export {
            $crate::__techne_generate_role_world!("techne:plugin/rewriter-plugin", {});

            struct Export;

            impl exports::techne::plugin::describe::Guest for Export {
                fn metadata() -> $crate::Metadata {
                    <super::__TechnePlugin as $crate::Plugin>::metadata()
                }
            }

            impl exports::techne::plugin::rewriter::Guest for Export {
                fn rewrite(
                    question: ::std::string::String,
                    params: ::std::vec::Vec<$crate::ParameterValue>,
                ) -> ::core::result::Result<::std::string::String, $crate::__private::WitPluginError> {
                    $crate::rewriter::__rewrite::<super::__TechnePlugin>(question, params)
                }
            }

            export!(Export);
        }
    };
}
