//! Multi-round loops (`techne loop CONFIG.toml`): a strategy plugin decides
//! what to generate, keep and train; the host executes generation, scoring,
//! training and evaluation, and checkpoints the loop between steps.
//!
//! # Layout
//!
//! - [`config`]: the `[loop]` section (kind, rounds, strategy, trained model,
//!   `[loop.training]`, one settings table per kind).
//! - [`state`]: `loop.json` (rewritten atomically after every step) and
//!   `steps.jsonl` (append-only record of completed steps).
//! - [`self_evolution`], [`llamaduo`], [`qpo`], [`rewriter_dpo`]: the kinds.
//! - [`report`]: `report.md` and `report.html` of the loop directory.
//!
//! # The loop directory
//!
//! `run.output-dir` (default `runs/<name>` beside the configuration) holds
//! `loop.json`, `steps.jsonl`, `config.toml` (the configuration as started),
//! `report.md`, `report.html`, and one `round-NNN/` per round with that
//! round's generated data (JSONL), its training directory (`train/`:
//! checkpoints, merged GGUF, training report, lineage) and its evaluation
//! results. Round `N`'s trained model is registered as `<name>-rN` (with the
//! lineage techne-training records).
//!
//! # Resuming
//!
//! A round is a sequence of named steps. [`LoopContext::step_done`] tells a
//! kind whether a step already completed; [`LoopContext::complete_step`]
//! records it (in `loop.json`, atomically, and in `steps.jsonl`) with the
//! step's metrics. A loop killed at any point resumes (`--resume DIR`) at the
//! step it was in: completed steps are not redone, a killed training
//! resumes from its last checkpoint, steps that call the strategy per item
//! keep per-item JSONL progress, and model calls are answered by the
//! model-call cache. Resuming with a changed configuration or plugin is
//! refused unless `--force`.
//!
//! # Adding a kind
//!
//! 1. Add a variant to [`config::LoopKind`] (name, strategy role, default
//!    rounds) and, when it has settings, a `[loop.<kind>]` field to
//!    [`config::LoopConfig`] whose type lives in the kind's module, checked
//!    in [`config::validate`].
//! 2. Write the module with `pub(crate) async fn run_round(ctx: &mut
//!    LoopContext, round: u32) -> Result<RoundOutcome, LoopError>` (and,
//!    optionally, a `baseline` step before round 1): check
//!    [`LoopContext::step_done`] before each step, write the step's files
//!    under [`LoopContext::round_dir`], and end it with
//!    [`LoopContext::complete_step`]. Train with [`LoopContext::train`]
//!    (registers `<name>-r<round>` and sets it as the current model), call
//!    models through [`LoopContext::models`] (the trained model stands
//!    behind `[loop] model`), the strategy through [`LoopContext::strategy`],
//!    and record per-item plugin failures with [`LoopContext::record_failure`].
//! 3. Dispatch it in [`run_round`] below.

pub mod config;
pub mod llamaduo;
pub mod qpo;
pub mod report;
pub mod rewriter_dpo;
pub mod self_evolution;
pub mod state;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::backends::ModelSet;
use crate::backends::cache::{CacheMode, CallCache};
use crate::capabilities::PluginState;
use crate::config::{ModelConfig, RunConfig};
use crate::runs::{CacheChoice, RunError, StopSignal};
use crate::sandbox::{Plugin, PluginSpec, SandboxEngine, WorkItem};

pub use config::{LoopConfig, LoopKind, LoopTrainingConfig};
pub use state::{LoopState, RoundRecord, StepLine};

