//! ONNX decoder models from elsewhere: model directories in the layout of
//! Hugging Face Optimum / transformers.js / onnx-community exports, imported
//! into the registry and driven by their own decode path.
//!
//! A model directory holds `model.onnx` or `onnx/model*.onnx` (plus any
//! external-data file next to it, `model.onnx_data` / `model.onnx.data`),
//! `config.json`, `tokenizer.json`, `tokenizer_config.json` (with
//! `chat_template`, or a `chat_template.jinja` file beside it, and the special
//! tokens) and optionally `generation_config.json` (end-of-sequence ids). The graph must follow the
//! usual input/output names:
//!
//! - inputs `input_ids` `[batch, seq]` and `attention_mask` `[batch, past + seq]`
//!   (int64), optionally `position_ids` `[batch, seq]`, `past_key_values.{i}.key`
//!   / `.value` `[batch, kv_heads, past, head_dim]` (f32 or f16), optionally
//!   `use_cache_branch` (bool) and `num_logits_to_keep` / `logits_to_keep` (int64);
//! - outputs `logits` `[batch, seq, vocab]` (f32 or f16) and `present.{i}.key` /
//!   `.value` `[batch, kv_heads, past + seq, head_dim]`: the past with the new
//!   positions appended.
//!
//! [`inspect_model_dir`] reads all that (the ONNX graph's inputs and outputs
//! are decoded without loading its weights) into a [`ModelDir`], with errors
//! that name what is missing and how to get it; [`crate::Registry::import_dir`]
//! copies (hard-links where it can) the files into the registry and records
//! the detected names and cache layout ([`ConcatLayout`]) in the manifest.
//!
//! Decoding ([`crate::LocalModel`] on such an entry): every sequence keeps its
//! cache as the `present.*` values ONNX Runtime returned for its last step
//! (shared, not copied, between the `n` choices of a request after the
//! prefill), and each step feeds them back as `past_key_values.*`. A batched
//! decode step of the scheduler runs the rows of equal length together (the
//! `n` choices of a request, requests with prompts of one length): their
//! caches are stacked along the batch axis for the call and the new ones
//! split again (two copies of those caches per step, besides the graph's own
//! `Concat`); a row whose length no other row shares runs alone on its cached
//! values without any copy. Rows of different lengths are not padded into one
//! call: how a foreign graph treats a padded cache (where it writes the new
//! position) differs between exports.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ort::session::{Session, SessionInputValue};
use ort::value::{DynTensor, DynValue, PrimitiveTensorElementType, Tensor, TensorElementType};
use prost::Message;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::engine::{EngineError, KvArena, LocalModel};
use crate::onnx_export::{DEFAULT_MAX_CONTEXT_CAP, LlamaConfig, ModelIo};
use crate::onnx_proto::{self as pb, data_type, tensor_shape_proto::dimension, type_proto};
use crate::runtime::ort_err;
use crate::tokenizer::{ChatTemplate, SpecialTokens, Tokenizer};

/// Errors raised while reading a model directory.
#[derive(Debug, thiserror::Error)]
pub enum ExternalError {
    /// A required file is missing.
    #[error("{dir}: no {file}: {fix}")]
    MissingFile {
        /// The model directory.
        dir: PathBuf,
        /// The missing file.
        file: String,
        /// How to get it.
        fix: String,
    },
    /// A file could not be read or parsed.
    #[error("{path}: {message}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The ONNX graph does not follow the input/output convention.
    #[error("{path}: {message}")]
    Unrecognised {
        /// The ONNX file.
        path: PathBuf,
        /// What is missing or unexpected, and how to fix it.
        message: String,
    },
}

/// A tensor element type of the cache or the logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ElementType {
    /// float32.
    F32,
    /// float16.
    F16,
}

impl ElementType {
    fn from_onnx(t: i32) -> Option<Self> {
        match t {
            data_type::FLOAT => Some(Self::F32),
            data_type::FLOAT16 => Some(Self::F16),
            _ => None,
        }
    }

    fn to_ort(self) -> TensorElementType {
        match self {
            Self::F32 => TensorElementType::Float32,
            Self::F16 => TensorElementType::Float16,
        }
    }
}

/// An optional control input and its rank (0 = scalar, 1 = `[1]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlInput {
    /// The input name.
    pub name: String,
    /// Its rank.
    pub rank: usize,
}

/// The input/output names and cache shape of a model whose `present.*`
/// outputs are its `past_key_values.*` inputs with the new positions appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConcatLayout {
    /// The token ids input (`input_ids`).
    pub input_ids: String,
    /// The attention mask input (`attention_mask`).
    pub attention_mask: String,
    /// The position ids input, when the graph has one.
    pub position_ids: Option<String>,
    /// `num_logits_to_keep` / `logits_to_keep`, when the graph has one.
    pub logits_to_keep: Option<ControlInput>,
    /// `use_cache_branch` (merged Optimum decoders), when the graph has one.
    pub use_cache_branch: Option<ControlInput>,
    /// `past_key_values.{i}.key`, per layer.
    pub past_keys: Vec<String>,
    /// `past_key_values.{i}.value`, per layer.
    pub past_values: Vec<String>,
    /// `present.{i}.key`, per layer.
    pub present_keys: Vec<String>,
    /// `present.{i}.value`, per layer.
    pub present_values: Vec<String>,
    /// The logits output (`logits`).
    pub logits: String,
    /// The element type of the cache.
    pub kv_type: ElementType,
    /// The element type of the logits.
    pub logits_type: ElementType,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Size of one head.
    pub head_dim: usize,
}

