//! Runs: load a configuration's models and plugins, push every work item
//! through the pipeline concurrently, and write the run directory.
//!
//! - [`dataset`]: work items from files or inline inputs.
//! - [`pipeline`]: one item through rewriter → policy → solver or answer model.
//! - [`output`]: `results.jsonl`, `summary.json` and the resolved configuration.

pub mod control;
pub mod dataset;
pub mod journal;
pub mod output;
pub mod pipeline;
pub mod report_html;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::backends::ModelSet;
use crate::config::RunConfig;
use crate::sandbox::{EngineOptions, LoadError, Plugin, PluginSpec, SandboxEngine};

pub use control::{StopReason, StopSignal};
pub use dataset::{DatasetError, Item};
pub use output::{ItemFailure, ItemResult, RunSummary};
pub use pipeline::{Pipeline, RunControl, WorkUnit};

use crate::backends::cache::{CacheMode, CallCache};
use journal::Journal;

/// Why a run could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The sandbox engine could not be created.
    #[error(transparent)]
    Engine(#[from] crate::sandbox::engine::EngineError),
    /// A plugin could not be loaded.
    #[error("plugin `{plugin}`: {source}")]
    Plugin {
        /// Its name in the configuration.
        plugin: String,
        /// Why.
        source: LoadError,
    },
    /// A plugin's role does not fit its pipeline stage.
    #[error(
        "pipeline.{stage} names plugin `{plugin}`, which is a {actual} plugin; the {stage} stage needs a {expected} plugin"
    )]
    WrongRole {
        /// The stage.
        stage: &'static str,
        /// The plugin.
        plugin: String,
        /// Its role.
        actual: crate::sandbox::Role,
        /// The role the stage needs.
        expected: crate::sandbox::Role,
    },
    /// A model could not be opened.
    #[error("model `{model}`: {message}")]
    Model {
        /// Its name in the configuration.
        model: String,
        /// Why, and how to fix it.
        message: String,
    },
    /// The dataset could not be read.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// The output directory already holds a run.
    #[error(
        "`{dir}` already holds a run: continue it with `techne run --resume {dir}`, \
         start over with --overwrite, or choose another --output-dir"
    )]
    AlreadyExists {
        /// The run directory.
        dir: PathBuf,
    },
    /// `--resume` names a directory that holds no run.
    #[error("`{dir}` holds no run to resume (no run.json): start it with `techne run CONFIG`")]
    NothingToResume {
        /// The directory.
        dir: PathBuf,
    },
    /// The configuration or a plugin changed since the run started.
    #[error(
        "the run in `{dir}` was started with another configuration or other plugins ({what}); \
         resuming would mix results: use --force to resume anyway, or start a new run"
    )]
    ConfigChanged {
        /// The run directory.
        dir: PathBuf,
        /// What changed.
        what: String,
    },
    /// The run directory could not be written.
    #[error("cannot write the run directory `{path}`: {source}")]
    Output {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Map an I/O error on `path` in the run directory to [`RunError::Output`].
pub(crate) fn output_error(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> RunError + use<> {
    let path = path.to_path_buf();
    move |source| RunError::Output { path, source }
}

/// Build the backends of every configured model.
pub fn build_models(config: &RunConfig) -> Result<ModelSet, RunError> {
    let mut models = ModelSet::new();
    for (name, model) in &config.models {
        let backend = model
            .build_backend(&config.base_dir)
            .map_err(|e| RunError::Model { model: name.clone(), message: e.to_string() })?;
        models.insert(name.clone(), backend);
    }
    for (name, price) in &config.run.prices {
        models.set_price(name.clone(), *price);
    }
    Ok(crate::backends::openai::with_fallbacks(config, models))
}

/// Engine options from a configuration.
pub fn engine_options(config: &RunConfig) -> EngineOptions {
    let defaults = EngineOptions::default();
    EngineOptions {
        cache_dir: if config.engine.no_cache { None } else { config.engine.cache_dir.clone().or(defaults.cache_dir) },
        pooling: config.engine.pooling,
        ..defaults
    }
}

/// The plugin specs of a configuration.
pub fn plugin_specs(config: &RunConfig) -> Vec<PluginSpec> {
    config
        .plugins
        .iter()
        .map(|(name, p)| PluginSpec {
            name: name.clone(),
            path: p.path.clone(),
            sha256: p.sha256.clone(),
            limits: p.limits.resolve(),
            allowed_models: p.allowed_models.clone(),
            default_model: p.default_model.clone(),
            params: p.params.iter().map(|(k, v)| (k.clone(), v.to_text())).collect(),
        })
        .collect()
}

/// Load every plugin of the configuration.
pub async fn load_plugins(
    engine: &SandboxEngine,
    config: &RunConfig,
    models: &ModelSet,
) -> Result<BTreeMap<String, Arc<Plugin>>, RunError> {
    let mut plugins = BTreeMap::new();
    for spec in plugin_specs(config) {
        let plugin = engine
            .load(&spec, models)
            .await
            .map_err(|source| RunError::Plugin { plugin: spec.name.clone(), source })?;
        plugins.insert(spec.name.clone(), Arc::new(plugin));
    }
    Ok(plugins)
}

/// The work items of a configuration: the dataset's after its first
/// `skip`, limited by `run.limit`.
pub fn load_work_items(config: &RunConfig) -> Result<Vec<Item>, RunError> {
    let mut items = match &config.dataset {
        Some(dataset) => {
            let mut items = dataset::load_items(dataset)?;
            items.drain(..dataset.skip.min(items.len()));
            items
        }
        None => dataset::inline_items(&config.inputs),
    };
    if let Some(limit) = config.run.limit {
        items.truncate(limit);
    }
    Ok(items)
}

/// Everything `techne config check` verifies, short of running items:
/// plugins load, roles fit their stages, the dataset reads.
pub async fn check(config: &RunConfig) -> Result<(Vec<Pipeline>, usize), RunError> {
    let engine = SandboxEngine::new(engine_options(config))?;
    let models = build_models(config)?;
    let plugins = load_plugins(&engine, config, &models).await?;
    let pipelines = assemble_techniques(config, &plugins, &models)?;
    let items = load_work_items(config)?;
    Ok((pipelines, items.len()))
}

/// Assemble every technique of the configuration.
pub fn assemble_techniques(
    config: &RunConfig,
    plugins: &BTreeMap<String, Arc<Plugin>>,
    models: &ModelSet,
) -> Result<Vec<Pipeline>, RunError> {
    config.technique_list().iter().map(|(name, p)| Pipeline::assemble(name, p, plugins, models)).collect()
}

/// The metrics a run scores with: the evaluation's primary and extra metrics.
pub fn run_metrics(config: &RunConfig) -> Vec<crate::eval::RunMetric> {
    let mut metrics = Vec::new();
    if let Some(evaluation) = &config.evaluation {
        metrics.push(evaluation.metric);
        for m in &evaluation.extra_metrics {
            if !metrics.contains(m) {
                metrics.push(*m);
            }
        }
    }
    metrics
}

/// How the model-call cache is used by a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheChoice {
    /// Read and write the cache (the default).
    #[default]
    ReadWrite,
    /// Bypass it (`--no-cache`).
    Off,
    /// Only replay it; never call a model (`--cache-only`).
    ReplayOnly,
}

/// How to run a configuration.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Continue the run in the output directory.
    pub resume: bool,
    /// Resume even when the configuration or a plugin changed.
    pub force: bool,
    /// Start over in an output directory that holds a run.
    pub overwrite: bool,
    /// Cache use.
    pub cache: CacheChoice,
    /// The model-call cache directory (default: [`CallCache::default_dir`]).
    pub cache_dir: Option<PathBuf>,
    /// Show a progress bar (only on a terminal).
    pub progress: bool,
    /// Stop signal and budget.
    pub control: RunControl,
}

