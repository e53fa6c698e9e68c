//! Prompt-OIRL's reward model (Sun et al., arXiv 2309.06553), fitted
//! offline from logged outcomes of known prompts. The host reads the log,
//! labels every (query, prompt) outcome correct or not, hands the labelled
//! outcomes to the plugin's `fit-reward-model` (interface
//! `reward-model-trainer`), which computes its features and fits its model,
//! and stores the text the plugin returns (a JSON document) as a file. The
//! plugin reads that file back at inference as a parameter
//! (`[plugins.NAME.param-files] reward-model = "FILE"`).
//!
//! The log is JSONL with `query` and `prompt` strings on every line and the
//! outcome as either `correct` (`true`/`false` or `1`/`0`) or `reward` (a
//! number). Labels: `correct` when present — `techne collect qpo-records`
//! writes it to its `*.outcomes.jsonl` — otherwise `reward >=
//! correct-reward`. For records carrying QPO's reward, `10 · correct + 10 ·
//! accuracy − perplexity`, the default threshold 10 is never reached by an
//! incorrect answer (its reward is at most 10 − 1, perplexity being at least
//! 1), so every record labelled correct is correct; a correct answer whose
//! label perplexity exceeds 10 · accuracy is labelled incorrect, which is
//! why the outcome log (with `correct`) is the better input.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::backends::ModelSet;
use crate::config::RunConfig;
use crate::sandbox::plugin::{LabelledPrompt, REWARD_MODEL_TRAINER, TrainerExtension};
use crate::sandbox::{WorkItem, item_seed};

use super::{CollectError, CollectSettings};

/// Default `--correct-reward`: QPO's reward of a correct answer starts at 10.
pub const DEFAULT_CORRECT_REWARD: f64 = 10.0;

/// What was fitted and where it went.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OirlFitSummary {
    /// Logged outcomes fitted on.
    pub examples: usize,
    /// Of those, labelled correct.
    pub correct: usize,
    /// Distinct queries.
    pub queries: usize,
    /// Distinct prompts.
    pub prompts: usize,
    /// The plugin's training accuracy, when its model reports one
    /// (`training.fit.train_accuracy`).
    pub train_accuracy: Option<f64>,
    /// The model file.
    pub model_path: PathBuf,
}

/// The outcome log `techne collect qpo-records` writes for `config`.
pub fn default_outcomes_path(config: &RunConfig, settings: &CollectSettings) -> PathBuf {
    let records = settings
        .output
        .as_ref()
        .map(|p| if p.is_relative() { config.base_dir.join(p) } else { p.clone() })
        .unwrap_or_else(|| super::qpo_records::default_records_path(config));
    super::qpo_records::outcomes_path(&records)
}

/// Where the model goes when `--out` is not given.
pub fn default_model_path(config: &RunConfig) -> PathBuf {
    config.run.output_dir.clone().unwrap_or_else(|| config.base_dir.clone()).join("oirl-reward-model.json")
}

/// Reads a log of outcomes and labels each (see the module's documentation).
pub fn read_labelled(path: &Path, correct_reward: f64) -> Result<Vec<LabelledPrompt>, CollectError> {
    let text = std::fs::read_to_string(path).map_err(|source| CollectError::Io { path: path.to_path_buf(), source })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| CollectError::Dataset { path: path.to_path_buf(), line: i + 1, message };
        let row: Value = serde_json::from_str(line).map_err(|e| bad(format!("not JSON ({e})")))?;
        let field = |name: &str| match row.get(name).and_then(Value::as_str) {
            Some(s) if !s.trim().is_empty() => Ok(s.to_owned()),
            _ => Err(bad(format!("`{name}` must be a non-empty string"))),
        };
        let (query, prompt) = (field("query")?, field("prompt")?);
        let correct = match (row.get("correct"), row.get("reward")) {
            (Some(Value::Bool(b)), _) => *b,
            (Some(Value::Number(n)), _) if n.as_f64() == Some(1.0) => true,
            (Some(Value::Number(n)), _) if n.as_f64() == Some(0.0) => false,
            (Some(other), _) => return Err(bad(format!("`correct` must be true, false, 1 or 0, got {other}"))),
            (None, Some(reward)) => match reward.as_f64() {
                Some(r) if r.is_finite() => r >= correct_reward,
                _ => return Err(bad(format!("`reward` must be a number, got {reward}"))),
            },
            (None, None) => {
                return Err(bad(
                    "no outcome: each line needs `correct` (true/false or 1/0) or `reward` (a number)".into()
                ));
            }
        };
        out.push(LabelledPrompt { query, prompt, correct });
    }
    if out.is_empty() {
        return Err(CollectError::Config(format!(
            "`{}` holds no outcome: run `techne collect qpo-records` first (its *.outcomes.jsonl)",
            path.display()
        )));
    }
    Ok(out)
}

