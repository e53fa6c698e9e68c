//! Role `rewriter`: rewrite a user question so the answering model answers
//! better. Export with [`export_rewriter!`](crate::export_rewriter).

use crate::{Params, Plugin, PluginError};

/// A question rewriter (world `rewriter-plugin`).
pub trait Rewriter: Plugin {
    /// Return the rewritten `question`.
    fn rewrite(question: &str, params: &Params) -> Result<String, PluginError>;
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
        $crate::__techne_export_role! {
            plugin: $plugin,
            world: "techne:plugin/rewriter-plugin",
            with: {},
            interface rewriter: $crate::Rewriter {
                fn rewrite(borrowed question: ::std::string::String) -> ::std::string::String;
            }
        }
    };
}