/// How a registered model keeps its key/value cache.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KvLayout {
    /// techne's own export: GroupQueryAttention on a preallocated buffer
    /// bound as both past and present.
    #[default]
    SharedBuffer,
    /// A model from elsewhere: present = past ++ new positions.
    Concat(Box<ConcatLayout>),
}

/// Just the graph inputs and outputs of an ONNX model (the rest of the file,
/// weights included, is skipped by the decoder).
#[derive(Clone, PartialEq, prost::Message)]
struct ModelHeader {
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphHeader>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct GraphHeader {
    #[prost(message, repeated, tag = "11")]
    input: Vec<pb::ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    output: Vec<pb::ValueInfoProto>,
}

/// A graph input or output: name, element type and dimensions (`None` = symbolic).
#[derive(Debug, Clone)]
struct Port {
    name: String,
    elem_type: i32,
    dims: Vec<Option<i64>>,
}

impl Port {
    fn from_proto(v: &pb::ValueInfoProto) -> Self {
        let (elem_type, dims) = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(type_proto::Value::TensorType(t)) => (
                t.elem_type,
                t.shape
                    .as_ref()
                    .map(|s| {
                        s.dim
                            .iter()
                            .map(|d| match d.value {
                                Some(dimension::Value::DimValue(v)) => Some(v),
                                _ => None,
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            None => (0, Vec::new()),
        };
        Self { name: v.name.clone(), elem_type, dims }
    }
}

/// Everything needed to register a model directory.
#[derive(Debug, Clone)]
pub struct ModelDir {
    /// The directory.
    pub dir: PathBuf,
    /// The ONNX file, relative to `dir`.
    pub model_file: PathBuf,
    /// External-data files next to the ONNX file, relative to `dir`.
    pub data_files: Vec<PathBuf>,
    /// Other files to keep (configs, tokenizer), relative to `dir`.
    pub other_files: Vec<PathBuf>,
    /// `config.json`'s `model_type`.
    pub architecture: String,
    /// `config.json`'s `_name_or_path`, if any.
    pub source_name: Option<String>,
    /// The chat template from `tokenizer_config.json`.
    pub chat_template: Option<String>,
    /// Special tokens.
    pub special_tokens: SpecialTokens,
    /// Hyperparameters (from `config.json`, checked against the graph).
    pub config: LlamaConfig,
    /// The graph's input and output names.
    pub io: ModelIo,
    /// The detected cache layout.
    pub layout: ConcatLayout,
}

const CONVENTION: &str = "techne loads decoder exports with inputs input_ids, attention_mask, [position_ids], \
past_key_values.{i}.key/.value and outputs logits, present.{i}.key/.value (e.g. `optimum-cli export onnx \
--task text-generation-with-past`, or an onnx-community repository)";

fn read_json(dir: &Path, name: &str, fix: &str) -> Result<Value, ExternalError> {
    let path = dir.join(name);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ExternalError::MissingFile { dir: dir.to_path_buf(), file: name.into(), fix: fix.into() });
        }
        Err(e) => return Err(ExternalError::BadFile { path, message: e.to_string() }),
    };
    serde_json::from_slice(&bytes).map_err(|e| ExternalError::BadFile { path, message: format!("invalid JSON: {e}") })
}

/// Picks the ONNX file of a model directory.
fn find_onnx(dir: &Path, onnx: Option<&Path>) -> Result<PathBuf, ExternalError> {
    if let Some(file) = onnx {
        let rel = file.strip_prefix(dir).unwrap_or(file).to_path_buf();
        if !dir.join(&rel).is_file() {
            return Err(ExternalError::MissingFile {
                dir: dir.to_path_buf(),
                file: rel.display().to_string(),
                fix: "pass an ONNX file inside the model directory".into(),
            });
        }
        return Ok(rel);
    }
    for candidate in ["model.onnx", "onnx/model.onnx", "decoder_model_merged.onnx", "onnx/decoder_model_merged.onnx"] {
        if dir.join(candidate).is_file() {
            return Ok(PathBuf::from(candidate));
        }
    }
    let mut found: Vec<String> = std::fs::read_dir(dir.join("onnx"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".onnx"))
        .collect();
    found.sort();
    match found.as_slice() {
        [one] => Ok(PathBuf::from("onnx").join(one)),
        [] => Err(ExternalError::MissingFile {
            dir: dir.to_path_buf(),
            file: "model.onnx or onnx/model*.onnx".into(),
            fix: format!("download the ONNX export into the directory ({CONVENTION})"),
        }),
        many => Err(ExternalError::MissingFile {
            dir: dir.to_path_buf(),
            file: "onnx/model.onnx".into(),
            fix: format!("several ONNX files ({}): choose one with --onnx onnx/NAME.onnx", many.join(", ")),
        }),
    }
}

/// The chat template: `tokenizer_config.json`'s `chat_template` (a string, or
/// a list of `{name, template}` of which `default` is taken), else the file
/// `chat_template.jinja` that newer exports write beside it.
fn chat_template(dir: &Path, tokenizer_config: &Value) -> Result<Option<String>, ExternalError> {
    match tokenizer_config.get("chat_template") {
        Some(Value::String(s)) => return Ok(Some(s.clone())),
        Some(Value::Array(named)) => {
            let default = named.iter().find(|t| t["name"] == "default").or(named.first());
            return Ok(default.and_then(|t| t["template"].as_str()).map(str::to_string));
        }
        _ => {}
    }
    let path = dir.join("chat_template.jinja");
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ExternalError::BadFile { path, message: e.to_string() }),
    }
}

