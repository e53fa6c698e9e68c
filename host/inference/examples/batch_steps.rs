//! Measures the batched decode step of the continuous-batching scheduler on
//! the default model: milliseconds per step and aggregate tokens/s for 1, 2,
//! 4, 8 and 16 concurrent greedy streams (each size twice, interleaved, so
//! that a change in machine load shows up as disagreement between rounds).
//!
//! `cargo run --release -p techne-inference --example batch_steps -- [threads] [tokens]`

use std::sync::Arc;
use std::time::Instant;

use techne_inference::{GenerationParams, LocalModel, Registry, Runtime, Scheduler, SchedulerConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let threads = args.get(1).and_then(|t| t.parse().ok()).unwrap_or(2);
    let tokens = args.get(2).and_then(|t| t.parse().ok()).unwrap_or(32);
    let rt = Runtime::load(None)?;
    let entry = Registry::open_default()?.ensure_default()?;
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
    Ok(())
}