/// Why a loop could not start or go on.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    /// The configuration has no `[loop]` section.
    #[error("the configuration has no [loop] section: add one (kind, strategy, model), see the README's Loops section")]
    NotALoop,
    /// Models, plugins or the output directory (as for `techne run`).
    #[error(transparent)]
    Run(#[from] RunError),
    /// The loop directory already holds a loop.
    #[error(
        "`{dir}` already holds a loop: continue it with `techne loop --resume {dir}`, \
         or choose another run.output-dir"
    )]
    AlreadyExists {
        /// The loop directory.
        dir: PathBuf,
    },
    /// `--resume` names a directory without `loop.json`.
    #[error("`{dir}` holds no loop to resume (no loop.json): start it with `techne loop CONFIG`")]
    NothingToResume {
        /// The directory.
        dir: PathBuf,
    },
    /// The configuration or a plugin changed since the loop started.
    #[error(
        "the loop in `{dir}` was started with another configuration or other plugins ({what}); \
         resuming would mix rounds: use --force to resume anyway, or start a new loop"
    )]
    ConfigChanged {
        /// The loop directory.
        dir: PathBuf,
        /// What changed.
        what: String,
    },
    /// A data file of the loop cannot be used.
    #[error("{path}: {message}")]
    Data {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A strategy call that the whole step depends on failed.
    #[error("round {round}, step `{step}`: the strategy plugin failed: {message}")]
    Strategy {
        /// The round.
        round: u32,
        /// The step.
        step: String,
        /// The plugin's error.
        message: String,
    },
    /// A model call the host makes (generation for evaluation) failed.
    #[error("round {round}, step `{step}`: model `{model}` failed: {message}")]
    Model {
        /// The round.
        round: u32,
        /// The step.
        step: String,
        /// The model.
        model: String,
        /// The backend's error.
        message: String,
    },
    /// Training failed.
    #[error("round {round}: training failed: {source}")]
    Training {
        /// The round.
        round: u32,
        /// The trainer's error.
        source: crate::training::TrainingError,
    },
    /// A round produced no data to train on.
    #[error("round {round}: {message}")]
    NoData {
        /// The round.
        round: u32,
        /// Why, and what to change.
        message: String,
    },
    /// The loop was interrupted; it resumes at the step it was in.
    #[error("interrupted: continue with `techne loop --resume {dir}`")]
    Interrupted {
        /// The loop directory.
        dir: PathBuf,
    },
}

impl LoopError {
    /// An I/O error on `path` in the loop directory.
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LoopError + use<> {
        let path = path.to_path_buf();
        move |source| LoopError::Run(RunError::Output { path, source })
    }
}

/// What a round decided about the loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoundOutcome {
    /// Go on with the next round (if the round limit allows).
    Continue,
    /// The loop is done (e.g. the threshold was reached), with the reason.
    Finished(String),
}

/// How to run a loop.
#[derive(Debug, Clone, Default)]
pub struct LoopOptions {
    /// Continue the loop in the output directory.
    pub resume: bool,
    /// Resume even when the configuration or a plugin changed.
    pub force: bool,
    /// Model-call cache use.
    pub cache: CacheChoice,
    /// The model-call cache directory (default: [`CallCache::default_dir`]).
    pub cache_dir: Option<PathBuf>,
    /// Draw progress bars (terminal only).
    pub progress: bool,
    /// Set on SIGINT: the loop stops after the current item or training step.
    pub stop: Arc<StopSignal>,
}

/// What [`run_loop`] returns.
#[derive(Debug, Clone)]
pub struct LoopSummary {
    /// The loop directory.
    pub dir: PathBuf,
    /// The final state.
    pub state: LoopState,
    /// Steps this invocation ran (not counting those done before a resume).
    pub steps_run: usize,
    /// Seconds this invocation took.
    pub elapsed_s: f64,
}

/// Everything a kind needs while it runs a round. See the module docs.
pub struct LoopContext {
    /// The run configuration.
    pub config: RunConfig,
    /// Its `[loop]` section.
    pub section: LoopConfig,
    /// The loop directory.
    pub dir: PathBuf,
    /// The persistent state (write it with [`LoopContext::complete_step`]).
    pub state: LoopState,
    engine: SandboxEngine,
    cache: Option<Arc<CallCache>>,
    registry_dir: Option<PathBuf>,
    progress: bool,
    stop: Arc<StopSignal>,
    models: Option<(String, ModelSet)>,
    step_started: Instant,
    steps_run: usize,
    /// The strategy state restored from `loop.json` (empty on a fresh loop).
    restored_strategy_state: BTreeMap<String, Vec<u8>>,
    /// The strategy plugin's key/value state, shared by every load of the
    /// strategy in this process and saved into `loop.json` with each step.
    strategy_state: std::sync::OnceLock<Arc<PluginState>>,
}

impl LoopContext {
    /// The directory of `round` (created on demand).
    pub fn round_dir(&self, round: u32) -> Result<PathBuf, LoopError> {
        let dir = self.dir.join(format!("round-{round:03}"));
        std::fs::create_dir_all(&dir).map_err(LoopError::io(&dir))?;
        Ok(dir)
    }

