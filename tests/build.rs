//! Builds the plugin components the integration tests load (release,
//! wasm32-wasip2, in the plugins workspace's own target directory) and
//! writes one constant per artifact. A plugin that fails to build, or an
//! artifact the tests name that is not built here, fails the build.

use std::path::PathBuf;
use std::process::Command;

/// (constant name, cargo package, artifact file stem)
const PLUGINS: &[(&str, &str, &str)] = &[
    ("QUESTION_REWRITER", "question-rewriter", "question_rewriter"),
    ("SELF_TAUGHT", "self-taught", "self_taught"),
    ("QPO_POLICY", "qpo-policy", "qpo_policy"),
    ("SELF_EVOLUTION", "self-evolution", "self_evolution"),
    ("LLAMADUO", "llamaduo", "llamaduo"),
    ("CHAOS", "techne-test-chaos", "techne_test_chaos"),
    ("COUNTING_EVOLUTION", "techne-test-counting-evolution", "techne_test_counting_evolution"),
    ("MISSING_IMPORT", "techne-test-missing-import", "techne_test_missing_import"),
    ("FUTURE_VERSION", "techne-test-future-version", "techne_test_future_version"),
    ("PROMPT_POLICY_TRAINER_V0", "techne-test-prompt-policy-trainer-v0", "techne_test_prompt_policy_trainer_v0"),
];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest.parent().expect("tests/ lives in the repository root").to_path_buf();
    let plugins = root.join("plugins");
    let target_dir = plugins.join("target");
    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    for dir in ["sdk", "question-rewriter", "self-taught", "qpo-policy", "self-evolution", "llamaduo", "test-plugins"] {
        println!("cargo:rerun-if-changed={}", plugins.join(dir).display());
    }
    println!("cargo:rerun-if-changed={}", plugins.join("Cargo.toml").display());

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(&plugins)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--target-dir"])
        .arg(&target_dir);
    for (_, package, _) in PLUGINS {
        command.args(["-p", package]);
    }
    // Settings of the outer build must not leak into the guest build.
    for var in
        ["CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS", "CARGO_TARGET_DIR", "CARGO_BUILD_TARGET", "CARGO_PRIMARY_PACKAGE"]
    {
        command.env_remove(var);
    }
    let status = command.status().expect("run cargo to build the test plugins");
    assert!(
        status.success(),
        "building the plugins failed; is the target installed? run `rustup target add wasm32-wasip2`"
    );

    let mut out = String::new();
    for (constant, package, stem) in PLUGINS {
        let artifact = target_dir.join("wasm32-wasip2").join("release").join(format!("{stem}.wasm"));
        assert!(artifact.is_file(), "package {package} did not produce {}", artifact.display());
        out.push_str(&format!(
            "/// The `{package}` plugin component.\npub const {constant}: &str = {:?};\n",
            artifact.display().to_string()
        ));
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out_dir.join("plugin_artifacts.rs"), out).expect("write OUT_DIR/plugin_artifacts.rs");
}
