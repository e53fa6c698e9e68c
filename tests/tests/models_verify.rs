//! `techne models verify`: techne's engine against llama.cpp's llama-server on
//! the same GGUF (tokenizer, greedy continuations, top-1 next-token agreement
//! over the shipped prompt set `models/verify-prompts.jsonl`).
//!
//! The comparison needs `target/llama.cpp/build/bin/llama-server`
//! (`scripts/build-llama-cpp.sh`) and the model packages (`scripts/setup.sh`);
//! without them it says it is skipped and passes, unless
//! `TECHNE_REQUIRE_LLAMA_SERVER=1` / `TECHNE_REQUIRE_MODELS=1`.

use std::process::Command;

use techne_integration_tests::{llama_server, models_available, outcome};

const CLI: &str = env!("CARGO_BIN_EXE_techne-with-test-doubles");

fn techne(args: &[&str]) -> (Option<i32>, String, String) {
    outcome(Command::new(CLI).args(args).output().unwrap())
}

#[test]
fn techne_agrees_with_llama_cpp_on_the_shipped_prompts() {
    if !models_available() {
        return;
    }
    let binary = llama_server::binary_path();
    if !binary.is_file() {
        let missing = format!("{} is missing: run scripts/build-llama-cpp.sh", binary.display());
        assert!(std::env::var("TECHNE_REQUIRE_LLAMA_SERVER").as_deref() != Ok("1"), "{missing}");
        eprintln!("skipped: {missing}");
        return;
    }
    let registry = tempfile::tempdir().unwrap();
    let registry = registry.path().to_str().unwrap();
    let verify = |model: Option<&str>| {
        let mut args = vec!["models", "verify", "--server", binary.to_str().unwrap(), "--registry", registry];
        args.extend(["--threads", "1"]);
        if let Some(model) = model {
            args.extend(["--model", model]);
        }
        let (code, stdout, stderr) = techne(&args);
        eprintln!("{stdout}");
        assert_eq!(code, Some(0), "{stdout}\n{stderr}");
        assert!(stdout.trim_end().ends_with("PASS"), "{stdout}");
        let summary = stdout.lines().find(|l| l.starts_with("overall top-1 agreement")).unwrap().to_string();
        let percent: f64 = summary.split_whitespace().nth(3).unwrap().trim_end_matches('%').parse().unwrap();
        assert!(percent >= 95.0, "{summary}");
        assert!(summary.contains("tokenizer mismatches 0"), "{summary}");
        // Greedy continuations are identical or part only where llama.cpp
        // itself ranked techne's token within the tie gap of its own.
        assert!(summary.contains("except 0;"), "{summary}");
        // Every shipped prompt has a row, and each compared some tokens.
        for id in ["capital", "python", "story", "unicode"] {
            let row = stdout.lines().find(|l| l.starts_with(id)).unwrap_or_else(|| panic!("no row {id}:\n{stdout}"));
            let compared: usize = row.split_whitespace().nth(3).unwrap().parse().unwrap();
            assert!(compared > 0, "{row}");
        }
        summary
    };
    verify(None);
    // The export at the other accuracy level must agree as well: f32
    // activations, or int8 blocks of activations as llama.cpp computes them
    // (whichever is not this CPU's default).
    let gguf = techne_inference::locate::smollm2_gguf().unwrap();
    let other = if techne_inference::onnx_export::default_accuracy_level() == 4 { "0" } else { "4" };
    let (code, stdout, stderr) = techne(&[
        "models",
        "import",
        gguf.to_str().unwrap(),
        "--name",
        "smollm2-other-level",
        "--accuracy-level",
        other,
        "--registry",
        registry,
    ]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    verify(Some("smollm2-other-level"));
}

#[test]
fn bad_prompt_files_and_a_missing_server_say_how_to_fix_them() {
    let dir = tempfile::tempdir().unwrap();
    let prompts = dir.path().join("prompts.jsonl");
    std::fs::write(&prompts, "{\"id\": \"a\", \"text\": \"hello\"}\n{\"id\": \"b\", \"max_tokens\": 3}\n").unwrap();
    let (code, _, stderr) = techne(&["models", "verify", "--prompts", prompts.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("line 2") && stderr.contains("exactly one of"), "{stderr}");

    if !models_available() {
        return;
    }
    let registry = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-llama-server");
    let (code, _, stderr) = techne(&[
        "models",
        "verify",
        "--server",
        missing.to_str().unwrap(),
        "--registry",
        registry.path().to_str().unwrap(),
    ]);
    assert_eq!(code, Some(7), "{stderr}");
    assert!(stderr.contains("scripts/build-llama-cpp.sh"), "{stderr}");
}