    /// Whether `step` of `round` completed before. Also starts the step's clock.
    pub fn step_done(&mut self, round: u32, step: &str) -> bool {
        self.step_started = Instant::now();
        if round == 0 {
            return step == "baseline" && self.state.baseline_done;
        }
        self.state.step_done(round, step)
    }

    /// Record `step` of `round` as completed with its metrics, in
    /// `loop.json` (atomically) and `steps.jsonl`. Round 0 is the baseline.
    pub fn complete_step(&mut self, round: u32, step: &str, metrics: &[(&str, f64)]) -> Result<(), LoopError> {
        let seconds = self.step_started.elapsed().as_secs_f64();
        if round == 0 {
            self.state.baseline_done = true;
            for (k, v) in metrics {
                self.state.baseline.insert((*k).to_string(), *v);
            }
        } else {
            let record = self.state.round_mut(round);
            record.steps.push(step.to_string());
            record.seconds += seconds;
            for (k, v) in metrics {
                record.metrics.insert((*k).to_string(), *v);
            }
        }
        if let Some(strategy_state) = self.strategy_state.get() {
            self.state.set_strategy_entries(&strategy_state.snapshot());
        }
        self.state.write(&self.dir).map_err(LoopError::io(&self.dir.join(state::STATE_FILE)))?;
        state::append_step(&self.dir, &StepLine { round, step: step.to_string(), seconds })
            .map_err(LoopError::io(&self.dir.join(state::STEPS_FILE)))?;
        self.steps_run += 1;
        tracing::info!("round {round}: step `{step}` done in {seconds:.1} s");
        if self.progress {
            eprintln!("loop: round {round}: step `{step}` completed ({seconds:.1} s)");
        }
        Ok(())
    }

    /// Record that the strategy failed on one item of `step`; the loop goes on.
    pub fn record_failure(&mut self, round: u32, step: &str, item: &str, reason: &str) -> Result<(), LoopError> {
        let path = self.round_dir(round)?.join("failures.jsonl");
        let line = serde_json::json!({ "step": step, "item": item, "reason": reason });
        state::append_jsonl(&path, &line).map_err(LoopError::io(&path))?;
        self.state.round_mut(round).failures += 1;
        tracing::warn!("round {round}, {step}, item {item}: {reason}");
        Ok(())
    }

    /// Fail with [`LoopError::Interrupted`] once a stop was requested.
    pub fn check_stop(&self) -> Result<(), LoopError> {
        match self.stop.reason() {
            Some(_) => Err(LoopError::Interrupted { dir: self.dir.clone() }),
            None => Ok(()),
        }
    }

    /// The registry the trained models go to: the trained model's `registry`, else the default.
    pub fn registry_dir(&self) -> Option<&Path> {
        self.registry_dir.as_deref()
    }

    /// The name round `round`'s trained model is registered under.
    pub fn trained_name(&self, round: u32) -> String {
        format!("{}-r{round}", self.state.name)
    }

    /// The run's models, with the loop's current model behind `[loop] model`.
    /// Reused while the current model does not change.
    pub fn models(&mut self) -> Result<ModelSet, LoopError> {
        let current = self.state.current_model.clone();
        if let Some((name, models)) = &self.models
            && *name == current
        {
            return Ok(models.clone());
        }
        let mut models = ModelSet::new();
        for (name, model) in &self.config.models {
            let backend = match model {
                ModelConfig::Local(local) if *name == self.section.model => {
                    let mut local = local.clone();
                    local.model = Some(current.clone());
                    local.registry = self.registry_dir.clone();
                    ModelConfig::Local(local).build_backend(&self.config.base_dir)
                }
                other => other.build_backend(&self.config.base_dir),
            }
            .map_err(|e| RunError::Model { model: name.clone(), message: e.to_string() })?;
            models.insert(name.clone(), backend);
        }
        for (name, price) in &self.config.run.prices {
            models.set_price(name.clone(), *price);
        }
        let mut models = crate::backends::openai::with_fallbacks(&self.config, models);
        models.set_cache(self.cache.clone());
        self.models = Some((current, models.clone()));
        Ok(models)
    }