/// A special token from `tokenizer_config.json` (a string or `{"content": ...}`).
fn token_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

fn ids(v: &Value) -> Vec<u32> {
    match v {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()).into_iter().collect(),
        Value::Array(a) => a.iter().flat_map(ids).collect(),
        _ => Vec::new(),
    }
}

/// Reads `config.json`'s hyperparameters (llama-style names, with the GPT-2
/// aliases `n_layer`, `n_embd`, `n_head`, `n_positions`).
fn config_from_json(path: &Path, c: &Value) -> Result<LlamaConfig, ExternalError> {
    let get = |names: &[&str]| names.iter().find_map(|n| c.get(*n).and_then(Value::as_u64)).map(|v| v as usize);
    let need = |names: &[&str]| {
        get(names).filter(|&v| v > 0).ok_or_else(|| ExternalError::BadFile {
            path: path.to_path_buf(),
            message: format!("no positive `{}`", names[0]),
        })
    };
    let hidden = need(&["hidden_size", "n_embd", "d_model"])?;
    let n_layers = need(&["num_hidden_layers", "n_layer", "num_layers"])?;
    let n_heads = need(&["num_attention_heads", "n_head"])?;
    let n_kv_heads = get(&["num_key_value_heads"]).filter(|&v| v > 0).unwrap_or(n_heads);
    let head_dim = get(&["head_dim"]).filter(|&v| v > 0).unwrap_or(hidden / n_heads);
    let vocab = need(&["vocab_size"])?;
    let context = need(&["max_position_embeddings", "n_positions", "max_sequence_length"])?;
    let f =
        |names: &[&str], default: f64| names.iter().find_map(|n| c.get(*n).and_then(Value::as_f64)).unwrap_or(default);
    Ok(LlamaConfig {
        n_layers,
        hidden,
        n_heads,
        n_kv_heads,
        head_dim,
        ff: get(&["intermediate_size", "n_inner"]).unwrap_or(4 * hidden),
        vocab,
        context_length: context,
        max_context: context.min(DEFAULT_MAX_CONTEXT_CAP),
        rope_theta: f(&["rope_theta"], 10000.0),
        rope_dim: head_dim,
        rope_linear_factor: 1.0,
        rms_eps: f(&["rms_norm_eps", "layer_norm_epsilon"], 1e-5) as f32,
        tied_embeddings: c.get("tie_word_embeddings").and_then(Value::as_bool).unwrap_or(true),
    })
}

/// Parses `past_key_values.{i}.{key|value}` / `present.{i}.{key|value}`.
fn layer_index(name: &str, prefix: &str, kind: &str) -> Option<usize> {
    name.strip_prefix(prefix)?.strip_suffix(kind)?.parse().ok()
}

