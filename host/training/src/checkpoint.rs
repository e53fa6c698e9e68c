//! Checkpoints: everything needed to continue a run bit-identically.
//!
//! A checkpoint is a directory `checkpoints/step-NNNNNNNN/` in the run's
//! output directory holding:
//!
//! * `adapter.safetensors` — the LoRA matrices (exact f32);
//! * `optimizer.safetensors` — AdamW's first and second moments (`m.<name>`, `v.<name>`);
//! * `reference.safetensors` — DPO only: the reference log-probabilities `[pairs, 2]`;
//! * `state.json` — step, AdamW step, the dropout generator's state, the
//!   current epoch and its data order, the settings fingerprint and the
//!   per-step history.
//!
//! Writing is atomic: the files go into a hidden temporary directory, are
//! fsynced, and the directory is renamed into place; then the `latest` file
//! (one line naming the directory) is replaced through a temporary file and a
//! rename. A crash at any point leaves either the previous checkpoint or the
//! new one, never a torn one; temporary directories are ignored and cleaned
//! up on the next save. Older checkpoints beyond `keep` are deleted.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError, io_err};
use crate::lora::{ADAPTER_FILE, LoraAdapters};
use crate::optim::AdamW;
use crate::rng::Rng;
use crate::trainer::StepRecord;

/// The format version of `state.json`.
pub const CHECKPOINT_VERSION: u32 = 1;
/// The sub-directory of the output directory that holds checkpoints.
pub const CHECKPOINT_DIR: &str = "checkpoints";
const LATEST: &str = "latest";
const STATE: &str = "state.json";
const OPTIMIZER: &str = "optimizer.safetensors";
const REFERENCE: &str = "reference.safetensors";

/// `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// [`CHECKPOINT_VERSION`].
    pub format_version: u32,
    /// Completed optimizer steps.
    pub step: usize,
    /// The run's total optimizer steps.
    pub total_steps: usize,
    /// AdamW's update count.
    pub adam_step: u64,
    /// The dropout generator, as it is after `step` steps.
    pub rng: Rng,
    /// The epoch the next example comes from.
    pub epoch: usize,
    /// That epoch's order of the examples (indices into the data file's usable examples).
    pub order: Vec<u32>,
    /// SHA-256 of the settings that determine the trajectory; resuming with
    /// other settings is refused.
    pub fingerprint: String,
    /// Those settings, for error messages.
    pub settings: serde_json::Value,
    /// Every step so far.
    pub history: Vec<StepRecord>,
}

/// A loaded checkpoint.
#[derive(Debug)]
pub struct Checkpoint {
    /// Its directory.
    pub dir: PathBuf,
    /// `state.json`.
    pub state: TrainerState,
    /// The adapter tensors by name.
    pub adapter: HashMap<String, Tensor>,
    /// AdamW moments, restored into the optimizer by [`Checkpoint::restore`].
    pub optimizer: HashMap<String, Tensor>,
    /// DPO reference log-probabilities `[pairs][chosen, rejected]`.
    pub reference: Option<Vec<[f32; 2]>>,
}

fn ck_err(path: &Path, message: impl Into<String>) -> TrainError {
    TrainError::Checkpoint { path: path.to_path_buf(), message: message.into() }
}

fn fsync_file(path: &Path) -> Result<()> {
    std::fs::File::open(path).and_then(|f| f.sync_all()).map_err(io_err(path))
}

fn fsync_dir(path: &Path) {
    // Directory fsync is best effort (not supported everywhere).
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.sync_all();
    }
}

/// The directory name of the checkpoint after `step` steps.
pub fn step_dir_name(step: usize) -> String {
    format!("step-{step:08}")
}

fn nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