    /// The strategy plugin loaded over `models`, with `overrides` of its
    /// parameters (loop settings that map onto plugin parameters).
    pub async fn strategy(&self, models: &ModelSet, overrides: &[(&str, String)]) -> Result<Arc<Plugin>, LoopError> {
        let name = &self.section.strategy;
        let mut spec = strategy_spec(&self.config, name)?;
        for (k, v) in overrides {
            spec.params.insert((*k).to_string(), v.clone());
        }
        let mut plugin = self
            .engine
            .load(&spec, models)
            .await
            .map_err(|source| RunError::Plugin { plugin: name.clone(), source })?;
        let shared = self.strategy_state.get_or_init(|| {
            Arc::new(PluginState::with_entries(spec.limits.state_bytes, self.restored_strategy_state.clone()))
        });
        plugin.share_state(shared.clone());
        let expected = self.section.kind.strategy_role();
        if plugin.role() != expected {
            return Err(LoopError::Run(RunError::WrongRole {
                stage: "loop.strategy",
                plugin: name.clone(),
                actual: plugin.role(),
                expected,
            }));
        }
        Ok(Arc::new(plugin))
    }

    /// A work item for a strategy call: its id names the round, step and item.
    pub fn work_item(&self, id: String) -> WorkItem {
        let seed = crate::sandbox::item_seed(self.config.run.seed, &id);
        WorkItem { id, seed }
    }

    /// Train round `round`'s model on `data` (SFT or DPO) starting from
    /// `start` (a registry name, `default` or a GGUF), register it as
    /// [`LoopContext::trained_name`], make it the current model, and record
    /// the step losses. A killed training resumes from its last checkpoint.
    /// With `held_out` (data in the training format), the trainer evaluates
    /// it at every checkpoint and after the last step and keeps the best
    /// evaluated adapter ([`techne_training::TrainConfig::keep_best`]).
    pub async fn train(
        &mut self,
        round: u32,
        kind: techne_training::TrainKind,
        data: &Path,
        start: &str,
        held_out: Option<&Path>,
    ) -> Result<techne_training::TrainReport, LoopError> {
        let output_dir = self.round_dir(round)?.join("train");
        let name = self.trained_name(round);
        let mut train = train_config(
            &self.section.training,
            self.config.run.seed,
            start,
            data,
            &output_dir,
            &name,
            self.registry_dir.clone(),
        )
        .map_err(|source| LoopError::Training { round, source: source.into() })?;
        if let Some(held_out) = held_out {
            train.eval_data = Some(held_out.to_path_buf());
            train.eval_every = train.checkpoint_every;
            train.keep_best = true;
        }
        let (stop, progress) = (self.stop.clone(), self.progress);
        let report = tokio::task::spawn_blocking(move || run_training(kind, &train, &stop, progress))
            .await
            .map_err(|e| LoopError::Training {
                round,
                source: techne_training::TrainError::Config(format!("the training thread failed: {e}")).into(),
            })?
            .map_err(|source| LoopError::Training { round, source })?;
        if report.stopped_early {
            return Err(LoopError::Interrupted { dir: self.dir.clone() });
        }
        let registered = report.model.as_ref().map(|m| m.name.clone()).unwrap_or(name);
        let record = self.state.round_mut(round);
        record.losses = report.steps.iter().map(|s| s.loss).collect();
        record.model = Some(registered.clone());
        self.state.current_model = registered;
        Ok(report)
    }
}

