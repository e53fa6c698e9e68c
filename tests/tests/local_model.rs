//! The main job end to end on the real embedded model: the question-rewriter
//! plugin rewrites each question with SmolLM2-135M-Instruct (run natively
//! through ONNX Runtime) and the same model answers.
//!
//! Needs the registry packages of `models/requirements.txt` (installed by
//! `scripts/setup.sh`). Without them the test says so and passes, unless
//! `TECHNE_REQUIRE_MODELS=1` (set by `scripts/test.sh`), where it fails.

use std::path::Path;
use std::process::Command;

use techne_integration_tests::{models_available, outcome};

const CLI: &str = env!("CARGO_BIN_EXE_techne-with-test-doubles");

#[test]
fn the_rewriter_pipeline_runs_on_the_embedded_model() {
    if !models_available() {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    // The example points at the plugin built by tests/build.rs.
    let output = Command::new(CLI)
        .args(["run", "examples/rewriter.toml", "--output-dir"])
        .arg(out_dir.path())
        .current_dir(root)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{}\n{stderr}", String::from_utf8_lossy(&output.stdout));
    let results: Vec<serde_json::Value> = std::fs::read_to_string(out_dir.path().join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 4);
    for r in &results {
        assert!(r["failure"].is_null(), "{r}");
        assert!(!r["rewritten"].as_str().unwrap().trim().is_empty(), "{r}");
        assert!(!r["answer"].as_str().unwrap().trim().is_empty(), "{r}");
    }
    let water = results.iter().find(|r| r["id"] == "water").unwrap();
    assert!(water["answer"].as_str().unwrap().contains("100"), "{water}");

    // Same seed, same greedy model: the rerun is identical.
    let again = tempfile::tempdir().unwrap();
    let output = Command::new(CLI)
        .args(["run", "examples/rewriter.toml", "--no-cache", "--output-dir"])
        .arg(again.path())
        .current_dir(root)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let strip = |text: String| -> Vec<String> {
        text.lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("elapsed_ms");
                v.to_string()
            })
            .collect()
    };
    assert_eq!(
        strip(std::fs::read_to_string(out_dir.path().join("results.jsonl")).unwrap()),
        strip(std::fs::read_to_string(again.path().join("results.jsonl")).unwrap())
    );
}

