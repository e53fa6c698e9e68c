//! The typed shape of a run configuration, as read from TOML.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use indexmap::IndexMap;
use serde::Deserialize;

use crate::sandbox::SandboxLimits;

/// A whole run configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RunConfig {
    /// `[run]`: name, seed, concurrency, output directory.
    #[serde(default)]
    pub run: RunSection,
    /// `[engine]`: sandbox engine settings.
    #[serde(default)]
    pub engine: EngineSection,
    /// `[models.NAME]`: the models plugins and the pipeline may use.
    #[serde(default)]
    pub models: IndexMap<String, ModelConfig>,
    /// `[plugins.NAME]`: the plugins of the run.
    #[serde(default)]
    pub plugins: IndexMap<String, PluginConfig>,
    /// `[dataset]`: where the work items come from (or use `inputs`).
    pub dataset: Option<DatasetConfig>,
    /// Inline questions, an alternative to `[dataset]`.
    #[serde(default)]
    pub inputs: Vec<String>,
    /// `[pipeline]`: the stages each item goes through (a single technique,
    /// named `pipeline` in results).
    pub pipeline: Option<PipelineConfig>,
    /// `[techniques.NAME]`: several pipelines run on the same items, e.g. a
    /// baseline and the techniques it is compared with (`techne eval`).
    #[serde(default)]
    pub techniques: IndexMap<String, PipelineConfig>,
    /// `[evaluation]`: how answers are scored against references.
    pub evaluation: Option<EvaluationConfig>,
    /// `[network]`: the hosts service models may contact (none by default).
    #[serde(default)]
    pub network: NetworkSection,
    /// `[collect]`: training-data collection (`techne collect`), see [`crate::collect`].
    pub collect: Option<crate::collect::CollectSettings>,
    /// `[loop]`: a multi-round training loop (`techne loop`), see [`crate::loops`].
    #[serde(rename = "loop")]
    pub loop_section: Option<crate::loops::LoopConfig>,
    /// The directory of the configuration file (relative paths resolve against it).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// `[run]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RunSection {
    /// A name for reports; defaults to the file's stem.
    pub name: Option<String>,
    /// Where results go; defaults to `runs/<name>` beside the config file.
    pub output_dir: Option<PathBuf>,
    /// The run seed every item and request seed derives from.
    #[serde(default)]
    pub seed: u64,
    /// Items processed at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Process at most this many items.
    pub limit: Option<usize>,
    /// Start no new item once this many model requests reached a backend.
    pub max_requests: Option<u64>,
    /// Start no new item once this many tokens (prompt + generated) were used.
    pub max_tokens: Option<u64>,
    /// Start no new item once the estimated spend reaches this (needs `[run.prices]`).
    pub max_cost: Option<f64>,
    /// Prices per million tokens by model name, for the cost estimate.
    #[serde(default)]
    pub prices: std::collections::BTreeMap<String, crate::backends::meter::Price>,
}

impl Default for RunSection {
    fn default() -> Self {
        Self {
            name: None,
            output_dir: None,
            seed: 0,
            concurrency: default_concurrency(),
            limit: None,
            max_requests: None,
            max_tokens: None,
            max_cost: None,
            prices: std::collections::BTreeMap::new(),
        }
    }
}

fn default_concurrency() -> usize {
    4
}

/// `[engine]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EngineSection {
    /// Compiled-component cache directory (default: the user cache directory).
    pub cache_dir: Option<PathBuf>,
    /// Disable the compiled-component cache.
    #[serde(default)]
    pub no_cache: bool,
    /// Use the pooling allocator.
    #[serde(default = "default_true")]
    pub pooling: bool,
}

impl Default for EngineSection {
    fn default() -> Self {
        Self { cache_dir: None, no_cache: false, pooling: true }
    }
}

fn default_true() -> bool {
    true
}

/// `[network]`: outbound connections, denied by default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NetworkSection {
    /// Hosts (names or IP addresses, or `*.domain` wildcards; any port) that
    /// `backend = "openai"` models may connect to.
    #[serde(default)]
    pub allow_hosts: Vec<String>,
}