/// The one place the loops call the trainer: the host's training entry
/// point (progress bar, training report in the output directory). Blocking;
/// once `stop` is raised the run ends after the current step with a
/// checkpoint (`stopped_early`).
fn run_training(
    kind: techne_training::TrainKind,
    config: &techne_training::TrainConfig,
    stop: &Arc<StopSignal>,
    progress: bool,
) -> Result<techne_training::TrainReport, crate::training::TrainingError> {
    let control = Arc::new(crate::training::TrainingControl::new());
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (control, finished, stop) = (control.clone(), finished.clone(), stop.clone());
        std::thread::spawn(move || {
            while !finished.load(std::sync::atomic::Ordering::SeqCst) {
                if stop.is_stopped() {
                    control.request_stop();
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        })
    };
    let options = crate::training::TrainingOptions { progress, control: Some(control), external: None };
    let outcome = crate::training::run_training(kind, config, &options);
    finished.store(true, std::sync::atomic::Ordering::SeqCst);
    let _ = watcher.join();
    Ok(outcome?.report)
}

/// The trainer's settings for one round.
fn train_config(
    t: &LoopTrainingConfig,
    run_seed: u64,
    start: &str,
    data: &Path,
    output_dir: &Path,
    out_name: &str,
    registry_dir: Option<PathBuf>,
) -> Result<techne_training::TrainConfig, techne_training::TrainError> {
    let registry = match &registry_dir {
        Some(dir) => techne_inference::Registry::open(dir),
        None => techne_inference::Registry::open_default(),
    }
    .map_err(|e| techne_training::TrainError::Config(format!("cannot open the model registry: {e}")))?;
    let base = techne_training::resolve_model(&registry, start)?;
    let resume = output_dir.join("checkpoints").is_dir();
    Ok(techne_training::TrainConfig {
        model: base.gguf,
        model_name: base.name.or_else(|| Some(start.to_string())),
        data: data.to_path_buf(),
        output_dir: output_dir.to_path_buf(),
        out_name: Some(out_name.to_string()),
        registry_dir,
        lora: techne_training::LoraConfig {
            rank: t.rank,
            alpha: t.alpha,
            dropout: t.dropout,
            targets: techne_training::LoraConfig::parse_targets(&t.targets)?,
        },
        optim: techne_training::OptimConfig {
            learning_rate: t.learning_rate,
            warmup_ratio: t.warmup_ratio,
            ..techne_training::OptimConfig::default()
        },
        batch_size: t.batch_size,
        grad_accum: t.grad_accum,
        epochs: t.epochs,
        max_steps: t.max_steps,
        max_seq_len: t.max_seq_len,
        seed: t.seed.unwrap_or(run_seed),
        checkpoint_every: t.checkpoint_every,
        keep_checkpoints: 1,
        resume,
        merged_format: techne_training::WeightFormat::parse(&t.merged_format)?,
        ..techne_training::TrainConfig::default()
    })
}

/// The strategy plugin's spec from the configuration.
fn strategy_spec(config: &RunConfig, name: &str) -> Result<PluginSpec, LoopError> {
    crate::runs::plugin_specs(config).into_iter().find(|s| s.name == name).ok_or(LoopError::NotALoop)
}

/// The hash that identifies a loop's configuration.
pub fn config_fingerprint(config: &RunConfig, source_text: &str) -> String {
    crate::runs::config_fingerprint(config, source_text)
}

/// Run (or resume) the loop of `config`, writing its loop directory.
pub async fn run_loop(
    config: &RunConfig,
    source_text: &str,
    config_path: &Path,
    options: LoopOptions,
) -> Result<LoopSummary, LoopError> {
    let started = Instant::now();
    let section = config.loop_section.clone().ok_or(LoopError::NotALoop)?;
    let engine = SandboxEngine::new(crate::runs::engine_options(config)).map_err(RunError::from)?;
    let dir = config.run.output_dir.clone().unwrap_or_else(|| PathBuf::from("runs").join("loop"));
    let name = config.run.name.clone().unwrap_or_else(|| "loop".into());
    let cache_dir = options.cache_dir.clone().or_else(CallCache::default_dir);
    let cache = match (options.cache, cache_dir) {
        (CacheChoice::Off, _) | (_, None) => None,
        (CacheChoice::ReadWrite, Some(d)) => Some(Arc::new(CallCache::new(d, CacheMode::ReadWrite))),
        (CacheChoice::ReplayOnly, Some(d)) => Some(Arc::new(CallCache::new(d, CacheMode::ReplayOnly))),
    };
    let registry_dir = match config.models.get(&section.model) {
        Some(ModelConfig::Local(local)) => local.registry.as_ref().map(|r| config::resolve(&config.base_dir, r)),
        _ => None,
    };
    let base_model = match config.models.get(&section.model) {
        Some(ModelConfig::Local(local)) => match local.model.as_deref() {
            None | Some("") => "default".to_string(),
            Some(m) if m.ends_with(".gguf") => config::resolve(&config.base_dir, Path::new(m)).display().to_string(),
            Some(m) => m.to_string(),
        },
        _ => "default".to_string(),
    };
    let mut plugins = BTreeMap::new();
    for spec in crate::runs::plugin_specs(config) {
        let bytes = std::fs::read(&spec.path).map_err(|e| RunError::Plugin {
            plugin: spec.name.clone(),
            source: crate::sandbox::LoadError::Read { path: spec.path.clone(), source: e },
        })?;
        plugins.insert(spec.name.clone(), crate::sandbox::sha256_hex(&bytes));
    }
    let fingerprint = config_fingerprint(config, source_text);
    let state_path = dir.join(state::STATE_FILE);
    let state = if options.resume {
        let previous = LoopState::read(&dir).ok_or_else(|| LoopError::NothingToResume { dir: dir.clone() })?;
        let mut changed = Vec::new();
        if previous.config_sha256 != fingerprint {
            changed.push("the configuration".to_string());
        }
        for (plugin, sha) in &plugins {
            if previous.plugins.get(plugin) != Some(sha) {
                changed.push(format!("plugin `{plugin}`"));
            }
        }
        if !changed.is_empty() && !options.force {
            return Err(LoopError::ConfigChanged { dir: dir.clone(), what: changed.join(", ") });
        }
        let mut state = previous;
        state.config_sha256 = fingerprint;
        state.plugins = plugins;
        state
    } else {
        if state_path.exists() {
            return Err(LoopError::AlreadyExists { dir: dir.clone() });
        }
        std::fs::create_dir_all(&dir).map_err(LoopError::io(&dir))?;
        LoopState {
            format: state::STATE_FORMAT,
            techne_version: env!("CARGO_PKG_VERSION").to_string(),
            kind: section.kind.name().to_string(),
            name,
            config_path: std::path::absolute(config_path).unwrap_or_else(|_| config_path.to_path_buf()),
            config_sha256: fingerprint,
            plugins,
            current_model: base_model.clone(),
            base_model,
            baseline: BTreeMap::new(),
            baseline_done: false,
            rounds: Vec::new(),
            finished: None,
            strategy_state: BTreeMap::new(),
        }
    };
    let restored_strategy_state = state.strategy_entries().map_err(|key| LoopError::Data {
        path: state_path.clone(),
        message: format!(
            "the strategy state's value under `{key}` is not hex: the file was edited or damaged; \
             restore it or start the loop again"
        ),
    })?;
    state.write(&dir).map_err(LoopError::io(&state_path))?;
    let config_copy = dir.join("config.toml");
    if !options.resume || !config_copy.exists() || options.force {
        crate::sandbox::component_cache::write_atomically(&config_copy, source_text.as_bytes())
            .map_err(LoopError::io(&config_copy))?;
    }
    let mut ctx = LoopContext {
        config: config.clone(),
        section: section.clone(),
        dir: dir.clone(),
        state,
        engine,
        cache,
        registry_dir,
        progress: options.progress,
        stop: options.stop.clone(),
        models: None,
        step_started: Instant::now(),
        steps_run: 0,
        restored_strategy_state,
        strategy_state: std::sync::OnceLock::new(),
    };
    let rounds = section.rounds.unwrap_or(section.kind.default_rounds());
    let result = drive(&mut ctx, rounds).await;
    report::write(&ctx.dir, &ctx.state, &ctx.section).map_err(LoopError::io(&ctx.dir.join("report.md")))?;
    result?;
    Ok(LoopSummary { dir, state: ctx.state, steps_run: ctx.steps_run, elapsed_s: started.elapsed().as_secs_f64() })
}

/// Run the baseline (when the kind has one) and the remaining rounds.
async fn drive(ctx: &mut LoopContext, rounds: u32) -> Result<(), LoopError> {
    if ctx.state.finished.is_some() {
        return Ok(());
    }
    match ctx.section.kind {
        LoopKind::SelfEvolution => self_evolution::baseline(ctx).await?,
        LoopKind::Llamaduo | LoopKind::Qpo | LoopKind::RewriterDpo => {}
    }
    let last_complete = ctx.state.rounds.iter().filter(|r| round_complete(r)).map(|r| r.round).max().unwrap_or(0);
    // Killed between a finishing round's last step and the final state write.
    if ctx.state.round(last_complete).and_then(|r| r.metrics.get("finished")).is_some_and(|v| *v > 0.0) {
        return finish(ctx, format!("round {last_complete} finished the loop"));
    }
    let first = last_complete + 1;
    for round in first..=rounds {
        ctx.check_stop()?;
        let outcome = run_round(ctx, round).await?;
        report::write(&ctx.dir, &ctx.state, &ctx.section).map_err(LoopError::io(&ctx.dir.join("report.md")))?;
        if let RoundOutcome::Finished(reason) = outcome {
            return finish(ctx, reason);
        }
    }
    finish(ctx, format!("round limit ({rounds}) reached"))
}

/// Whether every step of a round is done (the kind marks it with a `done` step).
fn round_complete(record: &RoundRecord) -> bool {
    record.steps.iter().any(|s| s == ROUND_DONE)
}

/// The step that closes a round.
pub const ROUND_DONE: &str = "done";

fn finish(ctx: &mut LoopContext, reason: String) -> Result<(), LoopError> {
    ctx.state.finished = Some(reason);
    ctx.state.write(&ctx.dir).map_err(LoopError::io(&ctx.dir.join(state::STATE_FILE)))
}

/// Run one round of the configured kind; the round ends with its
/// [`ROUND_DONE`] step recorded.
async fn run_round(ctx: &mut LoopContext, round: u32) -> Result<RoundOutcome, LoopError> {
    let outcome = match ctx.section.kind {
        LoopKind::SelfEvolution => self_evolution::run_round(ctx, round).await?,
        LoopKind::Llamaduo => llamaduo::run_round(ctx, round).await?,
        LoopKind::Qpo => qpo::run_round(ctx, round).await?,
        LoopKind::RewriterDpo => rewriter_dpo::run_round(ctx, round).await?,
    };
    if !ctx.step_done(round, ROUND_DONE) {
        let finished = matches!(outcome, RoundOutcome::Finished(_));
        ctx.complete_step(round, ROUND_DONE, &[("finished", f64::from(u8::from(finished)))])?;
    }
    Ok(outcome)
}

/// Read records from a JSON array or JSONL file, returning each object.
pub(crate) fn read_records(path: &Path) -> Result<Vec<serde_json::Map<String, serde_json::Value>>, LoopError> {
    let data = |message: String| LoopError::Data { path: path.to_path_buf(), message };
    let text =
        std::fs::read_to_string(path).map_err(|e| data(format!("cannot read it: {e}; check the path in [loop]")))?;
    let trimmed = text.trim_start();
    let values: Vec<serde_json::Value> = if trimmed.starts_with('[') {
        serde_json::from_str(trimmed).map_err(|e| data(format!("not a JSON array of objects: {e}")))?
    } else {
        let mut values = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            values
                .push(serde_json::from_str(line).map_err(|e| data(format!("line {}: not a JSON object: {e}", i + 1)))?);
        }
        values
    };
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            serde_json::Value::Object(map) => Ok(map),
            _ => Err(data(format!("record {}: not a JSON object", i + 1))),
        })
        .collect()
}

