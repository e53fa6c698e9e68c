//! Writes a llama-architecture GGUF model as a model directory in the layout
//! of Hugging Face Optimum / onnx-community decoder exports, the layout that
//! [`crate::external`] imports.
//!
//! The directory holds `onnx/model.onnx`, `config.json`,
//! `generation_config.json`, `tokenizer.json` and `tokenizer_config.json`
//! (with the chat template). The graph follows the usual convention:
//!
//! - inputs `input_ids` `[batch, seq]`, `attention_mask` `[batch, past + seq]`,
//!   `position_ids` `[batch, seq]` (int64) and `past_key_values.{i}.key` /
//!   `.value` `[batch, kv_heads, past, head_dim]`;
//! - outputs `logits` `[batch, seq, vocab]` (f32) and `present.{i}.key` /
//!   `.value` `[batch, kv_heads, past + seq, head_dim]`, where present is the
//!   past with the new positions appended (`Concat`).
//!
//! Attention is built from standard ONNX operators (`MatMul`, `Softmax`,
//! `Concat`, `Where` for the causal and padding mask, rotary embeddings from
//! `Gather`ed cos/sin tables), not from ONNX Runtime's `GroupQueryAttention`.
//! Normalisation is spelled out too (`ReduceMean`/`Sqrt`/`Div`). The matrix
//! products use the same weights as [`crate::onnx_export`]: quantised blocks
//! become `MatMulNBits` (as in onnx-community's `model_q4.onnx` files), float
//! weights plain `MatMul`s. With [`HfExportOptions::kv_f16`] the cache travels
//! as float16, with [`HfExportOptions::logits_f16`] the logits too (like the
//! `*_fp16` exports), while the graph computes in f32.
//!
//! This writer exists so that the import of foreign model directories can be
//! tested against the native import of the same GGUF file: both must give the
//! same greedy tokens and near-identical log-probabilities.

use std::path::{Path, PathBuf};

use prost::Message;
use serde_json::{Value, json};

use crate::gguf::GgufFile;
use crate::onnx_export::{
    Builder, ExportError, LlamaConfig, embedding, fuse, load_weight, matrix, norm_weight, rotary_caches,
};
use crate::onnx_proto::{self as pb, Dim, attr_i, attr_ints, data_type, value_info};
use crate::tokenizer::tokenizer_json_from_gguf;

/// Errors raised while writing a model directory.
#[derive(Debug, thiserror::Error)]
pub enum HfExportError {
    /// Reading or converting the model failed.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// Converting the tokenizer failed.
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
    /// Reading the GGUF file failed.
    #[error(transparent)]
    Gguf(#[from] crate::gguf::GgufError),
    /// The model cannot be written in this layout.
    #[error("cannot write this model in the Hugging Face layout: {0}")]
    Unsupported(String),
    /// Writing a file failed.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Options for [`export_hf_dir`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HfExportOptions {
    /// Largest context (size of the rotary tables and `max_position_embeddings`);
    /// defaults to the model's context length capped at
    /// [`crate::onnx_export::DEFAULT_MAX_CONTEXT_CAP`].
    pub max_context: Option<usize>,
    /// Carry the key/value cache as float16 (`past_key_values.*` and
    /// `present.*` are f16; attention itself computes in f32).
    pub kv_f16: bool,
    /// Return the logits as float16 (as `model_fp16.onnx` exports do).
    pub logits_f16: bool,
    /// Take a scalar int64 `num_logits_to_keep` input, as recent
    /// transformers exports do: logits only for that many last positions
    /// (0 = all).
    pub num_logits_to_keep: bool,
    /// Take a `use_cache_branch` bool `[1]` input, as Optimum's merged
    /// decoders do: when it is false the past inputs are ignored (a first
    /// step), when true they are attended to.
    pub use_cache_branch: bool,
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), HfExportError> {
    std::fs::write(path, bytes).map_err(|source| HfExportError::Io { path: path.to_path_buf(), source })
}

fn write_json(path: &Path, value: &Value) -> Result<(), HfExportError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| HfExportError::Unsupported(e.to_string()))?;
    write_file(path, &bytes)
}

