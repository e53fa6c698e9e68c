//! Compares a model directory from elsewhere (the default SmolLM2 GGUF written
//! in the Optimum / onnx-community layout by `hf_export`, imported with
//! `Registry::import_dir`) with the native import of the same GGUF, in one
//! run: prefill and single-stream decode tokens/s (medians of `rounds`,
//! alternating the two models), and aggregate decode tokens/s of 4 concurrent
//! greedy streams through the scheduler (wall time including their prefills).
//!
//! `cargo run --release -p techne-inference --example external_decode -- [threads] [tokens] [rounds]`

use std::sync::Arc;
use std::time::Instant;

use techne_inference::hf_export::{HfExportOptions, export_hf_dir};
use techne_inference::{GenerationParams, LocalModel, Registry, Runtime, Scheduler, SchedulerConfig};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Seconds for a greedy generation of exactly `tokens` tokens (no stop ids).
fn timed(model: &LocalModel, prompt: &[u32], tokens: usize) -> Result<f64, Box<dyn std::error::Error>> {
    let t = Instant::now();
    let out = model.generate_ids(prompt, &GenerationParams::greedy(tokens))?;
    let elapsed = t.elapsed().as_secs_f64();
    if out.choices[0].token_ids.len() != tokens {
        return Err(format!("stopped after {} of {tokens} tokens", out.choices[0].token_ids.len()).into());
    }
    Ok(elapsed)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let threads = args.get(1).and_then(|t| t.parse().ok()).unwrap_or(2);
    let tokens: usize = args.get(2).and_then(|t| t.parse().ok()).unwrap_or(64);
    let rounds: usize = args.get(3).and_then(|t| t.parse().ok()).unwrap_or(5);
    let gguf = techne_inference::locate::smollm2_gguf().ok_or("the default model is not installed")?;
    let scratch = std::env::temp_dir().join(format!("techne-external-decode-{}", std::process::id()));
    let result = (|| -> Result<(), Box<dyn std::error::Error>> {
        let rt = Runtime::load(None)?;
        let registry = Registry::open(scratch.join("registry"))?;
        let native = Arc::new(LocalModel::load(&rt, &registry.import(&gguf)?, threads)?);
        let dir = scratch.join("smollm2-onnx");
        export_hf_dir(&gguf, &dir, &HfExportOptions { max_context: Some(2048), ..Default::default() })?;
        let external = Arc::new(LocalModel::load(&rt, &registry.import_dir(&dir, None, None)?, threads)?);
        let prompt = native.prompt_ids(
            "The history of the city begins with a small settlement on the river, where traders from the north \
             and the south met to exchange grain, salt and cloth. Over the centuries",
        )?;
        println!("SmolLM2-135M-Instruct Q4_1, {threads} threads, prompt {} tokens, {tokens} new tokens", prompt.len());
        let models = [("native (GroupQueryAttention)", &native), ("model directory (concat)", &external)];
        let mut prefill = [Vec::new(), Vec::new()];
        let mut decode = [Vec::new(), Vec::new()];
        for model in models.iter().map(|(_, m)| m) {
            timed(model, &prompt, 4)?; // warm-up
        }
        for _ in 0..rounds {
            for (i, (_, model)) in models.iter().enumerate() {
                let first = timed(model, &prompt, 1)?;
                let all = timed(model, &prompt, tokens + 1)?;
                prefill[i].push(prompt.len() as f64 / first);
                decode[i].push(tokens as f64 / (all - first).max(1e-9));
            }
        }
        let mut batched = [0.0; 2];
        for (i, (_, model)) in models.iter().enumerate() {
            let scheduler = Scheduler::new((*model).clone(), SchedulerConfig::default())?;
            let t = Instant::now();
            let pending: Vec<_> =
                (0..4).map(|_| scheduler.submit_ids(&prompt, &GenerationParams::greedy(tokens))).collect();
            let mut generated = 0;
            for p in pending {
                generated += p.wait()?.usage.completion_tokens;
            }
            batched[i] = generated as f64 / t.elapsed().as_secs_f64();
        }
        println!("{:<30} {:>14} {:>14} {:>16}", "model", "prefill tok/s", "decode tok/s", "4 streams tok/s");
        for (i, (name, _)) in models.iter().enumerate() {
            println!(
                "{name:<30} {:>14.1} {:>14.1} {:>16.1}",
                median(prefill[i].clone()),
                median(decode[i].clone()),
                batched[i]
            );
        }
        println!(
            "{:<30} {:>14.2} {:>14.2} {:>16.2}",
            "ratio (directory / native)",
            median(prefill[1].clone()) / median(prefill[0].clone()),
            median(decode[1].clone()) / median(decode[0].clone()),
            batched[1] / batched[0]
        );
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result
}
