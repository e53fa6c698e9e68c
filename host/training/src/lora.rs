//! LoRA adapters (Hu et al. 2021, arXiv 2106.09685) on the frozen
//! projections of a [`crate::model::Llama`].
//!
//! A projection `y = x·Wᵀ` becomes `y = x·Wᵀ + (α/r)·dropout(x)·Aᵀ·Bᵀ` with
//! `A: [r, in]` initialised like PEFT (`kaiming_uniform_(a=√5)`, i.e.
//! uniform in `±1/√in`) and `B: [out, r]` zero, so training starts from the
//! base model exactly. Merging adds `(α/r)·B·A` to `W`.
//!
//! The adapters live in the GGUF layout of the weights: for `q_proj` and
//! `k_proj` the output rows are in ggml's permuted order for interleaved
//! rotary (see [`crate::model`]), so a PEFT adapter for the HuggingFace
//! checkpoint would need those rows of `B` un-permuted. Merged weights are
//! written back to GGUF in the same layout, so no conversion is needed there.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};
use techne_inference::onnx_export::LlamaConfig;

use crate::error::{Result, TrainError};
use crate::model::Proj;
use crate::rng::Rng;

/// LoRA hyperparameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoraConfig {
    /// Rank `r` of the update.
    pub rank: usize,
    /// Scaling numerator: the update is multiplied by `alpha / rank`.
    pub alpha: f64,
    /// Dropout probability on the adapter's input during training.
    pub dropout: f64,
    /// The projections that get adapters (default `q_proj`, `v_proj`).
    pub targets: Vec<Proj>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self { rank: 8, alpha: 16.0, dropout: 0.05, targets: vec![Proj::QProj, Proj::VProj] }
    }
}

impl LoraConfig {
    /// Parses a target list: `all-linear` (every projection, as PEFT's
    /// `all-linear` for llama) or comma-separated module names (`q_proj,v_proj`;
    /// GGUF names such as `attn_q` are accepted too).
    pub fn parse_targets(s: &str) -> Result<Vec<Proj>> {
        let s = s.trim();
        if s == "all-linear" || s == "all" {
            return Ok(Proj::ALL.to_vec());
        }
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let p = Proj::parse(part).ok_or_else(|| {
                TrainError::Config(format!(
                    "unknown LoRA target `{part}`: use all-linear or a comma-separated list of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj"
                ))
            })?;
            if !out.contains(&p) {
                out.push(p);
            }
        }
        if out.is_empty() {
            return Err(TrainError::Config("no LoRA targets given: use e.g. q_proj,v_proj or all-linear".into()));
        }
        out.sort();
        Ok(out)
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 || self.rank > 4096 {
            return Err(TrainError::Config(format!("LoRA rank must be between 1 and 4096, got {}", self.rank)));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(TrainError::Config(format!("LoRA alpha must be positive, got {}", self.alpha)));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(TrainError::Config(format!("LoRA dropout must be in [0, 1), got {}", self.dropout)));
        }
        if self.targets.is_empty() {
            return Err(TrainError::Config("no LoRA targets: use e.g. q_proj,v_proj or all-linear".into()));
        }
        Ok(())
    }

    /// `alpha / rank`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    fn sorted_targets(&self) -> Vec<Proj> {
        let mut t = self.targets.clone();
        t.sort();
        t.dedup();
        t
    }
}

/// The two trained matrices of one adapted projection.
#[derive(Debug, Clone)]
pub struct LoraPair {
    /// `A: [rank, in]`.
    pub a: Var,
    /// `B: [out, rank]`.
    pub b: Var,
}

/// Adapters for every targeted projection of every layer.
#[derive(Debug)]
pub struct LoraAdapters {
    /// The hyperparameters.
    pub config: LoraConfig,
    layers: Vec<Vec<Option<LoraPair>>>,
    order: Vec<(usize, Proj)>,
}

/// The file name of the adapter weights inside an output or checkpoint directory.
pub const ADAPTER_FILE: &str = "adapter.safetensors";
/// The file name of the adapter description next to [`ADAPTER_FILE`].
pub const ADAPTER_CONFIG_FILE: &str = "adapter_config.json";

