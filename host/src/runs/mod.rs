//! Runs: load a configuration's models and plugins, push every work item
//! through the pipeline concurrently, and write the run directory.
//!
//! - [`dataset`]: work items from files or inline inputs.
//! - [`pipeline`]: one item through rewriter → policy → solver or answer model.
//! - [`output`]: `results.jsonl`, `summary.json` and the resolved configuration.

pub mod dataset;
pub mod output;
pub mod pipeline;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::backends::ModelSet;
use crate::config::RunConfig;
use crate::sandbox::{EngineOptions, LoadError, Plugin, PluginSpec, SandboxEngine};

pub use dataset::{DatasetError, Item};
pub use output::{ItemFailure, ItemResult, RunSummary};
pub use pipeline::Pipeline;

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
    /// The run directory could not be written.
    #[error("cannot write the run directory `{path}`: {source}")]
    Output {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
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
    Ok(models)
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

/// The work items of a configuration, limited by `run.limit`.
pub fn load_work_items(config: &RunConfig) -> Result<Vec<Item>, RunError> {
    let mut items = match &config.dataset {
        Some(dataset) => dataset::load_items(dataset)?,
        None => dataset::inline_items(&config.inputs),
    };
    if let Some(limit) = config.run.limit {
        items.truncate(limit);
    }
    Ok(items)
}

/// Everything `techne config check` verifies, short of running items:
/// plugins load, roles fit their stages, the dataset reads.
pub async fn check(config: &RunConfig) -> Result<(Pipeline, usize), RunError> {
    let engine = SandboxEngine::new(engine_options(config))?;
    let models = build_models(config)?;
    let plugins = load_plugins(&engine, config, &models).await?;
    let pipeline = Pipeline::assemble(config, &plugins, &models)?;
    let items = load_work_items(config)?;
    Ok((pipeline, items.len()))
}

/// Run a configuration to the end and write its run directory.
/// `source_text` is the configuration file as read, kept in the run directory.
pub async fn run(config: &RunConfig, source_text: &str) -> Result<RunSummary, RunError> {
    let engine = SandboxEngine::new(engine_options(config))?;
    let models = build_models(config)?;
    run_with(&engine, config, models, source_text).await
}

/// [`run`] on a given engine and models (the library entry point for tests
/// and embedders that bring their own backends).
pub async fn run_with(
    engine: &SandboxEngine,
    config: &RunConfig,
    models: ModelSet,
    source_text: &str,
) -> Result<RunSummary, RunError> {
    let started = std::time::Instant::now();
    let plugins = load_plugins(engine, config, &models).await?;
    let pipeline = Arc::new(Pipeline::assemble(config, &plugins, &models)?);
    let items = load_work_items(config)?;
    let results = pipeline.run_items(items, config.run.seed, config.run.concurrency).await;
    let summary = RunSummary::new(config, &plugins, &results, started.elapsed());
    output::write_run_directory(config, source_text, &results, &summary)?;
    Ok(summary)
}