/// Detects the cache layout from the graph's inputs and outputs.
fn detect_layout(
    path: &Path,
    inputs: &[Port],
    outputs: &[Port],
    config: &LlamaConfig,
) -> Result<ConcatLayout, ExternalError> {
    let bad = |message: String| ExternalError::Unrecognised { path: path.to_path_buf(), message };
    let names = |ports: &[Port]| ports.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ");
    let find = |name: &str| inputs.iter().find(|p| p.name == name);
    for required in ["input_ids", "attention_mask"] {
        match find(required) {
            Some(p) if p.elem_type == data_type::INT64 => {}
            Some(_) => return Err(bad(format!("input `{required}` is not int64; {CONVENTION}"))),
            None => {
                return Err(bad(format!("no input `{required}` (inputs: {}); {CONVENTION}", names(inputs))));
            }
        }
    }
    let mut n_layers = 0;
    let control = |p: &Port| ControlInput { name: p.name.clone(), rank: p.dims.len() };
    let (mut position_ids, mut logits_to_keep, mut use_cache_branch) = (None, None, None);
    for p in inputs {
        if let Some(i) = layer_index(&p.name, "past_key_values.", ".key")
            .or_else(|| layer_index(&p.name, "past_key_values.", ".value"))
        {
            n_layers = n_layers.max(i + 1);
            continue;
        }
        match p.name.as_str() {
            "input_ids" | "attention_mask" => {}
            "position_ids" if p.elem_type == data_type::INT64 => position_ids = Some(p.name.clone()),
            "num_logits_to_keep" | "logits_to_keep" if p.elem_type == data_type::INT64 && p.dims.len() <= 1 => {
                logits_to_keep = Some(control(p))
            }
            "use_cache_branch" if p.elem_type == data_type::BOOL && p.dims.len() <= 1 => {
                use_cache_branch = Some(control(p))
            }
            other => {
                return Err(bad(format!(
                    "unrecognised input `{other}` (techne feeds only input_ids, attention_mask, position_ids, \
                     past_key_values.*, use_cache_branch and num_logits_to_keep); {CONVENTION}"
                )));
            }
        }
    }
    if n_layers == 0 {
        return Err(bad(format!(
            "no `past_key_values.0.key` input: the export has no key/value cache (inputs: {}); export it with the \
             cache, e.g. `optimum-cli export onnx --task text-generation-with-past`",
            names(inputs)
        )));
    }
    if n_layers != config.n_layers {
        return Err(bad(format!(
            "the graph has {n_layers} layers of past_key_values but config.json says num_hidden_layers = {}",
            config.n_layers
        )));
    }
    let output = |name: &str| outputs.iter().find(|p| p.name == name);
    let logits = output("logits")
        .ok_or_else(|| bad(format!("no output `logits` (outputs: {}); {CONVENTION}", names(outputs))))?;
    let logits_type = ElementType::from_onnx(logits.elem_type)
        .ok_or_else(|| bad(format!("`logits` has element type {} (f32 or f16 needed)", logits.elem_type)))?;
    let mut layout = ConcatLayout {
        input_ids: "input_ids".into(),
        attention_mask: "attention_mask".into(),
        position_ids,
        logits_to_keep,
        use_cache_branch,
        past_keys: Vec::new(),
        past_values: Vec::new(),
        present_keys: Vec::new(),
        present_values: Vec::new(),
        logits: "logits".into(),
        kv_type: ElementType::F32,
        logits_type,
        kv_heads: config.n_kv_heads,
        head_dim: config.head_dim,
    };
    let mut kv_type = None;
    for i in 0..n_layers {
        for kind in ["key", "value"] {
            let past = format!("past_key_values.{i}.{kind}");
            let present = format!("present.{i}.{kind}");
            let p = find(&past).ok_or_else(|| bad(format!("no input `{past}` (layers 0..{n_layers} needed)")))?;
            let q = output(&present).ok_or_else(|| {
                bad(format!("no output `{present}`: the graph must return the updated cache; {CONVENTION}"))
            })?;
            let t = ElementType::from_onnx(p.elem_type)
                .ok_or_else(|| bad(format!("`{past}` has element type {} (f32 or f16 needed)", p.elem_type)))?;
            if q.elem_type != p.elem_type || kv_type.is_some_and(|k| k != t) {
                return Err(bad(format!("`{past}` and `{present}` must share one element type across layers")));
            }
            kv_type = Some(t);
            if p.dims.len() != 4 {
                return Err(bad(format!(
                    "`{past}` has rank {} ([batch, kv_heads, past, head_dim] needed; other cache layouts are not \
                     supported)",
                    p.dims.len()
                )));
            }
            for (axis, want, what) in [(1, config.n_kv_heads, "num_key_value_heads"), (3, config.head_dim, "head_dim")]
            {
                if let Some(d) = p.dims[axis]
                    && d != want as i64
                {
                    return Err(bad(format!(
                        "`{past}` has {d} at axis {axis}, but config.json implies {what} = {want}"
                    )));
                }
            }
            let (pasts, presents) = match kind {
                "key" => (&mut layout.past_keys, &mut layout.present_keys),
                _ => (&mut layout.past_values, &mut layout.present_values),
            };
            pasts.push(past);
            presents.push(present);
        }
    }
    layout.kv_type = kv_type.unwrap_or(ElementType::F32);
    Ok(layout)
}

