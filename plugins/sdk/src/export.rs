//! The glue every `export_*!` macro shares: one macro that generates a role
//! world's export bindings in the plugin crate and implements each of its
//! interfaces by calling the plugin's trait method.
//!
//! Every exported function has the same shape: the WIT arguments, then the
//! plugin's parameters; the Rust trait method takes the arguments (borrowed
//! or by value), the parameters as [`Params`](crate::Params), and returns a
//! [`PluginError`](crate::PluginError) that becomes the WIT error. A role's
//! public macro only lists its world, its own record types and its
//! functions; [`__techne_export_role!`](crate::__techne_export_role) writes
//! the rest.

/// Exports a plugin type as a role world; used by the public `export_*!`
/// macros, not by plugins.
///
/// ```text
/// $crate::__techne_export_role! {
///     plugin: MyType,
///     world: "techne:plugin/solver-plugin",
///     with: { "techne:plugin/solver@0.1.0/solution": ::techne_plugin_sdk::...::Solution, },
///     interface solver: $crate::Solver {
///         fn solve(borrowed problem: ::std::string::String) -> $crate::solver::Solution;
///     }
/// }
/// ```
///
/// Each function lists its WIT arguments (the trailing `params` is added)
/// and how the trait method takes each: `borrowed` (`&argument`) or `owned`.
/// `describe` is always exported from [`Plugin::metadata`](crate::Plugin::metadata).
#[doc(hidden)]
#[macro_export]
macro_rules! __techne_export_role {
    (
        plugin: $plugin:ty,
        world: $world:tt,
        with: { $($with:tt)* },
        $(
            interface $interface:ident : $role:path {
                $( fn $function:ident( $( $passing:ident $argument:ident : $argument_type:ty ),* ) -> $output:ty; )*
            }
        )*
    ) => {
        #[doc(hidden)]
        type __TechnePlugin = $plugin;

        #[doc(hidden)]
        #[allow(dead_code, unused_imports, unsafe_op_in_unsafe_fn, missing_docs, clippy::all)]
        mod __techne_plugin_export {
            $crate::__techne_generate_role_world!($world, { $($with)* });

            struct Export;

            impl exports::techne::plugin::describe::Guest for Export {
                fn metadata() -> $crate::Metadata {
                    <super::__TechnePlugin as $crate::Plugin>::metadata()
                }
            }

            $(
                impl exports::techne::plugin::$interface::Guest for Export {
                    $(
                        fn $function(
                            $( $argument: $argument_type, )*
                            params: ::std::vec::Vec<$crate::ParameterValue>,
                        ) -> ::core::result::Result<$output, $crate::__private::WitPluginError> {
                            <super::__TechnePlugin as $role>::$function(
                                $( $crate::__techne_pass_argument!($passing $argument), )*
                                &$crate::Params::new(params),
                            )
                            .map_err(::core::convert::Into::into)
                        }
                    )*
                }
            )*

            export!(Export);
        }
    };
}

/// How [`__techne_export_role!`](crate::__techne_export_role) hands one WIT
/// argument to the trait method: `borrowed` (as `&argument`) or `owned`.
#[doc(hidden)]
#[macro_export]
macro_rules! __techne_pass_argument {
    (borrowed $argument:ident) => {
        &$argument
    };
    (owned $argument:ident) => {
        $argument
    };
}
