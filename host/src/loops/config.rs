//! The `[loop]` section of a run configuration: which loop, how many rounds,
//! the strategy plugin, the model the loop trains, the training settings
//! shared by every kind, and one table of settings per kind
//! (`[loop.self-evolution]`, `[loop.llamaduo]`, …). Each kind's settings
//! struct lives in that kind's module; this file only gathers them.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::llamaduo::LlamaDuoSettings;
use super::qpo::QpoSettings;
use super::rewriter_dpo::RewriterDpoSettings;
use super::self_evolution::SelfEvolutionSettings;
use crate::config::{ModelConfig, RunConfig};

/// `[loop]`: a multi-round loop (`techne loop CONFIG.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct LoopConfig {
    /// Which loop runs.
    pub kind: LoopKind,
    /// Rounds (generations) at most; default: the kind's paper value.
    pub rounds: Option<u32>,
    /// The strategy plugin (a `[plugins.NAME]` of the kind's role).
    pub strategy: String,
    /// The `[models.NAME]` entry the loop trains (`backend = "local"`): its
    /// `model` is the base; each round's trained model stands behind this
    /// name for the next round's calls.
    pub model: String,
    /// How each round trains.
    #[serde(default)]
    pub training: LoopTrainingConfig,
    /// `[loop.self-evolution]`.
    pub self_evolution: Option<SelfEvolutionSettings>,
    /// `[loop.llamaduo]`.
    pub llamaduo: Option<LlamaDuoSettings>,
    /// `[loop.qpo]`.
    pub qpo: Option<QpoSettings>,
    /// `[loop.rewriter-dpo]`.
    pub rewriter_dpo: Option<RewriterDpoSettings>,
}

/// The loop kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoopKind {
    /// Self-Evolution (arXiv 2408.12247): generations of self-written QA pairs selected by IFD.
    SelfEvolution,
    /// LlamaDuo (arXiv 2408.13467): service-judged rounds of synthetic data until a threshold.
    Llamaduo,
    /// QPO (arXiv 2408.10504): multi-loop offline RL of a reward-conditioned prompt policy.
    Qpo,
    /// Question Rewriter (arXiv 2408.10573): DPO of the rewriter on preference pairs of rewrites.
    RewriterDpo,
}

impl LoopKind {
    /// The name as written in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            LoopKind::SelfEvolution => "self-evolution",
            LoopKind::Llamaduo => "llamaduo",
            LoopKind::Qpo => "qpo",
            LoopKind::RewriterDpo => "rewriter-dpo",
        }
    }

    /// The role the strategy plugin must have.
    pub fn strategy_role(self) -> crate::sandbox::Role {
        match self {
            LoopKind::SelfEvolution => crate::sandbox::Role::EvolutionStrategy,
            LoopKind::Llamaduo => crate::sandbox::Role::MigrationStrategy,
            LoopKind::Qpo => crate::sandbox::Role::PromptPolicy,
            LoopKind::RewriterDpo => crate::sandbox::Role::Rewriter,
        }
    }

    /// Rounds when `rounds` is not set: Self-Evolution's 8 generations; LlamaDuo's round limit.
    pub fn default_rounds(self) -> u32 {
        match self {
            LoopKind::SelfEvolution => 8,
            LoopKind::Llamaduo => 5,
            LoopKind::Qpo => 3,
            LoopKind::RewriterDpo => 1,
        }
    }
}

/// `[loop.training]`: the LoRA training of each round (a subset of the
/// trainer's settings; defaults are techne-training's).
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct LoopTrainingConfig {
    /// LoRA rank.
    pub rank: usize,
    /// LoRA alpha (the update is scaled by alpha / rank).
    pub alpha: f64,
    /// LoRA dropout.
    pub dropout: f64,
    /// Adapted projections: `q_proj,v_proj`, … or `all-linear`.
    pub targets: String,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Share of the steps spent warming up.
    pub warmup_ratio: f64,
    /// Passes over the round's data (ignored with `max-steps`).
    pub epochs: usize,
    /// Exactly this many optimizer steps per round.
    pub max_steps: Option<usize>,
    /// Longest tokenized example.
    pub max_seq_len: usize,
    /// Examples per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per step.
    pub grad_accum: usize,
    /// Storage of the merged weights: `f32`, `f16`, `q8_0`, `q4_0`, `q4_1`.
    pub merged_format: String,
    /// Checkpoint every this many steps (a killed round resumes from it).
    pub checkpoint_every: usize,
    /// Training seed (default: `run.seed`).
    pub seed: Option<u64>,
}

impl Default for LoopTrainingConfig {
    fn default() -> Self {
        Self {
            rank: 8,
            alpha: 16.0,
            dropout: 0.05,
            targets: "q_proj,v_proj".into(),
            learning_rate: 2e-4,
            warmup_ratio: 0.03,
            epochs: 1,
            max_steps: None,
            max_seq_len: 512,
            batch_size: 4,
            grad_accum: 1,
            merged_format: "f16".into(),
            checkpoint_every: 50,
            seed: None,
        }
    }
}

