//! `techne train sft|dpo`: LoRA fine-tuning from the command line, natively
//! or through an external trainer, over [`crate::training::run_training`].
//!
//! Settings come from the defaults of [`TrainConfig`], then `--config
//! FILE.toml` (every `TrainConfig` field, plus an optional `[external]`
//! table), then the flags. A first SIGINT/SIGTERM stops after the current
//! step with a checkpoint (exit 130; continue with `--resume`), a second
//! aborts at once.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Subcommand};
use techne_inference::Registry;
use techne_training::{LoraConfig, TemplateMode, TrainConfig, TrainError, TrainKind, WeightFormat, resolve_model};

use super::{Failure, exit_codes};
use crate::training::{ExternalError, ExternalTrainer, TrainingControl, TrainingError, TrainingOptions, run_training};

/// `techne train …`.
#[derive(Debug, Subcommand)]
pub enum TrainCommand {
    /// Supervised fine-tuning with LoRA on JSONL in TRL formats (messages, prompt/completion, text).
    Sft(Box<TrainArgs>),
    /// Direct preference optimisation with LoRA on JSONL with prompt/chosen/rejected.
    Dpo(Box<DpoArgs>),
}

/// The flags of `techne train dpo`.
#[derive(Debug, Args)]
pub struct DpoArgs {
    /// The flags shared with `techne train sft`.
    #[command(flatten)]
    pub common: TrainArgs,
    /// DPO's β (strength of the pull towards the reference model) [default: 0.1].
    #[arg(long)]
    pub beta: Option<f64>,
}

/// The flags of `techne train sft` (and `dpo`). Unset flags keep the
/// value from `--config`, else the trainer's default.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Every setting as a TOML file (the fields of the trainer's TrainConfig, and an optional [external] table).
    #[arg(long, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
    /// The base model: `default` (the embedded SmolLM2-135M-Instruct), a registry name, or a .gguf file.
    #[arg(long)]
    pub model: Option<String>,
    /// The training data (JSONL, TRL formats).
    #[arg(long, value_name = "FILE.jsonl")]
    pub data: Option<PathBuf>,
    /// The run directory: checkpoints, adapter, merged.gguf, report.md/html/json, lineage.json [default: runs/train/NAME].
    #[arg(long, value_name = "DIR")]
    pub output: Option<PathBuf>,
    /// Register the trained model under this name [default: the output directory's name].
    #[arg(long)]
    pub name: Option<String>,
    /// Do not merge, export or register: keep only the adapter and checkpoints.
    #[arg(long, conflicts_with = "name")]
    pub no_register: bool,
    /// The registry directory (default: $TECHNE_HOME/models, else the user cache directory).
    #[arg(long, value_name = "DIR")]
    pub registry: Option<PathBuf>,
    /// LoRA rank [default: 8].
    #[arg(long)]
    pub rank: Option<usize>,
    /// LoRA α (the update is scaled by α/rank) [default: 16].
    #[arg(long)]
    pub alpha: Option<f64>,
    /// LoRA dropout [default: 0.05].
    #[arg(long)]
    pub dropout: Option<f64>,
    /// Adapted projections: comma-separated q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj, or all-linear [default: q_proj,v_proj].
    #[arg(long)]
    pub targets: Option<String>,
    /// Peak learning rate [default: 2e-4].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Passes over the data (ignored with --max-steps) [default: 1].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Exactly this many optimizer steps.
    #[arg(long)]
    pub max_steps: Option<usize>,
    /// Examples (SFT) or pairs (DPO) per micro-batch [default: 4].
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Micro-batches per optimizer step [default: 1].
    #[arg(long)]
    pub grad_accum: Option<usize>,
    /// Longest tokenized example; longer ones are cut [default: 512].
    #[arg(long)]
    pub max_seq_len: Option<usize>,
    /// Seed of every random draw [default: 42].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Write a checkpoint every N steps (0: only at the end) [default: 100].
    #[arg(long, value_name = "N")]
    pub checkpoint_every: Option<usize>,
    /// Checkpoints to keep [default: 2].
    #[arg(long, value_name = "N")]
    pub keep_checkpoints: Option<usize>,
    /// Continue the run in --output from its newest checkpoint (same settings and data).
    #[arg(long)]
    pub resume: bool,
    /// Storage of the merged projections: f32, f16, q8_0, q4_0, q4_1 [default: f16].
    #[arg(long)]
    pub format: Option<String>,
    /// `chat` (the model's chat template) or `raw` (prompt + completion + EOS) [default: chat].
    #[arg(long)]
    pub template: Option<String>,
    /// Held-out JSONL (same format as --data): its loss is computed every --eval-every steps and at the end.
    #[arg(long, value_name = "FILE.jsonl")]
    pub eval_data: Option<PathBuf>,
    /// Evaluate on --eval-data every N steps (0: only after the last step) [default: 0].
    #[arg(long, value_name = "N", requires = "eval_data")]
    pub eval_every: Option<usize>,
    /// Keep the adapter of the best held-out evaluation (DPO: reward accuracy, then loss; SFT: loss), not the last step's.
    #[arg(long, requires = "eval_data")]
    pub keep_best: bool,
    /// Hand the training to this command (placeholders such as {data}, {output_dir}, {base_model}; see the README).
    #[arg(long, value_name = "COMMAND")]
    pub external: Option<String>,
    /// Kill the external command after this many seconds.
    #[arg(long, value_name = "SECONDS", requires = "external")]
    pub external_timeout: Option<u64>,
}

