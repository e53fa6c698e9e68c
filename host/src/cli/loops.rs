//! `techne loop CONFIG.toml [--resume DIR] [--force]`: run or resume a
//! multi-round loop (see [`crate::loops`]) and print its per-round table.

use std::path::PathBuf;

use clap::Args;

use super::{Failure, OverrideArgs, exit_codes};
use crate::config::{Overrides, load_run_config};
use crate::loops::{LoopError, LoopOptions};
use crate::runs::CacheChoice;

/// `techne loop`.
#[derive(Debug, Args)]
pub struct LoopArgs {
    /// The loop configuration (TOML with a [loop] section); not needed with --resume.
    #[arg(required_unless_present = "resume")]
    pub config: Option<PathBuf>,
    /// Continue the loop in this directory at the step it was in.
    #[arg(long, value_name = "DIR")]
    pub resume: Option<PathBuf>,
    /// With --resume: continue even if the configuration or a plugin changed.
    #[arg(long, requires = "resume")]
    pub force: bool,
    /// Do not use the model-call cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Settings that override the file and the environment.
    #[command(flatten)]
    pub overrides: OverrideArgs,
}

impl From<LoopError> for Failure {
    fn from(e: LoopError) -> Self {
        let code = match &e {
            LoopError::Run(_) => {
                let LoopError::Run(run) = e else { return Failure::new(exit_codes::INTERNAL, "unreachable") };
                return Failure::from(run);
            }
            LoopError::Data { .. } => exit_codes::IO,
            LoopError::NotALoop
            | LoopError::AlreadyExists { .. }
            | LoopError::NothingToResume { .. }
            | LoopError::ConfigChanged { .. }
            | LoopError::NoData { .. } => exit_codes::CONFIG,
            LoopError::Strategy { .. } => exit_codes::PLUGIN,
            LoopError::Model { .. } | LoopError::Training { .. } => exit_codes::MODEL,
            LoopError::Interrupted { .. } => exit_codes::INTERRUPTED,
        };
        Failure::new(code, e)
    }
}

/// Run `techne loop`.
pub(crate) async fn run(args: LoopArgs, stop: std::sync::Arc<crate::runs::StopSignal>) -> Result<i32, Failure> {
    let env = Overrides::from_env()?;
    let overrides = env.then(args.overrides.to_overrides());
    let (config_path, text) = match (&args.config, &args.resume) {
        (Some(path), _) => (
            path.clone(),
            std::fs::read_to_string(path)
                .map_err(|e| Failure::new(exit_codes::IO, format!("cannot read {}: {e}", path.display())))?,
        ),
        (None, Some(dir)) => {
            let state = crate::loops::LoopState::read(dir)
                .ok_or_else(|| Failure::from(LoopError::NothingToResume { dir: dir.clone() }))?;
            let saved = dir.join("config.toml");
            let text = std::fs::read_to_string(&saved)
                .map_err(|e| Failure::new(exit_codes::IO, format!("cannot read {}: {e}", saved.display())))?;
            (state.config_path, text)
        }
        (None, None) => return Err(Failure::new(exit_codes::USAGE, "give a loop configuration or --resume DIR")),
    };
    let mut config = match &args.config {
        Some(path) => load_run_config(path, &overrides)?,
        None => crate::config::resolve_run_config(&config_path, &text, &overrides)?,
    };
    if let Some(dir) = &args.resume {
        config.run.output_dir = Some(dir.clone());
    }
    let options = LoopOptions {
        resume: args.resume.is_some(),
        force: args.force,
        cache: if args.no_cache { CacheChoice::Off } else { CacheChoice::ReadWrite },
        cache_dir: overrides.cache_dir.clone().map(|d| d.join("calls")),
        progress: true,
        stop,
    };
    let summary = crate::loops::run_loop(&config, &text, &config_path, options).await?;
    let state = &summary.state;
    println!(
        "loop `{}` ({}): {} rounds, {} steps run now in {:.1} s; {}",
        state.name,
        state.kind,
        state.rounds.len(),
        summary.steps_run,
        summary.elapsed_s,
        state.finished.as_deref().unwrap_or("not finished")
    );
    print!("{}", crate::loops::report::markdown(state, config.loop_section.as_ref().ok_or(LoopError::NotALoop)?));
    println!("report: {}", summary.dir.join("report.html").display());
    Ok(exit_codes::SUCCESS)
}