/// Why a model's backend could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ModelBuildError {
    /// A local model could not be opened.
    #[error(transparent)]
    Local(#[from] crate::backends::local::LocalBackendError),
    /// A service model could not be set up.
    #[error(transparent)]
    Openai(#[from] crate::backends::openai::OpenAiBackendError),
}

/// `[models.NAME]`: which backend serves the model, and its settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "backend", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ModelConfig {
    /// A chat model run natively through ONNX Runtime.
    Local(LocalModelConfig),
    /// The local sentence embedder (all-MiniLM-L6-v2 int8).
    LocalEmbeddings(LocalEmbeddingsConfig),
    /// A model behind an OpenAI-compatible HTTP endpoint.
    Openai(crate::backends::openai::OpenAiModelConfig),
    /// The scripted test double (test builds only).
    #[cfg(feature = "test-doubles")]
    Scripted(crate::backends::scripted::ScriptedConfig),
}

/// `backend = "local"`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LocalModelConfig {
    /// `default` (the embedded SmolLM2-135M-Instruct), a registry name
    /// (`techne models list`), or a `.gguf` file imported on first use.
    pub model: Option<String>,
    /// Intra-op threads (default: the physical cores).
    #[serde(default)]
    pub threads: usize,
    /// The model registry directory (default: the user cache directory).
    pub registry: Option<PathBuf>,
}

/// `backend = "local-embeddings"`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LocalEmbeddingsConfig {
    /// Intra-op threads (default: the physical cores).
    #[serde(default)]
    pub threads: usize,
}

impl ModelConfig {
    /// The backend's name as written in the configuration.
    pub fn backend_name(&self) -> &'static str {
        match self {
            ModelConfig::Local(_) => "local",
            ModelConfig::LocalEmbeddings(_) => "local-embeddings",
            ModelConfig::Openai(_) => "openai",
            #[cfg(feature = "test-doubles")]
            ModelConfig::Scripted(_) => "scripted",
        }
    }

    /// Create the backend that serves this model; `base` resolves relative paths.
    pub fn build_backend(
        &self,
        base: &std::path::Path,
    ) -> Result<std::sync::Arc<dyn crate::backends::ModelBackend>, ModelBuildError> {
        use crate::backends::local::{LocalBackend, LocalEmbeddingBackend, LocalModelSource};
        Ok(match self {
            ModelConfig::Local(local) => {
                let source = LocalModelSource::parse(local.model.as_deref(), base);
                let registry = local.registry.as_ref().map(|r| if r.is_relative() { base.join(r) } else { r.clone() });
                std::sync::Arc::new(LocalBackend::open(&source, registry.as_deref(), local.threads)?)
            }
            ModelConfig::LocalEmbeddings(e) => std::sync::Arc::new(LocalEmbeddingBackend::open_default(e.threads)?),
            ModelConfig::Openai(openai) => std::sync::Arc::new(crate::backends::openai::OpenAiBackend::new(openai)?),
            #[cfg(feature = "test-doubles")]
            ModelConfig::Scripted(script) => {
                std::sync::Arc::new(crate::backends::scripted::ScriptedBackend::new(script.clone()))
            }
        })
    }
}

/// `[plugins.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PluginConfig {
    /// The component file, relative to the configuration file.
    pub path: PathBuf,
    /// Pin of the file's sha256 (hex); a mismatch refuses to load.
    pub sha256: Option<String>,
    /// Models the plugin may call; all others are denied.
    #[serde(default)]
    pub allowed_models: Vec<String>,
    /// The plugin's default model; must be in `allowed-models`.
    pub default_model: Option<String>,
    /// Sandbox limits.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Parameter values, checked against the plugin's declared parameters.
    #[serde(default)]
    pub params: BTreeMap<String, ParamValue>,
    /// Text parameters whose value is a file's contents (relative paths
    /// against the configuration file), e.g. a fitted model's JSON:
    /// `[plugins.NAME.param-files] reward-model = "model.json"`. Read when
    /// the configuration is loaded; a name may not also be in `params`.
    #[serde(default)]
    pub param_files: BTreeMap<String, PathBuf>,
}