fn config_failure(path: &Path, message: impl std::fmt::Display) -> Failure {
    Failure::new(exit_codes::CONFIG, format!("{}: {message}", path.display()))
}

/// The 1-based line of the first `key = …` or `[key]` in `text`.
fn line_of(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(key).is_some_and(|r| r.trim_start().starts_with('='))
                || l.trim_end() == format!("[{key}]")
                || l.trim_end().starts_with(&format!("[{key}."))
        })
        .map(|i| i + 1)
}

/// Reads a train config file: the `TrainConfig` fields and an optional `[external]` table.
fn read_config_file(path: &Path) -> Result<(TrainConfig, Option<ExternalTrainer>), Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::new(exit_codes::IO, format!("cannot read {}: {e}", path.display())))?;
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| config_failure(path, e))?;
    let external = match table.remove("external") {
        Some(v) => Some(serde_path_to_error::deserialize::<_, ExternalTrainer>(v).map_err(|e| {
            let at = line_of(&text, "external").map(|l| format!(":{l}")).unwrap_or_default();
            Failure::new(exit_codes::CONFIG, format!("{}{at}: [external].{e}", path.display()))
        })?),
        None => None,
    };
    let config = serde_path_to_error::deserialize::<_, TrainConfig>(toml::Value::Table(table)).map_err(|e| {
        let key = e.path().iter().next().map(|s| s.to_string()).unwrap_or_default();
        let at = line_of(&text, &key).map(|l| format!(":{l}")).unwrap_or_default();
        Failure::new(
            exit_codes::CONFIG,
            format!("{}{at}: {e} (the fields are those of `techne train`'s flags, in snake_case)", path.display()),
        )
    })?;
    Ok((config, external))
}

/// The exit code and message of a failed training.
fn training_failure(e: TrainingError) -> Failure {
    let code = match &e {
        TrainingError::Train(t) | TrainingError::External(ExternalError::Train(t)) => match t {
            TrainError::Config(_) | TrainError::Data { .. } | TrainError::Checkpoint { .. } => exit_codes::CONFIG,
            TrainError::NonFinite { .. } => exit_codes::CONFIG,
            TrainError::Io { .. } => exit_codes::IO,
            TrainError::Gguf(_)
            | TrainError::Model(_)
            | TrainError::Tokenizer(_)
            | TrainError::Export(_)
            | TrainError::Registry(_) => exit_codes::MODEL,
            TrainError::Tensor(_) => exit_codes::INTERNAL,
            TrainError::Aborted { .. } => exit_codes::INTERRUPTED,
        },
        TrainingError::External(x) => match x {
            ExternalError::Template(_) => exit_codes::CONFIG,
            ExternalError::Interrupted => exit_codes::INTERRUPTED,
            ExternalError::Weights(_) => exit_codes::MODEL,
            ExternalError::Spawn(_)
            | ExternalError::Failed { .. }
            | ExternalError::Timeout { .. }
            | ExternalError::NoWeights { .. } => exit_codes::EXTERNAL,
            ExternalError::Train(_) => exit_codes::INTERNAL,
        },
        TrainingError::Report { .. } => exit_codes::IO,
    };
    Failure::new(code, e)
}