#[test]
fn models_and_generate_commands_work_on_a_private_registry() {
    if !models_available() {
        return;
    }
    let registry = tempfile::tempdir().unwrap();
    let reg = registry.path().to_str().unwrap();
    let run = |args: &[&str]| outcome(Command::new(CLI).args(args).output().unwrap());
    let (code, stdout, _) = run(&["models", "list", "--registry", reg]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("no models"), "{stdout}");
    let gguf = techne_inference::locate::smollm2_gguf().unwrap();
    let (code, stdout, stderr) =
        run(&["models", "import", gguf.to_str().unwrap(), "--name", "smol", "--registry", reg]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("imported `smol`"), "{stdout}");
    let (code, stdout, _) = run(&["models", "list", "--registry", reg]);
    assert_eq!(code, Some(0));
    assert!(stdout.starts_with("smol "), "{stdout}");
    let (code, stdout, stderr) = run(&["models", "check", "smol", "--registry", reg]);
    assert_eq!((code, stdout.trim()), (Some(0), "smol: ok"), "{stderr}");
    // Both exports answer the same question.
    let answers_france = |model: &str| {
        let (code, stdout, stderr) = run(&[
            "generate",
            "--model",
            model,
            "--registry",
            reg,
            "--prompt",
            "What is the capital of France?",
            "--max-tokens",
            "24",
        ]);
        assert_eq!(code, Some(0), "{stderr}");
        assert!(stdout.contains("Paris"), "{stdout}");
    };
    answers_france("smol");
    // `--stock-operators` exports with ONNX Runtime's operators only, under a
    // name of its own (`<file>-stock`), and answers alike.
    let (code, stdout, stderr) =
        run(&["models", "import", gguf.to_str().unwrap(), "--stock-operators", "--registry", reg]);
    assert_eq!(code, Some(0), "{stderr}");
    let stock = format!("{}-stock", techne_inference::registry::name_from_path(&gguf));
    assert!(stdout.contains(&format!("imported `{stock}`")), "{stdout}");
    let stock_graph = std::fs::read(registry.path().join(&stock).join("model.onnx")).unwrap();
    let default_graph = std::fs::read(registry.path().join("smol").join("model.onnx")).unwrap();
    let mentions = |bytes: &[u8], what: &[u8]| bytes.windows(what.len()).any(|w| w == what);
    assert!(!mentions(&stock_graph, b"BlockQuantMatMul"), "the stock export uses techne's operator");
    assert!(!mentions(&stock_graph, b"CausalAttention"), "the stock export uses techne's attention");
    assert!(mentions(&default_graph, b"CausalAttention"), "techne's attention in the default export");
    let kernel_here = techne_inference::onnx_export::ExportOptions::default().uses_block_quant_kernel();
    assert_eq!(mentions(&default_graph, b"BlockQuantMatMul"), kernel_here, "techne's kernel in the default export");
    answers_france(&stock);
    let (code, _, _) = run(&["models", "remove", &stock, "--registry", reg]);
    assert_eq!(code, Some(0));
    // The export with int8 activations (`--accuracy-level 4`) is a model of
    // its own that still answers; unsupported levels are refused.
    let (code, stdout, stderr) = run(&[
        "models",
        "import",
        gguf.to_str().unwrap(),
        "--name",
        "smol-int8",
        "--accuracy-level",
        "4",
        "--registry",
        reg,
    ]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("imported `smol-int8`"), "{stdout}");
    let manifest = std::fs::read_to_string(registry.path().join("smol-int8").join("manifest.json")).unwrap();
    assert!(manifest.contains("\"accuracy_level\": 4") || manifest.contains("\"accuracy_level\":4"), "{manifest}");
    answers_france("smol-int8");
    // The level that is not this CPU's default: without --name, a GGUF
    // import at it gets a suffix, and `--default --accuracy-level` registers
    // the embedded model's export at it under a name of its own, next to
    // (not over) the default export; `model = "default-int8"` /
    // `"default-f32"` (here `--model`) names it.
    use techne_inference::registry::{DEFAULT_F32_MODEL_NAME, DEFAULT_INT8_MODEL_NAME, name_from_path};
    let default_level = techne_inference::onnx_export::ExportOptions::default().accuracy_level;
    let (level, suffix, embedded, source) = if default_level == 4 {
        ("0", "-f32", DEFAULT_F32_MODEL_NAME, "default-f32")
    } else {
        ("4", "-int8", DEFAULT_INT8_MODEL_NAME, "default-int8")
    };
    let (code, stdout, stderr) =
        run(&["models", "import", gguf.to_str().unwrap(), "--accuracy-level", level, "--registry", reg]);
    assert_eq!(code, Some(0), "{stderr}");
    let suffixed = format!("{}{suffix}", name_from_path(&gguf));
    assert!(stdout.contains(&format!("imported `{suffixed}`")), "{stdout}");
    let (code, _, _) = run(&["models", "remove", &suffixed, "--registry", reg]);
    assert_eq!(code, Some(0));
    let (code, stdout, stderr) = run(&["models", "import", "--default", "--accuracy-level", level, "--registry", reg]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains(&format!("imported `{embedded}`")), "{stdout}");
    answers_france(embedded);
    answers_france(source);
    let (code, _, _) = run(&["models", "remove", embedded, "--registry", reg]);
    assert_eq!(code, Some(0));
    let (code, _, stderr) =
        run(&["models", "import", gguf.to_str().unwrap(), "--accuracy-level", "2", "--registry", reg]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("use 0 (f32) or 4"), "{stderr}");
    let (code, _, _) = run(&["models", "remove", "smol-int8", "--registry", reg]);
    assert_eq!(code, Some(0));
    let (code, _, stderr) = run(&["generate", "--model", "missing", "--registry", reg, "--prompt", "x"]);
    assert_eq!(code, Some(7));
    assert!(stderr.contains("techne models import"), "{stderr}");
    let (code, _, _) = run(&["models", "remove", "smol", "--registry", reg]);
    assert_eq!(code, Some(0));
    let (code, stdout, _) = run(&["models", "list", "--registry", reg]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("no models"), "{stdout}");
}
