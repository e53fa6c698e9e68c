//! Measures LoRA SFT throughput on SmolLM2-135M-Instruct: rank 8 on
//! q_proj/v_proj, sequence length 256, batch 4 (1024 tokens per step, loss on
//! every token), and the process's peak RSS.
//!
//! ```sh
//! cargo run --release -p techne-training --example bench_sft -- [STEPS] [TARGETS]
//! ```
//!
//! `STEPS` (default 5) optimizer steps are timed after one warm-up step;
//! `TARGETS` is `q_proj,v_proj` (default) or `all-linear`.

use std::time::Instant;

/// User + system CPU seconds of this process so far.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0.0;
    }
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 * 1e-6;
    t(u.ru_utime) + t(u.ru_stime)
}

use techne_training::rng::Rng;
use techne_training::trainer::peak_rss_bytes;
use techne_training::{Control, LoraConfig, TrainConfig, TrainEvent, train_sft};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let steps: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5);
    let targets = LoraConfig::parse_targets(&args.next().unwrap_or_else(|| "q_proj,v_proj".into()))?;
    let Some(model) = techne_inference::locate::smollm2_gguf() else {
        eprintln!("SmolLM2 not found: run `{}`", techne_inference::locate::SMOLLM2_INSTALL);
        std::process::exit(2);
    };
    let dir = tempfile::tempdir()?;
    let words: Vec<&str> =
        "the model learns from data while gradients flow through frozen weights and small adapters capture what matters \
         for each task quickly on two cores"
            .split_whitespace()
            .collect();
    let mut rng = Rng::new(1);
    let mut text = String::new();
    for _ in 0..4 * (steps + 1) {
        let t: Vec<&str> = (0..400).map(|_| words[rng.below(words.len())]).collect();
        text.push_str(&serde_json::json!({ "text": t.join(" ") }).to_string());
        text.push('\n');
    }
    let data = dir.path().join("bench.jsonl");
    std::fs::write(&data, text)?;
    let cfg = TrainConfig {
        model,
        data,
        output_dir: dir.path().join("run"),
        lora: LoraConfig { rank: 8, alpha: 16.0, dropout: 0.05, targets },
        batch_size: 4,
        grad_accum: 1,
        max_seq_len: 256,
        max_steps: Some(steps + 1),
        checkpoint_every: 0,
        ..TrainConfig::default()
    };
    let threads = candle_core::utils::get_num_threads();
    println!("LoRA SFT benchmark: SmolLM2-135M, rank 8 on {:?}, seq 256, batch 4, {threads} threads", cfg.lora.targets);
    let t0 = Instant::now();
    let mut timed = (0usize, 0f64, 0f64);
    let mut cpu_mark = cpu_seconds();
    let report = train_sft(&cfg, |e| {
        match e {
            TrainEvent::Prepared { trainable_params, .. } => {
                println!(
                    "model and data loaded in {:.1}s; {trainable_params} trainable parameters",
                    t0.elapsed().as_secs_f64()
                )
            }
            TrainEvent::Step(r) => {
                let cpu = cpu_seconds();
                println!(
                    "step {}: loss {:.3}, {} tokens in {:.2}s = {:.0} tokens/s ({:.2} CPU-s)",
                    r.step,
                    r.loss,
                    r.tokens,
                    r.seconds,
                    r.tokens_per_second,
                    cpu - cpu_mark
                );
                if r.step > 1 {
                    timed.0 += r.tokens;
                    timed.1 += r.seconds;
                    timed.2 += cpu - cpu_mark;
                }
                cpu_mark = cpu;
            }
            _ => {}
        }
        Control::Continue
    })?;
    let rss = report.peak_rss_bytes.or_else(peak_rss_bytes).unwrap_or(0);
    println!(
        "RESULT: {:.0} training tokens/s over {} steps (after 1 warm-up step), {:.0} tokens per CPU-second ({:.2} CPUs busy); peak RSS {:.0} MiB",
        timed.0 as f64 / timed.1.max(1e-9),
        steps,
        timed.0 as f64 / timed.2.max(1e-9),
        timed.2 / timed.1.max(1e-9),
        rss as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}
