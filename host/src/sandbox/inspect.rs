//! `techne plugin inspect`: what a plugin file is, without running any work.

use std::path::Path;

use crate::backends::ModelSet;

use super::engine::SandboxEngine;
use super::error::LoadError;
use super::plugin::{Metadata, PluginSpec, REWARD_MODEL_TRAINER, Role, TrainerExtension};

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
    /// The training extension it exports next to its role, if any.
    pub trainer: Option<TrainerExtension>,
    /// Whether it also exports `reward-model-trainer` (Prompt-OIRL).
    pub reward_model_trainer: bool,
    /// What it provides, in words, e.g. `prompt policy + prompt-policy
    /// trainer + reward-model trainer`.
    pub provides: String,
    /// The WIT world it targets, e.g. `techne:plugin/rewriter-plugin@0.1.0`
    /// or, with a training extension, `…/rewriter-trainer-plugin@0.1.0`.
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
    let trainer = plugin.trainer();
    let reward_model_trainer = plugin.fits_reward_model();
    let world = match trainer {
        Some(extension) => format!("{}-plugin", extension.interface()),
        None => role.world(),
    };
    Ok(PluginInspection {
        path: path.display().to_string(),
        sha256,
        size_bytes,
        role,
        trainer,
        reward_model_trainer,
        provides: provides(role, trainer, reward_model_trainer),
        world: format!("techne:plugin/{world}@0.1.0"),
        imports,
        exports,
        metadata: plugin.metadata().clone(),
    })
}

/// What a component provides, in words: its role, then each training
/// extension, e.g. `rewriter + rewriter trainer`.
pub fn provides(role: Role, trainer: Option<TrainerExtension>, reward_model_trainer: bool) -> String {
    let mut parts = vec![role.interface().replace('-', " ")];
    if let Some(extension) = trainer {
        parts.push(format!("{} trainer", extension.role().interface()));
    }
    if reward_model_trainer {
        parts.push(REWARD_MODEL_TRAINER.replace("-trainer", " trainer"));
    }
    parts.join(" + ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provides_names_every_exported_side() {
        assert_eq!(provides(Role::Solver, None, false), "solver");
        assert_eq!(
            provides(Role::Rewriter, Some(TrainerExtension::RewriterTrainer), false),
            "rewriter + rewriter trainer"
        );
        assert_eq!(
            provides(Role::PromptPolicy, Some(TrainerExtension::PromptPolicyTrainer), true),
            "prompt policy + prompt-policy trainer + reward-model trainer"
        );
    }
}