/// `adapter_config.json`: what is needed to re-apply an adapter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterFileConfig {
    /// The LoRA hyperparameters.
    pub lora: LoraConfig,
    /// Layers of the base model.
    pub n_layers: usize,
    /// Hidden size of the base model.
    pub hidden: usize,
    /// SHA-256 of the base GGUF file.
    pub base_sha256: String,
    /// Always `gguf`: rows of `q_proj`/`k_proj` are in GGUF's rotary order.
    pub layout: String,
}

impl LoraAdapters {
    /// Fresh adapters for a model: `A` uniform in `±1/√in` from `rng`
    /// (layer by layer, projections in [`Proj::ALL`] order), `B = 0`.
    pub fn new(config: &LoraConfig, model: &LlamaConfig, rng: &mut Rng) -> Result<Self> {
        config.validate()?;
        let device = Device::Cpu;
        let targets = config.sorted_targets();
        let mut layers = Vec::with_capacity(model.n_layers);
        let mut order = Vec::new();
        for l in 0..model.n_layers {
            let mut row: Vec<Option<LoraPair>> = vec![None; Proj::ALL.len()];
            for &p in &targets {
                let (out, inp) = p.shape(model);
                let bound = 1.0 / (inp as f32).sqrt();
                let a: Vec<f32> = (0..config.rank * inp).map(|_| rng.uniform(bound)).collect();
                let a = Var::from_tensor(&Tensor::from_vec(a, (config.rank, inp), &device)?)?;
                let b = Var::zeros((out, config.rank), DType::F32, &device)?;
                row[p.index()] = Some(LoraPair { a, b });
                order.push((l, p));
            }
            layers.push(row);
        }
        Ok(Self { config: LoraConfig { targets, ..config.clone() }, layers, order })
    }

    /// The adapter of a projection, if it has one.
    pub fn pair(&self, layer: usize, proj: Proj) -> Option<&LoraPair> {
        self.layers.get(layer).and_then(|r| r[proj.index()].as_ref())
    }

    /// `alpha / rank`.
    pub fn scale(&self) -> f64 {
        self.config.scale()
    }

    /// The adapted `(layer, projection)` pairs in a fixed order.
    pub fn adapted(&self) -> &[(usize, Proj)] {
        &self.order
    }

    /// Every trained tensor with its name (`layers.{i}.{proj}.lora_a` /
    /// `.lora_b`), in a fixed order (the optimizer's).
    pub fn named_vars(&self) -> Vec<(String, &Var)> {
        let mut out = Vec::with_capacity(self.order.len() * 2);
        for &(l, p) in &self.order {
            if let Some(pair) = self.pair(l, p) {
                out.push((format!("layers.{l}.{p}.lora_a"), &pair.a));
                out.push((format!("layers.{l}.{p}.lora_b"), &pair.b));
            }
        }
        out
    }

