//! The `techne` command line: a thin clap layer over the library. Each
//! subcommand parses its arguments, calls the library and maps errors to the
//! documented [`exit_codes`].

pub mod collect;
pub mod data;
pub mod exit_codes;
pub mod loops;
pub mod models;
pub mod train;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{ConfigError, Overrides, load_run_config};
use crate::runs::RunError;
use crate::sandbox::{EngineOptions, LoadError, Role, SandboxEngine};

const EXIT_CODES_HELP: &str = "Exit codes:
  0    success
  1    internal error
  2    invalid command line
  3    invalid run configuration
  4    a plugin could not be loaded
  5    the run finished, some items failed
  6    a file could not be read or written
  7    a model could not be opened or run
  8    stopped by its budget (resume with --resume)
  9    an external trainer failed or left no weights
  130  interrupted";

/// Run LLM-optimization techniques as sandboxed WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(name = "techne", version, about, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// Log more (-v info, -vv debug, -vvv trace); `RUST_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a configuration: every item through the pipeline; results in the run directory.
    Run(RunArgs),
    /// Evaluate techniques against a baseline on the same items and print the comparison.
    Eval(RunArgs),
    /// Work with run configurations.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Create, inspect and list plugins.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Measure techne's own overheads.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// The local model registry: list, import (GGUF → ONNX), check, remove.
    #[command(subcommand)]
    Models(models::ModelsCommand),
    /// Generate with a local model (default: the embedded SmolLM2-135M-Instruct).
    Generate(models::GenerateArgs),
    /// Fine-tune a local model with LoRA (SFT or DPO); the result is merged, exported and registered.
    #[command(subcommand)]
    Train(train::TrainCommand),
    /// Run or resume a multi-round loop (a config with a [loop] section): generate, train, evaluate per round.
    Loop(loops::LoopArgs),
    /// Public datasets: list the catalog, download canonical files.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Collect training data with a plugin's training extension (Question Rewriter pairs, QPO records).
    #[command(subcommand)]
    Collect(collect::CollectCommand),
}

/// `techne run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The run configuration (TOML); not needed with --resume.
    #[arg(required_unless_present = "resume")]
    pub config: Option<PathBuf>,
    /// Continue the run in this run directory (killed, interrupted or stopped by its budget).
    #[arg(long, value_name = "DIR", conflicts_with = "overwrite")]
    pub resume: Option<PathBuf>,
    /// With --resume: continue even if the configuration or a plugin changed.
    #[arg(long, requires = "resume")]
    pub force: bool,
    /// Start over in an output directory that already holds a run.
    #[arg(long)]
    pub overwrite: bool,
    /// Do not use the model-call cache.
    #[arg(long, conflicts_with = "cache_only")]
    pub no_cache: bool,
    /// Answer every model call from the cache; never call a model.
    #[arg(long)]
    pub cache_only: bool,
    /// Start no new item once this many model requests reached a backend (overrides `max-requests`).
    #[arg(long)]
    pub max_requests: Option<u64>,
    /// Start no new item once this many tokens were used (overrides `max-tokens`).
    #[arg(long)]
    pub max_tokens: Option<u64>,
    /// Start no new item once the estimated spend reaches this (overrides `max-cost`; needs `[run.prices]`).
    #[arg(long)]
    pub max_cost: Option<f64>,
    /// Settings that override the file and the environment.
    #[command(flatten)]
    pub overrides: OverrideArgs,
}

/// Flags that override a configuration (precedence: defaults < file < environment < flags).
#[derive(Debug, Args, Default)]
pub struct OverrideArgs {
    /// Output directory (env TECHNE_OUTPUT_DIR).
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
    /// Run seed (env TECHNE_SEED).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Items at once (env TECHNE_CONCURRENCY).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Process at most this many items (env TECHNE_LIMIT).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Root of techne's caches (env TECHNE_CACHE_DIR).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

impl OverrideArgs {
    fn to_overrides(&self) -> Overrides {
        Overrides {
            output_dir: self.output_dir.clone(),
            seed: self.seed,
            concurrency: self.concurrency,
            limit: self.limit,
            cache_dir: self.cache_dir.clone(),
        }
    }
}

/// `techne config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a configuration: syntax, values, plugins load, roles fit, dataset reads.
    Check {
        /// The run configuration (TOML).
        config: PathBuf,
        /// Settings that override the file and the environment.
        #[command(flatten)]
        overrides: OverrideArgs,
    },
}

