//! The training loops: LoRA supervised fine-tuning ([`train_sft`]) and DPO
//! ([`train_dpo`]), with gradient accumulation, clipping, checkpoints,
//! bit-identical resume, merging, export and registration.
//!
//! One optimizer step takes `batch_size × grad_accum` examples from the data
//! stream: epoch `e` visits the examples in an order shuffled by
//! `(seed, e)`, epochs follow each other without gaps, and step `s` takes
//! items `s·B·G … (s+1)·B·G − 1` of that stream. Gradients of the
//! micro-batches are summed; the SFT loss is the mean negative
//! log-likelihood over **all** trained tokens of the step (so the split into
//! micro-batches does not change the gradient), the DPO loss the mean over
//! the step's pairs.
//!
//! Reproducibility: the same base model, data, settings and seed give
//! bit-identical adapter weights on the same machine with the same thread
//! count (`RAYON_NUM_THREADS`), whether the run is interrupted and resumed
//! or not: every random draw comes from [`crate::rng::Rng`] streams whose
//! state is checkpointed, the CPU kernels are deterministic, and the
//! optimizer runs sequentially in f32.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};
use techne_inference::gguf::GgufFile;
use techne_inference::onnx_export::LlamaConfig;
use techne_inference::registry::{Registry, sha256_file};

use crate::checkpoint::{self, TrainerState};
use crate::data::{self, Dataset, PreferenceExample, SftExample, TemplateMode, TextCodec};
use crate::error::{Result, TrainError, io_err};
use crate::export::{self, BaseRecord, DatasetRecord, Lineage, MergedRecord, WeightFormat};
use crate::lora::{LoraAdapters, LoraConfig};
use crate::model::{ForwardOptions, Llama};
use crate::optim::{AdamW, OptimConfig, clip_grad_norm};
use crate::rng::Rng;

const INIT_STREAM: u64 = 1;
const DROPOUT_STREAM: u64 = 2;
const SHUFFLE_STREAM: u64 = 0x1000;

/// Which objective a run optimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrainKind {
    /// Supervised fine-tuning (loss on the assistant tokens).
    Sft,
    /// Direct preference optimisation.
    Dpo,
}

impl TrainKind {
    /// `sft` or `dpo`.
    pub fn as_str(self) -> &'static str {
        match self {
            TrainKind::Sft => "sft",
            TrainKind::Dpo => "dpo",
        }
    }
}

/// Everything a training run needs. `Default` gives the documented defaults
/// with empty paths; the CLI fills in at least `model`, `data` and
/// `output_dir`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// The base model's GGUF file (see [`export::resolve_model`]).
    pub model: PathBuf,
    /// The base model's registry name, recorded in the lineage.
    pub model_name: Option<String>,
    /// The JSONL data file.
    pub data: PathBuf,
    /// The run directory: checkpoints, the final adapter, `merged.gguf`,
    /// `report.json`, `lineage.json`.
    pub output_dir: PathBuf,
    /// Register the merged model in the registry under this name.
    pub out_name: Option<String>,
    /// The registry directory (`None`: techne's default registry).
    pub registry_dir: Option<PathBuf>,
    /// LoRA settings.
    pub lora: LoraConfig,
    /// Optimizer and schedule settings.
    pub optim: OptimConfig,
    /// Examples (SFT) or pairs (DPO) per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Passes over the data (ignored when `max_steps` is set).
    pub epochs: usize,
    /// Exactly this many optimizer steps.
    pub max_steps: Option<usize>,
    /// Longest tokenized example (longer ones are truncated).
    pub max_seq_len: usize,
    /// Seed of every random draw (initialisation, shuffling, dropout).
    pub seed: u64,
    /// Write a checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: usize,
    /// Checkpoints to keep.
    pub keep_checkpoints: usize,
    /// Continue from the newest checkpoint in `output_dir`.
    pub resume: bool,
    /// How examples become text.
    pub template: TemplateMode,
    /// Storage of the merged projections in the exported model.
    pub merged_format: WeightFormat,
    /// The exported graph's maximum context (default: the model's, capped as by the importer).
    pub max_context: Option<usize>,
    /// DPO's β (only used by [`train_dpo`]).
    pub dpo_beta: f64,
    /// Held-out JSONL in the format of `data`: its loss (DPO: also the reward
    /// accuracy) is computed without dropout every `eval_every` steps and
    /// after the last step, into [`StepRecord::eval_loss`]. It does not change
    /// the trajectory, so it may change between a stop and a resume.
    pub eval_data: Option<PathBuf>,
    /// Evaluate on `eval_data` every this many steps (0: only after the last step).
    pub eval_every: usize,
    /// With `eval_data`: the run's adapter (and exported model) is the one
    /// of the best evaluation rather than the last step's — DPO: the highest
    /// held-out reward accuracy, ties to the lower held-out loss; SFT: the
    /// lowest held-out loss. Each new best is saved to
    /// `best/adapter.safetensors` when found; checkpoints keep the last
    /// step's state, so a resume continues the same trajectory.
    pub keep_best: bool,
}