    /// The number of trained parameters.
    pub fn num_params(&self) -> usize {
        self.named_vars().iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// The trained tensors as flat vectors, in [`LoraAdapters::named_vars`] order.
    pub fn to_flat(&self) -> Result<Vec<Vec<f32>>> {
        self.named_vars().iter().map(|(_, v)| Ok(v.as_tensor().flatten_all()?.to_vec1::<f32>()?)).collect()
    }

    /// Replaces the trained tensors with flat vectors in
    /// [`LoraAdapters::named_vars`] order.
    pub fn set_flat(&self, values: &[Vec<f32>]) -> Result<()> {
        let vars = self.named_vars();
        if vars.len() != values.len() {
            return Err(TrainError::Model(format!("{} adapter tensors given, {} expected", values.len(), vars.len())));
        }
        for ((name, var), vals) in vars.iter().zip(values) {
            if vals.len() != var.elem_count() {
                return Err(TrainError::Model(format!(
                    "{name}: {} values given, {} expected",
                    vals.len(),
                    var.elem_count()
                )));
            }
            var.set(&Tensor::from_slice(vals, var.shape(), var.device())?)?;
        }
        Ok(())
    }

    /// `(α/r)·B·A` (`[out, in]`) of a projection, if it is adapted.
    pub fn delta(&self, layer: usize, proj: Proj) -> Result<Option<Tensor>> {
        match self.pair(layer, proj) {
            Some(p) => Ok(Some(p.b.as_tensor().matmul(p.a.as_tensor())?.affine(self.scale(), 0.0)?)),
            None => Ok(None),
        }
    }

    /// The merged weight `W + (α/r)·B·A` of a projection (`W` when it is not adapted).
    pub fn merged_weight(&self, base: &Tensor, layer: usize, proj: Proj) -> Result<Tensor> {
        match self.delta(layer, proj)? {
            Some(d) => Ok((base + d)?),
            None => Ok(base.clone()),
        }
    }

    /// The adapter tensors by name (for safetensors).
    pub fn tensor_map(&self) -> HashMap<String, Tensor> {
        self.named_vars().into_iter().map(|(n, v)| (n, v.as_tensor().clone())).collect()
    }

    /// Loads tensors saved with [`LoraAdapters::tensor_map`] into these adapters.
    pub fn load_tensor_map(&self, map: &HashMap<String, Tensor>, source: &Path) -> Result<()> {
        let mut values = Vec::new();
        for (name, var) in self.named_vars() {
            let t = map.get(&name).ok_or_else(|| TrainError::Checkpoint {
                path: source.to_path_buf(),
                message: format!("tensor `{name}` is missing: the file was written for other LoRA settings"),
            })?;
            if t.dims() != var.dims() || t.dtype() != DType::F32 {
                return Err(TrainError::Checkpoint {
                    path: source.to_path_buf(),
                    message: format!(
                        "tensor `{name}` has shape {:?} {:?}, expected {:?} f32",
                        t.dims(),
                        t.dtype(),
                        var.dims()
                    ),
                });
            }
            values.push(t.flatten_all()?.to_vec1::<f32>()?);
        }
        self.set_flat(&values)
    }

    /// Writes `adapter.safetensors` and `adapter_config.json` into `dir`.
    pub fn save(&self, dir: &Path, model: &LlamaConfig, base_sha256: &str) -> Result<()> {
        let path = dir.join(ADAPTER_FILE);
        candle_core::safetensors::save(&self.tensor_map(), &path)?;
        let cfg = AdapterFileConfig {
            lora: self.config.clone(),
            n_layers: model.n_layers,
            hidden: model.hidden,
            base_sha256: base_sha256.to_string(),
            layout: "gguf".into(),
        };
        let cpath = dir.join(ADAPTER_CONFIG_FILE);
        let bytes = serde_json::to_vec_pretty(&cfg).map_err(|e| TrainError::Config(e.to_string()))?;
        std::fs::write(&cpath, bytes).map_err(crate::error::io_err(&cpath))?;
        Ok(())
    }

    /// Loads adapters written by [`LoraAdapters::save`] for a model.
    pub fn load(dir: &Path, model: &LlamaConfig) -> Result<Self> {
        let cpath = dir.join(ADAPTER_CONFIG_FILE);
        let bytes = std::fs::read(&cpath).map_err(crate::error::io_err(&cpath))?;
        let cfg: AdapterFileConfig = serde_json::from_slice(&bytes).map_err(|e| TrainError::Checkpoint {
            path: cpath.clone(),
            message: format!("not an adapter config: {e}"),
        })?;
        if cfg.n_layers != model.n_layers || cfg.hidden != model.hidden {
            return Err(TrainError::Checkpoint {
                path: cpath,
                message: format!(
                    "the adapter is for a model with {} layers and hidden size {}, this one has {} and {}",
                    cfg.n_layers, cfg.hidden, model.n_layers, model.hidden
                ),
            });
        }
        let adapters = Self::new(&cfg.lora, model, &mut Rng::new(0))?;
        let path = dir.join(ADAPTER_FILE);
        let map = candle_core::safetensors::load(&path, &Device::Cpu).map_err(|e| TrainError::Checkpoint {
            path: path.clone(),
            message: format!("unreadable adapter weights: {e}"),
        })?;
        adapters.load_tensor_map(&map, &path)?;
        Ok(adapters)
    }

    /// The hyperparameters as a sorted map (for reports).
    pub fn summary(&self) -> BTreeMap<String, serde_json::Value> {
        let mut m = BTreeMap::new();
        m.insert("rank".into(), self.config.rank.into());
        m.insert("alpha".into(), self.config.alpha.into());
        m.insert("dropout".into(), self.config.dropout.into());
        m.insert("targets".into(), self.config.targets.iter().map(|p| p.name()).collect::<Vec<_>>().into());
        m
    }
}
