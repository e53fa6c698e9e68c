//! Hugging Face llama checkpoints ↔ GGUF, for the weights an external
//! trainer produces (transformers/TRL write `config.json` +
//! `model.safetensors`, or `model-0000N-of-0000M.safetensors` shards).
//!
//! A fine-tune keeps its base model's architecture and tokenizer, so the
//! conversion takes everything but the weights from the **base GGUF**: every
//! metadata key (hyperparameters, tokenizer, chat template) and the tensor
//! list. `config.json` must agree with the base (hidden size, layers, heads,
//! KV heads, vocabulary); each base tensor is replaced by its Hugging Face
//! counterpart, with the rows of `q_proj`/`k_proj` permuted from Hugging
//! Face's rotate-half order into ggml's interleaved order (the layout the
//! GGUF → ONNX exporter expects). Norms are written as f32, matrices in the
//! requested [`WeightFormat`]. A tied output head (no `lm_head.weight` in the
//! base) stays tied.
//!
//! [`gguf_to_hf`] is the inverse (f32 safetensors), used to hand a base model
//! to an external trainer as a Hugging Face directory and to test the
//! round trip.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use techne_inference::gguf::GgufFile;
use techne_training::WeightFormat;

/// Why a Hugging Face checkpoint could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum HfError {
    /// A file could not be read or written.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The checkpoint does not fit the base model.
    #[error("{dir}: {message}")]
    Mismatch {
        /// The checkpoint directory.
        dir: PathBuf,
        /// What differs and how to fix it.
        message: String,
    },
}

/// The shape of a llama model as far as the conversion needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Shape {
    hidden: u64,
    layers: u64,
    heads: u64,
    kv_heads: u64,
    vocab: u64,
}

fn base_shape(base: &GgufFile) -> Result<Shape, String> {
    let arch = base.architecture().map_err(|e| e.to_string())?.to_string();
    let get = |k: &str| base.get_u64(&format!("{arch}.{k}")).map_err(|e| e.to_string());
    let heads = get("attention.head_count")?;
    let vocab = base
        .tensor("token_embd.weight")
        .and_then(|t| t.dims.get(1).copied())
        .ok_or("the base GGUF has no token_embd.weight")?;
    Ok(Shape {
        hidden: get("embedding_length")?,
        layers: get("block_count")?,
        heads,
        kv_heads: get("attention.head_count_kv").unwrap_or(heads),
        vocab,
    })
}

/// The Hugging Face name of a GGUF llama tensor.
fn hf_name(gguf: &str) -> Option<String> {
    match gguf {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let hf = match part {
        "attn_norm.weight" => "input_layernorm.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}"))
}