/// The folder of the output directory that holds the best evaluated adapter
/// ([`TrainConfig::keep_best`]).
pub const BEST_ADAPTER_DIR: &str = "best";

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            model: PathBuf::new(),
            model_name: None,
            data: PathBuf::new(),
            output_dir: PathBuf::new(),
            out_name: None,
            registry_dir: None,
            lora: LoraConfig::default(),
            optim: OptimConfig::default(),
            batch_size: 4,
            grad_accum: 1,
            epochs: 1,
            max_steps: None,
            max_seq_len: 512,
            seed: 42,
            checkpoint_every: 100,
            keep_checkpoints: 2,
            resume: false,
            template: TemplateMode::Chat,
            merged_format: WeightFormat::F16,
            max_context: None,
            dpo_beta: 0.1,
            eval_data: None,
            eval_every: 0,
            keep_best: false,
        }
    }
}

impl TrainConfig {
    /// Checks the settings that do not need the model or the data.
    pub fn validate(&self) -> Result<()> {
        self.lora.validate()?;
        self.optim.validate().map_err(TrainError::Config)?;
        if self.batch_size == 0 || self.grad_accum == 0 {
            return Err(TrainError::Config("batch_size and grad_accum must be at least 1".into()));
        }
        if self.max_steps.is_none() && self.epochs == 0 {
            return Err(TrainError::Config("epochs must be at least 1 (or set max_steps)".into()));
        }
        if self.max_steps == Some(0) {
            return Err(TrainError::Config("max_steps must be at least 1".into()));
        }
        if self.keep_best && self.eval_data.is_none() {
            return Err(TrainError::Config(
                "keep_best selects by held-out evaluation: set eval_data (and eval_every) too".into(),
            ));
        }
        if self.max_seq_len < 2 {
            return Err(TrainError::Config("max_seq_len must be at least 2".into()));
        }
        if !(self.dpo_beta.is_finite() && self.dpo_beta > 0.0) {
            return Err(TrainError::Config(format!("dpo_beta must be positive, got {}", self.dpo_beta)));
        }
        if self.output_dir.as_os_str().is_empty() {
            return Err(TrainError::Config("output_dir is required".into()));
        }
        Ok(())
    }
}

/// DPO statistics of one step (means over its pairs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DpoStats {
    /// `β·(log π(chosen) − log π_ref(chosen))`.
    pub reward_chosen: f64,
    /// `β·(log π(rejected) − log π_ref(rejected))`.
    pub reward_rejected: f64,
    /// Fraction of pairs whose chosen reward exceeds the rejected one.
    pub accuracy: f64,
    /// `reward_chosen − reward_rejected`.
    pub margin: f64,
}

/// One optimizer step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The step number (1-based).
    pub step: usize,
    /// The loss (SFT: mean NLL per trained token; DPO: mean pair loss).
    pub loss: f64,
    /// The learning rate used.
    pub lr: f64,
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
    /// Tokens run through the model (padding excluded).
    pub tokens: usize,
    /// Tokens that carried loss (SFT) or completion tokens (DPO).
    pub target_tokens: usize,
    /// Wall-clock seconds of the step (forward, backward, update).
    pub seconds: f64,
    /// `tokens / seconds`.
    pub tokens_per_second: f64,
    /// DPO statistics.
    pub dpo: Option<DpoStats>,
    /// The loss on `eval_data` after this step (SFT: mean NLL per trained
    /// token; DPO: mean pair loss), when it was evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_loss: Option<f64>,
    /// DPO: the reward accuracy on `eval_data` after this step, when evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_accuracy: Option<f64>,
}

/// What the progress callback is told.
#[derive(Debug)]
pub enum TrainEvent<'a> {
    /// Data and model are loaded.
    Prepared {
        /// Usable examples.
        examples: usize,
        /// Examples skipped after truncation.
        skipped: usize,
        /// The run's optimizer steps.
        total_steps: usize,
        /// Trained parameters.
        trainable_params: usize,
        /// The step a resumed run continues after.
        resumed_from: Option<usize>,
    },
    /// DPO reference log-probabilities: `done` of `total` pairs.
    Reference {
        /// Pairs done.
        done: usize,
        /// All pairs.
        total: usize,
    },
    /// A step finished.
    Step(&'a StepRecord),
    /// A checkpoint was written.
    Checkpoint {
        /// Its step.
        step: usize,
        /// Its directory.
        dir: &'a Path,
    },
    /// Training is over; merging and exporting begin.
    Exporting,
}

/// The progress callback's answer (only read after [`TrainEvent::Step`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Go on.
    Continue,
    /// Write a checkpoint and return (no export); resume later.
    Stop,
    /// Return [`TrainError::Aborted`] at once, writing nothing (like a crash).
    Abort,
}

/// A model registered by a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisteredModel {
    /// The registry name.
    pub name: String,
    /// The registry entry's directory.
    pub dir: PathBuf,
}

