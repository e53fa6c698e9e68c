//! The one `bindgen!` site: Rust types and traits generated from the
//! `techne:plugin` WIT package (`wit/techne-plugin.wit`), world `host`.
//!
//! Everything else in the crate uses these through `crate::bindings`; the
//! generated code stays private to the crate.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "techne:plugin/plugin-host",
    imports: { default: async },
    exports: { default: async },
});

pub(crate) use self::exports::techne::plugin as guest;
pub(crate) use self::techne::plugin as capabilities;

/// The WIT version of the package this host implements.
pub(crate) const WIT_PACKAGE: &str = "techne:plugin";
/// Major and minor version of the WIT package this host implements.
pub(crate) const WIT_VERSION: (u64, u64) = (0, 1);
