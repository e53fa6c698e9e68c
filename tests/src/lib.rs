//! Paths of the plugin components built for the integration tests (one
//! constant per artifact, written by `build.rs`), and shared test helpers.

pub mod fault_server;
pub mod llama_server;

/// Plugin component files, built by `build.rs`.
pub mod artifacts {
    include!(concat!(env!("OUT_DIR"), "/plugin_artifacts.rs"));
}

use std::path::PathBuf;

use techne::sandbox::{EngineOptions, SandboxEngine};

/// An engine whose compiled-component cache lives under the tests' temporary
/// target directory, shared by the tests of one build.
pub fn test_engine(cache_root: &str) -> SandboxEngine {
    let options =
        EngineOptions { cache_dir: Some(PathBuf::from(cache_root).join("components")), ..EngineOptions::default() };
    match SandboxEngine::new(options) {
        Ok(engine) => engine,
        Err(e) => panic!("cannot create the sandbox engine: {e}"),
    }
}