/// Builds the trainer's settings from the defaults, `--config` and the flags.
fn build_config(args: &TrainArgs, beta: Option<f64>) -> Result<(TrainConfig, Option<ExternalTrainer>), Failure> {
    let (mut cfg, mut external) = match &args.config {
        Some(path) => read_config_file(path)?,
        None => (TrainConfig::default(), None),
    };
    let usage = |m: String| Failure::new(exit_codes::USAGE, m);
    let bad = |m: TrainError| Failure::new(exit_codes::USAGE, m);
    if let Some(d) = &args.data {
        cfg.data = d.clone();
    }
    if cfg.data.as_os_str().is_empty() {
        return Err(usage("give the training data with --data FILE.jsonl (or `data` in --config)".into()));
    }
    if let Some(r) = &args.registry {
        cfg.registry_dir = Some(r.clone());
    }
    // The base model: the flag, else the file's `model`, else the embedded default.
    let model = match (&args.model, cfg.model.as_os_str().is_empty()) {
        (Some(m), _) => m.clone(),
        (None, false) => cfg.model.display().to_string(),
        (None, true) => "default".into(),
    };
    let registry = match &cfg.registry_dir {
        Some(d) => Registry::open(d),
        None => Registry::open_default(),
    }
    .map_err(|e| Failure::new(exit_codes::MODEL, e))?;
    let resolved = resolve_model(&registry, &model).map_err(|e| match e {
        TrainError::Config(m) => Failure::new(exit_codes::MODEL, m),
        other => training_failure(other.into()),
    })?;
    cfg.model = resolved.gguf;
    cfg.model_name = resolved.name.or(cfg.model_name);

    if args.no_register {
        cfg.out_name = None;
    } else if let Some(n) = &args.name {
        cfg.out_name = Some(n.clone());
    }
    if let Some(o) = &args.output {
        cfg.output_dir = o.clone();
    }
    match (cfg.output_dir.as_os_str().is_empty(), &cfg.out_name) {
        (true, Some(name)) => cfg.output_dir = PathBuf::from("runs/train").join(name),
        (true, None) => return Err(usage("give --output DIR or --name NAME (or `output_dir` in --config)".into())),
        (false, None) if !args.no_register && args.config.is_none() => {
            let name = cfg.output_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if name.is_empty() {
                return Err(usage("give --name NAME to register the trained model (or --no-register)".into()));
            }
            cfg.out_name = Some(name);
        }
        _ => {}
    }

    if let Some(v) = args.rank {
        cfg.lora.rank = v;
    }
    if let Some(v) = args.alpha {
        cfg.lora.alpha = v;
    }
    if let Some(v) = args.dropout {
        cfg.lora.dropout = v;
    }
    if let Some(t) = &args.targets {
        cfg.lora.targets = LoraConfig::parse_targets(t).map_err(bad)?;
    }
    if let Some(v) = args.lr {
        cfg.optim.learning_rate = v;
    }
    if let Some(v) = args.epochs {
        cfg.epochs = v;
    }
    if let Some(v) = args.max_steps {
        cfg.max_steps = Some(v);
    }
    if let Some(v) = args.batch_size {
        cfg.batch_size = v;
    }
    if let Some(v) = args.grad_accum {
        cfg.grad_accum = v;
    }
    if let Some(v) = args.max_seq_len {
        cfg.max_seq_len = v;
    }
    if let Some(v) = args.seed {
        cfg.seed = v;
    }
    if let Some(p) = &args.eval_data {
        cfg.eval_data = Some(p.clone());
    }
    if let Some(v) = args.eval_every {
        cfg.eval_every = v;
    }
    if args.keep_best {
        cfg.keep_best = true;
    }
    if let Some(v) = args.checkpoint_every {
        cfg.checkpoint_every = v;
    }
    if let Some(v) = args.keep_checkpoints {
        cfg.keep_checkpoints = v;
    }
    if args.resume {
        cfg.resume = true;
    }
    if let Some(f) = &args.format {
        cfg.merged_format = WeightFormat::parse(f).map_err(bad)?;
    }
    if let Some(t) = &args.template {
        cfg.template = match t.as_str() {
            "chat" => TemplateMode::Chat,
            "raw" => TemplateMode::Raw,
            other => return Err(usage(format!("--template must be `chat` or `raw`, not `{other}`"))),
        };
    }
    if let Some(b) = beta {
        cfg.dpo_beta = b;
    }
    if let Some(command) = &args.external {
        external = Some(ExternalTrainer { command: command.clone(), timeout_seconds: args.external_timeout });
    } else if let (Some(ext), Some(t)) = (external.as_mut(), args.external_timeout) {
        ext.timeout_seconds = Some(t);
    }
    cfg.validate().map_err(|e| Failure::new(exit_codes::CONFIG, e))?;
    Ok((cfg, external))
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// Runs `techne train …`; returns the exit code.
pub(crate) async fn train(command: TrainCommand) -> Result<i32, Failure> {
    let (kind, args, beta) = match command {
        TrainCommand::Sft(args) => (TrainKind::Sft, *args, None),
        TrainCommand::Dpo(args) => {
            let DpoArgs { common, beta } = *args;
            (TrainKind::Dpo, common, beta)
        }
    };
    let (cfg, external) = tokio::task::block_in_place(|| build_config(&args, beta))?;
    let control = Arc::new(TrainingControl::new());
    let listener = tokio::spawn({
        let control = control.clone();
        async move {
            loop {
                super::shutdown_signal().await;
                match control.interrupt() {
                    techne_training::Control::Stop => {
                        eprintln!("interrupted: stopping after this step with a checkpoint (signal again to abort)")
                    }
                    _ => eprintln!("aborting"),
                }
            }
        }
    });
    let options = TrainingOptions { progress: true, control: Some(control), external };
    let run_cfg = cfg.clone();
    let outcome = tokio::task::spawn_blocking(move || run_training(kind, &run_cfg, &options)).await;
    listener.abort();
    let outcome = outcome.map_err(|e| Failure::new(exit_codes::INTERNAL, e))?.map_err(training_failure)?;
    let report = &outcome.report;
    let what = report.model.as_ref().map(|m| format!("`{}`", m.name)).unwrap_or_else(|| "adapter".into());
    match &outcome.external {
        Some(ext) => println!(
            "trained {what} ({}) externally in {:.1} s; weights {} ({})",
            kind.as_str(),
            ext.seconds,
            ext.weights.display(),
            ext.weights_format
        ),
        None => {
            let first = report.steps.first().map(|s| format!("{:.4} → ", s.loss)).unwrap_or_default();
            let last = report.final_loss.map(|l| format!("{l:.4}")).unwrap_or_else(|| "-".into());
            println!(
                "trained {what} ({}): {} of {} steps, loss {first}{last}, {:.1} tokens/s, peak memory {:.2} GiB",
                kind.as_str(),
                report.steps.len(),
                report.total_steps,
                report.tokens_per_second,
                gib(report.peak_rss_bytes.unwrap_or(0))
            );
        }
    }
    if let Some(m) = &report.model {
        println!("registered: {} ({})", m.name, m.dir.display());
    }
    println!("report: {}", outcome.report_html.display());
    if outcome.stopped_early() {
        println!(
            "stopped after step {} of {}: continue with the same command and --resume (output {})",
            report.steps.len(),
            report.total_steps,
            cfg.output_dir.display()
        );
        return Ok(exit_codes::INTERRUPTED);
    }
    Ok(exit_codes::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_file_errors_name_the_line_and_the_external_table_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.toml");
        std::fs::write(
            &path,
            "data = \"d.jsonl\"\nmax_steps = 3\n\n[lora]\nrank = 4\n\n[external]\ncommand = \"run {data}\"\n",
        )
        .unwrap();
        let Ok((cfg, ext)) = read_config_file(&path) else { panic!("the config file should parse") };
        assert_eq!((cfg.max_steps, cfg.lora.rank), (Some(3), 4));
        assert_eq!(ext.unwrap().command, "run {data}");
        std::fs::write(&path, "data = \"d.jsonl\"\nbatch_size = \"four\"\n").unwrap();
        let e = read_config_file(&path).err().unwrap();
        assert_eq!(e.code, exit_codes::CONFIG);
        assert!(e.message.contains("train.toml:2: batch_size"), "{}", e.message);
        std::fs::write(&path, "data = \"d.jsonl\"\nbatch = 4\n").unwrap();
        let e = read_config_file(&path).err().unwrap();
        assert!(e.message.contains("unknown field `batch`"), "{}", e.message);
    }
}