/// The result of a run (also written to `report.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// The objective.
    pub kind: TrainKind,
    /// Every step, including those before a resume.
    pub steps: Vec<StepRecord>,
    /// The planned number of steps.
    pub total_steps: usize,
    /// The step this invocation resumed after.
    pub resumed_from: Option<usize>,
    /// Whether the callback stopped the run before the end.
    pub stopped_early: bool,
    /// The last step's loss.
    pub final_loss: Option<f64>,
    /// Tokens per second over this invocation's steps.
    pub tokens_per_second: f64,
    /// Seconds spent in this invocation's steps.
    pub train_seconds: f64,
    /// Trained parameters.
    pub trainable_params: usize,
    /// Usable examples.
    pub examples: usize,
    /// Skipped examples.
    pub skipped: usize,
    /// The run directory (holds `adapter.safetensors`).
    pub output_dir: PathBuf,
    /// The merged GGUF, when exported.
    pub merged_gguf: Option<PathBuf>,
    /// The registered model.
    pub model: Option<RegisteredModel>,
    /// The lineage, when exported.
    pub lineage: Option<Lineage>,
    /// Peak resident memory of the process (`VmHWM`), bytes.
    pub peak_rss_bytes: Option<u64>,
    /// The step whose adapter became the run's ([`TrainConfig::keep_best`]);
    /// `None`: the last step's.
    pub selected_step: Option<usize>,
}

/// Tunes glibc's allocator for training (once per process): blocks up to
/// 32 MiB come from the heap (`M_MMAP_THRESHOLD`), freed heap memory is
/// kept for reuse instead of being returned to the kernel
/// (`M_TRIM_THRESHOLD = −1`), and every heap extension asks the kernel for
/// 64 MiB more than it needs (`M_TOP_PAD`). Autograd frees and
/// re-allocates thousands of multi-megabyte tensors per step; with glibc's
/// defaults each of them is a fresh `mmap` whose pages fault in zeroed and
/// whose `munmap` shoots down TLBs, which cost ~40 % of a SmolLM2 step here.
/// The padding matters as much as the other two: without it the heaps of
/// the worker threads' arenas grow and shrink by a few pages at a time
/// (measured: 260 → 345 tokens/s on SmolLM2, system time 9 s → 3.6 s per
/// run, peak RSS unchanged; `techne bench train`).
/// Called by [`train_sft`] and [`train_dpo`]; a no-op outside glibc.
pub fn tune_allocator() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only changes allocator parameters; it is thread-safe in glibc.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
            libc::mallopt(libc::M_TOP_PAD, 64 << 20);
        }
    });
}

/// The process's peak resident set size (`VmHWM` from `/proc/self/status`).
pub fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// `−log σ(β·((π_c − π_r) − (ref_c − ref_r)))` per pair, computed stably as
/// `softplus(−z)`. Inputs are `[n]` tensors of summed completion log-probabilities.
pub fn dpo_loss(
    policy_chosen: &Tensor,
    policy_rejected: &Tensor,
    ref_chosen: &Tensor,
    ref_rejected: &Tensor,
    beta: f64,
) -> Result<Tensor> {
    let z = ((policy_chosen - policy_rejected)? - (ref_chosen - ref_rejected)?)?.affine(beta, 0.0)?;
    let x = z.neg()?;
    // softplus(x) = max(x, 0) + log(1 + exp(−|x|))
    Ok((x.relu()? + x.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?)?)
}

/// The padded token grid of a micro-batch and the flat positions of its targets.
struct Grid {
    ids: Vec<u32>,
    rows: usize,
    seq: usize,
    targets: Vec<u32>,
    target_row: Vec<usize>,
    tokens: usize,
}

fn grid(seqs: &[(Vec<u32>, Vec<bool>)], pad: u32) -> Grid {
    let seq = seqs.iter().map(|(ids, _)| ids.len()).max().unwrap_or(1).max(1);
    let rows = seqs.len();
    let mut ids = vec![pad; rows * seq];
    let mut targets = Vec::new();
    let mut target_row = Vec::new();
    let mut tokens = 0;
    for (r, (s, t)) in seqs.iter().enumerate() {
        ids[r * seq..r * seq + s.len()].copy_from_slice(s);
        tokens += s.len();
        for (i, &is_t) in t.iter().enumerate() {
            if is_t && i > 0 {
                targets.push((r * seq + i) as u32);
                target_row.push(r);
            }
        }
    }
    Grid { ids, rows, seq, targets, target_row, tokens }
}

