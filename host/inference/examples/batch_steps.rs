//! Measures the batched decode step of the continuous-batching scheduler on
//! the default model: milliseconds per step and aggregate tokens/s for 1, 2,
//! 4, 8 and 16 concurrent greedy streams (each size twice, interleaved, so
//! that a change in machine load shows up as disagreement between rounds).
//!
//! `cargo run --release -p techne-inference --example batch_steps -- [threads] [tokens] [accuracy_level]`
//!
//! With an `accuracy_level` the default GGUF is exported again with that
//! accuracy level (0: f32, 4: int8 activations) into a temporary registry and
//! measured instead.

use std::sync::Arc;
use std::time::Instant;

use techne_inference::{GenerationParams, LocalModel, Registry, Runtime, Scheduler, SchedulerConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let threads = args.get(1).and_then(|t| t.parse().ok()).unwrap_or(2);
    let tokens = args.get(2).and_then(|t| t.parse().ok()).unwrap_or(32);
    let rt = Runtime::load(None)?;
    let accuracy: Option<i64> = args.get(3).and_then(|a| a.parse().ok());
    let scratch = tempfile_dir()?;
    let entry = match accuracy {
        None => Registry::open_default()?.ensure_default()?,
        Some(accuracy_level) => {
            let gguf = techne_inference::locate::smollm2_gguf().ok_or("the default model is not installed")?;
            let options = techne_inference::onnx_export::ExportOptions { accuracy_level, ..Default::default() };
            Registry::open(&scratch)?.import_as(&gguf, "smollm2-accuracy", &options)?
        }
    };
    println!("model {} (accuracy level {})", entry.name, accuracy.unwrap_or(0));
    let model = Arc::new(LocalModel::load(&rt, &entry, threads)?);
    let scheduler = Scheduler::new(model.clone(), SchedulerConfig::default())?;
    let prompt = model.prompt_ids("Once upon a time")?;
    let mut params = GenerationParams::greedy(tokens);
    params.stop.clear();
    println!("{:>6} {:>6} {:>10} {:>12}", "round", "batch", "ms/step", "tokens/s");
    for round in 1..=2 {
        for batch in [1usize, 2, 4, 8, 16] {
            let before = scheduler.stats();
            let t = Instant::now();
            let pending: Vec<_> = (0..batch).map(|_| scheduler.submit_ids(&prompt, &params)).collect();
            let mut generated = 0;
            for p in pending {
                generated += p.wait()?.usage.completion_tokens;
            }
            let elapsed = t.elapsed().as_secs_f64();
            let steps = (scheduler.stats().steps - before.steps).max(1);
            println!(
                "{round:>6} {batch:>6} {:>10.1} {:>12.1}",
                elapsed * 1e3 / steps as f64,
                generated as f64 / elapsed
            );
        }
    }
    std::fs::remove_dir_all(&scratch)?;
    Ok(())
}

/// A fresh scratch directory under the system's temporary directory.
fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("techne-batch-steps-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
