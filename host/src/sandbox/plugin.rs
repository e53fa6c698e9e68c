//! A loaded plugin and the calls into it.
//!
//! [`SandboxEngine::load`] reads, verifies and compiles a plugin file once,
//! checks its imports and exports against the `techne:plugin@0.1` contract,
//! reads its metadata and resolves its parameters. Each work item then gets
//! a fresh [`PluginInstance`] (a new store), so a trap never poisons the
//! next item; [`PluginInstance`] can also be reused for several calls while
//! no call fails.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, InstancePre};
use wasmtime::{Store, Trap, UpdateDeadline};

use crate::backends::ModelSet;
use crate::bindings::capabilities::types::{self as wit_types, ParameterValue};
use crate::bindings::guest;
use crate::bindings::{WIT_PACKAGE, WIT_VERSION};
use crate::capabilities::{BoundaryTraffic, CapabilityContext, PluginGrant, PluginState};

use super::engine::SandboxEngine;
use super::error::{CallError, LoadError, PluginReportedError};
use super::limits::{SandboxLimiter, SandboxLimits};
use super::store::StoreData;

mod trainer;

pub use trainer::{
    CriterionScore, JudgedQuestion, LabelledPrompt, OfflineRecord, PolicyExample, PolicyPrompt, PreferencePair,
    PromptOutcome, REWARD_MODEL_TRAINER, TrainerExtension,
};
use trainer::{TrainerGuest, TrainerIndices};

/// The role a plugin plays, from the role interface it exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Exports `techne:plugin/rewriter`.
    Rewriter,
    /// Exports `techne:plugin/prompt-policy`.
    PromptPolicy,
    /// Exports `techne:plugin/solver`.
    Solver,
    /// Exports `techne:plugin/evolution-strategy`.
    EvolutionStrategy,
    /// Exports `techne:plugin/migration-strategy`.
    MigrationStrategy,
}

impl Role {
    /// Every role, in WIT order.
    pub const ALL: [Role; 5] =
        [Role::Rewriter, Role::PromptPolicy, Role::Solver, Role::EvolutionStrategy, Role::MigrationStrategy];

    /// The role interface's name in the WIT package, e.g. `prompt-policy`.
    pub fn interface(self) -> &'static str {
        match self {
            Role::Rewriter => "rewriter",
            Role::PromptPolicy => "prompt-policy",
            Role::Solver => "solver",
            Role::EvolutionStrategy => "evolution-strategy",
            Role::MigrationStrategy => "migration-strategy",
        }
    }

    /// The world a plugin of this role targets, e.g. `rewriter-plugin`.
    pub fn world(self) -> String {
        format!("{}-plugin", self.interface())
    }

    /// The role named by a WIT interface name, e.g. `solver`.
    pub fn from_interface(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.interface() == name)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.interface())
    }
}

/// The kind of value a parameter holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ParameterKind {
    /// Free text.
    Text,
    /// A signed 64-bit integer.
    Integer,
    /// A 64-bit float.
    Float,
    /// `true` or `false`.
    Boolean,
}

impl ParameterKind {
    /// Whether `value` is valid text for this kind.
    pub fn accepts(self, value: &str) -> bool {
        match self {
            ParameterKind::Text => true,
            ParameterKind::Integer => value.parse::<i64>().is_ok(),
            ParameterKind::Float => value.parse::<f64>().is_ok_and(f64::is_finite),
            ParameterKind::Boolean => value == "true" || value == "false",
        }
    }
}

/// A parameter a plugin declares.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Parameter {
    /// Its name in `[plugins.NAME.params]`.
    pub name: String,
    /// What it controls.
    pub description: String,
    /// Its kind.
    pub kind: ParameterKind,
    /// Its default, as configuration text.
    pub default_value: String,
}

/// What a plugin says about itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Metadata {
    /// Short name.
    pub name: String,
    /// The plugin's version.
    pub version: String,
    /// What technique it implements.
    pub description: String,
    /// Its parameters with defaults.
    pub parameters: Vec<Parameter>,
}

impl From<wit_types::PluginMetadata> for Metadata {
    fn from(m: wit_types::PluginMetadata) -> Self {
        Metadata {
            name: m.name,
            version: m.version,
            description: m.description,
            parameters: m
                .parameters
                .into_iter()
                .map(|p| Parameter {
                    name: p.name,
                    description: p.description,
                    kind: match p.kind {
                        wit_types::ParameterKind::Text => ParameterKind::Text,
                        wit_types::ParameterKind::Integer => ParameterKind::Integer,
                        wit_types::ParameterKind::Float => ParameterKind::Float,
                        wit_types::ParameterKind::Boolean => ParameterKind::Boolean,
                    },
                    default_value: p.default_value,
                })
                .collect(),
        }
    }
}

/// One step of a solver's trace.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TraceStep {
    /// What the step is.
    pub label: String,
    /// Its text.
    pub text: String,
}