/// Reads a model directory (see the module docs) without loading the model.
/// `onnx` picks the ONNX file when the directory has several.
pub fn inspect_model_dir(dir: &Path, onnx: Option<&Path>) -> Result<ModelDir, ExternalError> {
    if !dir.is_dir() {
        return Err(ExternalError::MissingFile {
            dir: dir.to_path_buf(),
            file: "directory".into(),
            fix: "pass a model directory (model.onnx or onnx/, config.json, tokenizer.json, tokenizer_config.json)"
                .into(),
        });
    }
    let model_file = find_onnx(dir, onnx)?;
    let config_json = read_json(
        dir,
        "config.json",
        "download the model's config.json next to the ONNX file (it gives the layer count and context length)",
    )?;
    if !dir.join("tokenizer.json").is_file() {
        return Err(ExternalError::MissingFile {
            dir: dir.to_path_buf(),
            file: "tokenizer.json".into(),
            fix: "download the model's tokenizer.json (the fast-tokenizer file) into the directory; techne does not \
                  convert slow tokenizers (tokenizer.model, vocab.json + merges.txt)"
                .into(),
        });
    }
    let tokenizer_config = read_json(
        dir,
        "tokenizer_config.json",
        "download the model's tokenizer_config.json (it holds the chat template and the special tokens)",
    )?;
    let generation = match read_json(dir, "generation_config.json", "") {
        Ok(v) => Some(v),
        Err(ExternalError::MissingFile { .. }) => None,
        Err(e) => return Err(e),
    };
    let config = config_from_json(&dir.join("config.json"), &config_json)?;
    let tokenizer = Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|e| ExternalError::BadFile {
        path: dir.join("tokenizer.json"),
        message: format!("{e} (the file must be a Hugging Face tokenizers tokenizer.json)"),
    })?;

    let onnx_path = dir.join(&model_file);
    let file = std::fs::File::open(&onnx_path)
        .map_err(|e| ExternalError::BadFile { path: onnx_path.clone(), message: e.to_string() })?;
    // SAFETY: the file is only read while mapped; a concurrent writer could
    // change the bytes, which at worst makes the decode below fail.
    let map = unsafe { memmap2::Mmap::map(&file) }
        .map_err(|e| ExternalError::BadFile { path: onnx_path.clone(), message: e.to_string() })?;
    let header = ModelHeader::decode(&map[..]).map_err(|e| ExternalError::BadFile {
        path: onnx_path.clone(),
        message: format!("not an ONNX model ({e}); the file may be truncated or a Git LFS pointer"),
    })?;
    drop(map);
    let graph = header.graph.ok_or_else(|| ExternalError::BadFile {
        path: onnx_path.clone(),
        message: "the ONNX file has no graph".into(),
    })?;
    let inputs: Vec<Port> = graph.input.iter().map(Port::from_proto).collect();
    let outputs: Vec<Port> = graph.output.iter().map(Port::from_proto).collect();
    let layout = detect_layout(&onnx_path, &inputs, &outputs, &config)?;
    if let Some(v) = outputs.iter().find(|p| p.name == "logits").and_then(|p| p.dims.get(2).copied().flatten())
        && v as usize != config.vocab
    {
        return Err(ExternalError::Unrecognised {
            path: onnx_path,
            message: format!(
                "`logits` has {v} entries per position but config.json says vocab_size = {}",
                config.vocab
            ),
        });
    }
    if tokenizer.vocab_size() > config.vocab {
        return Err(ExternalError::BadFile {
            path: dir.join("tokenizer.json"),
            message: format!(
                "the tokenizer has {} tokens, more than the model's vocab_size {}: tokenizer.json belongs to another \
                 model",
                tokenizer.vocab_size(),
                config.vocab
            ),
        });
    }

    let token = |key: &str| tokenizer_config.get(key).and_then(token_string);
    let mut stop_ids: Vec<u32> = Vec::new();
    for v in
        [generation.as_ref().and_then(|g| g.get("eos_token_id")), config_json.get("eos_token_id")].into_iter().flatten()
    {
        stop_ids.extend(ids(v));
    }
    if let Some(id) = token("eos_token").and_then(|t| tokenizer.token_to_id(&t)) {
        stop_ids.push(id);
    }
    let mut seen = std::collections::HashSet::new();
    stop_ids.retain(|id| seen.insert(*id));
    let chat_template = chat_template(dir, &tokenizer_config)?;
    if let Some(source) = &chat_template
        && let Err(e) = ChatTemplate::new(source, token("bos_token").as_deref(), token("eos_token").as_deref())
    {
        return Err(ExternalError::BadFile {
            path: dir.join("tokenizer_config.json"),
            message: format!(
                "the chat template does not compile ({e}); fix it, or remove `chat_template` to use the model for \
                 raw completions only"
            ),
        });
    }
    let special_tokens = SpecialTokens {
        bos: token("bos_token"),
        eos: token("eos_token"),
        unk: token("unk_token"),
        pad: token("pad_token"),
        add_bos: tokenizer_config.get("add_bos_token").and_then(Value::as_bool).unwrap_or(false),
        add_eos: tokenizer_config.get("add_eos_token").and_then(Value::as_bool).unwrap_or(false),
        stop_ids,
    };

    // External data: `<model>.onnx_data`, `<model>.onnx.data` (and numbered parts) next to the model.
    let model_name = model_file.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let model_parent = model_file.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut data_files: Vec<PathBuf> = std::fs::read_dir(dir.join(&model_parent))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(&format!("{model_name}_data")) || n.starts_with(&format!("{model_name}.data")))
        .map(|n| model_parent.join(n))
        .collect();
    data_files.sort();
    let mut other_files = vec![PathBuf::from("config.json"), PathBuf::from("tokenizer.json")];
    other_files.push(PathBuf::from("tokenizer_config.json"));
    for optional in ["generation_config.json", "special_tokens_map.json", "chat_template.jinja"] {
        if dir.join(optional).is_file() {
            other_files.push(PathBuf::from(optional));
        }
    }
    let io = ModelIo {
        inputs: inputs.iter().map(|p| p.name.clone()).collect(),
        outputs: outputs.iter().map(|p| p.name.clone()).collect(),
    };
    Ok(ModelDir {
        dir: dir.to_path_buf(),
        model_file,
        data_files,
        other_files,
        architecture: config_json.get("model_type").and_then(Value::as_str).unwrap_or("unknown").to_string(),
        source_name: config_json.get("_name_or_path").and_then(Value::as_str).map(str::to_string),
        chat_template,
        special_tokens,
        config,
        io,
        layout,
    })
}