/// Reorders the rows of a `[heads·d, cols]` projection between Hugging
/// Face's rotate-half order and ggml's interleaved order: within each head,
/// ggml row `2i + j` is Hugging Face row `j·d/2 + i`.
fn permute_rows(data: &[f32], heads: usize, cols: usize, to_ggml: bool) -> Vec<f32> {
    let rows = data.len() / cols.max(1);
    let d = rows / heads.max(1);
    let half = d / 2;
    let mut out = vec![0f32; data.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let ggml_row = h * d + 2 * i + j;
                let hf_row = h * d + j * half + i;
                let (dst, src) = if to_ggml { (ggml_row, hf_row) } else { (hf_row, ggml_row) };
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

fn io(path: &Path) -> impl FnOnce(String) -> HfError + '_ {
    move |message| HfError::Io { path: path.to_path_buf(), message }
}

/// The safetensors files of a checkpoint directory, sorted.
fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>, HfError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io(dir)(e.to_string()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors") && !p.ends_with("adapter_model.safetensors"))
        .collect();
    files.sort();
    Ok(files)
}

/// Whether `dir` looks like a Hugging Face checkpoint (`config.json` and safetensors weights).
pub fn is_hf_checkpoint(dir: &Path) -> bool {
    dir.join("config.json").is_file() && safetensors_files(dir).is_ok_and(|f| !f.is_empty())
}

/// Converts the Hugging Face llama checkpoint in `dir` into a GGUF at `out`
/// with the metadata (and tokenizer) of `base`; matrices in `format`.
/// `general_name` replaces `general.name` when given.
pub fn hf_to_gguf(
    base: &GgufFile,
    dir: &Path,
    out: &Path,
    format: WeightFormat,
    general_name: Option<&str>,
) -> Result<(), HfError> {
    let mismatch = |message: String| HfError::Mismatch { dir: dir.to_path_buf(), message };
    let shape = base_shape(base).map_err(&mismatch)?;
    let config_path = dir.join("config.json");
    let config: serde_json::Value = std::fs::read(&config_path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| format!("not JSON ({e})")))
        .map_err(io(&config_path))?;
    let field = |k: &str| config.get(k).and_then(serde_json::Value::as_u64);
    let model_type = config.get("model_type").and_then(serde_json::Value::as_str).unwrap_or("");
    if model_type != "llama" {
        return Err(mismatch(format!(
            "config.json has model_type {model_type:?}; only llama checkpoints (the base model's architecture) can be imported"
        )));
    }
    let theirs = Shape {
        hidden: field("hidden_size").unwrap_or(0),
        layers: field("num_hidden_layers").unwrap_or(0),
        heads: field("num_attention_heads").unwrap_or(0),
        kv_heads: field("num_key_value_heads").or(field("num_attention_heads")).unwrap_or(0),
        vocab: field("vocab_size").unwrap_or(0),
    };
    if theirs != shape {
        return Err(mismatch(format!(
            "config.json describes {theirs:?} but the base model is {shape:?}: the external trainer must fine-tune the same base model (pass it the {{base_model}} it was given)"
        )));
    }
    let files = safetensors_files(dir)?;
    if files.is_empty() {
        return Err(mismatch("no *.safetensors weights next to config.json".into()));
    }
    let mut weights: HashMap<String, Tensor> = HashMap::new();
    for f in &files {
        let map = candle_core::safetensors::load(f, &Device::Cpu).map_err(|e| io(f)(e.to_string()))?;
        weights.extend(map);
    }
    let mut w = techne_training::export::writer_like(base, general_name);
    for info in &base.tensors {
        let name = hf_name(&info.name)
            .ok_or_else(|| mismatch(format!("the base tensor {} has no Hugging Face llama counterpart", info.name)))?;
        let tensor = weights.get(&name).ok_or_else(|| {
            mismatch(format!("{name} is missing (needed for the base tensor {}); save the full model, not only an adapter (merge LoRA adapters before saving)", info.name))
        })?;
        let expect: Vec<usize> = info.dims.iter().rev().map(|&d| d as usize).collect();
        if tensor.dims() != expect.as_slice() {
            return Err(mismatch(format!("{name} has shape {:?}, the base model's is {expect:?}", tensor.dims())));
        }
        let data = tensor
            .to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| mismatch(format!("{name}: {e}")))?;
        let cols = expect.last().copied().unwrap_or(1);
        let data = if info.name.ends_with("attn_q.weight") {
            permute_rows(&data, shape.heads as usize, cols, true)
        } else if info.name.ends_with("attn_k.weight") {
            permute_rows(&data, shape.kv_heads as usize, cols, true)
        } else {
            data
        };
        if info.dims.len() == 1 {
            w.tensor_f32(&info.name, &info.dims, &data);
        } else {
            let bytes = format.encode(&data, cols).map_err(|e| mismatch(format!("{name}: {e}")))?;
            w.tensor(&info.name, &info.dims, format.ggml_type(), bytes);
        }
    }
    techne_training::checkpoint::write_file_atomic(out, &w.to_bytes()).map_err(|e| io(out)(e.to_string()))
}