/// Summed completion log-probabilities of every row of a DPO micro-batch
/// (`[2n]`: the n chosen rows, then the n rejected rows).
fn pair_logps(
    model: &Llama,
    pairs: &[&PreferenceExample],
    opts: &mut ForwardOptions<'_>,
    pad: u32,
) -> Result<(Tensor, usize, usize)> {
    let mut seqs = Vec::with_capacity(pairs.len() * 2);
    for which in 0..2 {
        for p in pairs {
            let c = if which == 0 { &p.chosen } else { &p.rejected };
            let ids: Vec<u32> = p.prompt.iter().chain(c.iter()).copied().collect();
            let t: Vec<bool> = (0..ids.len()).map(|i| i >= p.prompt.len()).collect();
            seqs.push((ids, t));
        }
    }
    let g = grid(&seqs, pad);
    let hidden = model.forward_hidden(&g.ids, g.rows, g.seq, opts)?;
    let lp = model.target_logprobs(&hidden, &g.ids, &g.targets)?;
    let n = g.targets.len();
    let mut seg = vec![0f32; g.rows * n];
    for (j, &r) in g.target_row.iter().enumerate() {
        seg[r * n + j] = 1.0;
    }
    let seg = Tensor::from_vec(seg, (g.rows, n), model.device())?;
    let sums = seg.matmul(&lp.reshape((n, 1))?)?.reshape(g.rows)?;
    Ok((sums, g.tokens, n))
}

/// Reference log-probabilities `[chosen, rejected]` of every pair under the
/// base model (adapters off), in batches of `batch`.
pub fn reference_logps(
    model: &Llama,
    pairs: &[PreferenceExample],
    batch: usize,
    pad: u32,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<[f32; 2]>> {
    let mut out = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(batch.max(1)) {
        let refs: Vec<&PreferenceExample> = chunk.iter().collect();
        let (sums, _, _) = pair_logps(model, &refs, &mut ForwardOptions::base(), pad)?;
        let v = sums.to_vec1::<f32>()?;
        let n = chunk.len();
        for i in 0..n {
            out.push([v[i], v[n + i]]);
        }
        progress(out.len(), pairs.len());
    }
    Ok(out)
}

enum Task<'a> {
    Sft(&'a [SftExample]),
    Dpo { pairs: &'a [PreferenceExample], reference: Vec<[f32; 2]>, beta: f64 },
}

impl Task<'_> {
    fn len(&self) -> usize {
        match self {
            Task::Sft(e) => e.len(),
            Task::Dpo { pairs, .. } => pairs.len(),
        }
    }
}

/// The loss of one SFT micro-batch, divided by `normalizer` (the step's trained tokens).
fn sft_micro_loss(
    model: &Llama,
    examples: &[&SftExample],
    normalizer: usize,
    opts: &mut ForwardOptions<'_>,
    pad: u32,
) -> Result<(Tensor, usize, usize)> {
    let seqs: Vec<(Vec<u32>, Vec<bool>)> = examples.iter().map(|e| (e.ids.clone(), e.targets.clone())).collect();
    let g = grid(&seqs, pad);
    let hidden = model.forward_hidden(&g.ids, g.rows, g.seq, opts)?;
    let lp = model.target_logprobs(&hidden, &g.ids, &g.targets)?;
    let loss = lp.sum_all()?.affine(-1.0 / normalizer.max(1) as f64, 0.0)?;
    Ok((loss, g.tokens, g.targets.len()))
}

/// The SFT loss (mean NLL per trained token) of examples under the model with
/// optional adapters, without dropout or gradients (for evaluation and tests).
pub fn sft_eval_loss(
    model: &Llama,
    adapters: Option<&LoraAdapters>,
    examples: &[SftExample],
    batch: usize,
    pad: u32,
) -> Result<f64> {
    let total: usize = examples.iter().map(SftExample::n_targets).sum();
    let mut loss = 0f64;
    for chunk in examples.chunks(batch.max(1)) {
        let refs: Vec<&SftExample> = chunk.iter().collect();
        let mut opts = ForwardOptions { lora: adapters, dropout_rng: None };
        let (l, _, _) = sft_micro_loss(model, &refs, total, &mut opts, pad)?;
        loss += f64::from(l.to_scalar::<f32>()?);
    }
    Ok(loss)
}

/// The held-out set of a run and, for DPO, its reference log-probabilities.
enum EvalSet {
    Sft(Vec<SftExample>),
    Dpo { pairs: Vec<PreferenceExample>, reference: Vec<[f32; 2]> },
}

/// The held-out loss (and DPO reward accuracy) under base + adapters, without dropout.
fn evaluate(
    model: &Llama,
    adapters: &LoraAdapters,
    set: &EvalSet,
    batch: usize,
    pad: u32,
    beta: f64,
) -> Result<(f64, Option<f64>)> {
    match set {
        EvalSet::Sft(examples) => Ok((sft_eval_loss(model, Some(adapters), examples, batch, pad)?, None)),
        EvalSet::Dpo { pairs, reference } => {
            let (mut loss, mut correct) = (0f64, 0usize);
            for (chunk, refs) in pairs.chunks(batch.max(1)).zip(reference.chunks(batch.max(1))) {
                let items: Vec<&PreferenceExample> = chunk.iter().collect();
                let mut opts = ForwardOptions { lora: Some(adapters), dropout_rng: None };
                let (sums, _, _) = pair_logps(model, &items, &mut opts, pad)?;
                let b = items.len();
                let pc = sums.narrow(0, 0, b)?;
                let pr = sums.narrow(0, b, b)?;
                let rc = Tensor::from_vec(refs.iter().map(|r| r[0]).collect::<Vec<_>>(), b, model.device())?;
                let rr = Tensor::from_vec(refs.iter().map(|r| r[1]).collect::<Vec<_>>(), b, model.device())?;
                loss += f64::from(dpo_loss(&pc, &pr, &rc, &rr, beta)?.sum_all()?.to_scalar::<f32>()?);
                let margin = ((&pc - &rc)? - (&pr - &rr)?)?.to_vec1::<f32>()?;
                correct += margin.iter().filter(|m| **m > 0.0).count();
            }
            let n = pairs.len().max(1) as f64;
            Ok((loss / n, Some(correct as f64 / n)))
        }
    }
}

/// Writes the adapter into [`BEST_ADAPTER_DIR`] whole or not at all: into a
/// scratch folder first, which then replaces the previous best.
fn save_best_adapter(adapters: &LoraAdapters, out: &Path, model: &LlamaConfig, base_sha256: &str) -> Result<()> {
    let (partial, best) = (out.join("best.partial"), out.join(BEST_ADAPTER_DIR));
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(io_err(&partial))?;
    }
    std::fs::create_dir_all(&partial).map_err(io_err(&partial))?;
    adapters.save(&partial, model, base_sha256)?;
    if best.exists() {
        std::fs::remove_dir_all(&best).map_err(io_err(&best))?;
    }
    std::fs::rename(&partial, &best).map_err(io_err(&best))
}