/// `x / sqrt(mean(x²) + eps) · w`, in standard operators.
fn rms_norm(b: &mut Builder, x: &str, weight: &str, eps: f32) -> String {
    let sq = b.op("Mul", "", &[x, x], vec![]);
    let axes = b.const_i64("rms_axes", &[1], &[-1]);
    let mean = b.op("ReduceMean", "", &[&sq, &axes], vec![attr_i("keepdims", 1)]);
    let eps_name = b.name("rms_eps");
    let eps = b.init(pb::tensor_f32(&eps_name, &[], &[eps]));
    let var = b.op("Add", "", &[&mean, &eps], vec![]);
    let rms = b.op("Sqrt", "", &[&var], vec![]);
    let normed = b.op("Div", "", &[x, &rms], vec![]);
    b.op("Mul", "", &[&normed, weight], vec![])
}

/// Rotates interleaved pairs `(x[2i], x[2i+1])` of `x` (`[B, heads, S, head_dim]`
/// as `[B, heads, S, head_dim/2, 2]`) by the angles in `cos`/`sin`
/// (`[B, 1, S, head_dim/2, 1]`): the rotary mode of GGUF's permuted Q/K weights.
fn rotary(b: &mut Builder, x5: &str, cos: &str, sin: &str) -> String {
    let split = b.const_i64("pair_split", &[2], &[1, 1]);
    let (x0, x1) = (b.name("rot_even"), b.name("rot_odd"));
    b.node("Split", "", &[x5, &split], &[&x0, &x1], vec![attr_i("axis", -1)]);
    let a = b.op("Mul", "", &[&x0, cos], vec![]);
    let c = b.op("Mul", "", &[&x1, sin], vec![]);
    let even = b.op("Sub", "", &[&a, &c], vec![]);
    let d = b.op("Mul", "", &[&x0, sin], vec![]);
    let e = b.op("Mul", "", &[&x1, cos], vec![]);
    let odd = b.op("Add", "", &[&d, &e], vec![]);
    b.op("Concat", "", &[&even, &odd], vec![attr_i("axis", -1)])
}