/// A parameter value as written in TOML.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    /// `true` / `false`.
    Boolean(bool),
    /// An integer.
    Integer(i64),
    /// A float.
    Float(f64),
    /// Text.
    Text(String),
}

impl ParamValue {
    /// The value as the text a plugin receives.
    pub fn to_text(&self) -> String {
        match self {
            ParamValue::Boolean(b) => b.to_string(),
            ParamValue::Integer(i) => i.to_string(),
            ParamValue::Float(f) => f.to_string(),
            ParamValue::Text(t) => t.clone(),
        }
    }
}

/// `[plugins.NAME.limits]`; every key is optional and defaults to
/// [`SandboxLimits::default`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LimitsConfig {
    /// Deadline per call, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Memory cap, in MiB.
    pub memory_mib: Option<u64>,
    /// Elements per table.
    pub table_elements: Option<usize>,
    /// Core instances per store.
    pub instances: Option<usize>,
    /// Tables per store.
    pub tables: Option<usize>,
    /// Memories per store.
    pub memories: Option<usize>,
    /// Bytes into the plugin per call.
    pub max_input_bytes: Option<u64>,
    /// Bytes out of the plugin per call.
    pub max_output_bytes: Option<u64>,
    /// Size cap of the plugin's state, in bytes.
    pub state_bytes: Option<u64>,
}

impl LimitsConfig {
    /// The limits with defaults filled in.
    pub fn resolve(&self) -> SandboxLimits {
        let d = SandboxLimits::default();
        SandboxLimits {
            timeout: self.timeout_ms.map(Duration::from_millis).unwrap_or(d.timeout),
            memory_bytes: self.memory_mib.map(|m| m << 20).unwrap_or(d.memory_bytes),
            table_elements: self.table_elements.unwrap_or(d.table_elements),
            instances: self.instances.unwrap_or(d.instances),
            tables: self.tables.unwrap_or(d.tables),
            memories: self.memories.unwrap_or(d.memories),
            max_input_bytes: self.max_input_bytes.unwrap_or(d.max_input_bytes),
            max_output_bytes: self.max_output_bytes.unwrap_or(d.max_output_bytes),
            state_bytes: self.state_bytes.unwrap_or(d.state_bytes),
        }
    }
}

/// `[dataset]`: a JSONL, JSON (array) or CSV file with a field mapping.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DatasetConfig {
    /// The file, relative to the configuration file.
    pub path: PathBuf,
    /// The format; inferred from the extension when absent.
    pub format: Option<DatasetFormat>,
    /// The field holding the question or problem.
    #[serde(default = "default_input_field")]
    pub input_field: String,
    /// The field holding the reference answer, if any.
    pub reference_field: Option<String>,
    /// The field holding a stable item id; defaults to the line/row number.
    pub id_field: Option<String>,
    /// Items skipped from the start of the file, before `run.limit` applies
    /// (e.g. to hold out the items another run collected training data on).
    #[serde(default)]
    pub skip: usize,
}

fn default_input_field() -> String {
    "question".to_string()
}

/// Dataset file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetFormat {
    /// One JSON object per line.
    Jsonl,
    /// A JSON array of objects.
    Json,
    /// Comma-separated values with a header row.
    Csv,
    /// GSM8K JSONL (`question`, `answer` with the final number after `####`).
    Gsm8k,
    /// A BIG-Bench Hard task file (`{"examples": [{"input", "target"}]}`).
    Bbh,
    /// PubMedQA (`{PMID: {QUESTION, CONTEXTS, final_decision}}`); the contexts
    /// go into the input, the reference is yes/no/maybe.
    Pubmedqa,
    /// K-QA JSONL (`Question`, `Free_form_answer`).
    KQa,
    /// TruthfulQA multiple choice, MC1 targets: the canonical `mc_task.json`
    /// (`[{question, mc1_targets: {choice: 0|1}}]`) or Hugging Face
    /// `truthful_qa` rows (`mc1_targets: {choices, labels}`, JSON or JSONL).
    /// Choices become lettered options in a fixed per-question order; the
    /// reference is the correct letter (score with `choice`).
    TruthfulqaMc,
}

