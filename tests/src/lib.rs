//! Paths of the plugin components built for the integration tests (one
//! constant per artifact, written by `build.rs`), and shared test helpers.

pub mod fault_server;
pub mod llama_server;

/// Plugin component files, built by `build.rs`.
pub mod artifacts {
    include!(concat!(env!("OUT_DIR"), "/plugin_artifacts.rs"));
}

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

/// Runs the `techne` binary `cli` (a test's `CARGO_BIN_EXE_…`) with `args`
/// in `dir`, its model-call cache in `cache_dir`, and without the
/// `TECHNE_*` overrides a developer's shell may have set.
pub fn run_cli(cli: &str, args: &[&str], dir: &Path, cache_dir: &Path) -> Output {
    Command::new(cli)
        .args(args)
        .current_dir(dir)
        .env("TECHNE_CACHE_DIR", cache_dir)
        .env_remove("TECHNE_SEED")
        .env_remove("TECHNE_OUTPUT_DIR")
        .env_remove("TECHNE_CONCURRENCY")
        .env_remove("TECHNE_LIMIT")
        .output()
        .expect("run the techne CLI")
}

/// A process's output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes `contents` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}