/// Builds the ONNX graph (see the module docs).
fn build_graph(g: &GgufFile, cfg: &LlamaConfig, options: &HfExportOptions) -> Result<pb::ModelProto, HfExportError> {
    let kv_f16 = options.kv_f16;
    let (h, hd, nh, nkv, ff) = (cfg.hidden, cfg.head_dim, cfg.n_heads, cfg.n_kv_heads, cfg.ff);
    if cfg.rope_dim != hd {
        return Err(HfExportError::Unsupported(format!(
            "partial rotary embeddings ({} of {hd} dimensions)",
            cfg.rope_dim
        )));
    }
    let groups = (nh / nkv) as i64;
    let half = (hd / 2) as i64;
    let mut b = Builder::new(0);

    let embd = g.require_tensor("token_embd.weight")?;
    let mut hidden = embedding(&mut b, g, embd, cfg.vocab, h)?;

    // Rotary tables gathered at each token's position: [B, 1, S, half, 1].
    let freq_factors = match g.tensor("rope_freqs.weight") {
        Some(t) => Some(g.dequantize(t)?),
        None => None,
    };
    let (cos, sin) = rotary_caches(cfg, freq_factors.as_deref());
    let cos_table = b.init(pb::tensor_f32("rotary.cos", &[cfg.max_context as i64, half], &cos));
    let sin_table = b.init(pb::tensor_f32("rotary.sin", &[cfg.max_context as i64, half], &sin));
    let rot_axes = b.const_i64("rot_axes", &[2], &[1, 4]);
    let gather = vec![attr_i("axis", 0)];
    let cos = b.op("Gather", "", &[&cos_table, "position_ids"], gather.clone());
    let cos = b.op("Unsqueeze", "", &[&cos, &rot_axes], vec![]);
    let sin = b.op("Gather", "", &[&sin_table, "position_ids"], gather);
    let sin = b.op("Unsqueeze", "", &[&sin, &rot_axes], vec![]);

    // Additive mask [B, 1, 1, S, T]: key t is visible to query s when
    // t <= past + s (causal) and attention_mask[b, t] == 1 (padding).
    let scalar = |b: &mut Builder, input: &str, index: i64| {
        let shape = b.op("Shape", "", &[input], vec![]);
        let idx = b.const_i64("dim_index", &[], &[index]);
        b.op("Gather", "", &[&shape, &idx], vec![attr_i("axis", 0)])
    };
    let total = scalar(&mut b, "attention_mask", 1);
    let seq = scalar(&mut b, "input_ids", 1);
    let past = b.op("Sub", "", &[&total, &seq], vec![]);
    let zero = b.const_i64("zero", &[], &[0]);
    let one = b.const_i64("one", &[], &[1]);
    let key_pos = b.op("Range", "", &[&zero, &total, &one], vec![]);
    let query_pos = b.op("Range", "", &[&past, &total, &one], vec![]);
    let axes_last = b.const_i64("axes_1", &[1], &[1]);
    let query_pos = b.op("Unsqueeze", "", &[&query_pos, &axes_last], vec![]);
    let causal = b.op("LessOrEqual", "", &[&key_pos, &query_pos], vec![]);
    let keep = b.op("Cast", "", &["attention_mask"], vec![attr_i("to", data_type::BOOL.into())]);
    let mask_axes = b.const_i64("mask_axes", &[3], &[1, 2, 3]);
    let keep = b.op("Unsqueeze", "", &[&keep, &mask_axes], vec![]);
    let allowed = b.op("And", "", &[&causal, &keep], vec![]);
    let zero_f = b.init(pb::tensor_f32("mask_zero", &[], &[0.0]));
    let neg_f = b.init(pb::tensor_f32("mask_negative", &[], &[-1e9]));
    let bias = b.op("Where", "", &[&allowed, &zero_f, &neg_f], vec![]);
    let scale = b.init(pb::tensor_f32("attention_scale", &[], &[1.0 / (hd as f32).sqrt()]));

    let q_shape = b.const_i64("q_shape", &[5], &[0, 0, nh as i64, half, 2]);
    let k_shape = b.const_i64("k_shape", &[5], &[0, 0, nkv as i64, half, 2]);
    let v_shape = b.const_i64("v_shape", &[4], &[0, 0, nkv as i64, hd as i64]);
    let heads_shape = b.const_i64("heads_shape", &[4], &[0, 0, 0, hd as i64]);
    let grouped_shape = b.const_i64("grouped_shape", &[5], &[0, nkv as i64, groups, -1, hd as i64]);
    let merged_shape = b.const_i64("merged_shape", &[4], &[0, nh as i64, -1, hd as i64]);
    let out_shape = b.const_i64("out_shape", &[3], &[0, 0, (nh * hd) as i64]);
    let axis2 = b.const_i64("axis_2", &[1], &[2]);
    let qkv_split = b.const_i64("qkv_split", &[3], &[(nh * hd) as i64, (nkv * hd) as i64, (nkv * hd) as i64]);
    let gu_split = b.const_i64("gate_up_split", &[2], &[ff as i64, ff as i64]);

    // With `use_cache_branch`: the slice of the past inputs to keep, from
    // `[0]` to `[past]` when the flag is set and to `[0]` when not.
    let past_kept = options.use_cache_branch.then(|| {
        let flag = b.op("Cast", "", &["use_cache_branch"], vec![attr_i("to", data_type::INT64.into())]);
        let past_len = scalar(&mut b, "past_key_values.0.key", 2);
        let kept = b.op("Mul", "", &[&past_len, &flag], vec![]);
        let one_d = b.const_i64("one_d_shape", &[1], &[1]);
        let ends = b.op("Reshape", "", &[&kept, &one_d], vec![]);
        (b.const_i64("past_starts", &[1], &[0]), ends)
    });

    for i in 0..cfg.n_layers {
        let p = format!("model.layers.{i}");
        let w = norm_weight(g, &format!("blk.{i}.attn_norm.weight"), h)?;
        let wn = b.init(pb::tensor_f32(&format!("{p}.input_layernorm.weight"), &[h as i64], &w));
        let x = rms_norm(&mut b, &hidden, &wn, cfg.rms_eps);
        let q = load_weight(g, matrix(g, &format!("blk.{i}.attn_q.weight"), h, nh * hd)?)?;
        let k = load_weight(g, matrix(g, &format!("blk.{i}.attn_k.weight"), h, nkv * hd)?)?;
        let v = load_weight(g, matrix(g, &format!("blk.{i}.attn_v.weight"), h, nkv * hd)?)?;
        let qkv = b.linear(&format!("{p}.self_attn.qkv_proj"), &x, fuse(vec![q, k, v]));
        let (q, k, v) = (b.name("q"), b.name("k"), b.name("v"));
        b.node("Split", "", &[&qkv, &qkv_split], &[&q, &k, &v], vec![attr_i("axis", -1)]);
        let perm5 = vec![attr_ints("perm", &[0, 2, 1, 3, 4])];
        let q5 = b.op("Reshape", "", &[&q, &q_shape], vec![]);
        let q5 = b.op("Transpose", "", &[&q5], perm5.clone());
        let q = rotary(&mut b, &q5, &cos, &sin);
        let q = b.op("Reshape", "", &[&q, &heads_shape], vec![]);
        let k5 = b.op("Reshape", "", &[&k, &k_shape], vec![]);
        let k5 = b.op("Transpose", "", &[&k5], perm5);
        let k = rotary(&mut b, &k5, &cos, &sin);
        let k = b.op("Reshape", "", &[&k, &heads_shape], vec![]);
        let v = b.op("Reshape", "", &[&v, &v_shape], vec![]);
        let v = b.op("Transpose", "", &[&v], vec![attr_ints("perm", &[0, 2, 1, 3])]);
        let (mut past_k, mut past_v) = (format!("past_key_values.{i}.key"), format!("past_key_values.{i}.value"));
        if let Some((starts, ends)) = &past_kept {
            // The merged decoder's branch without a cache: no past positions.
            past_k = b.op("Slice", "", &[&past_k, starts, ends, &axis2], vec![]);
            past_v = b.op("Slice", "", &[&past_v, starts, ends, &axis2], vec![]);
        }
        let (present_k, present_v) = (format!("present.{i}.key"), format!("present.{i}.value"));
        let (k_all, v_all) = if kv_f16 {
            let to_f16 = vec![attr_i("to", data_type::FLOAT16.into())];
            let to_f32 = vec![attr_i("to", data_type::FLOAT.into())];
            let k16 = b.op("Cast", "", &[&k], to_f16.clone());
            let v16 = b.op("Cast", "", &[&v], to_f16);
            b.node("Concat", "", &[&past_k, &k16], &[&present_k], vec![attr_i("axis", 2)]);
            b.node("Concat", "", &[&past_v, &v16], &[&present_v], vec![attr_i("axis", 2)]);
            (b.op("Cast", "", &[&present_k], to_f32.clone()), b.op("Cast", "", &[&present_v], to_f32))
        } else {
            b.node("Concat", "", &[&past_k, &k], &[&present_k], vec![attr_i("axis", 2)]);
            b.node("Concat", "", &[&past_v, &v], &[&present_v], vec![attr_i("axis", 2)]);
            (present_k.clone(), present_v.clone())
        };
        // Query heads sharing a key/value head are grouped: [B, kv, groups, S, hd]
        // against keys [B, kv, 1, T, hd] (MatMul broadcasts the group axis).
        let qg = b.op("Reshape", "", &[&q, &grouped_shape], vec![]);
        let kg = b.op("Unsqueeze", "", &[&k_all, &axis2], vec![]);
        let kt = b.op("Transpose", "", &[&kg], vec![attr_ints("perm", &[0, 1, 2, 4, 3])]);
        let scores = b.op("MatMul", "", &[&qg, &kt], vec![]);
        let scores = b.op("Mul", "", &[&scores, &scale], vec![]);
        let scores = b.op("Add", "", &[&scores, &bias], vec![]);
        let probs = b.op("Softmax", "", &[&scores], vec![attr_i("axis", -1)]);
        let vg = b.op("Unsqueeze", "", &[&v_all, &axis2], vec![]);
        let ctx = b.op("MatMul", "", &[&probs, &vg], vec![]);
        let ctx = b.op("Reshape", "", &[&ctx, &merged_shape], vec![]);
        let ctx = b.op("Transpose", "", &[&ctx], vec![attr_ints("perm", &[0, 2, 1, 3])]);
        let ctx = b.op("Reshape", "", &[&ctx, &out_shape], vec![]);
        let o = load_weight(g, matrix(g, &format!("blk.{i}.attn_output.weight"), nh * hd, h)?)?;
        let o = b.linear(&format!("{p}.self_attn.o_proj"), &ctx, o);
        hidden = b.op("Add", "", &[&hidden, &o], vec![]);

        let w = norm_weight(g, &format!("blk.{i}.ffn_norm.weight"), h)?;
        let wn = b.init(pb::tensor_f32(&format!("{p}.post_attention_layernorm.weight"), &[h as i64], &w));
        let x = rms_norm(&mut b, &hidden, &wn, cfg.rms_eps);
        let gate = load_weight(g, matrix(g, &format!("blk.{i}.ffn_gate.weight"), h, ff)?)?;
        let up = load_weight(g, matrix(g, &format!("blk.{i}.ffn_up.weight"), h, ff)?)?;
        let gu = b.linear(&format!("{p}.mlp.gate_up_proj"), &x, fuse(vec![gate, up]));
        let (gname, uname) = (b.name("gate"), b.name("up"));
        b.node("Split", "", &[&gu, &gu_split], &[&gname, &uname], vec![attr_i("axis", -1)]);
        let sig = b.op("Sigmoid", "", &[&gname], vec![]);
        let silu = b.op("Mul", "", &[&gname, &sig], vec![]);
        let act = b.op("Mul", "", &[&silu, &uname], vec![]);
        let down = load_weight(g, matrix(g, &format!("blk.{i}.ffn_down.weight"), ff, h)?)?;
        let down = b.linear(&format!("{p}.mlp.down_proj"), &act, down);
        hidden = b.op("Add", "", &[&hidden, &down], vec![]);
    }
    let w = norm_weight(g, "output_norm.weight", h)?;
    let wn = b.init(pb::tensor_f32("model.norm.weight", &[h as i64], &w));
    let mut xf = rms_norm(&mut b, &hidden, &wn, cfg.rms_eps);
    if options.num_logits_to_keep {
        // The last `num_logits_to_keep` positions (0 keeps them all).
        let one_d = b.const_i64("keep_shape", &[1], &[1]);
        let keep = b.op("Reshape", "", &["num_logits_to_keep", &one_d], vec![]);
        let starts = b.op("Neg", "", &[&keep], vec![]);
        let ends = b.const_i64("keep_ends", &[1], &[i64::MAX]);
        let axes = b.const_i64("keep_axes", &[1], &[1]);
        xf = b.op("Slice", "", &[&xf, &starts, &ends, &axes], vec![]);
    }
    let head = g.tensor("output.weight").unwrap_or(embd);
    let head = load_weight(g, matrix(g, &head.name, h, cfg.vocab)?)?;
    let logits = b.linear("lm_head", &xf, head);
    if options.logits_f16 {
        b.node("Cast", "", &[&logits], &["logits"], vec![attr_i("to", data_type::FLOAT16.into())]);
    } else {
        b.node("Identity", "", &[&logits], &["logits"], vec![]);
    }

    let kv_type = if kv_f16 { data_type::FLOAT16 } else { data_type::FLOAT };
    let kv_dims =
        |len: &str| -> Vec<Dim> { vec!["batch_size".into(), (nkv as i64).into(), len.into(), (hd as i64).into()] };
    let mut inputs = vec![
        value_info("input_ids", data_type::INT64, &["batch_size".into(), "sequence_length".into()]),
        value_info("attention_mask", data_type::INT64, &["batch_size".into(), "total_sequence_length".into()]),
        value_info("position_ids", data_type::INT64, &["batch_size".into(), "sequence_length".into()]),
    ];
    let mut outputs = vec![value_info(
        "logits",
        if options.logits_f16 { data_type::FLOAT16 } else { data_type::FLOAT },
        &[
            "batch_size".into(),
            if options.num_logits_to_keep { "logits_length" } else { "sequence_length" }.into(),
            (cfg.vocab as i64).into(),
        ],
    )];
    for i in 0..cfg.n_layers {
        for kind in ["key", "value"] {
            inputs.push(value_info(&format!("past_key_values.{i}.{kind}"), kv_type, &kv_dims("past_sequence_length")));
            outputs.push(value_info(&format!("present.{i}.{kind}"), kv_type, &kv_dims("total_sequence_length")));
        }
    }
    if options.num_logits_to_keep {
        inputs.push(value_info("num_logits_to_keep", data_type::INT64, &[]));
    }
    if options.use_cache_branch {
        inputs.push(value_info("use_cache_branch", data_type::BOOL, &[1i64.into()]));
    }
    Ok(b.into_model("techne-inference (hf layout)", inputs, outputs))
}

