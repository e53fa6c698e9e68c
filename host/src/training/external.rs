//! External trainers: hand a training run to another program (TRL under
//! `accelerate launch` or `torchrun` on a GPU cluster, a job submitted to a
//! scheduler, …), wait for it, and import the weights it leaves.
//!
//! The contract, in the run's output directory `RUN`:
//! 1. techne checks the data with the base model's tokenizer (errors name
//!    the file and line, as for the native trainer) and writes it in TRL's
//!    formats to `RUN/external/train.jsonl`: SFT records as `{"messages":
//!    […]}` (or `{"text": …}` for plain-text records), DPO records as
//!    `{"prompt", "chosen", "rejected"}` (strings, or message lists for
//!    conversations; an implicit prompt is made explicit);
//! 2. the command template is rendered — every placeholder value
//!    shell-quoted — and run with `sh -c`, its stdout and stderr appended to
//!    `RUN/external/job.log`. Placeholders: `{data}`, `{output_dir}` (where
//!    the job must leave its weights: `RUN/external/weights`), `{run_dir}`,
//!    `{base_model}` (the base GGUF), `{base_name}`, `{kind}` (`sft`/`dpo`),
//!    `{epochs}`, `{max_steps}` (empty when unset), `{lr}`, `{batch_size}`,
//!    `{grad_accum}`, `{max_seq_len}`, `{rank}`, `{alpha}`, `{dropout}`,
//!    `{targets}` (comma-separated), `{seed}`, `{beta}`, `{name}`, and
//!    `{techne}` (this executable); `{{`/`}}` are literal braces. An unknown
//!    placeholder is refused before anything runs;
//! 3. techne waits for it (the job may block until a cluster job ends);
//!    a non-zero exit is an error quoting the log's tail;
//! 4. the weights in `RUN/external/weights`: one `*.gguf` file, or a
//!    Hugging Face llama checkpoint (`config.json` + `*.safetensors`,
//!    converted with the base model's tokenizer and metadata, see
//!    [`super::hf`]), become `RUN/merged.gguf`, are imported into the
//!    registry with the same GGUF → ONNX exporter as `techne models import`,
//!    and registered with a lineage that records the rendered command;
//! 5. a `trainer_state.json` the job left under `RUN/external/weights`
//!    (Hugging Face `Trainer`/TRL write one per `checkpoint-N/` and with
//!    `save_state()`) becomes the report's curves: loss, learning rate,
//!    held-out loss, DPO rewards ([`super::trainer_state`]).
//!
//! With `resume: true`, weights already left by an earlier job are imported
//! without running the command again.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use techne_inference::gguf::GgufFile;
use techne_inference::registry::{Registry, sha256_file};
use techne_training::data::TextCodec;
use techne_training::export::{BaseRecord, DatasetRecord, Lineage, MergedRecord};
use techne_training::{Control, TrainConfig, TrainError, TrainKind, TrainReport};

use super::TrainingControl;

/// How to run an external trainer (`--external "…"` or `[external]` in a train config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalTrainer {
    /// The command template (see the module docs for the placeholders), run with `sh -c`.
    pub command: String,
    /// Give up (and kill the command) after this many seconds (default: wait as long as it takes).
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
}

/// What an external run did (in the report and the lineage).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExternalRecord {
    /// The command template.
    pub template: String,
    /// The rendered command (empty when earlier weights were imported on resume).
    pub command: String,
    /// The command's exit code (`None`: killed by a signal, or not run).
    pub exit_code: Option<i32>,
    /// Seconds the command ran.
    pub seconds: f64,
    /// The TRL-format data file given to it.
    pub data: PathBuf,
    /// Its stdout and stderr.
    pub log: PathBuf,
    /// The weights it left (a GGUF file or a Hugging Face directory).
    pub weights: PathBuf,
    /// `gguf` or `hf-safetensors`.
    pub weights_format: String,
    /// The job's `trainer_state.json` whose log history became the report's
    /// curves (see [`super::trainer_state`]), when it left one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trainer_state: Option<PathBuf>,
}

