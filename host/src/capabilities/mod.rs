//! The capabilities a plugin may import, one module per WIT interface of
//! `techne:plugin`: [`llm`], [`scoring`], [`embeddings`], [`logging`],
//! [`state`], [`randomness`]. Each checks the plugin's grant (its
//! allow-listed models, deny by default), accounts the bytes that cross the
//! sandbox boundary, and forwards to a model backend.

pub mod embeddings;
pub mod llm;
pub mod logging;
pub mod randomness;
pub mod scoring;
pub mod state;

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::backends::{BackendError, ModelSet};
use crate::bindings::capabilities::types::Error as WitError;
use crate::sandbox::CallError;

pub use state::PluginState;

/// What one plugin is allowed to use, from its run configuration.
#[derive(Debug, Clone, Default)]
pub struct PluginGrant {
    /// The plugin's name in the run configuration.
    pub plugin: String,
    /// Models it may call; every other model is denied.
    pub allowed_models: BTreeSet<String>,
    /// Its default model, if configured (always one of `allowed_models`).
    pub default_model: Option<String>,
    /// Who the plugin is, for the model-call cache: its file's sha256.
    pub caller: String,
}

/// Bytes that crossed the sandbox boundary during one call, against the caps.
#[derive(Debug, Clone)]
pub(crate) struct BoundaryTraffic {
    pub(crate) into_plugin: u64,
    pub(crate) out_of_plugin: u64,
    pub(crate) max_into_plugin: u64,
    pub(crate) max_out_of_plugin: u64,
    /// The first cap that was exceeded, reported when the call ends.
    pub(crate) exceeded: Option<CallError>,
}

impl BoundaryTraffic {
    pub(crate) fn new(max_into_plugin: u64, max_out_of_plugin: u64) -> Self {
        Self { into_plugin: 0, out_of_plugin: 0, max_into_plugin, max_out_of_plugin, exceeded: None }
    }

    /// Count bytes the plugin sends to the host; fails once over the cap.
    pub(crate) fn send_out(&mut self, bytes: u64) -> Result<(), WitError> {
        self.out_of_plugin = self.out_of_plugin.saturating_add(bytes);
        let (total, limit) = (self.out_of_plugin, self.max_out_of_plugin);
        self.check(total, limit, "out of the plugin", "max-output-bytes", "send less per call")
    }

    /// Count bytes the host sends into the plugin; fails once over the cap.
    pub(crate) fn send_in(&mut self, bytes: u64) -> Result<(), WitError> {
        self.into_plugin = self.into_plugin.saturating_add(bytes);
        let (total, limit) = (self.into_plugin, self.max_into_plugin);
        self.check(total, limit, "into the plugin", "max-input-bytes", "ask for less per call")
    }

    fn check(
        &mut self,
        bytes: u64,
        limit: u64,
        direction: &'static str,
        setting: &'static str,
        advice: &str,
    ) -> Result<(), WitError> {
        if bytes <= limit {
            return Ok(());
        }
        let error = CallError::BoundaryLimit { direction, bytes, limit, setting };
        let message = format!("{error}: {advice} or raise the limit in the run configuration");
        self.exceeded.get_or_insert(error);
        Err(WitError::LimitExceeded(message))
    }
}

/// Everything the capabilities need while serving one store: the grant, the
/// models, the plugin's state, the work item's seed and the traffic so far.
pub(crate) struct CapabilityContext {
    pub(crate) grant: Arc<PluginGrant>,
    pub(crate) models: ModelSet,
    pub(crate) state: Arc<PluginState>,
    pub(crate) item_seed: u64,
    pub(crate) item_id: String,
    /// Generation requests made so far, to derive per-request seeds.
    pub(crate) requests: u64,
    pub(crate) traffic: BoundaryTraffic,
}

impl CapabilityContext {
    /// Check that this plugin may use `model` and that it exists.
    fn check_model(&self, model: &str) -> Result<(), WitError> {
        if !self.grant.allowed_models.contains(model) {
            let allowed = if self.grant.allowed_models.is_empty() {
                "it may use no model".to_string()
            } else {
                format!("it may use: {}", self.grant.allowed_models.iter().cloned().collect::<Vec<_>>().join(", "))
            };
            return Err(WitError::NotAllowed(format!(
                "model '{model}' is not allowed for plugin '{}' ({allowed}): add it to `allowed-models` in [plugins.{}] of the run configuration",
                self.grant.plugin, self.grant.plugin
            )));
        }
        self.models.get(model).map(|_| ()).ok_or_else(|| {
            WitError::UnknownModel(format!(
                "the run configuration defines no model '{model}': add a [models.{model}] table, or use one of: {}",
                self.models.names().collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// A reproducible seed for the next generation request of this item.
    fn next_request_seed(&mut self) -> u64 {
        self.requests += 1;
        crate::sandbox::derive_seed(self.item_seed, self.requests)
    }
}

/// Convert a backend failure into the WIT error a plugin sees.
fn backend_error(model: &str, error: BackendError) -> WitError {
    match error {
        BackendError::Unsupported(m) => WitError::Unsupported(format!("model '{model}': {m}")),
        BackendError::InvalidRequest(m) => WitError::InvalidRequest(format!("model '{model}': {m}")),
        BackendError::Failed(m) => WitError::Backend(format!("model '{model}': {m}")),
    }
}

/// Bytes of a list of strings as they cross the boundary.
fn strings_bytes<'a>(strings: impl IntoIterator<Item = &'a String>) -> u64 {
    strings.into_iter().map(|s| s.len() as u64).sum()
}

impl crate::bindings::capabilities::types::Host for CapabilityContext {}

/// A WIT error as text for reports, e.g. `not-allowed: model 'x' ...`.
pub(crate) fn describe_wit_error(error: &WitError) -> String {
    match error {
        WitError::NotAllowed(m) => format!("not-allowed: {m}"),
        WitError::UnknownModel(m) => format!("unknown-model: {m}"),
        WitError::InvalidRequest(m) => format!("invalid-request: {m}"),
        WitError::Unsupported(m) => format!("unsupported: {m}"),
        WitError::LimitExceeded(m) => format!("limit-exceeded: {m}"),
        WitError::Backend(m) => format!("backend: {m}"),
    }
}