/// `[evaluation]`: scoring answers against the dataset's references.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EvaluationConfig {
    /// The primary metric: comparisons and paired tests use it.
    pub metric: crate::eval::RunMetric,
    /// More metrics to report.
    #[serde(default)]
    pub extra_metrics: Vec<crate::eval::RunMetric>,
    /// `[evaluation.judge]`: the judge of the `llm-judge` metric.
    pub judge: Option<crate::eval::JudgeConfig>,
    /// The technique the others are compared with (default: the first).
    pub baseline: Option<String>,
    /// Bootstrap resamples for intervals and tests.
    #[serde(default = "default_resamples")]
    pub resamples: usize,
}

fn default_resamples() -> usize {
    crate::eval::statistics::DEFAULT_RESAMPLES
}

impl RunConfig {
    /// The techniques of the run, in order: `[pipeline]` (named `pipeline`)
    /// and then every `[techniques.NAME]`.
    pub fn technique_list(&self) -> Vec<(String, PipelineConfig)> {
        let mut list: Vec<(String, PipelineConfig)> = Vec::new();
        if let Some(p) = &self.pipeline {
            list.push(("pipeline".to_string(), p.clone()));
        }
        list.extend(self.techniques.iter().map(|(k, v)| (k.clone(), v.clone())));
        list
    }
}

/// `[pipeline]`: question → rewriter → policy → solver, answer model or
/// writer → judge.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PipelineConfig {
    /// A rewriter plugin applied to the question first.
    pub rewriter: Option<String>,
    /// A prompt-policy plugin that writes the prompt for the answer model.
    pub policy: Option<String>,
    /// A solver plugin that answers (instead of the answer model).
    pub solver: Option<String>,
    /// The model that answers when there is no solver.
    pub answer_model: Option<String>,
    /// A system prompt for the answer model.
    pub system_prompt: Option<String>,
    /// Token budget of the answer.
    #[serde(default = "default_answer_tokens")]
    pub answer_max_tokens: u32,
    /// An evolution-strategy plugin (Self-Evolution) that takes the item's
    /// input as a knowledge fragment and writes a QA pair from it with the
    /// answer model; the pair's answer is the item's answer, its question
    /// and IFD go into the trace.
    pub writer: Option<String>,
    /// A migration-strategy plugin (LlamaDuo) whose `judge` scores the
    /// answer against the reference with `judge-model`: scores
    /// `judge-similarity` and `judge-precision`, on [0, 1].
    pub judge: Option<String>,
    /// The model the `judge` plugin judges with (LlamaDuo's service model).
    pub judge_model: Option<String>,
}

fn default_answer_tokens() -> u32 {
    256
}

/// Largest memory cap a plugin may be given, in MiB.
pub const MAX_PLUGIN_MEMORY_MIB: u64 = 4096;

