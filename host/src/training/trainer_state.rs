//! The curves of an external job: Hugging Face `Trainer`'s (and so TRL's)
//! `trainer_state.json`, which it saves in the output directory
//! (`trainer.save_state()`) and in every `checkpoint-N/` folder. Its
//! `log_history` becomes the run report's steps, so an external run gets the
//! same loss, learning-rate, held-out and DPO reward curves as a native one.
//!
//! Read: `loss`, `learning_rate`, `grad_norm` of the training log entries;
//! `eval_loss` (and DPO's `eval_rewards/accuracies`) of the evaluation
//! entries, joined to the training entry of the same `step`; DPO's
//! `rewards/chosen`, `rewards/rejected`, `rewards/accuracies`,
//! `rewards/margins`. The job logs every `logging_steps`, so the report's
//! steps are the logged ones. Token counts and timings are not in the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use techne_training::trainer::{DpoStats, StepRecord};

/// The file's name.
pub const FILE: &str = "trainer_state.json";

/// What a `trainer_state.json` holds for the report.
#[derive(Debug, Clone, PartialEq)]
pub struct JobCurves {
    /// The file read.
    pub path: PathBuf,
    /// `global_step`: the job's last optimizer step.
    pub global_step: usize,
    /// One record per logged step, in step order.
    pub steps: Vec<StepRecord>,
}

/// Why a `trainer_state.json` could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct TrainerStateError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong.
    pub message: String,
}

/// The most advanced `trainer_state.json` under `dir` (itself and up to two
/// levels of folders, e.g. `weights/checkpoint-40/`): the one with the
/// highest `global_step`. `None` when there is none.
pub fn find(dir: &Path) -> Option<PathBuf> {
    let mut found = Vec::new();
    collect(dir, 0, &mut found);
    found.into_iter().max_by_key(|path| (global_step(path).unwrap_or(0), path.clone()))
}

fn collect(dir: &Path, depth: usize, found: &mut Vec<PathBuf>) {
    let candidate = dir.join(FILE);
    if candidate.is_file() {
        found.push(candidate);
    }
    if depth >= 2 {
        return;
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.filter_map(Result::ok) {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                collect(&entry.path(), depth + 1, found);
            }
        }
    }
}

fn global_step(path: &Path) -> Option<u64> {
    let value: Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    value.get("global_step")?.as_u64()
}

