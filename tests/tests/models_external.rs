//! `techne models export-hf`, `techne models import DIR` and
//! `techne generate --model NAME` on a model directory in the Hugging Face
//! Optimum / onnx-community layout (written from the embedded SmolLM2 GGUF,
//! with a float16 key/value cache), and the error for an incomplete directory.
//!
//! Needs the model packages (`scripts/setup.sh`); without them it says it is
//! skipped and passes, unless `TECHNE_REQUIRE_MODELS=1`.

use std::process::{Command, Output};

const CLI: &str = env!("CARGO_BIN_EXE_techne-with-test-doubles");

fn techne(args: &[&str]) -> (Option<i32>, String, String) {
    let Output { status, stdout, stderr } = Command::new(CLI).args(args).output().expect("run techne");
    (status.code(), String::from_utf8_lossy(&stdout).into_owned(), String::from_utf8_lossy(&stderr).into_owned())
}

#[test]
fn a_model_directory_imports_and_generates_from_the_cli() {
    let (Some(gguf), Some(_)) =
        (techne_inference::locate::smollm2_gguf(), techne_inference::locate::onnxruntime_dylib())
    else {
        assert!(
            std::env::var("TECHNE_REQUIRE_MODELS").as_deref() != Ok("1"),
            "TECHNE_REQUIRE_MODELS=1 but the model packages are missing: run scripts/setup.sh"
        );
        eprintln!("skipped: install the model packages with `scripts/setup.sh` to run this test");
        return;
    };
    let scratch = tempfile::tempdir().expect("tempdir");
    let dir = scratch.path().join("SmolLM2-onnx");
    let registry = scratch.path().join("registry");
    let (dir_s, reg_s, gguf_s) = (dir.to_str().expect("utf-8"), registry.to_str().expect("utf-8"), gguf.to_str());
    let gguf_s = gguf_s.expect("utf-8");

    let (code, out, err) = techne(&["models", "export-hf", gguf_s, dir_s, "--kv-f16", "--max-context", "512"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    let (code, _, err) = techne(&["models", "export-hf", gguf_s, dir_s]);
    assert_eq!(code, Some(2), "an existing directory is refused: {err}");
    assert!(err.contains("already exists"), "{err}");

    let (code, out, err) = techne(&["models", "import", dir_s, "--registry", reg_s]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("imported `smollm2-onnx`"), "{out}");
    assert!(out.contains("30 layers, F16 key/value cache"), "{out}");
    let (code, out, err) = techne(&["models", "check", "smollm2-onnx", "--registry", reg_s]);
    assert_eq!(code, Some(0), "{out}\n{err}");

    let (code, out, err) = techne(&[
        "generate",
        "--model",
        "smollm2-onnx",
        "--registry",
        reg_s,
        "--prompt",
        "What is the capital of France?",
        "--max-tokens",
        "16",
        "--json",
    ]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    let generation: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let text = generation["choices"][0]["text"].as_str().expect("text");
    assert!(text.contains("Paris"), "{text}");

    // Without tokenizer.json the import says what is missing and how to get it.
    std::fs::remove_file(dir.join("tokenizer.json")).expect("remove");
    let (code, out, err) = techne(&["models", "import", dir_s, "--name", "broken", "--registry", reg_s]);
    assert_eq!(code, Some(7), "{out}\n{err}");
    assert!(err.contains("no tokenizer.json: download the model's tokenizer.json"), "{err}");
    let (_, list, _) = techne(&["models", "list", "--registry", reg_s]);
    assert!(!list.contains("broken"), "{list}");
}