/// The text field `field` of record `index` (1-based in messages).
pub(crate) fn text_field(
    path: &Path,
    record: &serde_json::Map<String, serde_json::Value>,
    index: usize,
    field: &str,
) -> Result<String, LoopError> {
    match record.get(field) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        _ => Err(LoopError::Data {
            path: path.to_path_buf(),
            message: format!(
                "record {}: no text field `{field}`: set the field name in [loop] (its keys: {})",
                index + 1,
                record.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        }),
    }
}

/// Run `work` on every item, at most `concurrency` at once, handing each
/// result to `done` in completion order (on the caller's task, so `done`
/// may write files and state). Starts no new item once `stop` is raised,
/// and then fails with [`LoopError::Interrupted`] after the items in flight.
pub(crate) async fn map_concurrent<T, R, F, Fut>(
    stop: &Arc<StopSignal>,
    dir: &Path,
    concurrency: usize,
    items: Vec<T>,
    work: F,
    mut done: impl FnMut(R) -> Result<(), LoopError>,
) -> Result<(), LoopError>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = R> + Send + 'static,
{
    let work = Arc::new(work);
    let mut tasks = tokio::task::JoinSet::new();
    let mut pending = items.into_iter();
    loop {
        while tasks.len() < concurrency.max(1) && !stop.is_stopped() {
            let Some(item) = pending.next() else { break };
            let work = work.clone();
            tasks.spawn(async move { work(item).await });
        }
        match tasks.join_next().await {
            None => break,
            Some(Ok(result)) => done(result)?,
            Some(Err(e)) => {
                return Err(LoopError::Strategy {
                    round: 0,
                    step: "worker".into(),
                    message: format!("a task failed: {e}"),
                });
            }
        }
    }
    if stop.is_stopped() {
        return Err(LoopError::Interrupted { dir: dir.to_path_buf() });
    }
    Ok(())
}

impl LoopContext {
    /// The stop signal (for [`map_concurrent`]).
    pub fn stop_signal(&self) -> Arc<StopSignal> {
        self.stop.clone()
    }
}
