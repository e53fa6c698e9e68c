//! `techne bench train`: LoRA SFT training tokens/s and peak memory of
//! techne's trainer against PyTorch + PEFT on the same CPU, in the same run.
//!
//! Both train the same weights (the GGUF, dequantised to f32 by each), on
//! the same synthetic `{"text": …}` records (every sequence exactly
//! `seq_len` tokens, loss on every token), with the same LoRA rank, α,
//! dropout and targets, batch, AdamW, gradient clipping and thread count.
//! Each side runs in its own process — techne as `techne train sft
//! --no-register`, the peer as `benches/train_peft.py` in the virtual
//! environment of `benches/setup-peft-venv.sh` — so each peak RSS is that
//! trainer's alone. The first step of every run is a warm-up; the table
//! gives the median tokens/s over the timed steps of all repetitions, and
//! the ratio techne ÷ peer.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What `techne bench train` measures.
#[derive(Debug, Clone)]
pub struct TrainBenchOptions {
    /// The GGUF both sides train.
    pub model: PathBuf,
    /// Timed optimizer steps per run (after one warm-up step).
    pub steps: usize,
    /// Runs of each side (alternating).
    pub repetitions: usize,
    /// LoRA rank (α = 2 × rank).
    pub rank: usize,
    /// Sequence length (every example has exactly this many tokens).
    pub seq_len: usize,
    /// Sequences per step.
    pub batch_size: usize,
    /// Threads of each side (RAYON_NUM_THREADS / CANDLE_NUM_THREADS; torch.set_num_threads).
    pub threads: usize,
    /// `q_proj,v_proj` or `all-linear`, …
    pub targets: String,
    /// The `techne` executable that trains.
    pub techne: PathBuf,
    /// The peer's Python interpreter (None: skip the peer).
    pub python: Option<PathBuf>,
    /// `benches/train_peft.py`.
    pub peer_script: PathBuf,
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum TrainBenchError {
    /// A file could not be written or a process started.
    #[error("{0}")]
    Io(String),
    /// A side failed.
    #[error("{side} failed: {message}")]
    Side {
        /// `techne` or the peer.
        side: String,
        /// Its error output.
        message: String,
    },
}

/// One side's measurements.
#[derive(Debug, Clone, Default)]
struct Side {
    /// tokens/s of every timed step.
    step_rates: Vec<f64>,
    /// Peak RSS of each run.
    peak_rss: Vec<u64>,
    /// Trained parameters.
    trainable: u64,
    /// Losses of the first step of each run.
    first_loss: Vec<f64>,
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 }
}

/// Writes `records` lines of 400 random words (well over `seq_len` tokens).
fn write_data(path: &Path, records: usize) -> Result<(), TrainBenchError> {
    let words: Vec<&str> = "the model learns from data while gradients flow through frozen weights and small adapters \
         capture what matters for each task quickly on two cores"
        .split_whitespace()
        .collect();
    let mut rng = techne_training::rng::Rng::new(1);
    let mut text = String::new();
    for _ in 0..records {
        let t: Vec<&str> = (0..400).map(|_| words[rng.below(words.len())]).collect();
        text.push_str(&serde_json::json!({ "text": t.join(" ") }).to_string());
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|e| TrainBenchError::Io(format!("{}: {e}", path.display())))
}