/// Whether `record`'s held-out evaluation beats `best`'s: a higher reward
/// accuracy (DPO), then a lower loss; the earlier step wins exact ties.
fn is_better_evaluation(record: &StepRecord, best: Option<&StepRecord>) -> bool {
    let Some(loss) = record.eval_loss else { return false };
    let Some(best) = best else { return true };
    let (accuracy, best_accuracy) = (record.eval_accuracy.unwrap_or(0.0), best.eval_accuracy.unwrap_or(0.0));
    let best_loss = best.eval_loss.unwrap_or(f64::INFINITY);
    accuracy > best_accuracy || (accuracy == best_accuracy && loss < best_loss)
}

fn order_for(seed: u64, epoch: usize, n: usize) -> Vec<u32> {
    let mut v: Vec<u32> = (0..n as u32).collect();
    Rng::derive(seed, SHUFFLE_STREAM + epoch as u64).shuffle(&mut v);
    v
}

/// Supervised fine-tuning with LoRA; see the module docs.
pub fn train_sft(cfg: &TrainConfig, progress: impl FnMut(&TrainEvent<'_>) -> Control) -> Result<TrainReport> {
    run(cfg, TrainKind::Sft, progress)
}

/// DPO with LoRA on the policy (base + adapters) against the base model as
/// the reference; see the module docs.
pub fn train_dpo(cfg: &TrainConfig, progress: impl FnMut(&TrainEvent<'_>) -> Control) -> Result<TrainReport> {
    run(cfg, TrainKind::Dpo, progress)
}

enum Data {
    Sft(Dataset<SftExample>),
    Dpo(Dataset<PreferenceExample>),
}

fn run(
    cfg: &TrainConfig,
    kind: TrainKind,
    mut progress: impl FnMut(&TrainEvent<'_>) -> Control,
) -> Result<TrainReport> {
    cfg.validate()?;
    tune_allocator();
    let out = &cfg.output_dir;
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    if checkpoint::exists(out) && !cfg.resume {
        return Err(TrainError::Config(format!(
            "{} already holds checkpoints of a run: resume it (--resume) or choose another output directory",
            out.display()
        )));
    }
    let gguf = GgufFile::open(&cfg.model)?;
    let (base_sha256, _) = sha256_file(&cfg.model)?;
    let model = Llama::from_gguf(&gguf)?;
    let mcfg = model.config().clone();
    if cfg.max_seq_len > mcfg.context_length {
        return Err(TrainError::Config(format!(
            "max_seq_len {} exceeds the model's context length {}: lower it",
            cfg.max_seq_len, mcfg.context_length
        )));
    }
    let codec = TextCodec::from_gguf(&gguf)?;
    let pad = codec.eos().unwrap_or(0);
    let data = match kind {
        TrainKind::Sft => Data::Sft(data::load_sft(&cfg.data, &codec, cfg.template, cfg.max_seq_len)?),
        TrainKind::Dpo => Data::Dpo(data::load_preferences(&cfg.data, &codec, cfg.template, cfg.max_seq_len)?),
    };
    let (data_sha256, n_examples, skipped, truncated) = match &data {
        Data::Sft(d) => (d.sha256.clone(), d.examples.len(), d.skipped, d.truncated),
        Data::Dpo(d) => (d.sha256.clone(), d.examples.len(), d.skipped, d.truncated),
    };
    let mut eval_set = match (&cfg.eval_data, kind) {
        (None, _) => None,
        (Some(p), TrainKind::Sft) => {
            Some(EvalSet::Sft(data::load_sft(p, &codec, cfg.template, cfg.max_seq_len)?.examples))
        }
        (Some(p), TrainKind::Dpo) => Some(EvalSet::Dpo {
            pairs: data::load_preferences(p, &codec, cfg.template, cfg.max_seq_len)?.examples,
            reference: Vec::new(),
        }),
    };
    if let Some(EvalSet::Dpo { pairs, reference }) = &mut eval_set {
        *reference = reference_logps(&model, pairs, cfg.batch_size, pad, |_, _| {})?;
    }
    let per_step = cfg.batch_size * cfg.grad_accum;
    let total_steps = cfg.max_steps.unwrap_or_else(|| (n_examples * cfg.epochs).div_ceil(per_step));

    let mut settings = serde_json::json!({
        "kind": kind.as_str(),
        "base_sha256": base_sha256,
        "data_sha256": data_sha256,
        "lora": cfg.lora,
        "optim": cfg.optim,
        "batch_size": cfg.batch_size,
        "grad_accum": cfg.grad_accum,
        "total_steps": total_steps,
        "max_seq_len": cfg.max_seq_len,
        "seed": cfg.seed,
        "template": cfg.template,
    });
    if kind == TrainKind::Dpo {
        settings["dpo_beta"] = cfg.dpo_beta.into();
    }
    let fingerprint = data::sha256_hex(settings.to_string().as_bytes());

    let adapters = LoraAdapters::new(&cfg.lora, &mcfg, &mut Rng::derive(cfg.seed, INIT_STREAM))?;
    let sizes: Vec<usize> = adapters.named_vars().iter().map(|(_, v)| v.elem_count()).collect();
    let mut optim = AdamW::new(&sizes);
    let mut rng = Rng::derive(cfg.seed, DROPOUT_STREAM);
    let mut history: Vec<StepRecord> = Vec::new();
    let mut start = 0usize;
    let mut resumed_from = None;
    let mut reference: Option<Vec<[f32; 2]>> = None;

    if cfg.resume
        && let Some(ck) = checkpoint::load_latest(out)?
    {
        if ck.state.fingerprint != fingerprint {
            return Err(TrainError::Checkpoint {
                path: ck.dir.clone(),
                message: format!(
                    "it was written with other settings, model or data ({}); now: {}. Use the same settings and files, or start over in another output directory",
                    ck.state.settings, settings
                ),
            });
        }
        ck.restore(&adapters, &mut optim)?;
        let expect = order_for(cfg.seed, ck.state.epoch, n_examples);
        if expect != ck.state.order {
            return Err(TrainError::Checkpoint {
                path: ck.dir.clone(),
                message: "its data order differs from this build's: resume with the techne version that wrote it"
                    .into(),
            });
        }
        rng = ck.state.rng.clone();
        history = ck.state.history.clone();
        start = ck.state.step;
        resumed_from = Some(start);
        reference = ck.reference;
    }

    progress(&TrainEvent::Prepared {
        examples: n_examples,
        skipped,
        total_steps,
        trainable_params: adapters.num_params(),
        resumed_from,
    });

    let task = match &data {
        Data::Sft(d) => Task::Sft(&d.examples),
        Data::Dpo(d) => {
            let reference = match reference {
                Some(r) if r.len() == d.examples.len() => r,
                _ => reference_logps(&model, &d.examples, cfg.batch_size, pad, |done, total| {
                    progress(&TrainEvent::Reference { done, total });
                })?,
            };
            Task::Dpo { pairs: &d.examples, reference, beta: cfg.dpo_beta }
        }
    };

    let n = task.len();
    let mut cached_order: (usize, Vec<u32>) = (0, order_for(cfg.seed, 0, n));
    let mut item_at = |k: usize| -> usize {
        let e = k / n;
        if cached_order.0 != e {
            cached_order = (e, order_for(cfg.seed, e, n));
        }
        cached_order.1[k % n] as usize
    };

    let reference_slice = match &task {
        Task::Dpo { reference, .. } => Some(reference.clone()),
        Task::Sft(_) => None,
    };
    let save_ck = |step: usize, rng: &Rng, optim: &AdamW, history: &[StepRecord]| -> Result<PathBuf> {
        let epoch = step * per_step / n;
        let state = TrainerState {
            format_version: checkpoint::CHECKPOINT_VERSION,
            step,
            total_steps,
            adam_step: optim.step,
            rng: rng.clone(),
            epoch,
            order: order_for(cfg.seed, epoch, n),
            fingerprint: fingerprint.clone(),
            settings: settings.clone(),
            history: history.to_vec(),
        };
        checkpoint::save(out, &state, &adapters, optim, reference_slice.as_deref(), cfg.keep_checkpoints)
    };

    let vars = adapters.named_vars();
    // The best evaluation so far (keep_best); after a resume, the best of the
    // replayed history, whose adapter `best/` holds.
    let mut best: Option<StepRecord> = None;
    for record in history.iter().filter(|r| r.eval_loss.is_some()) {
        if is_better_evaluation(record, best.as_ref()) {
            best = Some(record.clone());
        }
    }
    let mut stopped_early = false;
    let mut session_tokens = 0usize;
    let mut session_seconds = 0f64;
    for step in start..total_steps {
        let t0 = Instant::now();
        let items: Vec<usize> = (step * per_step..(step + 1) * per_step).map(&mut item_at).collect();
        let mut grads: Vec<Vec<f32>> = sizes.iter().map(|&s| vec![0f32; s]).collect();
        let mut loss_sum = 0f64;
        let mut tokens = 0usize;
        let mut target_tokens = 0usize;
        let mut dpo_acc = [0f64; 3];
        let normalizer = match &task {
            Task::Sft(ex) => items.iter().map(|&i| ex[i].n_targets()).sum(),
            Task::Dpo { .. } => items.len(),
        };
        for micro in items.chunks(cfg.batch_size) {
            let mut opts = ForwardOptions { lora: Some(&adapters), dropout_rng: Some(&mut rng) };
            let loss = match &task {
                Task::Sft(ex) => {
                    let refs: Vec<&SftExample> = micro.iter().map(|&i| &ex[i]).collect();
                    let (loss, t, tt) = sft_micro_loss(&model, &refs, normalizer, &mut opts, pad)?;
                    tokens += t;
                    target_tokens += tt;
                    loss
                }
                Task::Dpo { pairs, reference, beta } => {
                    let refs: Vec<&PreferenceExample> = micro.iter().map(|&i| &pairs[i]).collect();
                    let (sums, t, tt) = pair_logps(&model, &refs, &mut opts, pad)?;
                    tokens += t;
                    target_tokens += tt;
                    let b = refs.len();
                    let pc = sums.narrow(0, 0, b)?;
                    let pr = sums.narrow(0, b, b)?;
                    let rc: Vec<f32> = micro.iter().map(|&i| reference[i][0]).collect();
                    let rr: Vec<f32> = micro.iter().map(|&i| reference[i][1]).collect();
                    let rc = Tensor::from_vec(rc, b, model.device())?;
                    let rr = Tensor::from_vec(rr, b, model.device())?;
                    let per_pair = dpo_loss(&pc, &pr, &rc, &rr, *beta)?;
                    let rew_c = ((&pc - &rc)? * *beta)?.to_vec1::<f32>()?;
                    let rew_r = ((&pr - &rr)? * *beta)?.to_vec1::<f32>()?;
                    for (c, r) in rew_c.iter().zip(&rew_r) {
                        dpo_acc[0] += f64::from(*c);
                        dpo_acc[1] += f64::from(*r);
                        dpo_acc[2] += if c > r { 1.0 } else { 0.0 };
                    }
                    per_pair.sum_all()?.affine(1.0 / normalizer as f64, 0.0)?
                }
            };
            let g = loss.backward()?;
            for (i, (_, var)) in vars.iter().enumerate() {
                if let Some(gt) = g.get(var.as_tensor()) {
                    let gv = gt.flatten_all()?.to_vec1::<f32>()?;
                    for (a, b) in grads[i].iter_mut().zip(gv) {
                        *a += b;
                    }
                }
            }
            loss_sum += f64::from(loss.to_dtype(DType::F32)?.to_scalar::<f32>()?);
        }
        let grad_norm = clip_grad_norm(&mut grads, cfg.optim.max_grad_norm);
        if !loss_sum.is_finite() || !grad_norm.is_finite() {
            return Err(TrainError::NonFinite {
                step: step + 1,
                value: if loss_sum.is_finite() { grad_norm } else { loss_sum },
            });
        }
        let lr = cfg.optim.lr_at(step, total_steps);
        let mut params = adapters.to_flat()?;
        optim.update(&mut params, &grads, lr, &cfg.optim);
        adapters.set_flat(&params)?;
        let seconds = t0.elapsed().as_secs_f64();
        session_tokens += tokens;
        session_seconds += seconds;
        let dpo = (kind == TrainKind::Dpo).then(|| {
            let k = items.len().max(1) as f64;
            let (c, r) = (dpo_acc[0] / k, dpo_acc[1] / k);
            DpoStats { reward_chosen: c, reward_rejected: r, accuracy: dpo_acc[2] / k, margin: c - r }
        });
        let mut record = StepRecord {
            step: step + 1,
            loss: loss_sum,
            lr,
            grad_norm,
            tokens,
            target_tokens,
            seconds,
            tokens_per_second: tokens as f64 / seconds.max(1e-9),
            dpo,
            eval_loss: None,
            eval_accuracy: None,
        };
        let eval_now = step + 1 == total_steps || (cfg.eval_every > 0 && (step + 1) % cfg.eval_every == 0);
        if let (Some(set), true) = (&eval_set, eval_now) {
            let (loss, accuracy) = evaluate(&model, &adapters, set, cfg.batch_size, pad, cfg.dpo_beta)?;
            record.eval_loss = Some(loss);
            record.eval_accuracy = accuracy;
            if cfg.keep_best && is_better_evaluation(&record, best.as_ref()) {
                save_best_adapter(&adapters, out, &mcfg, &base_sha256)?;
                best = Some(record.clone());
            }
        }
        history.push(record.clone());
        match progress(&TrainEvent::Step(&record)) {
            Control::Continue => {}
            Control::Abort => return Err(TrainError::Aborted { step: step + 1 }),
            Control::Stop => {
                let dir = save_ck(step + 1, &rng, &optim, &history)?;
                progress(&TrainEvent::Checkpoint { step: step + 1, dir: &dir });
                stopped_early = step + 1 < total_steps;
                break;
            }
        }
        if cfg.checkpoint_every > 0 && (step + 1) % cfg.checkpoint_every == 0 && step + 1 < total_steps {
            let dir = save_ck(step + 1, &rng, &optim, &history)?;
            progress(&TrainEvent::Checkpoint { step: step + 1, dir: &dir });
        }
    }

    let done = history.last().map(|r| r.step).unwrap_or(start);
    if !stopped_early && done == total_steps && resumed_from != Some(total_steps) {
        let dir = save_ck(done, &rng, &optim, &history)?;
        progress(&TrainEvent::Checkpoint { step: done, dir: &dir });
    }
    let mut selected_step = None;
    if cfg.keep_best
        && !stopped_early
        && let Some(best) = &best
        && best.step != done
    {
        let kept = LoraAdapters::load(&out.join(BEST_ADAPTER_DIR), &mcfg)?;
        adapters.set_flat(&kept.to_flat()?)?;
        selected_step = Some(best.step);
    }
    adapters.save(out, &mcfg, &base_sha256)?;

    let mut report = TrainReport {
        kind,
        final_loss: history.last().map(|r| r.loss),
        steps: history,
        total_steps,
        resumed_from,
        stopped_early,
        tokens_per_second: if session_seconds > 0.0 { session_tokens as f64 / session_seconds } else { 0.0 },
        train_seconds: session_seconds,
        trainable_params: adapters.num_params(),
        examples: n_examples,
        skipped,
        output_dir: out.clone(),
        merged_gguf: None,
        model: None,
        lineage: None,
        peak_rss_bytes: None,
        selected_step,
    };

    if !stopped_early && let Some(name) = &cfg.out_name {
        progress(&TrainEvent::Exporting);
        let merged_path = out.join(export::MERGED_GGUF);
        let merged_sha =
            export::write_merged_gguf(&gguf, &model, &adapters, cfg.merged_format, &merged_path, Some(name))?;
        let (adapter_sha256, _) = sha256_file(&out.join(crate::lora::ADAPTER_FILE))?;
        let mut hyper = settings.clone();
        hyper["merged_format"] = serde_json::to_value(cfg.merged_format).unwrap_or_default();
        let lineage = Lineage {
            format_version: 1,
            kind: kind.as_str().into(),
            model: Some(name.clone()),
            base_model: BaseRecord {
                name: cfg.model_name.clone(),
                gguf: cfg.model.display().to_string(),
                sha256: base_sha256.clone(),
                general_name: gguf.get("general.name").and_then(|v| v.as_str()).map(str::to_string),
            },
            dataset: DatasetRecord {
                path: cfg.data.display().to_string(),
                sha256: data_sha256.clone(),
                examples: n_examples,
                skipped,
                truncated,
            },
            hyperparameters: hyper,
            steps: report.steps.len(),
            final_loss: report.final_loss,
            merged: MergedRecord {
                gguf: merged_path.display().to_string(),
                sha256: merged_sha,
                format: cfg.merged_format,
            },
            adapter_sha256,
            trainer: format!("techne-training {}", env!("CARGO_PKG_VERSION")),
            created_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        let registry = match &cfg.registry_dir {
            Some(d) => Registry::open(d)?,
            None => Registry::open_default()?,
        };
        let entry = export::register_merged(&registry, name, &merged_path, &lineage, cfg.max_context)?;
        let bytes = serde_json::to_vec_pretty(&lineage).map_err(|e| TrainError::Config(e.to_string()))?;
        checkpoint::write_file_atomic(&out.join(export::LINEAGE_FILE), &bytes)?;
        report.merged_gguf = Some(merged_path);
        report.model = Some(RegisteredModel { name: entry.name.clone(), dir: entry.dir.clone() });
        report.lineage = Some(lineage);
    }
    report.peak_rss_bytes = peak_rss_bytes();
    let bytes = serde_json::to_vec_pretty(&report).map_err(|e| TrainError::Config(e.to_string()))?;
    checkpoint::write_file_atomic(&out.join("report.json"), &bytes)?;
    Ok(report)
}
