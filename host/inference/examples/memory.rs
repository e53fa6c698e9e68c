//! Where the memory of a generation goes: prints this process's resident set
//! (`VmRSS`) and its peak (`VmHWM`) after each stage of loading the default
//! model and generating from it (Linux only).
//!
//! `cargo run --release -p techne-inference --example memory -- [threads] [prompt tokens] [new tokens]`

use techne_inference::{GenerationParams, LocalModel, Registry, Runtime};

/// `VmRSS` and `VmHWM` of this process in MB.
fn rss() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn report(stage: &str) {
    let (now, peak) = rss();
    println!("{stage:<40} VmRSS {now:>7.1} MB   VmHWM {peak:>7.1} MB");
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let threads = args.get(1).and_then(|t| t.parse().ok()).unwrap_or(0);
    let prompt_tokens: usize = args.get(2).and_then(|t| t.parse().ok()).unwrap_or(40);
    let new_tokens: usize = args.get(3).and_then(|t| t.parse().ok()).unwrap_or(128);
    report("start");
    let rt = Runtime::load(None)?;
    report("ONNX Runtime loaded");
    let entry = Registry::open_default()?.ensure_default()?;
    report("registry entry ready");
    let model = LocalModel::load(&rt, &entry, threads)?;
    report("session + tokenizer loaded");
    let text = "The quick brown fox jumps over the lazy dog while the farmer counts his sheep. ".repeat(64);
    let mut prompt = model.tokenizer().encode(&text, false)?;
    prompt.truncate(prompt_tokens.max(1));
    let mut one = GenerationParams::greedy(1);
    one.stop.clear();
    model.generate_ids(&prompt, &one)?;
    report(&format!("prefill of {} tokens", prompt.len()));
    let mut params = GenerationParams::greedy(new_tokens);
    params.stop.clear();
    let out = model.generate_ids(&prompt, &params)?;
    report(&format!("generation of {} tokens", out.usage.completion_tokens));
    let cont = vec![prompt[0]; 1];
    model.score_ids(&prompt, &cont)?;
    report(&format!("scoring after {} tokens", prompt.len()));
    Ok(())
}