/// Read `path`'s log history into step records.
pub fn read(path: &Path) -> Result<JobCurves, TrainerStateError> {
    let fail = |message: String| TrainerStateError { path: path.to_path_buf(), message };
    let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| fail(format!("not JSON: {e}")))?;
    let history = value
        .get("log_history")
        .and_then(Value::as_array)
        .ok_or_else(|| fail("no `log_history` list: not a Hugging Face Trainer state".into()))?;
    let number = |entry: &Value, key: &str| entry.get(key).and_then(Value::as_f64);
    let mut steps: BTreeMap<usize, StepRecord> = BTreeMap::new();
    let mut evals: BTreeMap<usize, (Option<f64>, Option<f64>)> = BTreeMap::new();
    for entry in history {
        let Some(step) = entry.get("step").and_then(Value::as_u64).map(|s| s as usize) else {
            continue;
        };
        if let Some(loss) = number(entry, "loss") {
            let dpo = match (
                number(entry, "rewards/chosen"),
                number(entry, "rewards/rejected"),
                number(entry, "rewards/accuracies"),
            ) {
                (Some(chosen), Some(rejected), Some(accuracy)) => Some(DpoStats {
                    reward_chosen: chosen,
                    reward_rejected: rejected,
                    accuracy,
                    margin: number(entry, "rewards/margins").unwrap_or(chosen - rejected),
                }),
                _ => None,
            };
            steps.insert(
                step,
                StepRecord {
                    step,
                    loss,
                    lr: number(entry, "learning_rate").unwrap_or(0.0),
                    grad_norm: number(entry, "grad_norm").unwrap_or(0.0),
                    tokens: 0,
                    target_tokens: 0,
                    seconds: 0.0,
                    tokens_per_second: 0.0,
                    dpo,
                    eval_loss: None,
                    eval_accuracy: None,
                },
            );
        } else if let Some(eval_loss) = number(entry, "eval_loss") {
            evals.insert(step, (Some(eval_loss), number(entry, "eval_rewards/accuracies")));
        }
    }
    for (step, (eval_loss, eval_accuracy)) in evals {
        // An evaluation logged at a step with no training entry (e.g. at the
        // end, when logging_steps does not divide it) is attached to the
        // last training entry before it.
        if let Some((_, record)) = steps.range_mut(..=step).next_back() {
            record.eval_loss = eval_loss;
            record.eval_accuracy = eval_accuracy;
        }
    }
    if steps.is_empty() {
        return Err(fail("`log_history` has no training entry with a `loss`".into()));
    }
    let last = steps.keys().next_back().copied().unwrap_or(0);
    let global_step = value.get("global_step").and_then(Value::as_u64).map(|s| s as usize).unwrap_or(last);
    Ok(JobCurves { path: path.to_path_buf(), global_step, steps: steps.into_values().collect() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape TRL's SFTTrainer / DPOTrainer leave (trimmed to the keys read, plus some they ignore).
    const DPO_STATE: &str = r#"{
      "best_metric": null, "epoch": 1.0, "eval_steps": 2, "global_step": 4, "is_world_process_zero": true,
      "log_history": [
        {"epoch": 0.25, "grad_norm": 3.5, "learning_rate": 5e-05, "logits/chosen": -1.2, "loss": 0.6931,
         "rewards/accuracies": 0.0, "rewards/chosen": 0.0, "rewards/margins": 0.0, "rewards/rejected": 0.0, "step": 1},
        {"epoch": 0.5, "grad_norm": 2.0, "learning_rate": 4e-05, "loss": 0.61,
         "rewards/accuracies": 0.75, "rewards/chosen": 0.05, "rewards/margins": 0.12, "rewards/rejected": -0.07, "step": 2},
        {"epoch": 0.5, "eval_loss": 0.65, "eval_rewards/accuracies": 0.5, "eval_runtime": 1.5, "step": 2},
        {"epoch": 0.75, "grad_norm": 1.5, "learning_rate": 2e-05, "loss": 0.52,
         "rewards/accuracies": 1.0, "rewards/chosen": 0.1, "rewards/margins": 0.3, "rewards/rejected": -0.2, "step": 3},
        {"epoch": 1.0, "eval_loss": 0.58, "eval_rewards/accuracies": 1.0, "step": 4},
        {"epoch": 1.0, "step": 4, "total_flos": 0.0, "train_loss": 0.6, "train_runtime": 12.0}
      ],
      "logging_steps": 1, "max_steps": 4
    }"#;

    #[test]
    fn a_dpo_state_gives_losses_rewards_and_held_out_points() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        std::fs::write(&path, DPO_STATE).unwrap();
        let curves = read(&path).unwrap();
        assert_eq!(curves.global_step, 4);
        assert_eq!(curves.steps.iter().map(|s| s.step).collect::<Vec<_>>(), vec![1, 2, 3]);
        // The JSON holds ln 2 to four places, as trainers log a first DPO loss.
        #[allow(clippy::approx_constant)]
        let first_loss = 0.6931;
        assert_eq!(curves.steps[0].loss, first_loss);
        assert_eq!(curves.steps[1].lr, 4e-05);
        assert_eq!(curves.steps[1].grad_norm, 2.0);
        let dpo = curves.steps[2].dpo.as_ref().unwrap();
        assert_eq!((dpo.accuracy, dpo.margin, dpo.reward_rejected), (1.0, 0.3, -0.2));
        // The step-2 evaluation joins step 2; the final one (step 4, no
        // training entry) joins the last logged step.
        assert_eq!((curves.steps[1].eval_loss, curves.steps[1].eval_accuracy), (Some(0.65), Some(0.5)));
        assert_eq!(curves.steps[2].eval_loss, Some(0.58));
        assert_eq!(curves.steps[0].eval_loss, None);
    }

    #[test]
    fn the_most_advanced_checkpoint_is_found_and_bad_files_say_why() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(find(dir.path()), None);
        let state = |step: u64| {
            format!(
                r#"{{"global_step": {step}, "log_history": [{{"loss": 1.5, "learning_rate": 0.001, "step": {step}}}]}}"#
            )
        };
        for step in [2u64, 10, 4] {
            let ckpt = dir.path().join(format!("checkpoint-{step}"));
            std::fs::create_dir_all(&ckpt).unwrap();
            std::fs::write(ckpt.join(FILE), state(step)).unwrap();
        }
        let best = find(dir.path()).unwrap();
        assert!(best.ends_with("checkpoint-10/trainer_state.json"), "{}", best.display());
        let sft = read(&best).unwrap();
        assert_eq!((sft.global_step, sft.steps.len(), sft.steps[0].dpo.is_none()), (10, 1, true));

        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, r#"{"global_step": 3}"#).unwrap();
        assert!(read(&bad).unwrap_err().to_string().contains("no `log_history`"));
        std::fs::write(&bad, r#"{"log_history": [{"eval_loss": 1.0, "step": 1}]}"#).unwrap();
        assert!(read(&bad).unwrap_err().to_string().contains("no training entry"));
    }
}
