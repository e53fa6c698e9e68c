//! Training-data collection for techniques whose plugins export a training
//! extension (`rewriter-trainer`, `prompt-policy-trainer`): the host runs
//! the models (answers, judges, scoring) and the plugin makes the
//! technique's decisions.
//!
//! - [`rewriter_pairs`]: the Question Rewriter's DPO pairs (arXiv
//!   2408.10573) on a K-QA-style dataset, judged with [`kqa`]'s criteria.
//! - [`qpo_records`]: QPO's reward-labelled offline records (arXiv
//!   2408.10504), the policy's SFT data made from them and the log of every
//!   outcome.
//! - [`oirl_reward_model`]: Prompt-OIRL's reward model (arXiv 2309.06553),
//!   fitted by the plugin on a log of outcomes and stored as a file.
//!
//! `techne collect rewriter-pairs|qpo-records|oirl-reward-model CONFIG.toml`
//! (see `cli/collect.rs`) runs one collection from a run configuration's
//! `[collect]` table; the `rewriter-dpo` and `qpo` loops call the same
//! functions once per round.

pub mod kqa;
pub mod oirl_reward_model;
pub mod qpo_records;
pub mod rewriter_pairs;

use std::path::{Path, PathBuf};

use crate::backends::BackendError;
use crate::sandbox::{CallError, LoadError};

/// Why a collection failed.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// A file could not be read or written.
    #[error("cannot access `{path}`: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A dataset line is malformed.
    #[error("dataset `{path}`, line {line}: {message}")]
    Dataset {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The configuration cannot drive this collection.
    #[error("{0}")]
    Config(String),
    /// The plugin could not be loaded.
    #[error("plugin `{plugin}`: {source}")]
    Load {
        /// Its name in the configuration.
        plugin: String,
        /// Why.
        source: Box<LoadError>,
    },
    /// A call into the plugin failed.
    #[error("plugin `{plugin}` on item {item}: {source}")]
    Plugin {
        /// Its name in the configuration.
        plugin: String,
        /// The work item.
        item: String,
        /// Why.
        source: Box<CallError>,
    },
    /// A model call of the host failed.
    #[error("model `{model}`: {source}")]
    Model {
        /// The model's configured name.
        model: String,
        /// Why.
        source: BackendError,
    },
    /// The run's models or engine could not be set up.
    #[error(transparent)]
    Run(#[from] Box<crate::runs::RunError>),
}

/// `[collect]`: what `techne collect` runs, and the collection settings the
/// `rewriter-dpo` and `qpo` loops embed.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CollectSettings {
    /// The plugin (a `[plugins.NAME]`) that exports the training extension.
    pub plugin: String,
    /// The model that answers the questions (Question Rewriter) or that the
    /// prompts are evaluated on (QPO's target model).
    pub answer_model: String,
    /// Token budget of each answer.
    #[serde(default = "default_answer_tokens")]
    pub answer_max_tokens: u32,
    /// rewriter-pairs: the judge of K-QA's criteria.
    pub judge_model: Option<String>,
    /// rewriter-pairs: token budget of one verdict.
    #[serde(default = "default_judge_tokens")]
    pub judge_max_tokens: u32,
    /// rewriter-pairs: `generate` (the judge writes its verdict, K-QA's
    /// way) or `likelihood` (the more likely verdict sentence).
    #[serde(default)]
    pub judge_mode: kqa::JudgeMode,
    /// qpo-records: the task's metric (a reference metric, e.g. `numeric`);
    /// an answer is correct when it scores 1.
    pub metric: Option<crate::eval::Metric>,
    /// qpo-records: prompts sampled per query (S).
    #[serde(default = "default_seeds")]
    pub seeds: u32,
    /// qpo-records: the return-to-go the policy is conditioned on.
    #[serde(default = "default_target_reward")]
    pub target_reward: f64,
    /// Where the collected data goes (default: the run's output directory).
    pub output: Option<PathBuf>,
}

fn default_answer_tokens() -> u32 {
    256
}
fn default_judge_tokens() -> u32 {
    128
}
fn default_seeds() -> u32 {
    4
}
fn default_target_reward() -> f64 {
    20.0
}

/// Writes `rows` as JSONL to `path` atomically (a temporary file renamed
/// over it), creating the directory.
pub fn write_jsonl<T: serde::Serialize>(path: &Path, rows: &[T]) -> Result<(), CollectError> {
    let io = |source| CollectError::Io { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut text = String::new();
    for row in rows {
        let line = serde_json::to_string(row).map_err(|e| io(std::io::Error::other(e)))?;
        text.push_str(&line);
        text.push('\n');
    }
    let temporary = path.with_extension("jsonl.partial");
    std::fs::write(&temporary, text).map_err(io)?;
    std::fs::rename(&temporary, path).map_err(io)
}

/// Reads JSONL rows of `T` from `path` (blank lines skipped).
pub fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>, CollectError> {
    let text = std::fs::read_to_string(path).map_err(|source| CollectError::Io { path: path.to_path_buf(), source })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| CollectError::Dataset {
                path: path.to_path_buf(),
                line: i + 1,
                message: format!("{e}; each line must be one JSON record as this command writes it"),
            })
        })
        .collect()
}

/// Loads the plugin `name` of `config`, checking it exports `extension`.
pub(crate) async fn load_trainer(
    config: &crate::config::RunConfig,
    name: &str,
    extension: crate::sandbox::plugin::TrainerExtension,
    models: &crate::backends::ModelSet,
) -> Result<crate::sandbox::Plugin, CollectError> {
    let spec = crate::runs::plugin_specs(config).into_iter().find(|s| s.name == name).ok_or_else(|| {
        CollectError::Config(format!("[collect] plugin = \"{name}\" is not defined: add a [plugins.{name}] table"))
    })?;
    let engine = crate::sandbox::SandboxEngine::new(crate::runs::engine_options(config))
        .map_err(|e| Box::new(crate::runs::RunError::from(e)))?;
    let plugin = engine
        .load(&spec, models)
        .await
        .map_err(|source| CollectError::Load { plugin: name.to_owned(), source: Box::new(source) })?;
    if plugin.trainer() != Some(extension) {
        return Err(CollectError::Config(format!(
            "plugin `{name}` ({}) does not export `{extension}`: use a plugin built with the SDK's \
             export_{}! macro (e.g. question-rewriter, qpo-policy)",
            plugin.role(),
            extension.interface().replace('-', "_")
        )));
    }
    Ok(plugin)
}

/// Checks that `model` is configured.
pub(crate) fn require_model(config: &crate::config::RunConfig, key: &str, model: &str) -> Result<(), CollectError> {
    if config.models.contains_key(model) {
        Ok(())
    } else {
        Err(CollectError::Config(format!("[collect] {key} = \"{model}\" is not defined: add a [models.{model}] table")))
    }
}