impl ExternalRecord {
    /// Rows for the training report's summary table.
    pub fn report_rows(&self) -> Vec<(&'static str, String)> {
        vec![
            (
                "external command",
                if self.command.is_empty() { "(not run: resumed)".into() } else { self.command.clone() },
            ),
            ("external exit status", self.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "-".into())),
            ("external seconds", format!("{:.1}", self.seconds)),
            ("imported weights", format!("{} ({})", self.weights.display(), self.weights_format)),
            ("external log", self.log.display().to_string()),
            (
                "external curves",
                match &self.trainer_state {
                    Some(path) => format!("{} (the job's log history)", path.display()),
                    None => "none: the job left no trainer_state.json in its output directory".into(),
                },
            ),
        ]
    }
}

/// Why an external training failed.
#[derive(Debug, thiserror::Error)]
pub enum ExternalError {
    /// The command template is invalid.
    #[error("external trainer command: {0}")]
    Template(String),
    /// The command could not be started.
    #[error("cannot start the external trainer (`sh -c …`): {0}")]
    Spawn(String),
    /// The command failed.
    #[error(
        "the external trainer exited with {status}; see {log} (last lines below) and fix the command or its environment\n{tail}"
    )]
    Failed {
        /// `exit code N` or `a signal`.
        status: String,
        /// The log file.
        log: PathBuf,
        /// The log's last lines.
        tail: String,
    },
    /// The command ran past its timeout and was killed.
    #[error("the external trainer ran longer than {seconds} s and was killed; see {log}")]
    Timeout {
        /// The timeout.
        seconds: u64,
        /// The log file.
        log: PathBuf,
    },
    /// The command was interrupted (SIGINT/SIGTERM to techne) and killed.
    #[error("interrupted: the external trainer was killed; run again (with --resume if it had finished)")]
    Interrupted,
    /// The command succeeded but left no weights techne can import.
    #[error(
        "the external trainer finished but left no weights in {dir} ({found}): it must write one .gguf file or a Hugging Face llama checkpoint (config.json + model.safetensors) into {{output_dir}}"
    )]
    NoWeights {
        /// The weights directory.
        dir: PathBuf,
        /// What is there.
        found: String,
    },
    /// The weights do not fit the base model or cannot be read.
    #[error("cannot import the external trainer's weights: {0}")]
    Weights(#[from] super::hf::HfError),
    /// Data, model, I/O or registry error (as for the native trainer).
    #[error(transparent)]
    Train(#[from] TrainError),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io { path: path.to_path_buf(), source }
}

/// Quotes `s` for `sh`: single quotes, with embedded ones as `'\''`.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c)) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Renders `template`, replacing `{name}` by the shell-quoted value of `name`.
pub fn render_template(template: &str, values: &[(&str, String)]) -> Result<String, ExternalError> {
    let mut out = String::with_capacity(template.len() * 2);
    let mut rest = template;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if tail.starts_with("{{") || tail.starts_with("}}") {
            out.push_str(&tail[..1]);
            rest = &tail[2..];
            continue;
        }
        if tail.starts_with('}') {
            return Err(ExternalError::Template(format!(
                "unmatched `}}` in {template:?}: write `}}}}` for a literal brace"
            )));
        }
        let end = tail.find('}').ok_or_else(|| {
            ExternalError::Template(format!("unclosed `{{` in {template:?}: write `{{{{` for a literal brace"))
        })?;
        let name = &tail[1..end];
        let value = values.iter().find(|(k, _)| *k == name).ok_or_else(|| {
            let known: Vec<&str> = values.iter().map(|(k, _)| *k).collect();
            ExternalError::Template(format!("unknown placeholder {{{name}}}; known: {}", known.join(", ")))
        })?;
        out.push_str(&shell_quote(&value.1));
        rest = &tail[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn as_message_list(v: &Value, role: &str) -> Value {
    match v {
        Value::String(s) => json!([{ "role": role, "content": s }]),
        other => other.clone(),
    }
}

/// One record in TRL's format (the record was already checked by the tokenizer).
fn to_trl(kind: TrainKind, v: &Value) -> Value {
    let obj = v.as_object();
    let get = |k: &str| obj.and_then(|o| o.get(k));
    match kind {
        TrainKind::Sft => {
            if let Some(text) = get("text") {
                return json!({ "text": text });
            }
            if let Some(m) = get("messages") {
                return json!({ "messages": m });
            }
            let mut messages = Vec::new();
            for (k, role) in [("prompt", "user"), ("completion", "assistant")] {
                if let Some(Value::Array(list)) = get(k).map(|v| as_message_list(v, role)) {
                    messages.extend(list);
                }
            }
            json!({ "messages": messages })
        }
        TrainKind::Dpo => {
            let (c, r) =
                (get("chosen").cloned().unwrap_or(Value::Null), get("rejected").cloned().unwrap_or(Value::Null));
            match get("prompt") {
                Some(Value::String(p)) if c.is_string() && r.is_string() => {
                    json!({ "prompt": p, "chosen": c, "rejected": r })
                }
                Some(p) => json!({
                    "prompt": as_message_list(p, "user"),
                    "chosen": as_message_list(&c, "assistant"),
                    "rejected": as_message_list(&r, "assistant"),
                }),
                None => {
                    // TRL's implicit prompt: the common leading messages, up to the first differing assistant turn.
                    let (ca, ra) =
                        (c.as_array().cloned().unwrap_or_default(), r.as_array().cloned().unwrap_or_default());
                    let common = ca.iter().zip(&ra).take_while(|(a, b)| a == b).count();
                    let common = (0..=common)
                        .rev()
                        .find(|&k| ca.get(k).and_then(|m| m.get("role")).and_then(Value::as_str) == Some("assistant"))
                        .unwrap_or(common);
                    json!({ "prompt": ca[..common], "chosen": ca[common..], "rejected": ra[common..] })
                }
            }
        }
    }
}

/// Checks every record of `cfg.data` with the base model's tokenizer and
/// writes them in TRL's format to `out`; returns (examples, SHA-256 of the input).
fn write_trl_data(
    kind: TrainKind,
    cfg: &TrainConfig,
    base: &GgufFile,
    out: &Path,
) -> Result<(usize, String), TrainError> {
    let codec = TextCodec::from_gguf(base)?;
    let bytes = std::fs::read(&cfg.data).map_err(io_err(&cfg.data))?;
    let sha = techne_training::data::sha256_hex(&bytes);
    let data_err = |line: usize, message: String| TrainError::Data { path: cfg.data.clone(), line, message };
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| data_err(0, format!("the file is not UTF-8 ({e}); save it as UTF-8 JSONL")))?;
    let mut lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line)
            .map_err(|e| data_err(i + 1, format!("not valid JSON ({e}); each line must be one JSON object")))?;
        let checked = match kind {
            TrainKind::Sft => codec.sft_example(&v, cfg.template).map(|_| ()),
            TrainKind::Dpo => codec.preference_example(&v, cfg.template).map(|_| ()),
        };
        checked.map_err(|m| data_err(i + 1, m))?;
        lines.push(to_trl(kind, &v).to_string());
    }
    if lines.is_empty() {
        return Err(data_err(0, "the file has no examples (expected one JSON object per line)".into()));
    }
    let mut body = lines.join("\n");
    body.push('\n');
    techne_training::checkpoint::write_file_atomic(out, body.as_bytes())?;
    Ok((lines.len(), sha))
}