/// `run.json`: what identifies a run directory's run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunManifest {
    /// Format version of this file.
    pub format: u32,
    /// The techne version that started the run.
    pub techne_version: String,
    /// The configuration file (absolute path) relative paths resolve against.
    pub config_path: PathBuf,
    /// sha256 of the configuration text and the overrides that change results.
    pub config_sha256: String,
    /// sha256 of each plugin file, by configured name.
    pub plugins: BTreeMap<String, String>,
}

/// The hash that identifies a configuration's results: its text, the
/// overrides that change results, and the contents of every
/// `[plugins.NAME.param-files]` file (a refitted model changes the results
/// though the configuration's text does not).
pub fn config_fingerprint(config: &RunConfig, source_text: &str) -> String {
    use sha2::Digest;
    let mut text = format!("{source_text}\n#seed={}\n#limit={:?}\n", config.run.seed, config.run.limit);
    for (plugin_name, plugin) in &config.plugins {
        for name in plugin.param_files.keys() {
            let contents = plugin.params.get(name).map(|v| v.to_text()).unwrap_or_default();
            let digest = hex::encode(sha2::Sha256::digest(contents.as_bytes()));
            text.push_str(&format!("#param-file {plugin_name}.{name}={digest}\n"));
        }
    }
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// Run a configuration and write its run directory.
pub async fn run(
    config: &RunConfig,
    source_text: &str,
    config_path: &std::path::Path,
    options: RunOptions,
) -> Result<RunSummary, RunError> {
    let engine = SandboxEngine::new(engine_options(config))?;
    let mut models = build_models(config)?;
    let cache_dir = options.cache_dir.clone().or_else(CallCache::default_dir);
    let cache = match (options.cache, cache_dir) {
        (CacheChoice::Off, _) | (_, None) => None,
        (CacheChoice::ReadWrite, Some(dir)) => Some(Arc::new(CallCache::new(dir, CacheMode::ReadWrite))),
        (CacheChoice::ReplayOnly, Some(dir)) => Some(Arc::new(CallCache::new(dir, CacheMode::ReplayOnly))),
    };
    models.set_cache(cache);
    run_with(&engine, config, models, source_text, config_path, options).await
}

/// [`run`] on a given engine and models (the library entry point for tests
/// and embedders that bring their own backends).
pub async fn run_with(
    engine: &SandboxEngine,
    config: &RunConfig,
    models: ModelSet,
    source_text: &str,
    config_path: &std::path::Path,
    options: RunOptions,
) -> Result<RunSummary, RunError> {
    let started = std::time::Instant::now();
    let dir = config.run.output_dir.clone().unwrap_or_else(|| PathBuf::from("runs").join("run"));
    let io = output_error;
    let manifest_path = dir.join("run.json");
    let journal_path = dir.join("journal.jsonl");
    let plugins = load_plugins(engine, config, &models).await?;
    let manifest = RunManifest {
        format: 1,
        techne_version: env!("CARGO_PKG_VERSION").to_string(),
        config_path: std::path::absolute(config_path).unwrap_or_else(|_| config_path.to_path_buf()),
        config_sha256: config_fingerprint(config, source_text),
        plugins: plugins.iter().map(|(name, p)| (name.clone(), p.sha256().to_string())).collect(),
    };
    if options.resume {
        let text =
            std::fs::read_to_string(&manifest_path).map_err(|_| RunError::NothingToResume { dir: dir.clone() })?;
        let previous: RunManifest =
            serde_json::from_str(&text).map_err(|_| RunError::NothingToResume { dir: dir.clone() })?;
        let mut changed = Vec::new();
        if previous.config_sha256 != manifest.config_sha256 {
            changed.push("the configuration".to_string());
        }
        for (name, sha) in &manifest.plugins {
            if previous.plugins.get(name) != Some(sha) {
                changed.push(format!("plugin `{name}`"));
            }
        }
        if !changed.is_empty() && !options.force {
            return Err(RunError::ConfigChanged { dir: dir.clone(), what: changed.join(", ") });
        }
    } else if journal_path.exists() || manifest_path.exists() {
        if !options.overwrite {
            return Err(RunError::AlreadyExists { dir: dir.clone() });
        }
        for name in ["journal.jsonl", "results.jsonl", "summary.json", "report.md", "report.html", "run.json"] {
            let path = dir.join(name);
            if path.exists() {
                std::fs::remove_file(&path).map_err(io(&path))?;
            }
        }
    }
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let manifest_json = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
    crate::sandbox::component_cache::write_atomically(&manifest_path, &manifest_json).map_err(io(&manifest_path))?;
    let config_copy = dir.join("config.toml");
    crate::sandbox::component_cache::write_atomically(&config_copy, source_text.as_bytes())
        .map_err(io(&config_copy))?;

    let (journal, done) = Journal::open(&journal_path).map_err(io(&journal_path))?;
    let journal = Arc::new(journal);
    let pipelines: Vec<Arc<Pipeline>> =
        assemble_techniques(config, &plugins, &models)?.into_iter().map(Arc::new).collect();
    let items = load_work_items(config)?;
    let mut units = Vec::new();
    let mut order = 0;
    for pipeline in &pipelines {
        for item in &items {
            units.push(WorkUnit { order, pipeline: pipeline.clone(), item: item.clone() });
            order += 1;
        }
    }
    let total_units = units.len();
    let unit_key = |u: &WorkUnit| output::work_key(u.pipeline.name(), &u.item.id);
    let resumed_items = units.iter().filter(|u| done.contains_key(&unit_key(u))).count();
    let keys_in_order: Vec<String> = units.iter().map(unit_key).collect();
    let pending: Vec<WorkUnit> = units.into_iter().filter(|u| !done.contains_key(&unit_key(u))).collect();
    let progress =
        output::Progress::new(options.progress, total_units as u64, resumed_items as u64, models.meter().clone());
    let control = options.control.clone();
    let finished: Arc<dyn Fn(&ItemResult) + Send + Sync> = {
        let journal = journal.clone();
        let stop = control.stop.clone();
        let progress = progress.clone();
        Arc::new(move |result: &ItemResult| {
            if let Err(e) = journal.record(result) {
                tracing::error!("cannot append to the journal {}: {e}; stopping the run", journal.path().display());
                stop.stop(StopReason::Interrupted);
            }
            progress.item_done(result);
        })
    };
    let scoring = Arc::new(pipeline::Scoring::new(config, &models));
    let new_results = pipeline::run_units(
        pending,
        config.run.seed,
        config.run.concurrency,
        control.clone(),
        models.meter().clone(),
        scoring,
        finished,
    )
    .await;
    progress.finish();

    let mut by_key: BTreeMap<String, ItemResult> = done;
    for (_, result) in new_results {
        by_key.insert(result.key(), result);
    }
    let results: Vec<ItemResult> = keys_in_order.iter().filter_map(|key| by_key.remove(key)).collect();
    let stopped = if results.len() < total_units { control.stop.reason() } else { None };
    let summary = RunSummary::new(
        config,
        &plugins,
        &results,
        output::RunFacts {
            total_items: total_units,
            resumed_items,
            stopped,
            usage: models.meter().usage(),
            cache_hits: models.cache().map(|c| c.hits()).unwrap_or(0),
            cache_misses: models.cache().map(|c| c.misses()).unwrap_or(0),
            elapsed: started.elapsed(),
        },
    );
    output::write_run_directory(&dir, &results, &summary)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_covers_param_file_contents() {
        let dir = tempfile::tempdir().unwrap();
        let text = "inputs = [\"q\"]\n[models.m]\nbackend = \"local\"\n[pipeline]\nanswer-model = \"m\"\n\
                    [plugins.p]\npath = \"p.wasm\"\n[plugins.p.param-files]\nmodel = \"m.json\"\n";
        let path = dir.path().join("run.toml");
        let fingerprint = |model: &str| {
            std::fs::write(dir.path().join("m.json"), model).unwrap();
            let config = crate::config::resolve_run_config(&path, text, &Default::default()).unwrap();
            config_fingerprint(&config, text)
        };
        let first = fingerprint("{\"w\": 1}");
        assert_eq!(fingerprint("{\"w\": 1}"), first);
        assert_ne!(fingerprint("{\"w\": 2}"), first, "a refitted model is another configuration");
    }
}