/// `techne plugin …`.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Create a new plugin crate that builds with `cargo build --target wasm32-wasip2`.
    New {
        /// The plugin's name (kebab-case), also its directory name.
        name: String,
        /// The role it plays.
        #[arg(long, value_enum, default_value = "solver")]
        world: WorldArg,
        /// Where to create it (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Show a plugin's role, imports, exports, metadata and sha256.
    Inspect {
        /// The component file.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the plugins of a run configuration, or the plugin files in a directory.
    List {
        /// A run configuration (.toml) or a directory of .wasm files.
        #[arg(default_value = ".")]
        path: PathBuf,
    },
}

/// `techne bench …`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// The local engine on the embedded SmolLM2 against llama.cpp's llama-bench on the same GGUF.
    Inference {
        /// Threads for both engines.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Repetitions per case (medians are reported).
        #[arg(long, default_value_t = 3)]
        repetitions: usize,
        /// Concurrent streams for the aggregate decode cases.
        #[arg(long, value_delimiter = ',', default_value = "4,8,16")]
        concurrency: Vec<usize>,
        /// llama.cpp's llama-bench (default: target/llama.cpp/build/bin/llama-bench when present).
        #[arg(long)]
        llama_bench: Option<PathBuf>,
    },
    /// Items/s of a simple pipeline through the OpenAI-compatible backend against llama-server's own limit.
    Service {
        /// llama.cpp's llama-server (default: target/llama.cpp/build/bin/llama-server).
        #[arg(long)]
        server: Option<PathBuf>,
        /// Items per case.
        #[arg(long, default_value_t = 48)]
        items: usize,
        /// Pipeline concurrency levels.
        #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
        concurrency: Vec<usize>,
        /// Server threads.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Tokens per answer.
        #[arg(long, default_value_t = 16)]
        max_tokens: u32,
    },
    /// LoRA SFT training tokens/s and peak memory: techne's trainer against PyTorch + PEFT on the same CPU.
    Train {
        /// Timed optimizer steps per run (after one warm-up step).
        #[arg(long, default_value_t = 5)]
        steps: usize,
        /// Runs of each trainer (alternating).
        #[arg(long, default_value_t = 1)]
        repetitions: usize,
        /// LoRA rank (α = 2 × rank).
        #[arg(long, default_value_t = 8)]
        rank: usize,
        /// Tokens per sequence.
        #[arg(long, default_value_t = 256)]
        seq_len: usize,
        /// Sequences per step.
        #[arg(long, default_value_t = 4)]
        batch_size: usize,
        /// Threads of each trainer.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Adapted projections (q_proj,v_proj or all-linear, …).
        #[arg(long, default_value = "q_proj,v_proj")]
        targets: String,
        /// The GGUF both train (default: the embedded SmolLM2-135M-Instruct).
        #[arg(long)]
        model: Option<PathBuf>,
        /// The peer's Python (default: target/bench-venv/bin/python from benches/setup-peft-venv.sh).
        #[arg(long)]
        python: Option<PathBuf>,
        /// Skip the PyTorch + PEFT peer.
        #[arg(long, conflicts_with = "python")]
        no_peer: bool,
        /// The peer's script.
        #[arg(long, default_value = "benches/train_peft.py")]
        peer_script: PathBuf,
    },
    /// Overhead of the model-call cache per call (hit, miss, none), against an instant backend.
    Cache {
        /// Measured calls per case.
        #[arg(long, default_value_t = 2000)]
        iterations: usize,
    },
    /// Median cost of a fresh sandboxed instance + call, and of a call with one host import on a reused instance.
    PluginCall {
        /// The chaos test plugin (plugins/test-plugins/chaos), built for wasm32-wasip2.
        #[arg(long)]
        plugin: PathBuf,
        /// Measured iterations per case.
        #[arg(long, default_value_t = 2000)]
        iterations: usize,
    },
}