/// Check what the types cannot: references between sections and value
/// ranges. Returns the key path of the first problem and how to fix it.
pub(crate) fn validate(config: &RunConfig) -> Result<(), (String, String)> {
    if config.run.concurrency == 0 {
        return Err(("run.concurrency".into(), "must be at least 1".into()));
    }
    for (model, price) in &config.run.prices {
        if !config.models.contains_key(model) {
            return Err((
                format!("run.prices.{model}"),
                format!("model '{model}' is not defined: add a [models.{model}] table"),
            ));
        }
        if !(price.prompt >= 0.0 && price.completion >= 0.0) {
            return Err((format!("run.prices.{model}"), "prices must be non-negative numbers".into()));
        }
    }
    if config.run.max_cost.is_some() && config.run.prices.is_empty() {
        return Err((
            "run.max-cost".into(),
            "a cost budget needs prices: add [run.prices] MODEL = { prompt = …, completion = … } (per million tokens)"
                .into(),
        ));
    }
    for (i, host) in config.network.allow_hosts.iter().enumerate() {
        crate::backends::openai::check_allow_host(host).map_err(|m| (format!("network.allow-hosts[{i}]"), m))?;
    }
    let model_names: Vec<&str> = config.models.keys().map(String::as_str).collect();
    for (name, model) in &config.models {
        if let ModelConfig::Openai(openai) = model {
            openai
                .check(name, &config.network.allow_hosts, &model_names)
                .map_err(|(key, message)| (format!("models.{name}.{key}"), message))?;
        }
    }
    for (name, plugin) in &config.plugins {
        let key = |k: &str| format!("plugins.{name}.{k}");
        if let Some(pin) = &plugin.sha256
            && (pin.len() != 64 || !pin.chars().all(|c| c.is_ascii_hexdigit()))
        {
            return Err((key("sha256"), "must be 64 hex digits (`techne plugin inspect FILE` prints it)".into()));
        }
        for (i, model) in plugin.allowed_models.iter().enumerate() {
            if !config.models.contains_key(model) {
                return Err((
                    format!("plugins.{name}.allowed-models[{i}]"),
                    format!("model '{model}' is not defined: add a [models.{model}] table or remove it from the list"),
                ));
            }
        }
        if let Some(default) = &plugin.default_model
            && !plugin.allowed_models.contains(default)
        {
            return Err((
                key("default-model"),
                format!("model '{default}' is not in `allowed-models`: add it there, so the plugin may use it"),
            ));
        }
        let limits = &plugin.limits;
        let limit_key = |k: &str| format!("plugins.{name}.limits.{k}");
        if let Some(ms) = limits.timeout_ms
            && (ms == 0 || ms > 86_400_000)
        {
            return Err((limit_key("timeout-ms"), "must be between 1 and 86400000 (one day)".into()));
        }
        if let Some(mib) = limits.memory_mib
            && (mib == 0 || mib > MAX_PLUGIN_MEMORY_MIB)
        {
            return Err((limit_key("memory-mib"), format!("must be between 1 and {MAX_PLUGIN_MEMORY_MIB}")));
        }
        for (k, v) in [
            ("table-elements", limits.table_elements.map(|v| v as u64)),
            ("instances", limits.instances.map(|v| v as u64)),
            ("tables", limits.tables.map(|v| v as u64)),
            ("memories", limits.memories.map(|v| v as u64)),
            ("max-input-bytes", limits.max_input_bytes),
            ("max-output-bytes", limits.max_output_bytes),
        ] {
            if v == Some(0) {
                return Err((limit_key(k), "must be at least 1".into()));
            }
        }
    }
    if let Some(section) = &config.loop_section {
        // A loop brings its own data and stages.
        return crate::loops::config::validate(config, section);
    }
    if let Some(collect) = &config.collect {
        // A collection brings its own stages.
        if !config.plugins.contains_key(&collect.plugin) {
            return Err((
                "collect.plugin".into(),
                format!(
                    "plugin '{}' is not defined: add a [plugins.{}] table with its `path`",
                    collect.plugin, collect.plugin
                ),
            ));
        }
        return Ok(());
    }
    if config.pipeline.is_none() && config.techniques.is_empty() {
        return Err(("pipeline".into(), "give the stages: a [pipeline] table, or [techniques.NAME] tables".into()));
    }
    if config.pipeline.is_some() && config.techniques.contains_key("pipeline") {
        return Err((
            "techniques.pipeline".into(),
            "`pipeline` names the [pipeline] table: rename this technique".into(),
        ));
    }
    for (name, pipeline) in config.technique_list() {
        let prefix = if config.pipeline.is_some() && name == "pipeline" {
            "pipeline".to_string()
        } else {
            format!("techniques.{name}")
        };
        validate_pipeline(config, &prefix, &pipeline)?;
    }
    if let Some(evaluation) = &config.evaluation {
        if let Some(baseline) = &evaluation.baseline
            && !config.technique_list().iter().any(|(name, _)| name == baseline)
        {
            return Err((
                "evaluation.baseline".into(),
                format!("no technique named '{baseline}': name a [techniques.NAME] table (or `pipeline`)"),
            ));
        }
        if evaluation.resamples == 0 {
            return Err(("evaluation.resamples".into(), "must be at least 1".into()));
        }
        let uses_judge = std::iter::once(&evaluation.metric).chain(&evaluation.extra_metrics).any(|m| m.needs_judge());
        match &evaluation.judge {
            None if uses_judge => {
                return Err((
                    "evaluation.judge".into(),
                    "the `llm-judge` and `k-qa-*` metrics need a judge: add [evaluation.judge] with `model = \"NAME\"`"
                        .into(),
                ));
            }
            Some(judge) => {
                if !config.models.contains_key(&judge.model) {
                    return Err((
                        "evaluation.judge.model".into(),
                        format!("model '{}' is not defined: add a [models.{}] table", judge.model, judge.model),
                    ));
                }
                judge.check().map_err(|(key, message)| (format!("evaluation.judge.{key}"), message))?;
            }
            None => {}
        }
    }
    match (&config.dataset, config.inputs.is_empty()) {
        (None, true) => {
            Err(("inputs".into(), "give the work items: a [dataset] table or an `inputs` list of questions".into()))
        }
        (Some(_), false) => Err(("inputs".into(), "use either [dataset] or `inputs`, not both".into())),
        _ => Ok(()),
    }
}