/// Writes `gguf` as a model directory `out` in the Hugging Face / onnx-community
/// layout (see the module docs); `out` is created. Returns the files written.
pub fn export_hf_dir(gguf: &Path, out: &Path, options: &HfExportOptions) -> Result<Vec<PathBuf>, HfExportError> {
    let existed = out.exists();
    let result = write_hf_dir(gguf, out, options);
    if result.is_err() && !existed {
        let _ = std::fs::remove_dir_all(out);
    }
    result
}

fn write_hf_dir(gguf: &Path, out: &Path, options: &HfExportOptions) -> Result<Vec<PathBuf>, HfExportError> {
    let g = GgufFile::open(gguf)?;
    let mut cfg = LlamaConfig::from_gguf(&g)?;
    if let Some(m) = options.max_context {
        if m == 0 {
            return Err(HfExportError::Unsupported("max_context must be positive".into()));
        }
        cfg.max_context = m;
    }
    let model = build_graph(&g, &cfg, options)?;
    let tok = tokenizer_json_from_gguf(&g)?;
    let onnx_dir = out.join("onnx");
    std::fs::create_dir_all(&onnx_dir).map_err(|source| HfExportError::Io { path: onnx_dir.clone(), source })?;
    let mut written = Vec::new();
    let model_path = onnx_dir.join("model.onnx");
    write_file(&model_path, &model.encode_to_vec())?;
    written.push(model_path);

    let id = |t: &Option<String>| -> Value {
        t.as_deref()
            .and_then(|t| {
                tok.json["model"]["vocab"].get(t).cloned().or_else(|| {
                    tok.json["added_tokens"].as_array()?.iter().find(|a| a["content"] == t).map(|a| a["id"].clone())
                })
            })
            .unwrap_or(Value::Null)
    };
    let config = json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": cfg.hidden,
        "intermediate_size": cfg.ff,
        "num_attention_heads": cfg.n_heads,
        "num_hidden_layers": cfg.n_layers,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "max_position_embeddings": cfg.max_context,
        "rms_norm_eps": cfg.rms_eps,
        "rope_theta": cfg.rope_theta,
        "vocab_size": cfg.vocab,
        "tie_word_embeddings": cfg.tied_embeddings,
        "bos_token_id": id(&tok.special.bos),
        "eos_token_id": id(&tok.special.eos),
        "torch_dtype": "float32",
        "_name_or_path": g.get("general.name").and_then(|v| v.as_str()).unwrap_or("llama"),
    });
    let generation = json!({
        "bos_token_id": id(&tok.special.bos),
        "eos_token_id": tok.special.stop_ids,
    });
    let mut tokenizer_config = json!({
        "tokenizer_class": "GPT2Tokenizer",
        "bos_token": tok.special.bos,
        "eos_token": tok.special.eos,
        "unk_token": tok.special.unk,
        "pad_token": tok.special.pad,
        "add_bos_token": tok.special.add_bos,
        "add_eos_token": tok.special.add_eos,
        "model_max_length": cfg.max_context,
    });
    if let Some(t) = &tok.chat_template {
        tokenizer_config["chat_template"] = Value::String(t.clone());
    }
    let tokenizer = serde_json::to_vec(&tok.json).map_err(|e| HfExportError::Unsupported(e.to_string()))?;
    for (name, value) in [
        ("config.json", &config),
        ("generation_config.json", &generation),
        ("tokenizer_config.json", &tokenizer_config),
    ] {
        let path = out.join(name);
        write_json(&path, value)?;
        written.push(path);
    }
    let path = out.join("tokenizer.json");
    write_file(&path, &tokenizer)?;
    written.push(path);
    Ok(written)
}