/// Plugin roles, as `--world` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum WorldArg {
    /// Question in, question out.
    Rewriter,
    /// Query in, prompts out.
    PromptPolicy,
    /// Problem in, answer with trace out.
    Solver,
    /// Self-evolution decisions.
    EvolutionStrategy,
    /// Migration (LlamaDuo) decisions.
    MigrationStrategy,
}

impl From<WorldArg> for Role {
    fn from(w: WorldArg) -> Role {
        match w {
            WorldArg::Rewriter => Role::Rewriter,
            WorldArg::PromptPolicy => Role::PromptPolicy,
            WorldArg::Solver => Role::Solver,
            WorldArg::EvolutionStrategy => Role::EvolutionStrategy,
            WorldArg::MigrationStrategy => Role::MigrationStrategy,
        }
    }
}

/// An error at the CLI edge, with its exit code.
pub(crate) struct Failure {
    code: i32,
    message: String,
}

impl Failure {
    pub(crate) fn new(code: i32, message: impl std::fmt::Display) -> Self {
        Self { code, message: message.to_string() }
    }
}

impl From<ConfigError> for Failure {
    fn from(e: ConfigError) -> Self {
        let code = match e {
            ConfigError::Read { .. } => exit_codes::IO,
            _ => exit_codes::CONFIG,
        };
        Failure::new(code, e)
    }
}

impl From<RunError> for Failure {
    fn from(e: RunError) -> Self {
        let code = match &e {
            RunError::Plugin { source: LoadError::Read { .. }, .. } => exit_codes::IO,
            RunError::Plugin { .. } | RunError::WrongRole { .. } => exit_codes::PLUGIN,
            RunError::Dataset(_) | RunError::Output { .. } => exit_codes::IO,
            RunError::Engine(_) => exit_codes::INTERNAL,
            RunError::AlreadyExists { .. } | RunError::NothingToResume { .. } | RunError::ConfigChanged { .. } => {
                exit_codes::CONFIG
            }
            RunError::Model { .. } => exit_codes::MODEL,
        };
        Failure::new(code, e)
    }
}

impl From<LoadError> for Failure {
    fn from(e: LoadError) -> Self {
        let code = if matches!(e, LoadError::Read { .. }) { exit_codes::IO } else { exit_codes::PLUGIN };
        Failure::new(code, e)
    }
}