fn run_side(side: &str, mut command: Command) -> Result<String, TrainBenchError> {
    let out = command.output().map_err(|e| TrainBenchError::Io(format!("cannot start {side}: {e}")))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
        return Err(TrainBenchError::Side { side: side.into(), message: tail.join("\n") });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn techne_run(o: &TrainBenchOptions, data: &Path, out: &Path, side: &mut Side) -> Result<(), TrainBenchError> {
    let mut c = Command::new(&o.techne);
    c.args(["train", "sft", "--no-register", "--checkpoint-every", "0", "--dropout", "0.05", "--lr", "2e-4"])
        .arg("--model")
        .arg(&o.model)
        .arg("--data")
        .arg(data)
        .arg("--output")
        .arg(out)
        .args(["--max-steps", &(o.steps + 1).to_string()])
        .args(["--rank", &o.rank.to_string(), "--alpha", &(2 * o.rank).to_string()])
        .args(["--batch-size", &o.batch_size.to_string(), "--max-seq-len", &o.seq_len.to_string()])
        .args(["--targets", &o.targets])
        .env("RAYON_NUM_THREADS", o.threads.to_string())
        .env("CANDLE_NUM_THREADS", o.threads.to_string());
    run_side("techne", c)?;
    let report_path = out.join("report.json");
    let report: techne_training::TrainReport = std::fs::read(&report_path)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        .map_err(|e| TrainBenchError::Io(format!("{}: {e}", report_path.display())))?;
    side.step_rates.extend(report.steps.iter().skip(1).map(|s| s.tokens as f64 / s.seconds.max(1e-9)));
    side.peak_rss.push(report.peak_rss_bytes.unwrap_or(0));
    side.trainable = report.trainable_params as u64;
    side.first_loss.extend(report.steps.first().map(|s| s.loss));
    Ok(())
}

fn peer_run(o: &TrainBenchOptions, python: &Path, data: &Path, side: &mut Side) -> Result<String, TrainBenchError> {
    let mut c = Command::new(python);
    c.arg(&o.peer_script)
        .arg("--gguf")
        .arg(&o.model)
        .arg("--data")
        .arg(data)
        .args(["--steps", &o.steps.to_string(), "--batch-size", &o.batch_size.to_string()])
        .args(["--seq-len", &o.seq_len.to_string(), "--rank", &o.rank.to_string()])
        .args(["--alpha", &(2 * o.rank).to_string(), "--targets", &o.targets])
        .args(["--threads", &o.threads.to_string()])
        .env("OMP_NUM_THREADS", o.threads.to_string())
        .env("MKL_NUM_THREADS", o.threads.to_string())
        .env("TOKENIZERS_PARALLELISM", "false");
    let stdout = run_side("PyTorch + PEFT", c)?;
    let line = stdout.lines().rev().find(|l| l.trim_start().starts_with('{')).unwrap_or("");
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| TrainBenchError::Side {
        side: "PyTorch + PEFT".into(),
        message: format!("unreadable output ({e}): {stdout}"),
    })?;
    let steps = v["steps"].as_array().cloned().unwrap_or_default();
    side.step_rates.extend(steps.iter().skip(1).filter_map(|s| {
        let (t, sec) = (s["tokens"].as_f64()?, s["seconds"].as_f64()?);
        Some(t / sec.max(1e-9))
    }));
    side.peak_rss.push(v["peak_rss_bytes"].as_u64().unwrap_or(0));
    side.trainable = v["trainable_params"].as_u64().unwrap_or(0);
    side.first_loss.extend(steps.first().and_then(|s| s["loss"].as_f64()));
    Ok(v["peer"].as_str().unwrap_or("torch + peft").to_string())
}

fn gib(b: u64) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

/// Runs the benchmark and returns the table.
pub fn train(o: &TrainBenchOptions) -> Result<String, TrainBenchError> {
    let dir = std::env::temp_dir().join(format!("techne-bench-train-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| TrainBenchError::Io(format!("{}: {e}", dir.display())))?;
    let result = measure(o, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// The 1-minute load average (`/proc/loadavg`), if readable.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

fn measure(o: &TrainBenchOptions, dir: &Path) -> Result<String, TrainBenchError> {
    let load_before = load_average();
    let data = dir.join("bench.jsonl");
    write_data(&data, o.batch_size * (o.steps + 1))?;
    let mut ours = Side::default();
    let mut peer = Side::default();
    let mut peer_name = String::new();
    for r in 0..o.repetitions.max(1) {
        techne_run(o, &data, &dir.join(format!("run-{r}")), &mut ours)?;
        if let Some(python) = &o.python {
            peer_name = peer_run(o, python, &data, &mut peer)?;
        }
    }
    let tokens_per_step = o.batch_size * o.seq_len;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "{:<34} {:>12} {:>10} {:>14} {:>12} {:>8}",
        "trainer", "tokens/s", "ratio", "peak RSS GiB", "trainable", "loss@1"
    );
    let ours_rate = median(&ours.step_rates);
    let row = |t: &mut String, name: &str, s: &Side, ratio: String| {
        let _ = writeln!(
            t,
            "{:<34} {:>12.1} {:>10} {:>14.2} {:>12} {:>8.3}",
            name,
            median(&s.step_rates),
            ratio,
            gib(s.peak_rss.iter().copied().max().unwrap_or(0)),
            s.trainable,
            median(&s.first_loss)
        );
    };
    row(&mut t, "techne (candle, LoRA)", &ours, "–".into());
    if o.python.is_some() {
        let peer_rate = median(&peer.step_rates);
        row(&mut t, &peer_name, &peer, format!("{:.2}×", ours_rate / peer_rate));
    }
    let _ = writeln!(
        t,
        "SmolLM2 GGUF {}; LoRA rank {} (α {}) on {}, seq {} × batch {} = {tokens_per_step} tokens/step, loss on every token; \
         {} threads each; medians over {} timed steps × {} runs (1 warm-up step per run); ratio = techne ÷ peer tokens/s \
         (target ≥ 1.0); peak RSS target ≤ 4 GiB",
        o.model.display(),
        o.rank,
        2 * o.rank,
        o.targets,
        o.seq_len,
        o.batch_size,
        o.threads,
        o.steps,
        o.repetitions.max(1)
    );
    if let (Some(a), Some(b)) = (load_before, load_average()) {
        let _ = writeln!(
            t,
            "load average {a:.1} at the start, {b:.1} at the end on {} CPUs (other work competes with both trainers)",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
        );
    }
    if o.python.is_none() {
        let _ = writeln!(t, "peer skipped: create its environment with benches/setup-peft-venv.sh");
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_the_data_have_the_promised_shape() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.jsonl");
        write_data(&path, 3).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3);
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["text"].as_str().unwrap().split(' ').count(), 400);
        }
    }
}