/// Fits the reward model of `settings.plugin` on the outcomes logged in
/// `log` and writes it to `model_path`.
pub async fn fit(
    config: &RunConfig,
    settings: &CollectSettings,
    models: &ModelSet,
    log: &Path,
    correct_reward: f64,
    model_path: PathBuf,
) -> Result<OirlFitSummary, CollectError> {
    let examples = read_labelled(log, correct_reward)?;
    let plugin = super::load_trainer(config, &settings.plugin, TrainerExtension::PromptPolicyTrainer, models).await?;
    if !plugin.fits_reward_model() {
        return Err(CollectError::Config(format!(
            "plugin `{}` does not export `{REWARD_MODEL_TRAINER}`: use qpo-policy, or rebuild the plugin with the \
             current SDK and implement PromptPolicyTrainer::fit_reward_model",
            settings.plugin
        )));
    }
    let work = WorkItem { id: "fit-reward-model".into(), seed: item_seed(config.run.seed, "fit-reward-model") };
    let plugin_error = |source| CollectError::Plugin {
        plugin: settings.plugin.clone(),
        item: "fit-reward-model".into(),
        source: Box::new(source),
    };
    let mut instance = plugin.instantiate(&work).await.map_err(plugin_error)?;
    let model = instance.fit_reward_model(&examples).await.map_err(plugin_error)?;
    let parsed: Value = serde_json::from_str(&model).map_err(|e| {
        CollectError::Config(format!(
            "plugin `{}` returned a reward model that is not JSON ({e}); this is a bug in the plugin",
            settings.plugin
        ))
    })?;
    let train_accuracy = parsed.pointer("/training/fit/train_accuracy").and_then(Value::as_f64);
    let io = |source| CollectError::Io { path: model_path.clone(), source };
    if let Some(dir) = model_path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let temporary = model_path.with_extension("json.partial");
    std::fs::write(&temporary, model.as_bytes()).map_err(io)?;
    std::fs::rename(&temporary, &model_path).map_err(io)?;
    let distinct =
        |key: fn(&LabelledPrompt) -> &str| examples.iter().map(key).collect::<std::collections::BTreeSet<_>>().len();
    Ok(OirlFitSummary {
        examples: examples.len(),
        correct: examples.iter().filter(|e| e.correct).count(),
        queries: distinct(|e| e.query.as_str()),
        prompts: distinct(|e| e.prompt.as_str()),
        train_accuracy,
        model_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_labelled_by_correct_or_reward() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        std::fs::write(
            &path,
            concat!(
                r#"{"query":"q1","prompt":"p","correct":true,"label_logprob_sum":-1.0}"#,
                "\n\n",
                r#"{"query":"q2","prompt":"p","correct":0}"#,
                "\n",
                r#"{"query":"q3","prompt":"p","reward":12.5}"#,
                "\n",
                r#"{"query":"q4","prompt":"p","reward":9.0}"#,
                "\n",
            ),
        )
        .unwrap();
        let labels: Vec<bool> = read_labelled(&path, 10.0).unwrap().iter().map(|e| e.correct).collect();
        assert_eq!(labels, [true, false, true, false]);
        let labels: Vec<bool> = read_labelled(&path, 5.0).unwrap().iter().map(|e| e.correct).collect();
        assert_eq!(labels, [true, false, true, true]);
    }

    #[test]
    fn malformed_lines_name_the_line_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let check = |text: &str, expected: &str| {
            std::fs::write(&path, text).unwrap();
            let err = read_labelled(&path, 10.0).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        };
        check("{\"query\":\"q\",\"prompt\":\"p\"}\n", "line 1: no outcome");
        check("{\"query\":\"q\",\"prompt\":\"p\",\"correct\":true}\n{\"prompt\":\"p\",\"correct\":true}\n", "line 2");
        check("{\"query\":\"q\",\"prompt\":\"p\",\"correct\":\"yes\"}\n", "true, false, 1 or 0");
        check("\n", "holds no outcome");
        check("not json\n", "not JSON");
    }
}
