//! The run directory: `results.jsonl` (one line per item, in dataset
//! order), `summary.json`, and `config.toml` (the configuration as given).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::RunConfig;
use crate::sandbox::component_cache::write_atomically;
use crate::sandbox::{CallError, Plugin, TraceStep};

use super::RunError;
use super::dataset::Item;

/// Why an item failed: the stage, a stable kind and the message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ItemFailure {
    /// `rewriter`, `policy`, `solver` or `answer`.
    pub stage: String,
    /// A stable failure kind (`timeout`, `memory-limit`, `panic`, …).
    pub kind: String,
    /// The full message.
    pub message: String,
}

impl ItemFailure {
    /// A failure of a plugin stage.
    pub fn plugin(stage: &str, plugin: &str, error: &CallError) -> Self {
        Self { stage: stage.to_string(), kind: error.kind().to_string(), message: format!("plugin `{plugin}` {error}") }
    }
}

/// What happened to one item.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ItemResult {
    /// The item's id.
    pub id: String,
    /// The original question.
    pub input: String,
    /// The reference answer, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The rewriter's question.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewritten: Option<String>,
    /// The policy's prompt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// The answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// The solver's trace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trace: Vec<TraceStep>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<ItemFailure>,
    /// Wall time of the item, in milliseconds.
    pub elapsed_ms: u64,
}

impl ItemResult {
    pub(crate) fn new(item: &Item) -> Self {
        Self {
            id: item.id.clone(),
            input: item.input.clone(),
            reference: item.reference.clone(),
            rewritten: None,
            prompt: None,
            answer: None,
            trace: Vec::new(),
            failure: None,
            elapsed_ms: 0,
        }
    }

    pub(crate) fn finished(mut self, started: Instant) -> Self {
        self.elapsed_ms = started.elapsed().as_millis() as u64;
        self
    }

    pub(crate) fn failed(mut self, failure: ItemFailure, started: Instant) -> Self {
        self.failure = Some(failure);
        self.finished(started)
    }
}

/// A plugin as recorded in the summary.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PluginRecord {
    /// Its role.
    pub role: String,
    /// Its file's sha256.
    pub sha256: String,
    /// Its self-declared name and version.
    pub version: String,
    /// Resolved parameters.
    pub parameters: BTreeMap<String, String>,
}

/// `summary.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunSummary {
    /// The run's name.
    pub name: String,
    /// The run seed.
    pub seed: u64,
    /// Items processed.
    pub items: usize,
    /// Items that produced an answer.
    pub succeeded: usize,
    /// Items that failed.
    pub failed: usize,
    /// Failed items by failure kind.
    pub failures_by_kind: BTreeMap<String, usize>,
    /// The plugins by configured name.
    pub plugins: BTreeMap<String, PluginRecord>,
    /// Wall time of the run, in seconds.
    pub elapsed_s: f64,
}

impl RunSummary {
    pub(crate) fn new(
        config: &RunConfig,
        plugins: &BTreeMap<String, Arc<Plugin>>,
        results: &[ItemResult],
        elapsed: Duration,
    ) -> Self {
        let mut failures_by_kind = BTreeMap::new();
        for failure in results.iter().filter_map(|r| r.failure.as_ref()) {
            *failures_by_kind.entry(failure.kind.clone()).or_insert(0) += 1;
        }
        let failed = results.iter().filter(|r| r.failure.is_some()).count();
        Self {
            name: config.run.name.clone().unwrap_or_default(),
            seed: config.run.seed,
            items: results.len(),
            succeeded: results.len() - failed,
            failed,
            failures_by_kind,
            plugins: plugins
                .iter()
                .map(|(name, p)| {
                    (
                        name.clone(),
                        PluginRecord {
                            role: p.role().to_string(),
                            sha256: p.sha256().to_string(),
                            version: format!("{} {}", p.metadata().name, p.metadata().version),
                            parameters: p.parameters().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                        },
                    )
                })
                .collect(),
            elapsed_s: elapsed.as_secs_f64(),
        }
    }
}

/// Write the run directory.
pub(crate) fn write_run_directory(
    config: &RunConfig,
    source_text: &str,
    results: &[ItemResult],
    summary: &RunSummary,
) -> Result<(), RunError> {
    let dir = config.run.output_dir.clone().unwrap_or_else(|| "runs/run".into());
    let io = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| RunError::Output { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let mut lines = String::new();
    for result in results {
        lines.push_str(&serde_json::to_string(result).unwrap_or_default());
        lines.push('\n');
    }
    let results_path = dir.join("results.jsonl");
    write_atomically(&results_path, lines.as_bytes()).map_err(io(&results_path))?;
    let summary_path = dir.join("summary.json");
    let summary_json = serde_json::to_string_pretty(summary).unwrap_or_default();
    write_atomically(&summary_path, summary_json.as_bytes()).map_err(io(&summary_path))?;
    let config_path = dir.join("config.toml");
    write_atomically(&config_path, source_text.as_bytes()).map_err(io(&config_path))
}