/// The `techne` binary's entry point.
pub fn main() -> ExitCode {
    let code = run_cli(std::env::args_os());
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Parse `args` and run the command; returns the exit code.
pub fn run_cli<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { exit_codes::USAGE } else { exit_codes::SUCCESS };
            let _ = e.print();
            return code;
        }
    };
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit_codes::INTERNAL;
        }
    };
    let stop = std::sync::Arc::new(crate::runs::StopSignal::new());
    let result = runtime.block_on(async {
        let graceful = matches!(cli.command, Command::Run(_) | Command::Eval(_) | Command::Loop(_) | Command::Train(_));
        let training = matches!(cli.command, Command::Train(_));
        let dispatched = dispatch(cli.command, stop.clone());
        tokio::pin!(dispatched);
        tokio::select! {
            result = &mut dispatched => return result,
            _ = shutdown_signal() => {}
        }
        if !graceful {
            return Err(Failure::new(exit_codes::INTERRUPTED, "interrupted"));
        }
        // First signal: start no new item, let the ones in flight finish and
        // be journaled. A second signal ends the process at once.
        if !training {
            eprintln!("interrupted: finishing the items in flight (signal again to abort)");
        }
        stop.stop(crate::runs::StopReason::Interrupted);
        tokio::select! {
            result = &mut dispatched => result,
            _ = shutdown_signal() => Err(Failure::new(exit_codes::INTERRUPTED, "aborted")),
        }
    });
    match result {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            failure.code
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

async fn dispatch(command: Command, stop: std::sync::Arc<crate::runs::StopSignal>) -> Result<i32, Failure> {
    match command {
        Command::Run(args) => run_command(args, stop, false).await,
        Command::Eval(args) => run_command(args, stop, true).await,
        Command::Config(ConfigCommand::Check { config, overrides }) => config_check(config, overrides).await,
        Command::Plugin(PluginCommand::New { name, world, dir }) => {
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            crate::scaffold::create_plugin(&dir, &name, world.into()).map_err(|e| Failure::new(exit_codes::IO, e))?;
            println!("created plugin `{name}` ({} world) in {}", Role::from(world).world(), dir.display());
            println!("build it:  cd {} && cargo build --target wasm32-wasip2 --release", dir.display());
            Ok(exit_codes::SUCCESS)
        }
        Command::Plugin(PluginCommand::Inspect { file, json }) => plugin_inspect(file, json).await,
        Command::Plugin(PluginCommand::List { path }) => plugin_list(path).await,
        Command::Models(command) => tokio::task::block_in_place(|| models::models(command)),
        Command::Generate(args) => models::generate(args).await,
        Command::Train(command) => train::train(command).await,
        Command::Loop(args) => loops::run(args, stop).await,
        Command::Data(command) => data::data(command).await,
        Command::Collect(command) => collect::collect(command).await,
        Command::Bench(BenchCommand::Inference { threads, repetitions, concurrency, llama_bench }) => {
            let llama_bench = llama_bench.or_else(|| {
                let default = PathBuf::from("target/llama.cpp/build/bin/llama-bench");
                default.is_file().then_some(default)
            });
            let options = crate::bench::InferenceBenchOptions { threads, repetitions, concurrency, llama_bench };
            let report = tokio::task::spawn_blocking(move || crate::bench::inference(&options))
                .await
                .map_err(|e| Failure::new(exit_codes::INTERNAL, e))?
                .map_err(|e| Failure::new(exit_codes::MODEL, e))?;
            print!("{report}");
            Ok(exit_codes::SUCCESS)
        }
        Command::Bench(BenchCommand::Service { server, items, concurrency, threads, max_tokens }) => {
            let server = server.unwrap_or_else(|| PathBuf::from("target/llama.cpp/build/bin/llama-server"));
            let options = crate::bench::ServiceBenchOptions { server, items, concurrency, threads, max_tokens };
            let table = crate::bench::service(&options).await.map_err(|e| Failure::new(exit_codes::MODEL, e))?;
            print!("{table}");
            Ok(exit_codes::SUCCESS)
        }
        Command::Bench(BenchCommand::Train {
            steps,
            repetitions,
            rank,
            seq_len,
            batch_size,
            threads,
            targets,
            model,
            python,
            no_peer,
            peer_script,
        }) => {
            let model = model.or_else(techne_inference::locate::smollm2_gguf).ok_or_else(|| {
                Failure::new(
                    exit_codes::MODEL,
                    format!("SmolLM2 not found: run `{}` or pass --model", techne_inference::locate::SMOLLM2_INSTALL),
                )
            })?;
            let python = if no_peer {
                None
            } else {
                let python = python.unwrap_or_else(|| PathBuf::from("target/bench-venv/bin/python"));
                if !python.exists() {
                    return Err(Failure::new(
                        exit_codes::USAGE,
                        format!(
                            "{} not found: create the peer's environment with benches/setup-peft-venv.sh, or pass --python or --no-peer",
                            python.display()
                        ),
                    ));
                }
                Some(python)
            };
            let techne = std::env::current_exe().map_err(|e| Failure::new(exit_codes::INTERNAL, e))?;
            let options = crate::training::bench::TrainBenchOptions {
                model,
                steps,
                repetitions,
                rank,
                seq_len,
                batch_size,
                threads,
                targets,
                techne,
                python,
                peer_script,
            };
            let table = tokio::task::spawn_blocking(move || crate::training::bench::train(&options))
                .await
                .map_err(|e| Failure::new(exit_codes::INTERNAL, e))?
                .map_err(|e| Failure::new(exit_codes::MODEL, e))?;
            print!("{table}");
            Ok(exit_codes::SUCCESS)
        }
        Command::Bench(BenchCommand::Cache { iterations }) => {
            let dir = std::env::temp_dir().join(format!("techne-bench-cache-{}", std::process::id()));
            let report = crate::bench::cached_call(&dir, iterations).await;
            let _ = std::fs::remove_dir_all(&dir);
            print!("{}", report.map_err(|e| Failure::new(exit_codes::INTERNAL, e))?);
            Ok(exit_codes::SUCCESS)
        }
        Command::Bench(BenchCommand::PluginCall { plugin, iterations }) => {
            let engine =
                SandboxEngine::new(EngineOptions::default()).map_err(|e| Failure::new(exit_codes::INTERNAL, e))?;
            let report = crate::bench::plugin_call(&engine, &plugin, iterations).await.map_err(|e| match e {
                crate::bench::BenchError::Load(e) => Failure::from(e),
                other => Failure::new(exit_codes::PLUGIN, other),
            })?;
            print!("{report}");
            Ok(exit_codes::SUCCESS)
        }
    }
}

fn load_config(
    path: &std::path::Path,
    overrides: &OverrideArgs,
) -> Result<(crate::config::RunConfig, String), Failure> {
    let env = Overrides::from_env()?;
    let config = load_run_config(path, &env.then(overrides.to_overrides()))?;
    let text = std::fs::read_to_string(path).map_err(|e| Failure::new(exit_codes::IO, e))?;
    Ok((config, text))
}

async fn run_command(
    args: RunArgs,
    stop: std::sync::Arc<crate::runs::StopSignal>,
    evaluate: bool,
) -> Result<i32, Failure> {
    let env = Overrides::from_env()?;
    let overrides = env.then(args.overrides.to_overrides());
    let (mut config, text, config_path) = match &args.resume {
        Some(dir) => {
            let manifest: crate::runs::RunManifest = std::fs::read_to_string(dir.join("run.json"))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok())
                .ok_or_else(|| Failure::from(RunError::NothingToResume { dir: dir.clone() }))?;
            // The configuration as the run started, unless a (changed) one is given.
            let (config_path, text) = match &args.config {
                Some(path) => {
                    (path.clone(), std::fs::read_to_string(path).map_err(|e| Failure::new(exit_codes::IO, e))?)
                }
                None => {
                    let saved = dir.join("config.toml");
                    let text = std::fs::read_to_string(&saved)
                        .map_err(|e| Failure::new(exit_codes::IO, format!("cannot read {}: {e}", saved.display())))?;
                    (manifest.config_path.clone(), text)
                }
            };
            let config = crate::config::resolve_run_config(&config_path, &text, &overrides)?;
            (config, text, config_path)
        }
        None => {
            let path =
                args.config.clone().ok_or_else(|| Failure::new(exit_codes::USAGE, "give a run configuration"))?;
            let config = load_run_config(&path, &overrides)?;
            let text = std::fs::read_to_string(&path).map_err(|e| Failure::new(exit_codes::IO, e))?;
            (config, text, path)
        }
    };
    if let Some(dir) = &args.resume {
        config.run.output_dir = Some(dir.clone());
    }
    if evaluate && config.evaluation.is_none() {
        return Err(Failure::new(
            exit_codes::CONFIG,
            format!(
                "{}: `techne eval` needs an [evaluation] table (metric = \"contains\" | \"numeric\" | \"choice\" | \"exact-match\" | \"bleu4\" | \"rouge1\" | \"rouge2\" | \"rouge-l\") and a dataset with references",
                config_path.display()
            ),
        ));
    }
    let budget = crate::backends::meter::Budget {
        max_requests: args.max_requests.or(config.run.max_requests),
        max_tokens: args.max_tokens.or(config.run.max_tokens),
        max_cost: args.max_cost.or(config.run.max_cost),
    };
    let cache = if args.no_cache {
        crate::runs::CacheChoice::Off
    } else if args.cache_only {
        crate::runs::CacheChoice::ReplayOnly
    } else {
        crate::runs::CacheChoice::ReadWrite
    };
    let options = crate::runs::RunOptions {
        resume: args.resume.is_some(),
        force: args.force,
        overwrite: args.overwrite,
        cache,
        cache_dir: overrides.cache_dir.clone().map(|d| d.join("calls")),
        progress: true,
        control: crate::runs::RunControl { stop, budget },
    };
    let summary = crate::runs::run(&config, &text, &config_path, options).await?;
    let dir = config.run.output_dir.clone().unwrap_or_default();
    println!(
        "run `{}`: {} of {} items, {} succeeded, {} failed in {:.2} s ({} resumed, {} model requests, {} cache hits)",
        summary.name,
        summary.items,
        summary.total_items,
        summary.succeeded,
        summary.failed,
        summary.elapsed_s,
        summary.resumed_items,
        summary.usage.requests,
        summary.cache_hits
    );
    for (kind, count) in &summary.failures_by_kind {
        println!("  {count} failed: {kind}");
    }
    if evaluate || summary.techniques.iter().any(|t| !t.scores.is_empty()) {
        print!("{}", summary.comparison_table());
    }
    println!("results: {}", dir.join("results.jsonl").display());
    match &summary.stopped {
        Some(crate::runs::StopReason::Interrupted) => {
            println!("interrupted: continue with `techne run --resume {}`", dir.display());
            Ok(exit_codes::INTERRUPTED)
        }
        Some(crate::runs::StopReason::Budget(reason)) => {
            println!(
                "stopped: {reason}; continue with `techne run --resume {}` (raise it with --max-requests / --max-tokens / --max-cost)",
                dir.display()
            );
            Ok(exit_codes::BUDGET)
        }
        None if summary.failed == 0 => Ok(exit_codes::SUCCESS),
        None => Ok(exit_codes::ITEMS_FAILED),
    }
}