fn log_tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The weights the job left in `dir`: one GGUF file, or a Hugging Face checkpoint.
fn find_weights(dir: &Path) -> Result<(PathBuf, &'static str), ExternalError> {
    if super::hf::is_hf_checkpoint(dir) {
        return Ok((dir.to_path_buf(), "hf-safetensors"));
    }
    let entries: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect()).unwrap_or_default();
    let ggufs: Vec<&PathBuf> = entries.iter().filter(|p| p.extension().is_some_and(|e| e == "gguf")).collect();
    match ggufs.as_slice() {
        [one] => Ok(((*one).clone(), "gguf")),
        _ => {
            let mut names: Vec<String> =
                entries.iter().filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())).collect();
            names.sort();
            let found = if !dir.is_dir() {
                "the directory does not exist".to_string()
            } else if ggufs.len() > 1 {
                format!("{} .gguf files, expected one", ggufs.len())
            } else if names.is_empty() {
                "it is empty".to_string()
            } else {
                format!("found: {}", names.join(", "))
            };
            Err(ExternalError::NoWeights { dir: dir.to_path_buf(), found })
        }
    }
}

/// Runs `command` with `sh -c`, output appended to `log`, until it exits,
/// times out or `control` asks to stop.
fn run_command(
    command: &str,
    log: &Path,
    timeout: Option<u64>,
    control: Option<&TrainingControl>,
) -> Result<(Option<i32>, f64), ExternalError> {
    let file = std::fs::OpenOptions::new().create(true).append(true).open(log).map_err(io_err(log))?;
    let err_file = file.try_clone().map_err(io_err(log))?;
    let started = Instant::now();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(err_file))
        .spawn()
        .map_err(|e| ExternalError::Spawn(e.to_string()))?;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok((status.code(), started.elapsed().as_secs_f64())),
            Ok(None) => {}
            Err(e) => return Err(ExternalError::Spawn(e.to_string())),
        }
        if control.is_some_and(|c| c.answer() != Control::Continue) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ExternalError::Interrupted);
        }
        if let Some(limit) = timeout
            && started.elapsed() > Duration::from_secs(limit)
        {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ExternalError::Timeout { seconds: limit, log: log.to_path_buf() });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs an external training (see the module docs) and imports its weights;