/// Resolve `path` against the configuration's directory.
pub(crate) fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_relative() { base.join(path) } else { path.to_path_buf() }
}

/// Check the `[loop]` section against the rest of the configuration.
/// Returns the key path of the first problem and how to fix it.
pub(crate) fn validate(config: &RunConfig, section: &LoopConfig) -> Result<(), (String, String)> {
    let Some(plugin) = config.plugins.get(&section.strategy) else {
        return Err((
            "loop.strategy".into(),
            format!(
                "plugin '{}' is not defined: add a [plugins.{}] table with its `path`",
                section.strategy, section.strategy
            ),
        ));
    };
    match config.models.get(&section.model) {
        None => {
            return Err((
                "loop.model".into(),
                format!(
                    "model '{}' is not defined: add a [models.{}] table with backend = \"local\"",
                    section.model, section.model
                ),
            ));
        }
        Some(ModelConfig::Local(_)) => {}
        Some(other) => {
            return Err((
                "loop.model".into(),
                format!(
                    "model '{}' has backend \"{}\": the loop trains it, so it must be backend = \"local\"",
                    section.model,
                    other.backend_name()
                ),
            ));
        }
    }
    if section.rounds == Some(0) {
        return Err(("loop.rounds".into(), "must be at least 1".into()));
    }
    let t = &section.training;
    for (key, bad) in [
        ("rank", t.rank == 0),
        ("epochs", t.epochs == 0),
        ("max-seq-len", t.max_seq_len < 8),
        ("batch-size", t.batch_size == 0),
        ("grad-accum", t.grad_accum == 0),
        ("max-steps", t.max_steps == Some(0)),
        ("learning-rate", !(t.learning_rate > 0.0 && t.learning_rate.is_finite())),
        ("dropout", !(0.0..1.0).contains(&t.dropout)),
        ("warmup-ratio", !(0.0..=1.0).contains(&t.warmup_ratio)),
    ] {
        if bad {
            return Err((
                format!("loop.training.{key}"),
                "is out of range: see `[loop.training]` in the README".into(),
            ));
        }
    }
    if techne_training::WeightFormat::parse(&t.merged_format).is_err() {
        return Err(("loop.training.merged-format".into(), "must be one of f32, f16, q8_0, q4_0, q4_1".into()));
    }
    if techne_training::LoraConfig::parse_targets(&t.targets).is_err() {
        return Err((
            "loop.training.targets".into(),
            "must be a comma-separated list of q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj, or all-linear"
                .into(),
        ));
    }
    let allows = |model: &str| plugin.allowed_models.iter().any(|m| m == model);
    match section.kind {
        LoopKind::Qpo => {
            let Some(settings) = &section.qpo else {
                return Err(("loop".into(), "a qpo loop needs a [loop.qpo] table (it may be empty)".into()));
            };
            if !allows(&section.model) {
                return Err((
                    format!("plugins.{}.allowed-models", section.strategy),
                    format!(
                        "the strategy writes prompts with the trained policy: add '{}' to its allowed-models",
                        section.model
                    ),
                ));
            }
            settings.validate(config).map_err(|(k, m)| (format!("loop.qpo.{k}"), m))?;
        }
        LoopKind::RewriterDpo => {
            let Some(settings) = &section.rewriter_dpo else {
                return Err(("loop".into(), "a rewriter-dpo loop needs a [loop.rewriter-dpo] table".into()));
            };
            if !allows(&section.model) {
                return Err((
                    format!("plugins.{}.allowed-models", section.strategy),
                    format!(
                        "the strategy rewrites with the trained model: add '{}' to its allowed-models",
                        section.model
                    ),
                ));
            }
            settings.validate(config).map_err(|(k, m)| (format!("loop.rewriter-dpo.{k}"), m))?;
        }
        LoopKind::SelfEvolution => {
            let Some(settings) = &section.self_evolution else {
                return Err((
                    "loop".into(),
                    "a self-evolution loop needs a [loop.self-evolution] table with `fragments` and `eval` files"
                        .into(),
                ));
            };
            if !allows(&section.model) {
                return Err((
                    format!("plugins.{}.allowed-models", section.strategy),
                    format!(
                        "the strategy writes pairs with the trained model: add '{}' to its allowed-models",
                        section.model
                    ),
                ));
            }
            settings.validate().map_err(|(k, m)| (format!("loop.self-evolution.{k}"), m))?;
        }
        LoopKind::Llamaduo => {
            let Some(settings) = &section.llamaduo else {
                return Err((
                    "loop".into(),
                    "a llamaduo loop needs a [loop.llamaduo] table with `data` and `service-model`".into(),
                ));
            };
            if !config.models.contains_key(&settings.service_model) {
                return Err((
                    "loop.llamaduo.service-model".into(),
                    format!(
                        "model '{}' is not defined: add a [models.{}] table",
                        settings.service_model, settings.service_model
                    ),
                ));
            }
            if !allows(&settings.service_model) {
                return Err((
                    format!("plugins.{}.allowed-models", section.strategy),
                    format!(
                        "the strategy judges and synthesises with the service model: add '{}' to its allowed-models",
                        settings.service_model
                    ),
                ));
            }
            settings.validate().map_err(|(k, m)| (format!("loop.llamaduo.{k}"), m))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn check(text: &str) -> Result<crate::config::RunConfig, String> {
        crate::config::parse_run_config(Path::new("loop.toml"), text).map_err(|e| e.to_string())
    }

    const BASE: &str = r#"
[models.student]
backend = "local"

[models.other]
backend = "local-embeddings"

[plugins.evo]
path = "evo.wasm"
allowed-models = ["student"]
"#;

    #[test]
    fn a_self_evolution_loop_needs_no_pipeline_and_takes_the_paper_defaults() {
        let config = check(&format!(
            "{BASE}\n[loop]\nkind = \"self-evolution\"\nstrategy = \"evo\"\nmodel = \"student\"\n\
             [loop.self-evolution]\nfragments = \"f.jsonl\"\neval = \"e.jsonl\"\n"
        ))
        .unwrap();
        let section = config.loop_section.unwrap();
        assert_eq!(section.rounds.unwrap_or(section.kind.default_rounds()), 8, "the paper's 8 generations");
        assert_eq!(section.training, super::LoopTrainingConfig::default());
        let settings = section.self_evolution.unwrap();
        assert_eq!(settings.fragment_field, "fragment");
        assert_eq!(settings.train_from, super::super::self_evolution::TrainFrom::Previous);
    }

    #[test]
    fn loop_sections_are_checked_against_models_and_plugins_with_the_key_and_the_fix() {
        let cases = [
            ("strategy = \"nope\"\nmodel = \"student\"", "loop.strategy", "not defined"),
            ("strategy = \"evo\"\nmodel = \"other\"", "loop.model", "must be backend = \"local\""),
            ("strategy = \"evo\"\nmodel = \"student\"", "loop", "[loop.self-evolution]"),
            (
                "strategy = \"evo\"\nmodel = \"student\"\nrounds = 0\n[loop.self-evolution]\nfragments = \"f\"\neval = \"e\"",
                "loop.rounds",
                "at least 1",
            ),
            (
                "strategy = \"evo\"\nmodel = \"student\"\n[loop.training]\nmerged-format = \"q3\"\n\
                 [loop.self-evolution]\nfragments = \"f\"\neval = \"e\"",
                "loop.training.merged-format",
                "q8_0",
            ),
            (
                "strategy = \"evo\"\nmodel = \"student\"\n[loop.self-evolution]\nfragments = \"f\"\neval = \"e\"\n\
                 selection-mode = \"best\"",
                "loop.self-evolution.selection-mode",
                "top, random, all, none",
            ),
        ];
        for (body, key, fix) in cases {
            let err = check(&format!("{BASE}\n[loop]\nkind = \"self-evolution\"\n{body}\n")).unwrap_err();
            assert!(err.contains(&format!("`{key}`")) && err.contains(fix), "{key}: {err}");
        }
        let duo = |extra: &str| {
            format!(
                "{BASE}\n[models.service]\nbackend = \"local\"\n[loop]\nkind = \"llamaduo\"\nstrategy = \"evo\"\n\
                 model = \"student\"\n[loop.llamaduo]\ndata = \"d.jsonl\"\nservice-model = \"service\"\n{extra}"
            )
        };
        let err = check(&duo("")).unwrap_err();
        assert!(err.contains("`plugins.evo.allowed-models`") && err.contains("'service'"), "{err}");
        let text = duo("responses-per-prompt = 4").replace("[\"student\"]", "[\"student\", \"service\"]");
        let err = check(&text).unwrap_err();
        assert!(err.contains("`loop.llamaduo.response-temperature`"), "{err}");
        check(&format!("{text}\nresponse-temperature = 0.7")).unwrap();
    }

    #[test]
    fn records_come_from_json_arrays_or_jsonl_and_a_missing_field_names_the_keys() {
        let dir = tempfile::tempdir().unwrap();
        let array = dir.path().join("a.json");
        std::fs::write(&array, r#"[{"instruction": "x"}, {"instruction": "y"}]"#).unwrap();
        let lines = dir.path().join("b.jsonl");
        std::fs::write(&lines, "{\"fragment\": \"x\"}\n\n{\"fragment\": \"y\"}\n").unwrap();
        assert_eq!(super::super::read_records(&array).unwrap().len(), 2);
        let records = super::super::read_records(&lines).unwrap();
        assert_eq!(records.len(), 2);
        let err = super::super::text_field(&lines, &records[1], 1, "text").unwrap_err().to_string();
        assert!(err.contains("record 2") && err.contains("`text`") && err.contains("fragment"), "{err}");
        std::fs::write(&lines, "{\"fragment\": \"x\"}\nnot json\n").unwrap();
        let err = super::super::read_records(&lines).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
