//! `techne-test-missing-import`: a solver plugin (world `solver-plugin`)
//! that also imports `techne:unprovided/network@0.1.0` (see
//! `wit/network.wit`), an interface no techne host provides. The host must
//! refuse to load it with a typed "import not provided" failure naming
//! `techne:unprovided/network@0.1.0`.
//!
//! `solve(problem)` really calls `network::fetch(problem)` (so the import
//! is not optimised away) and answers the body.

use techne_plugin_sdk::prelude::*;

mod unprovided {
    wit_bindgen::generate!({
        path: "wit",
        world: "techne:unprovided/needs-network",
    });
}

use unprovided::techne::unprovided::network;

/// The solver that needs the network.
pub struct MissingImport;

impl Plugin for MissingImport {
    fn metadata() -> Metadata {
        Metadata::new(
            "missing-import",
            env!("CARGO_PKG_VERSION"),
            "Test plugin for the techne host: imports techne:unprovided/network@0.1.0, which no host provides.",
        )
    }
}

impl Solver for MissingImport {
    fn solve(problem: &str, _params: &Params) -> Result<Solution, PluginError> {
        #[cfg(target_arch = "wasm32")]
        {
            Ok(Solution::new(network::fetch(problem)))
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            let _ = (problem, network::fetch as fn(&str) -> String);
            Err(PluginError::failed("the network import exists only inside a host"))
        }
    }
}

export_solver!(MissingImport);