/// returns a report (no steps) and what ran.
pub fn run_external(
    kind: TrainKind,
    cfg: &TrainConfig,
    external: &ExternalTrainer,
    control: Option<&TrainingControl>,
) -> Result<(TrainReport, ExternalRecord), ExternalError> {
    cfg.validate()?;
    let out = &cfg.output_dir;
    let work = out.join("external");
    let weights_dir = work.join("weights");
    let data = work.join("train.jsonl");
    let log = work.join("job.log");
    std::fs::create_dir_all(&work).map_err(io_err(&work))?;
    let base = GgufFile::open(&cfg.model).map_err(TrainError::from)?;
    let (examples, data_sha256) = write_trl_data(kind, cfg, &base, &data)?;

    let earlier = if cfg.resume { find_weights(&weights_dir).ok() } else { None };
    let (command, exit_code, seconds) = if earlier.is_some() {
        (String::new(), None, 0.0)
    } else {
        if weights_dir.exists() {
            std::fs::remove_dir_all(&weights_dir).map_err(io_err(&weights_dir))?;
        }
        std::fs::create_dir_all(&weights_dir).map_err(io_err(&weights_dir))?;
        let path = |p: &Path| p.display().to_string();
        let techne = std::env::current_exe().map(|p| path(&p)).unwrap_or_else(|_| "techne".into());
        let values: Vec<(&str, String)> = vec![
            ("data", path(&data)),
            ("output_dir", path(&weights_dir)),
            ("run_dir", path(out)),
            ("base_model", path(&cfg.model)),
            ("base_name", cfg.model_name.clone().unwrap_or_default()),
            ("kind", kind.as_str().into()),
            ("epochs", cfg.epochs.to_string()),
            ("max_steps", cfg.max_steps.map(|s| s.to_string()).unwrap_or_default()),
            ("lr", cfg.optim.learning_rate.to_string()),
            ("batch_size", cfg.batch_size.to_string()),
            ("grad_accum", cfg.grad_accum.to_string()),
            ("max_seq_len", cfg.max_seq_len.to_string()),
            ("rank", cfg.lora.rank.to_string()),
            ("alpha", cfg.lora.alpha.to_string()),
            ("dropout", cfg.lora.dropout.to_string()),
            ("targets", cfg.lora.targets.iter().map(|p| p.name()).collect::<Vec<_>>().join(",")),
            ("seed", cfg.seed.to_string()),
            ("beta", cfg.dpo_beta.to_string()),
            ("name", cfg.out_name.clone().unwrap_or_default()),
            ("techne", techne),
        ];
        let command = render_template(&external.command, &values)?;
        let header = format!("$ {command}\n");
        std::fs::write(&log, header).map_err(io_err(&log))?;
        let (code, seconds) = run_command(&command, &log, external.timeout_seconds, control)?;
        if code != Some(0) {
            return Err(ExternalError::Failed {
                status: code.map(|c| format!("exit code {c}")).unwrap_or_else(|| "a signal".into()),
                log: log.clone(),
                tail: log_tail(&log, 20),
            });
        }
        (command, code, seconds)
    };
    let (weights, weights_format) = match earlier {
        Some(found) => found,
        None => find_weights(&weights_dir)?,
    };

    let merged_path = out.join(techne_training::export::MERGED_GGUF);
    let format = if weights_format == "gguf" {
        // Check that it is a GGUF of the base architecture before importing it.
        let produced = GgufFile::open(&weights).map_err(TrainError::from)?;
        let format = super::hf::projection_format(&produced).unwrap_or(cfg.merged_format);
        drop(produced);
        std::fs::copy(&weights, &merged_path).map_err(io_err(&merged_path))?;
        format
    } else {
        super::hf::hf_to_gguf(&base, &weights, &merged_path, cfg.merged_format, cfg.out_name.as_deref())?;
        cfg.merged_format
    };
    // The job's own curves, when it left a Hugging Face trainer_state.json.
    let curves = match super::trainer_state::find(&weights_dir) {
        Some(path) => match super::trainer_state::read(&path) {
            Ok(curves) => Some(curves),
            Err(e) => {
                tracing::warn!("the external job's curves are not in the report: {e}");
                None
            }
        },
        None => None,
    };
    let record = ExternalRecord {
        trainer_state: curves.as_ref().map(|c| c.path.clone()),
        template: external.command.clone(),
        command: command.clone(),
        exit_code,
        seconds,
        data: data.clone(),
        log,
        weights: weights.clone(),
        weights_format: weights_format.to_string(),
    };

    let final_loss = curves.as_ref().and_then(|c| c.steps.last()).map(|s| s.loss);
    let total_steps = curves.as_ref().map_or(0, |c| c.global_step);
    let mut report = TrainReport {
        kind,
        steps: curves.map(|c| c.steps).unwrap_or_default(),
        total_steps,
        resumed_from: None,
        stopped_early: false,
        final_loss,
        tokens_per_second: 0.0,
        train_seconds: seconds,
        trainable_params: 0,
        examples,
        skipped: 0,
        output_dir: out.clone(),
        merged_gguf: Some(merged_path.clone()),
        model: None,
        lineage: None,
        peak_rss_bytes: None,
        selected_step: None,
    };
    if let Some(name) = &cfg.out_name {
        let (base_sha256, _) = sha256_file(&cfg.model).map_err(TrainError::from)?;
        let (merged_sha256, _) = sha256_file(&merged_path).map_err(TrainError::from)?;
        let lineage = Lineage {
            format_version: 1,
            kind: kind.as_str().into(),
            model: Some(name.clone()),
            base_model: BaseRecord {
                name: cfg.model_name.clone(),
                gguf: cfg.model.display().to_string(),
                sha256: base_sha256,
                general_name: base.get("general.name").and_then(|v| v.as_str()).map(str::to_string),
            },
            dataset: DatasetRecord {
                path: cfg.data.display().to_string(),
                sha256: data_sha256,
                examples,
                skipped: 0,
                truncated: 0,
            },
            hyperparameters: json!({
                "external": record,
                "epochs": cfg.epochs,
                "max_steps": cfg.max_steps,
                "learning_rate": cfg.optim.learning_rate,
                "batch_size": cfg.batch_size,
                "grad_accum": cfg.grad_accum,
                "max_seq_len": cfg.max_seq_len,
                "lora": cfg.lora,
                "seed": cfg.seed,
                "dpo_beta": cfg.dpo_beta,
            }),
            steps: total_steps,
            final_loss,
            merged: MergedRecord { gguf: merged_path.display().to_string(), sha256: merged_sha256, format },
            adapter_sha256: String::new(),
            trainer: if command.is_empty() {
                format!("external (imported on resume): {}", external.command)
            } else {
                format!("external: {command}")
            },
            created_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        let registry = match &cfg.registry_dir {
            Some(d) => Registry::open(d).map_err(TrainError::from)?,
            None => Registry::open_default().map_err(TrainError::from)?,
        };
        let entry = techne_training::export::register_merged(&registry, name, &merged_path, &lineage, cfg.max_context)?;
        let bytes = serde_json::to_vec_pretty(&lineage).map_err(|e| TrainError::Config(e.to_string()))?;
        techne_training::checkpoint::write_file_atomic(&out.join(techne_training::export::LINEAGE_FILE), &bytes)?;
        report.model = Some(techne_training::RegisteredModel { name: entry.name, dir: entry.dir });
        report.lineage = Some(lineage);
    }
    report.peak_rss_bytes = techne_training::trainer::peak_rss_bytes();
    let bytes = serde_json::to_vec_pretty(&report).map_err(|e| TrainError::Config(e.to_string()))?;
    techne_training::checkpoint::write_file_atomic(&out.join("report.json"), &bytes)?;
    Ok((report, record))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_quote_every_value_and_refuse_unknown_placeholders() {
        let values =
            vec![("data", "/tmp/my data.jsonl".to_string()), ("lr", "0.0002".to_string()), ("q", "it's".into())];
        let cmd = render_template("trl sft --data {data} --lr={lr} {q} {{literal}}", &values).unwrap();
        assert_eq!(cmd, r"trl sft --data '/tmp/my data.jsonl' --lr=0.0002 'it'\''s' {literal}");
        let e = render_template("run {dta}", &values).unwrap_err().to_string();
        assert!(e.contains("unknown placeholder {dta}") && e.contains("data"), "{e}");
        assert!(render_template("run {data", &values).is_err());
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
    }

    #[test]
    fn records_are_written_in_trl_formats() {
        let sft = to_trl(TrainKind::Sft, &json!({"prompt": "Hi", "completion": "Hello"}));
        assert_eq!(
            sft,
            json!({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]})
        );
        let msgs = json!({"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]});
        assert_eq!(to_trl(TrainKind::Sft, &msgs), msgs);
        assert_eq!(to_trl(TrainKind::Sft, &json!({"text": "t"})), json!({"text": "t"}));
        let pair = json!({"prompt": "Q", "chosen": "good", "rejected": "bad"});
        assert_eq!(to_trl(TrainKind::Dpo, &pair), pair);
        let implicit = json!({
            "chosen": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "good"}],
            "rejected": [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "bad"}],
        });
        assert_eq!(
            to_trl(TrainKind::Dpo, &implicit),
            json!({
                "prompt": [{"role": "user", "content": "Q"}],
                "chosen": [{"role": "assistant", "content": "good"}],
                "rejected": [{"role": "assistant", "content": "bad"}],
            })
        );
    }

    #[test]
    fn a_failing_command_is_reported_with_its_log_and_missing_weights_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("job.log");
        let (code, _) = run_command("echo working; echo oops >&2; exit 3", &log, None, None).unwrap();
        assert_eq!(code, Some(3));
        assert_eq!(log_tail(&log, 5), "working\noops");
        let control = TrainingControl::new();
        control.request_stop();
        assert!(matches!(run_command("sleep 5", &log, None, Some(&control)), Err(ExternalError::Interrupted)));
        assert!(matches!(run_command("sleep 5", &log, Some(0), None), Err(ExternalError::Timeout { .. })));
        let weights = dir.path().join("weights");
        std::fs::create_dir_all(&weights).unwrap();
        let e = find_weights(&weights).unwrap_err().to_string();
        assert!(e.contains("it is empty") && e.contains("config.json"), "{e}");
        std::fs::write(weights.join("adapter_model.safetensors"), b"x").unwrap();
        let e = find_weights(&weights).unwrap_err().to_string();
        assert!(e.contains("found: adapter_model.safetensors"), "{e}");
        std::fs::write(weights.join("model.gguf"), b"x").unwrap();
        assert_eq!(find_weights(&weights).unwrap(), (weights.join("model.gguf"), "gguf"));
    }
}
