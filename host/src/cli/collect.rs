//! `techne collect rewriter-pairs|qpo-records|oirl-reward-model CONFIG.toml`:
//! one training-data collection (see [`crate::collect`]) from a run
//! configuration's `[collect]` table, or the fit of Prompt-OIRL's reward
//! model on collected outcomes; prints what was made and where it went.

use std::path::PathBuf;

use clap::Subcommand;

use super::{Failure, OverrideArgs, exit_codes};
use crate::collect::{CollectError, oirl_reward_model, qpo_records, rewriter_pairs};
use crate::config::{Overrides, load_run_config};

/// `techne collect`.
#[derive(Debug, Subcommand)]
pub enum CollectCommand {
    /// Question Rewriter DPO pairs on a K-QA-style dataset (prompt/chosen/rejected JSONL).
    RewriterPairs {
        /// The configuration (TOML with [collect], [dataset], [models], [plugins]).
        config: PathBuf,
        /// Settings that override the file and the environment.
        #[command(flatten)]
        overrides: OverrideArgs,
    },
    /// QPO offline records (query/prompt/reward JSONL, merged) and the policy's SFT data.
    QpoRecords {
        /// The configuration (TOML with [collect] incl. `metric`, [dataset] with references, [models], [plugins]).
        config: PathBuf,
        /// An offline dataset to merge the new records into (default: the output file, if present).
        #[arg(long, value_name = "FILE")]
        merge_into: Option<PathBuf>,
        /// Settings that override the file and the environment.
        #[command(flatten)]
        overrides: OverrideArgs,
    },
    /// Prompt-OIRL's reward model, fitted by the [collect] plugin on logged outcomes (JSON file).
    OirlRewardModel {
        /// The configuration (TOML with [collect] naming the plugin, [models], [plugins]).
        config: PathBuf,
        /// JSONL of outcomes: query, prompt and `correct` or `reward` per line (default: the
        /// *.outcomes.jsonl that `techne collect qpo-records` writes for this configuration).
        #[arg(long, value_name = "FILE")]
        records: Option<PathBuf>,
        /// Where the model goes (default: the run's output directory, oirl-reward-model.json).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// For lines without `correct`: a reward at least this high counts as correct.
        #[arg(long, value_name = "REWARD", default_value_t = oirl_reward_model::DEFAULT_CORRECT_REWARD)]
        correct_reward: f64,
        /// Settings that override the file and the environment.
        #[command(flatten)]
        overrides: OverrideArgs,
    },
}

impl From<CollectError> for Failure {
    fn from(e: CollectError) -> Self {
        let code = match &e {
            CollectError::Io { .. } | CollectError::Dataset { .. } => exit_codes::IO,
            CollectError::Config(_) => exit_codes::CONFIG,
            CollectError::Load { .. } | CollectError::Plugin { .. } => exit_codes::PLUGIN,
            CollectError::Model { .. } => exit_codes::MODEL,
            CollectError::Run(_) => exit_codes::INTERNAL,
        };
        Failure::new(code, e)
    }
}

/// The run configuration and its `[collect]` table.
fn load(
    config: &std::path::Path,
    overrides: &OverrideArgs,
) -> Result<(crate::config::RunConfig, crate::collect::CollectSettings), Failure> {
    let overrides = Overrides::from_env()?.then(overrides.to_overrides());
    let config = load_run_config(config, &overrides)?;
    let Some(settings) = config.collect.clone() else {
        return Err(Failure::new(
            exit_codes::CONFIG,
            "the configuration has no [collect] table: add one with `plugin` and `answer-model` (see examples/collect-rewriter.toml)",
        ));
    };
    Ok((config, settings))
}

/// `[collect] output` (relative to the configuration's directory), else `default`.
fn output_path(
    config: &crate::config::RunConfig,
    settings: &crate::collect::CollectSettings,
    default: std::path::PathBuf,
) -> std::path::PathBuf {
    settings
        .output
        .as_ref()
        .map(|p| if p.is_relative() { config.base_dir.join(p) } else { p.clone() })
        .unwrap_or(default)
}