async fn config_check(path: PathBuf, overrides: OverrideArgs) -> Result<i32, Failure> {
    let (config, _) = load_config(&path, &overrides)?;
    let (pipelines, items) = crate::runs::check(&config).await?;
    println!("{}: ok", path.display());
    for pipeline in &pipelines {
        println!("  {}: {}", pipeline.name(), pipeline.describe());
    }
    println!("  plugins:  {}", config.plugins.len());
    println!("  models:   {}", config.models.len());
    println!("  items:    {items}");
    Ok(exit_codes::SUCCESS)
}

async fn plugin_inspect(file: PathBuf, json: bool) -> Result<i32, Failure> {
    let engine = SandboxEngine::new(EngineOptions::default()).map_err(|e| Failure::new(exit_codes::INTERNAL, e))?;
    let inspection = crate::sandbox::inspect_plugin(&engine, &file).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&inspection).map_err(|e| Failure::new(exit_codes::INTERNAL, e))?);
        return Ok(exit_codes::SUCCESS);
    }
    let m = &inspection.metadata;
    println!("file:        {}", inspection.path);
    println!("sha256:      {}", inspection.sha256);
    println!("size:        {} bytes", inspection.size_bytes);
    println!("world:       {}", inspection.world);
    println!("provides:    {}", inspection.provides);
    println!("plugin:      {} {}", m.name, m.version);
    println!("description: {}", m.description);
    println!("parameters:");
    if m.parameters.is_empty() {
        println!("  (none)");
    }
    for p in &m.parameters {
        println!("  {} ({:?}, default {:?}): {}", p.name, p.kind, p.default_value, p.description);
    }
    println!("imports:");
    for i in &inspection.imports {
        println!("  {i}");
    }
    println!("exports:");
    for e in &inspection.exports {
        println!("  {e}");
    }
    Ok(exit_codes::SUCCESS)
}