/// Writes `base` as a Hugging Face llama checkpoint into `dir`:
/// `config.json` and `model.safetensors` (f32; the rows of `q_proj`/`k_proj`
/// back in rotate-half order). The tokenizer stays in the GGUF.
pub fn gguf_to_hf(base: &GgufFile, dir: &Path) -> Result<(), HfError> {
    let mismatch = |message: String| HfError::Mismatch { dir: dir.to_path_buf(), message };
    let shape = base_shape(base).map_err(&mismatch)?;
    std::fs::create_dir_all(dir).map_err(|e| io(dir)(e.to_string()))?;
    let arch = base.architecture().map_err(|e| mismatch(e.to_string()))?.to_string();
    let meta_f64 = |k: &str| base.get_f64(&format!("{arch}.{k}")).ok();
    let mut tensors: HashMap<String, Tensor> = HashMap::new();
    let mut ffn = 0u64;
    for info in &base.tensors {
        let name = hf_name(&info.name).ok_or_else(|| mismatch(format!("{} has no Hugging Face name", info.name)))?;
        let data = base.dequantize(info).map_err(|e| mismatch(format!("{}: {e}", info.name)))?;
        let shape_hf: Vec<usize> = info.dims.iter().rev().map(|&d| d as usize).collect();
        let cols = shape_hf.last().copied().unwrap_or(1);
        let data = if info.name.ends_with("attn_q.weight") {
            permute_rows(&data, shape.heads as usize, cols, false)
        } else if info.name.ends_with("attn_k.weight") {
            permute_rows(&data, shape.kv_heads as usize, cols, false)
        } else {
            data
        };
        if info.name.ends_with("ffn_up.weight") {
            ffn = shape_hf[0] as u64;
        }
        let t = Tensor::from_vec(data, shape_hf, &Device::Cpu).map_err(|e| mismatch(e.to_string()))?;
        tensors.insert(name, t);
    }
    let config = serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": shape.hidden,
        "intermediate_size": ffn,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads,
        "vocab_size": shape.vocab,
        "max_position_embeddings": base.get_u64(&format!("{arch}.context_length")).unwrap_or(2048),
        "rms_norm_eps": meta_f64("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
        "rope_theta": meta_f64("rope.freq_base").unwrap_or(10000.0),
        "tie_word_embeddings": base.tensor("output.weight").is_none(),
        "torch_dtype": "float32",
    });
    let config_path = dir.join("config.json");
    let text = serde_json::to_vec_pretty(&config).map_err(|e| io(&config_path)(e.to_string()))?;
    std::fs::write(&config_path, text).map_err(|e| io(&config_path)(e.to_string()))?;
    let weights = dir.join("model.safetensors");
    candle_core::safetensors::save(&tensors, &weights).map_err(|e| io(&weights)(e.to_string()))
}

