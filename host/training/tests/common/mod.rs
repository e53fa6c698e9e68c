//! Shared helpers: a tiny synthetic llama model written as GGUF (2 layers,
//! hidden 64, 4 heads / 2 kv heads, byte-level vocabulary of 259 tokens,
//! ChatML template; its vocabulary and metadata come from techne-inference's
//! test support, `host/inference/tests/support/mod.rs`), data files, and ONNX
//! Runtime discovery.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use techne_inference::gguf::GgufWriter;
use techne_inference::quant::GgmlType;
use techne_training::rng::Rng;

pub const HIDDEN: usize = 64;
pub const HEADS: usize = 4;
pub const KV_HEADS: usize = 2;
pub const HEAD_DIM: usize = 16;
pub const FF: usize = 128;
pub const LAYERS: usize = 2;

pub const CHATML: &str = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

#[path = "../../../inference/tests/support/mod.rs"]
mod support;

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn f16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect()
}

/// A random tiny llama GGUF. Projection weights are f32 (the up projection
/// f16, the embedding Q8_0), so loading exercises dequantisation and the
/// merged export copies untouched tensors through.
pub fn tiny_gguf(seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let tokens = support::byte_level_vocab();
    let v = tokens.len();
    let mut w = GgufWriter::new();
    let shape = support::TinyLlama {
        layers: LAYERS,
        hidden: HIDDEN,
        heads: HEADS,
        kv_heads: KV_HEADS,
        feed_forward: FF,
        rope_theta: 10000.0,
        rms_epsilon: 1e-5,
    };
    shape.write_metadata(&mut w, &tokens, CHATML);
    let mut rand = |n: usize, a: f32| -> Vec<f32> { (0..n).map(|_| rng.uniform(a)).collect() };
    let emb = rand(v * HIDDEN, 1.0);
    w.tensor(
        "token_embd.weight",
        &[HIDDEN as u64, v as u64],
        GgmlType::Q8_0,
        techne_training::export::quantize_q8_0(&emb),
    );
    let norm: Vec<f32> = (0..HIDDEN).map(|i| 1.0 + 0.1 * ((i * 7 % 13) as f32 / 13.0 - 0.5)).collect();
    w.tensor_f32("output_norm.weight", &[HIDDEN as u64], &norm);
    let (h, q, kv, ff) = (HIDDEN as u64, (HEADS * HEAD_DIM) as u64, (KV_HEADS * HEAD_DIM) as u64, FF as u64);
    for i in 0..LAYERS {
        w.tensor_f32(&format!("blk.{i}.attn_norm.weight"), &[h], &norm);
        w.tensor_f32(&format!("blk.{i}.ffn_norm.weight"), &[h], &norm.iter().rev().copied().collect::<Vec<_>>());
        let shapes = [[h, q], [h, kv], [h, kv], [q, h], [h, ff], [h, ff], [ff, h]];
        let names = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"];
        for (name, dims) in names.iter().zip(shapes) {
            let n = (dims[0] * dims[1]) as usize;
            let a = 1.5 / (dims[0] as f32).sqrt();
            let data = rand(n, a);
            if *name == "ffn_up" {
                w.tensor(&format!("blk.{i}.{name}.weight"), &dims, GgmlType::F16, f16_bytes(&data));
            } else {
                w.tensor(&format!("blk.{i}.{name}.weight"), &dims, GgmlType::F32, f32_bytes(&data));
            }
        }
    }
    w.to_bytes()
}

/// Writes the tiny model into `dir` and returns its path.
pub fn write_tiny(dir: &Path, seed: u64) -> PathBuf {
    let p = dir.join(format!("tiny-{seed}.gguf"));
    std::fs::write(&p, tiny_gguf(seed)).expect("write tiny gguf");
    p
}

/// A small chat SFT data set (messages format, with a system turn and a
/// two-turn conversation).
pub fn sft_jsonl() -> String {
    let mut s = String::new();
    let qa = [
        ("hi", "hello there"),
        ("2+2?", "4"),
        ("color of sky", "blue"),
        ("say abc", "abc abc"),
        ("capital of france", "paris"),
        ("opposite of up", "down"),
    ];
    for (q, a) in qa {
        s.push_str(
            &serde_json::json!({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
                .to_string(),
        );
        s.push('\n');
    }
    s.push_str(
        &serde_json::json!({"messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "1"},
            {"role": "user", "content": "two"},
            {"role": "assistant", "content": "2"}
        ]})
        .to_string(),
    );
    s.push('\n');
    s.push_str(&serde_json::json!({"prompt": "ping", "completion": "pong"}).to_string());
    s.push('\n');
    s
}

/// A small preference data set (string prompt/chosen/rejected).
pub fn dpo_jsonl() -> String {
    let rows = [
        ("hi", "hello", "go away"),
        ("2+2?", "4", "5"),
        ("sky?", "blue", "green"),
        ("up?", "down", "sideways"),
        ("yes?", "no", "maybe"),
        ("abc?", "def", "xyz"),
    ];
    rows.iter()
        .map(|(p, c, r)| serde_json::json!({"prompt": p, "chosen": c, "rejected": r}).to_string() + "\n")
        .collect()
}

/// The ONNX Runtime library, or `None` after printing a SKIPPED line.
pub fn runtime() -> Option<techne_inference::Runtime> {
    match techne_inference::Runtime::load(None) {
        Ok(r) => Some(r),
        Err(e) => {
            if std::env::var("TECHNE_REQUIRE_MODELS").as_deref() == Ok("1") {
                panic!("ONNX Runtime is required (TECHNE_REQUIRE_MODELS=1): {e}");
            }
            println!("SKIPPED: ONNX Runtime not available ({e}); run `pip install onnxruntime==1.31.1`");
            None
        }
    }
}