/// A solver's answer with its trace.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Solution {
    /// The final answer.
    pub answer: String,
    /// The steps that led to it.
    pub trace: Vec<TraceStep>,
}

/// How to load one plugin: everything the run configuration says about it.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    /// The plugin's name in the run configuration.
    pub name: String,
    /// The component file.
    pub path: PathBuf,
    /// Optional sha256 pin (hex); a mismatch refuses to load.
    pub sha256: Option<String>,
    /// Sandbox limits.
    pub limits: SandboxLimits,
    /// Allowed models (deny by default) and default model.
    pub allowed_models: Vec<String>,
    /// The default model, one of `allowed_models`.
    pub default_model: Option<String>,
    /// Configured parameter values (as text), checked against the metadata.
    pub params: BTreeMap<String, String>,
}

impl PluginSpec {
    /// A spec with default limits, no models and no parameters.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            path: path.into(),
            sha256: None,
            limits: SandboxLimits::default(),
            allowed_models: Vec::new(),
            default_model: None,
            params: BTreeMap::new(),
        }
    }
}

/// The guest side of the role interface, loaded into one instance.
#[derive(Clone)]
enum RoleGuest {
    Rewriter(guest::rewriter::Guest),
    PromptPolicy(guest::prompt_policy::Guest),
    Solver(guest::solver::Guest),
    EvolutionStrategy(guest::evolution_strategy::Guest),
    MigrationStrategy(guest::migration_strategy::Guest),
}

/// Export indices of the role interface, resolved once per plugin.
#[derive(Clone)]
enum RoleIndices {
    Rewriter(guest::rewriter::GuestIndices),
    PromptPolicy(guest::prompt_policy::GuestIndices),
    Solver(guest::solver::GuestIndices),
    EvolutionStrategy(guest::evolution_strategy::GuestIndices),
    MigrationStrategy(guest::migration_strategy::GuestIndices),
}

impl RoleIndices {
    fn new(role: Role, pre: &InstancePre<StoreData>) -> wasmtime::Result<Self> {
        Ok(match role {
            Role::Rewriter => RoleIndices::Rewriter(guest::rewriter::GuestIndices::new(pre)?),
            Role::PromptPolicy => RoleIndices::PromptPolicy(guest::prompt_policy::GuestIndices::new(pre)?),
            Role::Solver => RoleIndices::Solver(guest::solver::GuestIndices::new(pre)?),
            Role::EvolutionStrategy => {
                RoleIndices::EvolutionStrategy(guest::evolution_strategy::GuestIndices::new(pre)?)
            }
            Role::MigrationStrategy => {
                RoleIndices::MigrationStrategy(guest::migration_strategy::GuestIndices::new(pre)?)
            }
        })
    }

    fn load(
        &self,
        store: &mut Store<StoreData>,
        instance: &wasmtime::component::Instance,
    ) -> wasmtime::Result<RoleGuest> {
        Ok(match self {
            RoleIndices::Rewriter(i) => RoleGuest::Rewriter(i.load(store, instance)?),
            RoleIndices::PromptPolicy(i) => RoleGuest::PromptPolicy(i.load(store, instance)?),
            RoleIndices::Solver(i) => RoleGuest::Solver(i.load(store, instance)?),
            RoleIndices::EvolutionStrategy(i) => RoleGuest::EvolutionStrategy(i.load(store, instance)?),
            RoleIndices::MigrationStrategy(i) => RoleGuest::MigrationStrategy(i.load(store, instance)?),
        })
    }
}

