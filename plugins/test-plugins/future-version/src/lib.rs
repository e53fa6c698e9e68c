//! `techne-test-future-version`: a solver plugin built against a
//! hypothetical `techne:plugin@0.2.0` (its own `wit/techne-plugin.wit`, a
//! trimmed copy of the contract under version 0.2.0), without the SDK.
//!
//! The component exports `techne:plugin/describe@0.2.0` and
//! `techne:plugin/solver@0.2.0` and imports `techne:plugin/logging@0.2.0`
//! (and `techne:plugin/types@0.2.0`). A host that supports `0.1.x` must
//! refuse it with a clear message such as "built against
//! techne:plugin@0.2.0, this host supports 0.1.x".
//!
//! If it ever ran, `solve(problem)` would log the problem and echo it.

mod bindings {
    wit_bindgen::generate!({
        path: "wit",
        world: "techne:plugin/solver-plugin@0.2.0",
    });
}

use bindings::exports::techne::plugin::{describe, solver};
use bindings::techne::plugin::logging::{self, Level};
use bindings::techne::plugin::types::{ParameterValue, PluginError, PluginMetadata};

struct FutureVersion;

impl describe::Guest for FutureVersion {
    fn metadata() -> PluginMetadata {
        PluginMetadata {
            name: "future-version".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            description: "Test plugin for the techne host: built against techne:plugin@0.2.0.".to_owned(),
            parameters: Vec::new(),
        }
    }
}

impl solver::Guest for FutureVersion {
    fn solve(problem: String, _params: Vec<ParameterValue>) -> Result<solver::Solution, PluginError> {
        #[cfg(target_arch = "wasm32")]
        logging::log(Level::Info, &problem);
        #[cfg(not(target_arch = "wasm32"))]
        let _ = (logging::log as fn(Level, &str), Level::Info);
        Ok(solver::Solution { answer: problem, trace: Vec::new() })
    }
}

bindings::export!(FutureVersion with_types_in bindings);
