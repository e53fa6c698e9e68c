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

/// Whether the real default model can run here: the model packages of
/// `models/requirements.txt` (SmolLM2's GGUF and ONNX Runtime, installed by
/// `scripts/setup.sh`). When they are missing, the calling test should say
/// so and pass, so this prints that it is skipped, unless
/// `TECHNE_REQUIRE_MODELS=1` (set by `scripts/test.sh`), where it panics.
pub fn models_available() -> bool {
    let found =
        techne_inference::locate::smollm2_gguf().is_some() && techne_inference::locate::onnxruntime_dylib().is_some();
    if !found {
        assert!(
            std::env::var("TECHNE_REQUIRE_MODELS").as_deref() != Ok("1"),
            "TECHNE_REQUIRE_MODELS=1 but the model packages are missing: run scripts/setup.sh"
        );
        eprintln!("skipped: install the model packages with `scripts/setup.sh` to run this test");
    }
    found
}

/// The command that runs the `techne` binary `cli` (a test's
/// `CARGO_BIN_EXE_…`) with `args`, its model-call cache in `cache_dir`, and
/// without the `TECHNE_*` overrides a developer's shell may have set.
pub fn cli_command(cli: &str, args: &[&str], cache_dir: &Path) -> Command {
    let mut command = Command::new(cli);
    command
        .args(args)
        .env("TECHNE_CACHE_DIR", cache_dir)
        .env_remove("TECHNE_SEED")
        .env_remove("TECHNE_OUTPUT_DIR")
        .env_remove("TECHNE_CONCURRENCY")
        .env_remove("TECHNE_LIMIT");
    command
}

/// Runs [`cli_command`] in `dir` and waits for its output.
pub fn run_cli(cli: &str, args: &[&str], dir: &Path, cache_dir: &Path) -> Output {
    cli_command(cli, args, cache_dir).current_dir(dir).output().expect("run the techne CLI")
}

/// A process's output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A finished process's exit code, standard output and standard error (as
/// text).
pub fn outcome(output: Output) -> (Option<i32>, String, String) {
    (output.status.code(), text(&output.stdout), text(&output.stderr))
}

/// The tables of an evaluation configuration that compares technique
/// `baseline` with technique `technique` (the question-rewriter plugin,
/// loaded as plugin `rewriter`) on `items.jsonl` (fields `id`, `q` and `a`),
/// every model call going to model `scripted`. The caller writes `[run]` and
/// `[models.scripted]` before them and `[evaluation]` after.
pub fn rewriter_versus_baseline_tables(technique: &str) -> String {
    format!(
        r#"
[plugins.rewriter]
path = "{plugin}"
allowed-models = ["scripted"]
default-model = "scripted"

[dataset]
path = "items.jsonl"
input-field = "q"
reference-field = "a"
id-field = "id"

[techniques.baseline]
answer-model = "scripted"

[techniques.{technique}]
rewriter = "rewriter"
answer-model = "scripted"
"#,
        plugin = artifacts::QUESTION_REWRITER
    )
}

/// Writes `contents` to `dir/name` and returns the path.
pub fn write_file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}