/// A plugin ready to run: compiled, checked, pre-instantiated, with its
/// metadata and resolved parameters. Cheap to share across tasks (`Arc`).
pub struct Plugin {
    name: String,
    path: PathBuf,
    sha256: String,
    role: Role,
    metadata: Metadata,
    limits: SandboxLimits,
    grant: Arc<PluginGrant>,
    params: Arc<Vec<ParameterValue>>,
    models: ModelSet,
    state: Arc<PluginState>,
    engine: wasmtime::Engine,
    pre: InstancePre<StoreData>,
    describe: guest::describe::GuestIndices,
    role_indices: RoleIndices,
    trainer_indices: Option<TrainerIndices>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("role", &self.role)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

/// The first 8 bytes of a core module and of a component.
const CORE_MODULE_PREAMBLE: [u8; 8] = [0, b'a', b's', b'm', 1, 0, 0, 0];
const WASM_MAGIC: [u8; 4] = [0, b'a', b's', b'm'];

/// Where a WIT name such as `techne:plugin/llm@0.1.0` belongs.
fn techne_version(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(WIT_PACKAGE)?.strip_prefix('/')?;
    Some(rest.split_once('@').map(|(_, v)| v).unwrap_or(""))
}

/// Whether a version string is one this host implements (0.1.x).
fn supported_version(version: &str) -> bool {
    let mut parts = version.split('.');
    let major = parts.next().and_then(|p| p.parse::<u64>().ok());
    let minor = parts.next().and_then(|p| p.parse::<u64>().ok());
    (major, minor) == (Some(WIT_VERSION.0), Some(WIT_VERSION.1))
}

/// Whether the host links an import of this name.
fn import_provided(name: &str) -> bool {
    if let Some(version) = techne_version(name) {
        let interface = name.trim_start_matches("techne:plugin/").split('@').next().unwrap_or("");
        return supported_version(version)
            && ["types", "llm", "scoring", "embeddings", "logging", "state", "randomness"].contains(&interface);
    }
    // The minimal WASI that Rust's std imports; linked with an empty context.
    ["wasi:cli/", "wasi:io/", "wasi:clocks/", "wasi:random/", "wasi:filesystem/", "wasi:sockets/"]
        .iter()
        .any(|prefix| name.starts_with(prefix) && name.contains("@0.2."))
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Imports and exports of a component, by name.
pub(crate) fn component_interface(engine: &wasmtime::Engine, component: &Component) -> (Vec<String>, Vec<String>) {
    let ty = component.component_type();
    let imports = ty.imports(engine).map(|(name, _)| name.to_string()).collect();
    let exports = ty.exports(engine).map(|(name, _)| name.to_string()).collect();
    (imports, exports)
}

impl SandboxEngine {
    /// Read the plugin file, check it is a component built for this host,
    /// and compile it (or load it from the compiled-component cache).
    pub(crate) async fn read_and_compile(
        &self,
        path: &Path,
        pinned_sha256: Option<&str>,
    ) -> Result<(Component, String, Role, Vec<String>, Vec<String>), LoadError> {
        let bytes =
            tokio::fs::read(path).await.map_err(|source| LoadError::Read { path: path.to_path_buf(), source })?;
        let sha256 = sha256_hex(&bytes);
        if let Some(expected) = pinned_sha256
            && !expected.trim().eq_ignore_ascii_case(&sha256)
        {
            return Err(LoadError::Sha256Mismatch {
                path: path.to_path_buf(),
                expected: expected.trim().to_string(),
                actual: sha256,
            });
        }
        if bytes.len() < 8 || bytes[..4] != WASM_MAGIC {
            return Err(LoadError::NotWasm { path: path.to_path_buf() });
        }
        if bytes[..8] == CORE_MODULE_PREAMBLE {
            return Err(LoadError::CoreModule { path: path.to_path_buf() });
        }
        let component = self
            .compile(Arc::new(bytes), &sha256)
            .await
            .map_err(|e| LoadError::InvalidComponent { path: path.to_path_buf(), message: format!("{e:#}") })?;
        let (imports, exports) = component_interface(&self.engine, &component);
        for item in imports.iter().chain(&exports) {
            if let Some(version) = techne_version(item)
                && !supported_version(version)
            {
                return Err(LoadError::IncompatibleWitVersion {
                    path: path.to_path_buf(),
                    found: version.to_string(),
                    item: item.clone(),
                });
            }
        }
        if let Some(import) = imports.iter().find(|i| !import_provided(i)) {
            return Err(LoadError::ImportNotProvided { path: path.to_path_buf(), import: import.clone() });
        }
        let exported_interface = |name: &str| {
            exports.iter().any(|e| techne_version(e).is_some() && e.starts_with(&format!("{WIT_PACKAGE}/{name}@")))
        };
        let roles: Vec<Role> = Role::ALL.into_iter().filter(|r| exported_interface(r.interface())).collect();
        let role = match roles.as_slice() {
            [role] if exported_interface("describe") => *role,
            _ => {
                return Err(LoadError::NotAPlugin {
                    path: path.to_path_buf(),
                    exports: if exports.is_empty() { "nothing".to_string() } else { exports.join(", ") },
                });
            }
        };
        Ok((component, sha256, role, imports, exports))
    }

    /// Load a plugin for a run: verify, compile, check the contract, read its
    /// metadata and resolve its parameters.
    pub async fn load(&self, spec: &PluginSpec, models: &ModelSet) -> Result<Plugin, LoadError> {
        let (component, sha256, role, _, _) = self.read_and_compile(&spec.path, spec.sha256.as_deref()).await?;
        self.load_compiled(spec, models, component, sha256, role).await
    }

    /// The second half of [`SandboxEngine::load`], for a component already
    /// read and checked by `read_and_compile`.
    pub(crate) async fn load_compiled(
        &self,
        spec: &PluginSpec,
        models: &ModelSet,
        component: Component,
        sha256: String,
        role: Role,
    ) -> Result<Plugin, LoadError> {
        let invalid =
            |e: wasmtime::Error| LoadError::InvalidComponent { path: spec.path.clone(), message: format!("{e:#}") };
        let pre = self.linker.instantiate_pre(&component).map_err(invalid)?;
        let describe = guest::describe::GuestIndices::new(&pre).map_err(invalid)?;
        let role_indices = RoleIndices::new(role, &pre).map_err(invalid)?;
        let (_, exports) = component_interface(&self.engine, &component);
        let trainer_indices = TrainerIndices::new(role, &exports, &pre).map_err(invalid)?;
        let grant = Arc::new(PluginGrant {
            plugin: spec.name.clone(),
            allowed_models: spec.allowed_models.iter().cloned().collect(),
            default_model: spec.default_model.clone(),
            caller: sha256.clone(),
        });
        let mut plugin = Plugin {
            name: spec.name.clone(),
            path: spec.path.clone(),
            sha256,
            role,
            metadata: Metadata {
                name: String::new(),
                version: String::new(),
                description: String::new(),
                parameters: Vec::new(),
            },
            limits: spec.limits.clone(),
            grant,
            params: Arc::new(Vec::new()),
            models: models.clone(),
            state: Arc::new(PluginState::new(spec.limits.state_bytes)),
            engine: self.engine.clone(),
            pre,
            describe,
            role_indices,
            trainer_indices,
        };
        let metadata = plugin
            .read_metadata()
            .await
            .map_err(|source| LoadError::Metadata { path: spec.path.clone(), source: Box::new(source) })?;
        plugin.params = Arc::new(resolve_parameters(&spec.name, &metadata, &spec.params)?);
        plugin.metadata = metadata;
        Ok(plugin)
    }
}

/// Defaults from the metadata, overridden by configured values; an unknown
/// name or a value of the wrong kind is an error.
fn resolve_parameters(
    plugin: &str,
    metadata: &Metadata,
    configured: &BTreeMap<String, String>,
) -> Result<Vec<ParameterValue>, LoadError> {
    for (name, value) in configured {
        let Some(declared) = metadata.parameters.iter().find(|p| &p.name == name) else {
            let known: Vec<&str> = metadata.parameters.iter().map(|p| p.name.as_str()).collect();
            return Err(LoadError::Parameter {
                plugin: plugin.to_string(),
                message: format!(
                    "parameter `{name}` is not declared by the plugin; it declares: {}",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                ),
            });
        };
        if !declared.kind.accepts(value) {
            return Err(LoadError::Parameter {
                plugin: plugin.to_string(),
                message: format!("parameter `{name}` = {value:?} is not a valid {:?} value", declared.kind)
                    .to_lowercase(),
            });
        }
    }
    Ok(metadata
        .parameters
        .iter()
        .map(|p| ParameterValue {
            name: p.name.clone(),
            value: configured.get(&p.name).cloned().unwrap_or_else(|| p.default_value.clone()),
        })
        .collect())
}

/// The work item a fresh instance serves: its id and seed.
#[derive(Debug, Clone)]
pub struct WorkItem {
    /// The item's identity (dataset id), used in logs.
    pub id: String,
    /// The item's seed (see [`super::item_seed`]).
    pub seed: u64,
}

impl Plugin {
    /// The plugin's name in the run configuration.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The component file.
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The file's sha256 (hex).
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
    /// The role it plays.
    pub fn role(&self) -> Role {
        self.role
    }
    /// Its metadata.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }
    /// Its limits.
    pub fn limits(&self) -> &SandboxLimits {
        &self.limits
    }
    /// Its key/value state (shared by all its instances in this run).
    pub fn state(&self) -> &Arc<PluginState> {
        &self.state
    }
    /// Use `state` as its key/value state instead of the empty one it was
    /// loaded with: state that outlives one load, such as a loop strategy's
    /// state across rounds and resumes.
    pub fn share_state(&mut self, state: Arc<PluginState>) {
        self.state = state;
    }
    /// The training extension it exports next to its role, if any.
    pub fn trainer(&self) -> Option<TrainerExtension> {
        self.trainer_indices.as_ref().map(TrainerIndices::extension)
    }
    /// Whether it also exports `reward-model-trainer` (Prompt-OIRL's
    /// reward model, next to `prompt-policy-trainer`).
    pub fn fits_reward_model(&self) -> bool {
        self.trainer_indices.as_ref().is_some_and(TrainerIndices::fits_reward_model)
    }
    /// Resolved parameters (defaults overridden by the configuration).
    pub fn parameters(&self) -> impl Iterator<Item = (&str, &str)> {
        self.params.iter().map(|p| (p.name.as_str(), p.value.as_str()))
    }

    async fn read_metadata(&self) -> Result<Metadata, CallError> {
        let mut instance = self.instantiate(&WorkItem { id: "metadata".into(), seed: 0 }).await?;
        let describe = instance.describe.clone();
        let metadata =
            instance.guarded(0, move |store| Box::pin(async move { describe.call_metadata(store).await })).await?;
        if metadata.name.trim().is_empty() {
            return Err(CallError::InvalidOutput { reason: "metadata has an empty name".into() });
        }
        let mut seen = std::collections::BTreeSet::new();
        let metadata = Metadata::from(metadata);
        for p in &metadata.parameters {
            if !seen.insert(p.name.as_str()) {
                return Err(CallError::InvalidOutput { reason: format!("parameter `{}` is declared twice", p.name) });
            }
            if !p.kind.accepts(&p.default_value) {
                return Err(CallError::InvalidOutput {
                    reason: format!(
                        "default {:?} of parameter `{}` is not a valid {:?}",
                        p.default_value, p.name, p.kind
                    ),
                });
            }
        }
        Ok(metadata)
    }

    /// A fresh instance in a new store, for one work item.
    pub async fn instantiate(&self, item: &WorkItem) -> Result<PluginInstance, CallError> {
        let capabilities = CapabilityContext {
            grant: self.grant.clone(),
            models: self.models.clone(),
            state: self.state.clone(),
            item_seed: item.seed,
            item_id: item.id.clone(),
            requests: 0,
            traffic: BoundaryTraffic::new(self.limits.max_input_bytes, self.limits.max_output_bytes),
        };
        let mut store =
            Store::new(&self.engine, StoreData::new(SandboxLimiter::new(self.limits.clone()), capabilities));
        store.limiter(|data| &mut data.limiter);
        store.epoch_deadline_callback(|mut ctx| {
            if Instant::now() >= ctx.data().deadline {
                ctx.data_mut().timed_out = true;
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store.set_epoch_deadline(1);
        store.data_mut().deadline = Instant::now() + self.limits.timeout;
        let instantiated = tokio::time::timeout(self.limits.timeout, self.pre.instantiate_async(&mut store)).await;
        let instance = match instantiated {
            Err(_) => return Err(CallError::Timeout { limit: self.limits.timeout }),
            Ok(Err(e)) => {
                let classified = classify(&store, e);
                return Err(match classified {
                    CallError::Trap { message } => CallError::Instantiation { message },
                    other => other,
                });
            }
            Ok(Ok(instance)) => instance,
        };
        let load = |store: &mut Store<StoreData>| -> wasmtime::Result<_> {
            let trainer = match &self.trainer_indices {
                Some(indices) => Some(indices.load(&mut *store, &instance)?),
                None => None,
            };
            Ok((self.describe.load(&mut *store, &instance)?, self.role_indices.load(store, &instance)?, trainer))
        };
        let (describe, role, trainer) =
            load(&mut store).map_err(|e| CallError::Instantiation { message: format!("{e:#}") })?;
        Ok(PluginInstance {
            store,
            describe,
            role,
            trainer,
            params: self.params.clone(),
            limits: self.limits.clone(),
            poisoned: false,
        })
    }

    /// Rewrite a question in a fresh instance (rewriter plugins).
    pub async fn rewrite(&self, item: &WorkItem, question: &str) -> Result<String, CallError> {
        self.instantiate(item).await?.rewrite(question).await
    }

    /// Propose prompts in a fresh instance (prompt-policy plugins).
    pub async fn propose(&self, item: &WorkItem, query: &str) -> Result<Vec<String>, CallError> {
        self.instantiate(item).await?.propose(query).await
    }

    /// Solve a problem in a fresh instance (solver plugins).
    pub async fn solve(&self, item: &WorkItem, problem: &str) -> Result<Solution, CallError> {
        self.instantiate(item).await?.solve(problem).await
    }
}

/// Turn a failed call's error into a [`CallError`], using what the store saw.
fn classify(store: &Store<StoreData>, error: wasmtime::Error) -> CallError {
    let data = store.data();
    if data.timed_out {
        return CallError::Timeout { limit: data.limiter_timeout() };
    }
    let trap = error.downcast_ref::<Trap>().copied();
    if trap == Some(Trap::StackOverflow) {
        return CallError::StackOverflow;
    }
    if data.limiter.memory_cap_hit {
        return CallError::MemoryLimit { limit_bytes: data.limiter_memory_bytes() };
    }
    let stderr = data.stderr_text();
    if let Some(pos) = stderr.find("panicked at") {
        // Rust's panic hook prints "thread '…' panicked at FILE:LINE:COL:\nMESSAGE".
        let after = &stderr[pos..];
        let message = after.split_once('\n').map(|(_, m)| m).unwrap_or(after);
        let message = message.lines().next().unwrap_or(message).trim();
        return CallError::Panic { message: message.to_string() };
    }
    let mut message = match trap {
        Some(trap) => trap.to_string(),
        None => format!("{error:#}"),
    };
    if data.limiter.table_cap_hit {
        message.push_str(" (after the plugin hit its table-elements cap)");
    }
    if !stderr.is_empty() {
        message.push_str("; stderr: ");
        message.push_str(&stderr);
    }
    CallError::Trap { message }
}

impl StoreData {
    fn limiter_timeout(&self) -> std::time::Duration {
        self.limiter.limits().timeout
    }
    fn limiter_memory_bytes(&self) -> u64 {
        self.limiter.limits().memory_bytes
    }
}

/// Bytes of parameter values crossing into the plugin.
fn params_bytes(params: &[ParameterValue]) -> u64 {
    params.iter().map(|p| (p.name.len() + p.value.len()) as u64).sum()
}

type CallFuture<'a, R> = Pin<Box<dyn Future<Output = wasmtime::Result<R>> + Send + 'a>>;

/// One live instance of a plugin in its own store. Calls on it are cheap;
/// after any call fails with a trap or timeout it refuses further calls.
pub struct PluginInstance {
    store: Store<StoreData>,
    describe: guest::describe::Guest,
    role: RoleGuest,
    trainer: Option<TrainerGuest>,
    params: Arc<Vec<ParameterValue>>,
    limits: SandboxLimits,
    poisoned: bool,
}

impl PluginInstance {
    /// Run one export call under the deadline and the boundary caps.
    async fn guarded<R: Send>(
        &mut self,
        input_bytes: u64,
        call: impl for<'a> FnOnce(&'a mut Store<StoreData>) -> CallFuture<'a, R>,
    ) -> Result<R, CallError> {
        if self.poisoned {
            return Err(CallError::Poisoned);
        }
        let data = self.store.data_mut();
        data.capabilities.traffic = BoundaryTraffic::new(self.limits.max_input_bytes, self.limits.max_output_bytes);
        if data.capabilities.traffic.send_in(input_bytes).is_err() {
            return Err(data.capabilities.traffic.exceeded.take().unwrap_or(CallError::BoundaryLimit {
                direction: "into the plugin",
                bytes: input_bytes,
                limit: self.limits.max_input_bytes,
                setting: "max-input-bytes",
            }));
        }
        data.deadline = Instant::now() + self.limits.timeout;
        data.timed_out = false;
        self.store.set_epoch_deadline(1);
        let outcome = tokio::time::timeout(self.limits.timeout, call(&mut self.store)).await;
        match outcome {
            Err(_) => {
                self.poisoned = true;
                Err(CallError::Timeout { limit: self.limits.timeout })
            }
            Ok(Err(e)) => {
                self.poisoned = true;
                Err(classify(&self.store, e))
            }
            Ok(Ok(value)) => match self.store.data_mut().capabilities.traffic.exceeded.take() {
                Some(exceeded) => Err(exceeded),
                None => Ok(value),
            },
        }
    }

    /// Count the bytes of a result against the outgoing cap.
    fn check_output(&mut self, bytes: u64) -> Result<(), CallError> {
        let traffic = &mut self.store.data_mut().capabilities.traffic;
        if traffic.send_out(bytes).is_err() {
            return Err(traffic
                .exceeded
                .take()
                .unwrap_or(CallError::InvalidOutput { reason: "output too large".into() }));
        }
        Ok(())
    }

    fn role_mismatch(&self, wanted: Role) -> CallError {
        let actual = match self.role {
            RoleGuest::Rewriter(_) => Role::Rewriter,
            RoleGuest::PromptPolicy(_) => Role::PromptPolicy,
            RoleGuest::Solver(_) => Role::Solver,
            RoleGuest::EvolutionStrategy(_) => Role::EvolutionStrategy,
            RoleGuest::MigrationStrategy(_) => Role::MigrationStrategy,
        };
        CallError::InvalidOutput {
            reason: format!("the plugin is a {actual}, not a {wanted}: it cannot be used in that pipeline stage"),
        }
    }

    /// The plugin's metadata.
    pub async fn metadata(&mut self) -> Result<Metadata, CallError> {
        let describe = self.describe.clone();
        let m = self.guarded(0, move |store| Box::pin(async move { describe.call_metadata(store).await })).await?;
        Ok(Metadata::from(m))
    }

    /// Rewrite a question.
    pub async fn rewrite(&mut self, question: &str) -> Result<String, CallError> {
        let RoleGuest::Rewriter(g) = self.role.clone() else { return Err(self.role_mismatch(Role::Rewriter)) };
        let params = self.params.clone();
        let question = question.to_string();
        let input = question.len() as u64 + params_bytes(&params);
        let out = self
            .guarded(input, move |store| Box::pin(async move { g.call_rewrite(store, &question, &params).await }))
            .await?
            .map_err(reported)?;
        self.check_output(out.len() as u64)?;
        if out.trim().is_empty() {
            return Err(CallError::InvalidOutput { reason: "the rewritten question is empty".into() });
        }
        Ok(out)
    }

    /// Propose prompts for a query, best first.
    pub async fn propose(&mut self, query: &str) -> Result<Vec<String>, CallError> {
        let RoleGuest::PromptPolicy(g) = self.role.clone() else { return Err(self.role_mismatch(Role::PromptPolicy)) };
        let params = self.params.clone();
        let query = query.to_string();
        let input = query.len() as u64 + params_bytes(&params);
        let out = self
            .guarded(input, move |store| Box::pin(async move { g.call_propose(store, &query, &params).await }))
            .await?
            .map_err(reported)?;
        self.check_output(out.iter().map(|p| p.len() as u64).sum())?;
        if out.is_empty() || out.iter().all(|p| p.trim().is_empty()) {
            return Err(CallError::InvalidOutput { reason: "the policy proposed no prompt".into() });
        }
        Ok(out)
    }

    /// Solve a problem.
    pub async fn solve(&mut self, problem: &str) -> Result<Solution, CallError> {
        let RoleGuest::Solver(g) = self.role.clone() else { return Err(self.role_mismatch(Role::Solver)) };
        let params = self.params.clone();
        let problem = problem.to_string();
        let input = problem.len() as u64 + params_bytes(&params);
        let out = self
            .guarded(input, move |store| Box::pin(async move { g.call_solve(store, &problem, &params).await }))
            .await?
            .map_err(reported)?;
        let bytes =
            out.answer.len() as u64 + out.trace.iter().map(|s| (s.label.len() + s.text.len()) as u64).sum::<u64>();
        self.check_output(bytes)?;
        Ok(Solution {
            answer: out.answer,
            trace: out.trace.into_iter().map(|s| TraceStep { label: s.label, text: s.text }).collect(),
        })
    }
}

impl PluginInstance {
    /// Write one scored QA pair from a knowledge fragment (evolution strategies).
    pub async fn write_pair(&mut self, fragment: &str, generation: u32, model: &str) -> Result<ScoredPair, CallError> {
        let RoleGuest::EvolutionStrategy(g) = self.role.clone() else {
            return Err(self.role_mismatch(Role::EvolutionStrategy));
        };
        let params = self.params.clone();
        let (fragment, model) = (fragment.to_string(), model.to_string());
        let input = (fragment.len() + model.len()) as u64 + params_bytes(&params);
        let out = self
            .guarded(input, move |store| {
                Box::pin(async move { g.call_write_pair(store, &fragment, generation, &model, &params).await })
            })
            .await?
            .map_err(reported)?;
        let pair = ScoredPair::from_wit(out);
        self.check_output(pair.bytes())?;
        if !pair.ifd.is_finite() {
            return Err(CallError::InvalidOutput { reason: format!("IFD {} is not a finite number", pair.ifd) });
        }
        Ok(pair)
    }

    /// Choose the fine-tuning set among candidates; returns indices (evolution strategies).
    pub async fn select(&mut self, candidates: &[ScoredPair], generation: u32) -> Result<Vec<u32>, CallError> {
        let RoleGuest::EvolutionStrategy(g) = self.role.clone() else {
            return Err(self.role_mismatch(Role::EvolutionStrategy));
        };
        let params = self.params.clone();
        let input = candidates.iter().map(ScoredPair::bytes).sum::<u64>() + params_bytes(&params);
        let wit: Vec<_> = candidates.iter().map(ScoredPair::to_wit).collect();
        let out = self
            .guarded(input, move |store| Box::pin(async move { g.call_select(store, &wit, generation, &params).await }))
            .await?
            .map_err(reported)?;
        self.check_output(4 * out.len() as u64)?;
        check_indices(&out, candidates.len())?;
        Ok(out)
    }

    /// Judge a local response against a reference (migration strategies).
    pub async fn judge(
        &mut self,
        reference: &Example,
        response: &str,
        service_model: &str,
    ) -> Result<Judgement, CallError> {
        let RoleGuest::MigrationStrategy(g) = self.role.clone() else {
            return Err(self.role_mismatch(Role::MigrationStrategy));
        };
        let params = self.params.clone();
        let reference = reference.to_wit();
        let (response, service_model) = (response.to_string(), service_model.to_string());
        let input = (reference.prompt.len() + reference.response.len() + response.len() + service_model.len()) as u64
            + params_bytes(&params);
        let out = self
            .guarded(input, move |store| {
                Box::pin(async move { g.call_judge(store, &reference, &response, &service_model, &params).await })
            })
            .await?
            .map_err(reported)?;
        self.check_output(16)?;
        for (name, score) in [("similarity", out.similarity), ("precision", out.precision)] {
            if !(1.0..=100.0).contains(&score) {
                return Err(CallError::InvalidOutput { reason: format!("{name} score {score} is outside 1 to 100") });
            }
        }
        Ok(Judgement { similarity: out.similarity, precision: out.precision })
    }

    /// Write synthetic examples from seeds (migration strategies).
    pub async fn synthesize(
        &mut self,
        seeds: &[Example],
        count: u32,
        service_model: &str,
        round: u32,
    ) -> Result<Vec<Example>, CallError> {
        let RoleGuest::MigrationStrategy(g) = self.role.clone() else {
            return Err(self.role_mismatch(Role::MigrationStrategy));
        };
        let params = self.params.clone();
        let wit: Vec<_> = seeds.iter().map(Example::to_wit).collect();
        let service_model = service_model.to_string();
        let input = seeds.iter().map(Example::bytes).sum::<u64>() + service_model.len() as u64 + params_bytes(&params);
        let out = self
            .guarded(input, move |store| {
                Box::pin(async move { g.call_synthesize(store, &wit, count, &service_model, round, &params).await })
            })
            .await?
            .map_err(reported)?;
        let examples: Vec<Example> =
            out.into_iter().map(|e| Example { prompt: e.prompt, response: e.response }).collect();
        self.check_output(examples.iter().map(Example::bytes).sum())?;
        Ok(examples)
    }

    /// Choose which candidate examples to keep; returns indices (migration strategies).
    pub async fn curate(
        &mut self,
        candidates: &[Example],
        existing: &[Example],
        test_prompts: &[String],
    ) -> Result<Vec<u32>, CallError> {
        let RoleGuest::MigrationStrategy(g) = self.role.clone() else {
            return Err(self.role_mismatch(Role::MigrationStrategy));
        };
        let params = self.params.clone();
        let input = candidates.iter().chain(existing).map(Example::bytes).sum::<u64>()
            + test_prompts.iter().map(|p| p.len() as u64).sum::<u64>()
            + params_bytes(&params);
        let candidates_wit: Vec<_> = candidates.iter().map(Example::to_wit).collect();
        let existing_wit: Vec<_> = existing.iter().map(Example::to_wit).collect();
        let test_prompts = test_prompts.to_vec();
        let out = self
            .guarded(input, move |store| {
                Box::pin(
                    async move { g.call_curate(store, &candidates_wit, &existing_wit, &test_prompts, &params).await },
                )
            })
            .await?
            .map_err(reported)?;
        self.check_output(4 * out.len() as u64)?;
        check_indices(&out, candidates.len())?;
        Ok(out)
    }
}

/// Indices returned by a plugin must be in range and distinct.
fn check_indices(indices: &[u32], len: usize) -> Result<(), CallError> {
    let mut seen = std::collections::BTreeSet::new();
    for &i in indices {
        if i as usize >= len {
            return Err(CallError::InvalidOutput {
                reason: format!("index {i} is out of range (there are {len} candidates)"),
            });
        }
        if !seen.insert(i) {
            return Err(CallError::InvalidOutput { reason: format!("index {i} is returned twice") });
        }
    }
    Ok(())
}

/// A QA pair written from a knowledge fragment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QaPair {
    /// The fragment it was written from.
    pub fragment: String,
    /// The question.
    pub question: String,
    /// The answer.
    pub answer: String,
}

/// A QA pair with its IFD score and generation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScoredPair {
    /// The pair.
    pub pair: QaPair,
    /// loss(answer | question) / loss(answer).
    pub ifd: f64,
    /// The generation that wrote it.
    pub generation: u32,
}

impl ScoredPair {
    fn from_wit(p: guest::evolution_strategy::ScoredPair) -> Self {
        ScoredPair {
            pair: QaPair { fragment: p.pair.fragment, question: p.pair.question, answer: p.pair.answer },
            ifd: p.ifd,
            generation: p.generation,
        }
    }
    fn to_wit(&self) -> guest::evolution_strategy::ScoredPair {
        guest::evolution_strategy::ScoredPair {
            pair: guest::evolution_strategy::QaPair {
                fragment: self.pair.fragment.clone(),
                question: self.pair.question.clone(),
                answer: self.pair.answer.clone(),
            },
            ifd: self.ifd,
            generation: self.generation,
        }
    }
    fn bytes(&self) -> u64 {
        (self.pair.fragment.len() + self.pair.question.len() + self.pair.answer.len()) as u64 + 12
    }
}

/// A prompt with its reference response.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Example {
    /// The prompt.
    pub prompt: String,
    /// The reference response.
    pub response: String,
}

impl Example {
    fn to_wit(&self) -> guest::migration_strategy::Example {
        guest::migration_strategy::Example { prompt: self.prompt.clone(), response: self.response.clone() }
    }
    fn bytes(&self) -> u64 {
        (self.prompt.len() + self.response.len()) as u64
    }
}

/// A judge's scores, each 1 to 100.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Judgement {
    /// Closeness to the reference.
    pub similarity: f64,
    /// Precision and correctness.
    pub precision: f64,
}

/// Convert the plugin's own error into a [`CallError`].
fn reported(error: wit_types::PluginError) -> CallError {
    CallError::Plugin(match error {
        wit_types::PluginError::InvalidInput(m) => PluginReportedError::InvalidInput(m),
        wit_types::PluginError::Host(e) => PluginReportedError::Host(crate::capabilities::describe_wit_error(&e)),
        wit_types::PluginError::Failed(m) => PluginReportedError::Failed(m),
    })
}