/// The cache of one sequence: the `present.*` values of its last step, keys
/// and values interleaved per layer (`[k0, v0, k1, v1, ...]`).
pub(crate) type SequenceCache = Arc<Vec<DynValue>>;

/// The number of positions in a sequence cache.
fn cached_len(cache: &SequenceCache) -> Option<usize> {
    let first = cache.first()?;
    first.dtype().tensor_shape().and_then(|s| s.get(2).copied()).and_then(|d| usize::try_from(d).ok())
}

fn control_value(input: &ControlInput, value: i64) -> Result<DynValue, EngineError> {
    let shape: Vec<i64> = if input.rank == 0 { vec![] } else { vec![1] };
    Ok(Tensor::from_array((shape, vec![value])).map_err(ort_err)?.into_dyn())
}

fn bool_value(input: &ControlInput, value: bool) -> Result<DynValue, EngineError> {
    let shape: Vec<i64> = if input.rank == 0 { vec![] } else { vec![1] };
    Ok(Tensor::from_array((shape, vec![value])).map_err(ort_err)?.into_dyn())
}

/// Stacks `[1, …]` tensors of one element type into one `[n, …]` tensor (a copy).
fn stack_typed<T: PrimitiveTensorElementType + Clone + std::fmt::Debug + 'static>(
    values: &[&DynValue],
) -> Result<DynValue, EngineError> {
    let mut data = Vec::new();
    let mut shape = Vec::new();
    for v in values {
        let (s, d) = v.try_extract_tensor::<T>().map_err(ort_err)?;
        shape = s.to_vec();
        data.extend_from_slice(d);
    }
    if let Some(first) = shape.first_mut() {
        *first = values.len() as i64;
    }
    Ok(Tensor::from_array((shape, data)).map_err(ort_err)?.into_dyn())
}

/// Splits an `[n, …]` tensor into `n` tensors `[1, …]` (a copy).
fn split_typed<T: PrimitiveTensorElementType + Clone + std::fmt::Debug + 'static>(
    value: &DynValue,
) -> Result<Vec<DynValue>, EngineError> {
    let (s, d) = value.try_extract_tensor::<T>().map_err(ort_err)?;
    let n = s.first().copied().unwrap_or(0).max(1) as usize;
    let mut shape = s.to_vec();
    if let Some(first) = shape.first_mut() {
        *first = 1;
    }
    let each = d.len() / n;
    d.chunks(each.max(1))
        .take(n)
        .map(|chunk| Ok(Tensor::from_array((shape.clone(), chunk.to_vec())).map_err(ort_err)?.into_dyn()))
        .collect()
}

fn stack(values: &[&DynValue], ty: ElementType) -> Result<DynValue, EngineError> {
    match ty {
        ElementType::F32 => stack_typed::<f32>(values),
        ElementType::F16 => stack_typed::<half::f16>(values),
    }
}

fn split(value: &DynValue, ty: ElementType) -> Result<Vec<DynValue>, EngineError> {
    match ty {
        ElementType::F32 => split_typed::<f32>(value),
        ElementType::F16 => split_typed::<half::f16>(value),
    }
}