/// Writes a file atomically and durably (temporary file, fsync, rename, fsync of the directory).
pub fn write_file_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}-{}", std::process::id(), nanos()));
    let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
    f.write_all(data).and_then(|_| f.sync_all()).map_err(io_err(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    fsync_dir(dir);
    Ok(())
}

/// Saves a checkpoint into `output_dir/checkpoints/` and keeps the newest `keep`.
pub fn save(
    output_dir: &Path,
    state: &TrainerState,
    adapters: &LoraAdapters,
    optim: &AdamW,
    reference: Option<&[[f32; 2]]>,
    keep: usize,
) -> Result<PathBuf> {
    let root = output_dir.join(CHECKPOINT_DIR);
    std::fs::create_dir_all(&root).map_err(io_err(&root))?;
    // Leftovers of interrupted saves.
    if let Ok(rd) = std::fs::read_dir(&root) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(".tmp-") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let name = step_dir_name(state.step);
    let tmp = root.join(format!(".tmp-{name}-{}-{}", std::process::id(), nanos()));
    std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
    let result = (|| -> Result<PathBuf> {
        let a = tmp.join(ADAPTER_FILE);
        candle_core::safetensors::save(&adapters.tensor_map(), &a)?;
        fsync_file(&a)?;
        let mut opt = HashMap::new();
        for (i, (n, v)) in adapters.named_vars().iter().enumerate() {
            let (Some(m), Some(s)) = (optim.m.get(i), optim.v.get(i)) else {
                return Err(ck_err(&tmp, "optimizer state does not match the adapters (a bug)"));
            };
            opt.insert(format!("m.{n}"), Tensor::from_slice(m, v.shape(), &Device::Cpu)?);
            opt.insert(format!("v.{n}"), Tensor::from_slice(s, v.shape(), &Device::Cpu)?);
        }
        let o = tmp.join(OPTIMIZER);
        candle_core::safetensors::save(&opt, &o)?;
        fsync_file(&o)?;
        if let Some(r) = reference {
            let flat: Vec<f32> = r.iter().flatten().copied().collect();
            let mut map = HashMap::new();
            map.insert("reference_logps".to_string(), Tensor::from_vec(flat, (r.len(), 2), &Device::Cpu)?);
            let p = tmp.join(REFERENCE);
            candle_core::safetensors::save(&map, &p)?;
            fsync_file(&p)?;
        }
        let s = tmp.join(STATE);
        let bytes = serde_json::to_vec(state).map_err(|e| ck_err(&s, e.to_string()))?;
        let mut f = std::fs::File::create(&s).map_err(io_err(&s))?;
        f.write_all(&bytes).and_then(|_| f.sync_all()).map_err(io_err(&s))?;
        fsync_dir(&tmp);
        let dest = root.join(&name);
        if dest.exists() {
            // A complete checkpoint of the same step from an earlier attempt.
            let trash = root.join(format!(".tmp-trash-{name}-{}", nanos()));
            std::fs::rename(&dest, &trash).map_err(io_err(&dest))?;
            let _ = std::fs::remove_dir_all(&trash);
        }
        std::fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
        fsync_dir(&root);
        write_file_atomic(&root.join(LATEST), format!("{name}\n").as_bytes())?;
        Ok(dest)
    })();
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    let dest = result?;
    prune(&root, keep.max(1));
    Ok(dest)
}

fn step_dirs(root: &Path) -> Vec<(usize, PathBuf)> {
    let mut v: Vec<(usize, PathBuf)> = std::fs::read_dir(root)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let n = e.file_name().to_string_lossy().to_string();
                    n.strip_prefix("step-").and_then(|s| s.parse::<usize>().ok()).map(|s| (s, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn prune(root: &Path, keep: usize) {
    let dirs = step_dirs(root);
    if dirs.len() > keep {
        for (_, d) in &dirs[..dirs.len() - keep] {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Whether `output_dir` holds any checkpoint.
pub fn exists(output_dir: &Path) -> bool {
    !step_dirs(&output_dir.join(CHECKPOINT_DIR)).is_empty()
}

fn load_dir(dir: &Path) -> Result<Checkpoint> {
    let s = dir.join(STATE);
    let bytes = std::fs::read(&s).map_err(io_err(&s))?;
    let state: TrainerState =
        serde_json::from_slice(&bytes).map_err(|e| ck_err(&s, format!("unreadable state ({e})")))?;
    if state.format_version != CHECKPOINT_VERSION {
        return Err(ck_err(
            &s,
            format!("format version {} (this build reads {CHECKPOINT_VERSION})", state.format_version),
        ));
    }
    let load = |name: &str| -> Result<HashMap<String, Tensor>> {
        let p = dir.join(name);
        candle_core::safetensors::load(&p, &Device::Cpu).map_err(|e| ck_err(&p, format!("unreadable tensors ({e})")))
    };
    let adapter = load(ADAPTER_FILE)?;
    let optimizer = load(OPTIMIZER)?;
    let reference = if dir.join(REFERENCE).is_file() {
        let m = load(REFERENCE)?;
        let t = m.get("reference_logps").ok_or_else(|| ck_err(&dir.join(REFERENCE), "no `reference_logps` tensor"))?;
        let v = t.to_vec2::<f32>().map_err(|e| ck_err(&dir.join(REFERENCE), e.to_string()))?;
        Some(v.into_iter().map(|r| [r.first().copied().unwrap_or(0.0), r.get(1).copied().unwrap_or(0.0)]).collect())
    } else {
        None
    };
    Ok(Checkpoint { dir: dir.to_path_buf(), state, adapter, optimizer, reference })
}

/// Loads the newest readable checkpoint of `output_dir` (the highest step
/// whose files load; the rename of its directory is the commit point, the
/// `latest` file is informational), or `None` when there is none.
pub fn load_latest(output_dir: &Path) -> Result<Option<Checkpoint>> {
    let root = output_dir.join(CHECKPOINT_DIR);
    let mut last_err = None;
    for (_, d) in step_dirs(&root).into_iter().rev() {
        match load_dir(&d) {
            Ok(c) => return Ok(Some(c)),
            Err(e) => {
                tracing::warn!("skipping unreadable checkpoint {}: {e}", d.display());
                last_err = Some(e);
            }
        }
    }
    match last_err {
        Some(e) => Err(e),
        None => Ok(None),
    }
}

impl Checkpoint {
    /// Loads the adapter weights and optimizer moments into `adapters` and `optim`.
    pub fn restore(&self, adapters: &LoraAdapters, optim: &mut AdamW) -> Result<()> {
        adapters.load_tensor_map(&self.adapter, &self.dir.join(ADAPTER_FILE))?;
        let p = self.dir.join(OPTIMIZER);
        let vars = adapters.named_vars();
        let mut m = Vec::with_capacity(vars.len());
        let mut v = Vec::with_capacity(vars.len());
        for (n, var) in &vars {
            for (prefix, dst) in [("m", &mut m), ("v", &mut v)] {
                let t = self.optimizer.get(&format!("{prefix}.{n}")).ok_or_else(|| {
                    ck_err(&p, format!("`{prefix}.{n}` is missing: the checkpoint was written for other LoRA settings"))
                })?;
                if t.elem_count() != var.elem_count() {
                    return Err(ck_err(&p, format!("`{prefix}.{n}` has the wrong size")));
                }
                dst.push(t.flatten_all()?.to_vec1::<f32>()?);
            }
        }
        *optim = AdamW { step: self.state.adam_step, m, v };
        Ok(())
    }
}