/// Check one pipeline's references; `prefix` is its key path.
fn validate_pipeline(config: &RunConfig, prefix: &str, pipeline: &PipelineConfig) -> Result<(), (String, String)> {
    for (stage, plugin) in [
        ("rewriter", &pipeline.rewriter),
        ("policy", &pipeline.policy),
        ("solver", &pipeline.solver),
        ("writer", &pipeline.writer),
        ("judge", &pipeline.judge),
    ] {
        if let Some(plugin) = plugin
            && !config.plugins.contains_key(plugin)
        {
            return Err((
                format!("{prefix}.{stage}"),
                format!("plugin '{plugin}' is not defined: add a [plugins.{plugin}] table with its `path`"),
            ));
        }
    }
    if pipeline.policy.is_some() && pipeline.solver.is_some() {
        return Err((
            format!("{prefix}.solver"),
            "a pipeline has a policy (which writes the answer model's prompt) or a solver (which answers itself), not both".into(),
        ));
    }
    match (&pipeline.solver, &pipeline.answer_model) {
        (None, None) => {
            return Err((
                "pipeline".into(),
                "set `answer-model` (a model that answers) or `solver` (a solver plugin)".into(),
            ));
        }
        (Some(_), Some(_)) => {
            return Err((
                format!("{prefix}.answer-model"),
                "a solver answers by itself: remove `answer-model` or `solver`".into(),
            ));
        }
        (None, Some(model)) if !config.models.contains_key(model) => {
            return Err((
                format!("{prefix}.answer-model"),
                format!("model '{model}' is not defined: add a [models.{model}] table"),
            ));
        }
        _ => {}
    }
    if pipeline.writer.is_some() && (pipeline.policy.is_some() || pipeline.solver.is_some()) {
        return Err((
            format!("{prefix}.writer"),
            "a writer answers by writing a QA pair with the answer model: remove `policy` or `solver`".into(),
        ));
    }
    match (&pipeline.judge, &pipeline.judge_model) {
        (Some(_), None) => {
            return Err((
                format!("{prefix}.judge-model"),
                "the judge plugin needs the model it judges with: set `judge-model = \"NAME\"`".into(),
            ));
        }
        (None, Some(_)) => {
            return Err((
                format!("{prefix}.judge-model"),
                "`judge-model` is for a judge plugin: set `judge = \"PLUGIN\"` or remove it".into(),
            ));
        }
        (Some(_), Some(model)) if !config.models.contains_key(model) => {
            return Err((
                format!("{prefix}.judge-model"),
                format!("model '{model}' is not defined: add a [models.{model}] table"),
            ));
        }
        _ => {}
    }
    if pipeline.answer_max_tokens == 0 {
        return Err((format!("{prefix}.answer-max-tokens"), "must be at least 1".into()));
    }
    Ok(())
}
