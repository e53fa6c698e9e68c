//! `techne plugin inspect`: what a plugin file is, without running any work.

use std::path::Path;

use crate::backends::ModelSet;

use super::engine::SandboxEngine;
use super::error::LoadError;
use super::plugin::{Metadata, PluginSpec, Role};

/// What `techne plugin inspect` reports about a plugin file.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PluginInspection {
    /// The file.
    pub path: String,
    /// Its sha256 (hex), for pinning in a run configuration.
    pub sha256: String,
    /// Its size in bytes.
    pub size_bytes: u64,
    /// The role it plays.
    pub role: Role,
    /// The WIT world it targets, e.g. `techne:plugin/rewriter-plugin@0.1.0`.
    pub world: String,
    /// Every import of the component.
    pub imports: Vec<String>,
    /// Every export of the component.
    pub exports: Vec<String>,
    /// What the plugin says about itself.
    pub metadata: Metadata,
}

/// Inspect a plugin file: check it as `techne run` would and read its metadata.
pub async fn inspect_plugin(engine: &SandboxEngine, path: &Path) -> Result<PluginInspection, LoadError> {
    let (component, sha256, role, imports, exports) = engine.read_and_compile(path, None).await?;
    let size_bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let spec = PluginSpec::new("inspect", path);
    let plugin = engine.load_compiled(&spec, &ModelSet::new(), component, sha256.clone(), role).await?;
    Ok(PluginInspection {
        path: path.display().to_string(),
        sha256,
        size_bytes,
        role,
        world: format!("techne:plugin/{}@0.1.0", role.world()),
        imports,
        exports,
        metadata: plugin.metadata().clone(),
    })
}