/// The [`WeightFormat`] a GGUF stores its attention projections in, if it is one of them.
pub fn projection_format(g: &GgufFile) -> Option<WeightFormat> {
    let ty = g.tensor("blk.0.attn_q.weight")?.ty;
    [WeightFormat::F32, WeightFormat::F16, WeightFormat::Q8_0, WeightFormat::Q4_0, WeightFormat::Q4_1]
        .into_iter()
        .find(|f| f.ggml_type() == ty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use techne_inference::gguf::{GgufWriter, MetaValue};

    /// A tiny llama GGUF: 2 layers, hidden 8, 2 heads, 1 KV head, vocabulary 5, tied head.
    fn tiny_gguf() -> GgufFile {
        let mut w = GgufWriter::new();
        w.kv("general.architecture", MetaValue::String("llama".into()));
        w.kv("general.name", MetaValue::String("tiny".into()));
        w.kv("llama.embedding_length", MetaValue::U32(8));
        w.kv("llama.block_count", MetaValue::U32(2));
        w.kv("llama.attention.head_count", MetaValue::U32(2));
        w.kv("llama.attention.head_count_kv", MetaValue::U32(1));
        w.kv("llama.context_length", MetaValue::U32(32));
        let mut seed = 1u32;
        let mut values = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
                })
                .collect()
        };
        w.tensor_f32("token_embd.weight", &[8, 5], &values(40));
        w.tensor_f32("output_norm.weight", &[8], &values(8));
        for l in 0..2 {
            w.tensor_f32(&format!("blk.{l}.attn_norm.weight"), &[8], &values(8));
            w.tensor_f32(&format!("blk.{l}.attn_q.weight"), &[8, 8], &values(64));
            w.tensor_f32(&format!("blk.{l}.attn_k.weight"), &[8, 4], &values(32));
            w.tensor_f32(&format!("blk.{l}.attn_v.weight"), &[8, 4], &values(32));
            w.tensor_f32(&format!("blk.{l}.attn_output.weight"), &[8, 8], &values(64));
            w.tensor_f32(&format!("blk.{l}.ffn_norm.weight"), &[8], &values(8));
            w.tensor_f32(&format!("blk.{l}.ffn_gate.weight"), &[8, 12], &values(96));
            w.tensor_f32(&format!("blk.{l}.ffn_up.weight"), &[8, 12], &values(96));
            w.tensor_f32(&format!("blk.{l}.ffn_down.weight"), &[12, 8], &values(96));
        }
        GgufFile::from_bytes(w.to_bytes()).unwrap()
    }

    #[test]
    fn rotary_row_permutation_matches_ggml_and_inverts() {
        // One head of 4 rows (d = 4): Hugging Face rows [r0 r1 r2 r3] → ggml [r0 r2 r1 r3].
        let hf: Vec<f32> = (0..8).map(|v| v as f32).collect();
        let ggml = permute_rows(&hf, 1, 2, true);
        assert_eq!(ggml, vec![0., 1., 4., 5., 2., 3., 6., 7.]);
        assert_eq!(permute_rows(&ggml, 1, 2, false), hf);
    }

    #[test]
    fn a_hugging_face_export_converts_back_to_the_same_gguf_tensors() {
        let base = tiny_gguf();
        let dir = tempfile::tempdir().unwrap();
        gguf_to_hf(&base, dir.path()).unwrap();
        assert!(is_hf_checkpoint(dir.path()));
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
        assert_eq!(config["num_key_value_heads"], 1);
        assert_eq!(config["intermediate_size"], 12);
        assert_eq!(config["tie_word_embeddings"], true);
        // The q rows are stored in Hugging Face order: row 1 of the HF tensor is ggml row 2.
        let hf = candle_core::safetensors::load(dir.path().join("model.safetensors"), &Device::Cpu).unwrap();
        let q_hf = hf["model.layers.0.self_attn.q_proj.weight"].to_vec2::<f32>().unwrap();
        let q_ggml = base.dequantize(base.tensor("blk.0.attn_q.weight").unwrap()).unwrap();
        assert_eq!(q_hf[1], q_ggml[2 * 8..3 * 8].to_vec());
        let out = dir.path().join("back.gguf");
        hf_to_gguf(&base, dir.path(), &out, WeightFormat::F32, Some("back")).unwrap();
        let back = GgufFile::open(&out).unwrap();
        assert_eq!(back.get_str("general.name").unwrap(), "back");
        assert_eq!(back.tensors.len(), base.tensors.len());
        for info in &base.tensors {
            let b = back.tensor(&info.name).unwrap();
            assert_eq!(b.dims, info.dims, "{}", info.name);
            assert_eq!(back.dequantize(b).unwrap(), base.dequantize(info).unwrap(), "{}", info.name);
        }
        assert_eq!(projection_format(&back), Some(WeightFormat::F32));
    }

    #[test]
    fn a_checkpoint_of_another_shape_or_without_full_weights_is_refused() {
        let base = tiny_gguf();
        let dir = tempfile::tempdir().unwrap();
        gguf_to_hf(&base, dir.path()).unwrap();
        let out = dir.path().join("x.gguf");
        let path = dir.path().join("config.json");
        let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        config["num_hidden_layers"] = 3.into();
        std::fs::write(&path, config.to_string()).unwrap();
        let e = hf_to_gguf(&base, dir.path(), &out, WeightFormat::F16, None).unwrap_err().to_string();
        assert!(e.contains("same base model"), "{e}");
        config["num_hidden_layers"] = 2.into();
        std::fs::write(&path, config.to_string()).unwrap();
        let mut hf = candle_core::safetensors::load(dir.path().join("model.safetensors"), &Device::Cpu).unwrap();
        hf.remove("model.layers.1.mlp.up_proj.weight");
        candle_core::safetensors::save(&hf, dir.path().join("model.safetensors")).unwrap();
        let e = hf_to_gguf(&base, dir.path(), &out, WeightFormat::F16, None).unwrap_err().to_string();
        assert!(e.contains("model.layers.1.mlp.up_proj.weight is missing"), "{e}");
    }
}
