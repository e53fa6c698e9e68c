//! Test support shared by several test crates: pieces of synthetic GGUF
//! files (the GPT-2 byte-level vocabulary and the metadata of a tiny llama
//! model; each test writes its own weights), and the way tests on the real
//! default model find ONNX Runtime and the SmolLM2 GGUF or skip.
//! techne-inference's tests use it as `mod support;`; techne-training's tests
//! include this file by path (`host/training/tests/common/mod.rs`), so both
//! write the same layout.

#![allow(dead_code)]

use std::path::PathBuf;

use techne_inference::gguf::{GgufWriter, MetaType, MetaValue};
use techne_inference::{Runtime, locate};

/// A test on the real model cannot run because of `why`: `None` after
/// printing `SKIPPED`, or a panic when `TECHNE_REQUIRE_MODELS=1` (as in
/// scripts/test.sh), where a missing model is a failure.
pub fn skip<T>(why: &str) -> Option<T> {
    assert!(
        std::env::var("TECHNE_REQUIRE_MODELS").as_deref() != Ok("1"),
        "TECHNE_REQUIRE_MODELS=1 but {why}: run scripts/setup.sh"
    );
    eprintln!("SKIPPED: {why}");
    None
}

/// ONNX Runtime and the embedded default model's GGUF, or why either is missing.
pub fn runtime_and_default_gguf() -> Result<(Runtime, PathBuf), String> {
    let runtime = Runtime::load(None).map_err(|e| e.to_string())?;
    let gguf = locate::smollm2_gguf()
        .ok_or_else(|| format!("the SmolLM2 GGUF is not installed (run `{}`)", locate::SMOLLM2_INSTALL))?;
    Ok((runtime, gguf))
}

/// A GGUF string array of `values`.
pub fn string_array<S: AsRef<str>>(values: &[S]) -> MetaValue {
    MetaValue::Array(MetaType::String, values.iter().map(|s| MetaValue::String(s.as_ref().to_owned())).collect())
}

/// Three control tokens (`<|endoftext|>`, `<|im_start|>`, `<|im_end|>`, ids
/// 0–2), then the GPT-2 byte-level symbols of the 256 bytes in byte order.
pub fn byte_level_vocab() -> Vec<String> {
    // GPT-2's byte-to-unicode mapping: printable bytes stand for themselves,
    // the others for code points from 256 on.
    let mut bytes: Vec<u32> = (b'!' as u32..=b'~' as u32).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut code_points = bytes.clone();
    let mut shifted = 0;
    for byte in 0..256u32 {
        if !bytes.contains(&byte) {
            bytes.push(byte);
            code_points.push(256 + shifted);
            shifted += 1;
        }
    }
    let mut symbols: Vec<(u32, char)> =
        bytes.iter().zip(&code_points).map(|(b, c)| (*b, char::from_u32(*c).unwrap_or('?'))).collect();
    symbols.sort();
    let mut tokens: Vec<String> = vec!["<|endoftext|>".into(), "<|im_start|>".into(), "<|im_end|>".into()];
    tokens.extend(symbols.iter().map(|(_, c)| c.to_string()));
    tokens
}

/// The shape of a tiny llama model.
pub struct TinyLlama {
    /// Number of transformer blocks.
    pub layers: usize,
    /// Hidden (embedding) size.
    pub hidden: usize,
    /// Attention heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `heads`).
    pub kv_heads: usize,
    /// Feed-forward size.
    pub feed_forward: usize,
    /// RoPE frequency base.
    pub rope_theta: f32,
    /// RMS-norm epsilon.
    pub rms_epsilon: f32,
}

impl TinyLlama {
    /// Writes the metadata of a llama model called `tiny` with this shape
    /// and a context of 256: a GPT-2 byte-level tokenizer over `tokens`
    /// without merges (the first three are control tokens; BOS 1, EOS 2) and
    /// `chat_template`.
    pub fn write_metadata(&self, w: &mut GgufWriter, tokens: &[String], chat_template: &str) {
        let token_types = (0..tokens.len()).map(|i| MetaValue::I32(if i < 3 { 3 } else { 1 })).collect();
        w.kv("general.architecture", MetaValue::String("llama".into()))
            .kv("general.name", MetaValue::String("tiny".into()))
            .kv("llama.block_count", MetaValue::U32(self.layers as u32))
            .kv("llama.context_length", MetaValue::U32(256))
            .kv("llama.embedding_length", MetaValue::U32(self.hidden as u32))
            .kv("llama.feed_forward_length", MetaValue::U32(self.feed_forward as u32))
            .kv("llama.attention.head_count", MetaValue::U32(self.heads as u32))
            .kv("llama.attention.head_count_kv", MetaValue::U32(self.kv_heads as u32))
            .kv("llama.rope.freq_base", MetaValue::F32(self.rope_theta))
            .kv("llama.attention.layer_norm_rms_epsilon", MetaValue::F32(self.rms_epsilon))
            .kv("tokenizer.ggml.model", MetaValue::String("gpt2".into()))
            .kv("tokenizer.ggml.pre", MetaValue::String("default".into()))
            .kv("tokenizer.ggml.tokens", string_array(tokens))
            .kv("tokenizer.ggml.merges", string_array::<&str>(&[]))
            .kv("tokenizer.ggml.token_type", MetaValue::Array(MetaType::I32, token_types))
            .kv("tokenizer.ggml.bos_token_id", MetaValue::U32(1))
            .kv("tokenizer.ggml.eos_token_id", MetaValue::U32(2))
            .kv("tokenizer.chat_template", MetaValue::String(chat_template.into()));
    }
}