impl LocalModel {
    /// [`LocalModel::run_rows`] for a [`ConcatLayout`] model: rows of equal
    /// length run together in one ONNX Runtime call (their caches stacked
    /// along the batch axis, the new ones split again: two copies of those
    /// rows' caches per step), a row of a length of its own runs alone on its
    /// cached `present.*` values without any copy (see the module docs).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_rows_concat(
        &self,
        layout: &ConcatLayout,
        session: &mut Session,
        kv: &mut KvArena,
        first_row: usize,
        lens: &[usize],
        ids: Vec<i64>,
        seq: usize,
        all_positions: bool,
    ) -> Result<Vec<f32>, EngineError> {
        let batch = lens.len();
        if batch == 0 || first_row + batch > kv.rows() || ids.len() != batch * seq || (seq > 1 && batch > 1) {
            return Err(EngineError::BadOutput(format!(
                "invalid step: rows {first_row}+{batch} of {}, {} ids for {seq} per row",
                kv.rows(),
                ids.len()
            )));
        }
        let longest = lens.iter().copied().max().unwrap_or(0) + seq;
        if longest > kv.capacity() {
            return Err(EngineError::ContextOverflow { needed: longest, max: kv.capacity() });
        }
        let per_row = self.config().vocab * if all_positions { seq } else { 1 };
        let mut out = vec![0f32; batch * per_row];
        // Rows grouped by length, in order of first appearance.
        let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
        for (r, &len) in lens.iter().enumerate() {
            match groups.iter_mut().find(|(l, _)| *l == len) {
                Some((_, members)) => members.push(r),
                None => groups.push((len, vec![r])),
            }
        }
        for (len, members) in groups {
            let rows: Vec<usize> = members.iter().map(|r| first_row + r).collect();
            let group_ids: Vec<i64> =
                members.iter().flat_map(|r| ids[r * seq..(r + 1) * seq].iter().copied()).collect();
            let logits = self.step_group(layout, session, kv, &rows, len, group_ids, seq, all_positions)?;
            for (k, r) in members.iter().enumerate() {
                out[r * per_row..(r + 1) * per_row].copy_from_slice(&logits[k * per_row..(k + 1) * per_row]);
            }
        }
        Ok(out)
    }

    /// Runs `seq` new tokens for the arena rows `rows`, which all hold `len`
    /// cached positions, in one call; returns their logits like
    /// [`LocalModel::run_rows`] and stores their new caches.
    #[allow(clippy::too_many_arguments)]
    fn step_group(
        &self,
        layout: &ConcatLayout,
        session: &mut Session,
        kv: &mut KvArena,
        rows: &[usize],
        len: usize,
        ids: Vec<i64>,
        seq: usize,
        all_positions: bool,
    ) -> Result<Vec<f32>, EngineError> {
        let g = rows.len();
        let v = self.config().vocab;
        let keep_last = !all_positions && seq > 1 && layout.logits_to_keep.is_some();
        let mut pasts = Vec::with_capacity(g);
        if len > 0 {
            for &row in rows {
                let cache = kv.sequence(row);
                let cached = cache.as_ref().and_then(cached_len);
                if cached != Some(len) {
                    return Err(EngineError::BadOutput(format!(
                        "row {row}: the cache holds {cached:?} positions, the step expects {len}"
                    )));
                }
                pasts.extend(cache);
            }
        }
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::new();
        let t = Tensor::from_array((vec![g as i64, seq as i64], ids)).map_err(ort_err)?;
        inputs.push((layout.input_ids.as_str().into(), t.into()));
        let total = len + seq;
        let mask = Tensor::from_array((vec![g as i64, total as i64], vec![1i64; g * total])).map_err(ort_err)?;
        inputs.push((layout.attention_mask.as_str().into(), mask.into()));
        if let Some(name) = &layout.position_ids {
            let pos: Vec<i64> = (0..g).flat_map(|_| (len..total).map(|p| p as i64)).collect();
            let t = Tensor::from_array((vec![g as i64, seq as i64], pos)).map_err(ort_err)?;
            inputs.push((name.as_str().into(), t.into()));
        }
        if let Some(c) = &layout.logits_to_keep {
            inputs.push((c.name.as_str().into(), control_value(c, i64::from(keep_last))?.into()));
        }
        if let Some(c) = &layout.use_cache_branch {
            inputs.push((c.name.as_str().into(), bool_value(c, len > 0)?.into()));
        }
        let names: Vec<&String> = layout.past_keys.iter().zip(&layout.past_values).flat_map(|(k, v)| [k, v]).collect();
        match pasts.as_slice() {
            [] => {
                let shape = [g, layout.kv_heads, 0, layout.head_dim];
                for name in names {
                    let empty = DynTensor::new(session.allocator(), layout.kv_type.to_ort(), shape).map_err(ort_err)?;
                    inputs.push((name.as_str().into(), empty.into_dyn().into()));
                }
            }
            [one] => {
                for (name, value) in names.into_iter().zip(one.iter()) {
                    inputs.push((name.as_str().into(), value.view().into()));
                }
            }
            many => {
                for (j, name) in names.into_iter().enumerate() {
                    let parts: Vec<&DynValue> = many.iter().map(|c| &c[j]).collect();
                    inputs.push((name.as_str().into(), stack(&parts, layout.kv_type)?.into()));
                }
            }
        }
        let mut outputs = session.run(inputs).map_err(ort_err)?;
        let logits = outputs
            .get(layout.logits.as_str())
            .ok_or_else(|| EngineError::BadOutput(format!("no `{}` output", layout.logits)))?;
        let (shape, data): (Vec<i64>, Cow<'_, [f32]>) = match layout.logits_type {
            ElementType::F32 => {
                let (s, d) = logits.try_extract_tensor::<f32>().map_err(ort_err)?;
                (s.to_vec(), Cow::Borrowed(d))
            }
            ElementType::F16 => {
                let (s, d) = logits.try_extract_tensor::<half::f16>().map_err(ort_err)?;
                (s.to_vec(), Cow::Owned(d.iter().map(|x| x.to_f32()).collect()))
            }
        };
        let got = if keep_last { 1 } else { seq };
        if shape.len() != 3 || shape[0] != g as i64 || shape[1] != got as i64 || shape[2] != v as i64 {
            return Err(EngineError::BadOutput(format!("logits shape {shape:?}, expected [{g}, {got}, {v}]")));
        }
        let mut out = Vec::with_capacity(g * v * if all_positions { seq } else { 1 });
        for k in 0..g {
            let row = &data[k * got * v..(k + 1) * got * v];
            if all_positions {
                out.extend_from_slice(row);
            } else {
                out.extend_from_slice(&row[(got - 1) * v..]);
            }
        }
        drop(data);
        let mut caches: Vec<Vec<DynValue>> = (0..g).map(|_| Vec::with_capacity(2 * layout.past_keys.len())).collect();
        for name in layout.present_keys.iter().zip(&layout.present_values).flat_map(|(k, v)| [k, v]) {
            let value =
                outputs.remove(name.as_str()).ok_or_else(|| EngineError::BadOutput(format!("no `{name}` output")))?;
            if g == 1 {
                caches[0].push(value);
            } else {
                for (cache, part) in caches.iter_mut().zip(split(&value, layout.kv_type)?) {
                    cache.push(part);
                }
            }
        }
        for (&row, cache) in rows.iter().zip(caches) {
            kv.set_sequence(row, Some(Arc::new(cache)));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(name: &str, elem_type: i32, dims: &[Option<i64>]) -> Port {
        Port { name: name.into(), elem_type, dims: dims.to_vec() }
    }

    fn config(layers: usize) -> LlamaConfig {
        config_from_json(
            Path::new("config.json"),
            &serde_json::json!({"hidden_size": 64, "num_hidden_layers": layers, "num_attention_heads": 4,
                "num_key_value_heads": 2, "vocab_size": 100, "max_position_embeddings": 128}),
        )
        .expect("config")
    }

    fn ports(layers: usize, kv: i32) -> (Vec<Port>, Vec<Port>) {
        let mut inputs = vec![
            port("input_ids", data_type::INT64, &[None, None]),
            port("attention_mask", data_type::INT64, &[None, None]),
            port("position_ids", data_type::INT64, &[None, None]),
        ];
        let mut outputs = vec![port("logits", data_type::FLOAT, &[None, None, Some(100)])];
        for i in 0..layers {
            for kind in ["key", "value"] {
                inputs.push(port(&format!("past_key_values.{i}.{kind}"), kv, &[None, Some(2), None, Some(16)]));
                outputs.push(port(&format!("present.{i}.{kind}"), kv, &[None, Some(2), None, Some(16)]));
            }
        }
        (inputs, outputs)
    }

    #[test]
    fn detects_the_usual_layout_and_f16_caches() {
        let (inputs, outputs) = ports(2, data_type::FLOAT16);
        let layout = detect_layout(Path::new("m.onnx"), &inputs, &outputs, &config(2)).expect("layout");
        assert_eq!(layout.past_keys, ["past_key_values.0.key", "past_key_values.1.key"]);
        assert_eq!(layout.present_values, ["present.0.value", "present.1.value"]);
        assert_eq!(layout.position_ids.as_deref(), Some("position_ids"));
        assert_eq!(layout.kv_type, ElementType::F16);
        assert_eq!((layout.kv_heads, layout.head_dim), (2, 16));
    }

    #[test]
    fn explains_what_does_not_fit() {
        let (mut inputs, outputs) = ports(2, data_type::FLOAT);
        let err = detect_layout(Path::new("m.onnx"), &inputs, &outputs, &config(3)).expect_err("layers");
        assert!(err.to_string().contains("num_hidden_layers = 3"), "{err}");
        let (_, mut no_present) = ports(2, data_type::FLOAT);
        no_present.retain(|p| p.name != "present.1.value");
        let err = detect_layout(Path::new("m.onnx"), &inputs, &no_present, &config(2)).expect_err("present");
        assert!(err.to_string().contains("no output `present.1.value`"), "{err}");
        inputs.push(port("token_type_ids", data_type::INT64, &[None, None]));
        let err = detect_layout(Path::new("m.onnx"), &inputs, &outputs, &config(2)).expect_err("extra input");
        assert!(err.to_string().contains("unrecognised input `token_type_ids`"), "{err}");
        let no_cache: Vec<Port> = ports(2, data_type::FLOAT).0.into_iter().take(3).collect();
        let err = detect_layout(Path::new("m.onnx"), &no_cache, &outputs, &config(2)).expect_err("no cache");
        assert!(err.to_string().contains("text-generation-with-past"), "{err}");
    }

    #[test]
    fn finds_the_chat_template_in_any_of_its_places() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = serde_json::json!({"chat_template": [{"name": "tool_use", "template": "T"},
            {"name": "default", "template": "D"}]});
        assert_eq!(chat_template(dir.path(), &config).expect("list").as_deref(), Some("D"));
        let config = serde_json::json!({"chat_template": "S"});
        assert_eq!(chat_template(dir.path(), &config).expect("string").as_deref(), Some("S"));
        assert_eq!(chat_template(dir.path(), &serde_json::json!({})).expect("none"), None);
        std::fs::write(dir.path().join("chat_template.jinja"), "J").expect("write");
        assert_eq!(chat_template(dir.path(), &serde_json::json!({})).expect("file").as_deref(), Some("J"));
    }

    #[test]
    fn reads_special_tokens_and_ids() {
        assert_eq!(token_string(&serde_json::json!({"content": "<s>", "lstrip": false})).as_deref(), Some("<s>"));
        assert_eq!(token_string(&serde_json::json!("</s>")).as_deref(), Some("</s>"));
        assert_eq!(ids(&serde_json::json!([2, 7])), vec![2, 7]);
        assert_eq!(ids(&serde_json::json!(2)), vec![2]);
        assert_eq!(layer_index("past_key_values.12.value", "past_key_values.", ".value"), Some(12));
    }
}
