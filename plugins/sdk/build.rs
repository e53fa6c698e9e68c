//! Writes the macro that generates a role world's export bindings inside the
//! plugin crate.
//!
//! wit-bindgen names the export glue of an interface after the interface
//! (`__export_techne_plugin_describe_0_1_0_cabi`), so one crate can hold the
//! export bindings of only one world that exports `describe`. The SDK
//! therefore generates the types and imports once (see `src/bindings.rs`)
//! and each `export_*!` macro generates its role world in the plugin crate,
//! reusing the SDK's types through `with`. That
//! generation needs the WIT files by path, and a path written in a macro is
//! read relative to the *plugin's* manifest, so this script bakes the SDK's
//! own absolute `wit` directory into the macro.

use std::{env, fs, path::PathBuf};

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let wit_dir = manifest_dir.join("wit");
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed=wit");
    println!("cargo:rerun-if-changed=build.rs");

    let wit_dir = wit_dir.to_str().expect("the SDK's path must be valid UTF-8");
    let source = TEMPLATE.replace("@WIT_DIR@", &format!("{wit_dir:?}"));
    fs::write(out_dir.join("generate_role_world.rs"), source).expect("write OUT_DIR/generate_role_world.rs");
}

/// The macro; `@WIT_DIR@` becomes the quoted absolute path of `wit/`.
const TEMPLATE: &str = r#"/// Generates the export bindings of role world `$world` in the calling
/// module, with every import and every type taken from the SDK
/// (`$with` adds the role's own record types).
#[doc(hidden)]
#[macro_export]
macro_rules! __techne_generate_role_world {
    ($world:tt, { $($with:tt)* }) => {
        ::techne_plugin_sdk::__private::wit_bindgen::generate!({
            path: @WIT_DIR@,
            world: $world,
            runtime_path: "::techne_plugin_sdk::__private::wit_bindgen::rt",
            // An interface added to the contract later and not listed below
            // is generated in the plugin crate rather than rejected.
            generate_all,
            with: {
                "techne:plugin/types@0.1.0": ::techne_plugin_sdk::__private::bindings::techne::plugin::types,
                "techne:plugin/llm@0.1.0": ::techne_plugin_sdk::__private::bindings::techne::plugin::llm,
                "techne:plugin/scoring@0.1.0": ::techne_plugin_sdk::__private::bindings::techne::plugin::scoring,
                "techne:plugin/embeddings@0.1.0": ::techne_plugin_sdk::__private::bindings::techne::plugin::embeddings,
                "techne:plugin/logging@0.1.0": ::techne_plugin_sdk::__private::bindings::techne::plugin::logging,
                "techne:plugin/state@0.1.0": ::techne_plugin_sdk::__private::bindings::techne::plugin::state,
                "techne:plugin/randomness@0.1.0": ::techne_plugin_sdk::__private::bindings::techne::plugin::randomness,
                $($with)*
            },
        });
    };
}
"#;
