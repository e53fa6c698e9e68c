//! Malformed plugin files never panic: each gets a clear, typed error.

use techne::backends::ModelSet;
use techne::sandbox::{LoadError, PluginSpec, Role, SandboxEngine, inspect_plugin, sha256_hex};
use techne_integration_tests::{artifacts, test_engine};

fn engine() -> SandboxEngine {
    test_engine(env!("CARGO_TARGET_TMPDIR"))
}

async fn load_bytes(engine: &SandboxEngine, bytes: &[u8]) -> Result<techne::sandbox::Plugin, LoadError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugin.wasm");
    std::fs::write(&path, bytes).unwrap();
    engine.load(&PluginSpec::new("p", &path), &ModelSet::new()).await
}

#[tokio::test]
async fn garbage_and_empty_files_are_not_wasm() {
    let engine = engine();
    for bytes in [&b""[..], b"hello world, not wasm", b"\0as"] {
        let err = load_bytes(&engine, bytes).await.unwrap_err();
        assert!(matches!(err, LoadError::NotWasm { .. }), "{err}");
        assert!(err.to_string().contains("wasm32-wasip2"), "{err}");
    }
}

#[tokio::test]
async fn a_core_module_is_refused_with_how_to_make_a_component() {
    // The smallest valid core module: magic and version 1, no sections.
    let err = load_bytes(&engine(), b"\0asm\x01\0\0\0").await.unwrap_err();
    assert!(matches!(err, LoadError::CoreModule { .. }), "{err}");
    assert!(err.to_string().contains("not a component"), "{err}");
}

#[tokio::test]
async fn a_truncated_component_is_invalid_not_a_panic() {
    let bytes = std::fs::read(artifacts::QUESTION_REWRITER).unwrap();
    for cut in [9, 100, bytes.len() / 2, bytes.len() - 1] {
        let err = load_bytes(&engine(), &bytes[..cut]).await.unwrap_err();
        assert!(matches!(err, LoadError::InvalidComponent { .. }), "cut at {cut}: {err}");
    }
}

#[tokio::test]
async fn a_plugin_built_against_another_wit_version_is_refused() {
    let err = engine().load(&PluginSpec::new("f", artifacts::FUTURE_VERSION), &ModelSet::new()).await.unwrap_err();
    match &err {
        LoadError::IncompatibleWitVersion { found, .. } => assert_eq!(found, "0.2.0"),
        other => panic!("expected a version error, got {other:?}"),
    }
    assert!(err.to_string().contains("supports techne:plugin@0.1.x"), "{err}");
}

#[tokio::test]
async fn sha256_pins_are_enforced() {
    let engine = engine();
    let actual = sha256_hex(&std::fs::read(artifacts::QUESTION_REWRITER).unwrap());
    let mut spec = PluginSpec::new("r", artifacts::QUESTION_REWRITER);
    spec.sha256 = Some(actual.to_uppercase());
    engine.load(&spec, &ModelSet::new()).await.expect("a matching pin (any case) loads");
    spec.sha256 = Some("0".repeat(64));
    let err = engine.load(&spec, &ModelSet::new()).await.unwrap_err();
    assert!(matches!(err, LoadError::Sha256Mismatch { .. }), "{err}");
    assert!(err.to_string().contains(&actual), "{err}");
}

#[tokio::test]
async fn undeclared_or_mistyped_parameters_are_refused() {
    let engine = engine();
    let mut spec = PluginSpec::new("r", artifacts::QUESTION_REWRITER);
    spec.params.insert("temprature".into(), "0.5".into());
    let err = engine.load(&spec, &ModelSet::new()).await.unwrap_err();
    assert!(
        err.to_string().contains("`temprature` is not declared") && err.to_string().contains("temperature"),
        "{err}"
    );
    spec.params.clear();
    spec.params.insert("max-tokens".into(), "many".into());
    let err = engine.load(&spec, &ModelSet::new()).await.unwrap_err();
    assert!(matches!(err, LoadError::Parameter { .. }), "{err}");
}

#[tokio::test]
async fn inspect_reports_role_imports_exports_metadata_and_hash() {
    let engine = engine();
    let inspection = inspect_plugin(&engine, std::path::Path::new(artifacts::QUESTION_REWRITER)).await.unwrap();
    assert_eq!(inspection.role, Role::Rewriter);
    // It exports the rewriter's training side too, so it targets the trainer world.
    assert_eq!(inspection.world, "techne:plugin/rewriter-trainer-plugin@0.1.0");
    assert_eq!(inspection.provides, "rewriter + rewriter trainer");
    assert_eq!(inspection.metadata.name, "question-rewriter");
    assert!(inspection.exports.iter().any(|e| e == "techne:plugin/rewriter@0.1.0"));
    assert!(inspection.imports.iter().any(|i| i == "techne:plugin/llm@0.1.0"));
    assert_eq!(inspection.sha256, sha256_hex(&std::fs::read(artifacts::QUESTION_REWRITER).unwrap()));
    let prompt = inspection.metadata.parameters.iter().find(|p| p.name == "prompt").unwrap();
    assert!(prompt.default_value.starts_with("Rewriting question to make it more understandable"));
}

#[tokio::test]
async fn the_compiled_component_cache_survives_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap().to_string();
    let engine = test_engine(&root);
    let spec = PluginSpec::new("r", artifacts::QUESTION_REWRITER);
    engine.load(&spec, &ModelSet::new()).await.unwrap();
    let entries: Vec<_> =
        walk(dir.path()).into_iter().filter(|p| p.extension().is_some_and(|e| e == "cwasm")).collect();
    assert_eq!(entries.len(), 1, "one compiled entry is cached");
    std::fs::write(&entries[0], b"corrupt").unwrap();
    let engine = test_engine(&root);
    engine.load(&spec, &ModelSet::new()).await.expect("a corrupt cache entry is a miss, not a failure");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}