async fn plugin_list(path: PathBuf) -> Result<i32, Failure> {
    let engine = SandboxEngine::new(EngineOptions::default()).map_err(|e| Failure::new(exit_codes::INTERNAL, e))?;
    let files: Vec<(String, PathBuf)> = if path.extension().is_some_and(|e| e == "toml") {
        let (config, _) = load_config(&path, &OverrideArgs::default())?;
        config.plugins.iter().map(|(name, p)| (name.clone(), p.path.clone())).collect()
    } else {
        let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(&path)
            .map_err(|e| Failure::new(exit_codes::IO, format!("cannot list {}: {e}", path.display())))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
            .map(|p| (p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(), p))
            .collect();
        files.sort();
        files
    };
    let mut any_bad = false;
    for (name, file) in files {
        match crate::sandbox::inspect_plugin(&engine, &file).await {
            Ok(i) => println!(
                "{name:<24} {:<28} {} {}  {}",
                i.world.trim_start_matches("techne:plugin/").trim_end_matches("@0.1.0"),
                i.metadata.name,
                i.metadata.version,
                file.display()
            ),
            Err(e) => {
                any_bad = true;
                println!("{name:<24} {:<20} {}", "(not loadable)", e);
            }
        }
    }
    Ok(if any_bad { exit_codes::PLUGIN } else { exit_codes::SUCCESS })
}