/// Run `techne collect`.
pub(crate) async fn collect(command: CollectCommand) -> Result<i32, Failure> {
    match command {
        CollectCommand::RewriterPairs { config, overrides } => {
            let (config, settings) = load(&config, &overrides)?;
            let models = crate::runs::build_models(&config)?;
            let path = output_path(&config, &settings, rewriter_pairs::default_pairs_path(&config));
            let started = std::time::Instant::now();
            let mut progress = |q: &rewriter_pairs::QuestionOutcome| {
                eprintln!(
                    "question {}: {} rewrites, original comprehensiveness {:.2} contradiction {}, {} better, {} worse, {} pairs",
                    q.id,
                    q.rewrites,
                    q.original.comprehensiveness,
                    q.original.contradiction,
                    q.better,
                    q.worse,
                    q.pairs
                );
            };
            let summary = rewriter_pairs::collect(&config, &settings, &models, path, &mut progress).await?;
            println!(
                "{} pairs from {} questions in {:.1}s ({} judge replies without a verdict)",
                summary.pairs,
                summary.questions.len(),
                started.elapsed().as_secs_f64(),
                summary.unparsed_verdicts
            );
            println!("pairs:      {}", summary.pairs_path.display());
            println!("judgements: {}", summary.judgements_path.display());
            Ok(exit_codes::SUCCESS)
        }
        CollectCommand::QpoRecords { config, merge_into, overrides } => {
            let (config, settings) = load(&config, &overrides)?;
            let models = crate::runs::build_models(&config)?;
            let path = output_path(&config, &settings, qpo_records::default_records_path(&config));
            let existing = merge_into.unwrap_or_else(|| path.clone());
            let started = std::time::Instant::now();
            let summary = qpo_records::collect(&config, &settings, &models, Some(&existing), path).await?;
            println!(
                "{} queries x {} prompts: {} evaluated, {} correct; {} new records (mean reward {:.2}), {} in all; {:.1}s",
                summary.queries,
                settings.seeds,
                summary.prompts,
                summary.correct,
                summary.new_records,
                summary.new_mean_reward,
                summary.total_records,
                started.elapsed().as_secs_f64()
            );
            println!("records:  {}", summary.records_path.display());
            println!(
                "sft data: {} (train with the {} template)",
                summary.sft_path.display(),
                if summary.chat { "chat" } else { "raw" }
            );
            println!("outcomes: {} ({} in all)", summary.outcomes_path.display(), summary.total_outcomes);
            Ok(exit_codes::SUCCESS)
        }
        CollectCommand::OirlRewardModel { config, records, out, correct_reward, overrides } => {
            let (config, settings) = load(&config, &overrides)?;
            if !correct_reward.is_finite() {
                return Err(Failure::new(exit_codes::USAGE, "--correct-reward must be a finite number"));
            }
            let log = records.unwrap_or_else(|| oirl_reward_model::default_outcomes_path(&config, &settings));
            let model_path = out.unwrap_or_else(|| oirl_reward_model::default_model_path(&config));
            let models = crate::runs::build_models(&config)?;
            let started = std::time::Instant::now();
            let summary = oirl_reward_model::fit(&config, &settings, &models, &log, correct_reward, model_path).await?;
            println!(
                "reward model fitted on {} outcomes ({} correct) of {} prompts on {} queries{}; {:.1}s",
                summary.examples,
                summary.correct,
                summary.prompts,
                summary.queries,
                summary.train_accuracy.map(|a| format!(", training accuracy {a:.3}")).unwrap_or_default(),
                started.elapsed().as_secs_f64()
            );
            println!("model:    {}", summary.model_path.display());
            // Param files resolve against the configuration's directory, not
            // the working directory: show the absolute path.
            let absolute = std::fs::canonicalize(&summary.model_path).unwrap_or_else(|_| summary.model_path.clone());
            println!(
                "use it:   [plugins.{}.param-files] reward-model = {:?} with mode = \"prompt-oirl\"",
                settings.plugin,
                absolute.display().to_string()
            );
            Ok(exit_codes::SUCCESS)
        }
    }
}
