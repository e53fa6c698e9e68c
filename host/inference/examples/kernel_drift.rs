//! Compares the log-probabilities that generation (one-row decode steps)
//! and scoring (one many-row pass) give for the same greedy continuation,
//! for the default model exported at accuracy levels 0 (f32) and 4 (int8
//! activations), both on techne's operators where this CPU has their SIMD
//! paths (then both differences are 0).
//!
//! `cargo run --release -p techne-inference --example kernel_drift -- [tokens]`

use techne_inference::onnx_export::ExportOptions;
use techne_inference::{GenerationParams, LocalModel, Registry, Runtime};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tokens: usize = std::env::args().nth(1).and_then(|t| t.parse().ok()).unwrap_or(48);
    let rt = Runtime::load(None)?;
    let gguf = techne_inference::locate::smollm2_gguf().ok_or("the default model is not installed")?;
    let scratch = std::env::temp_dir().join(format!("techne-kernel-drift-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let registry = Registry::open(&scratch)?;
    let prompts = ["Once upon a time", "The capital of France is", "def fibonacci(n):", "Photosynthesis is"];
    let mut models = Vec::new();
    for level in [0i64, 4] {
        let entry = registry.import_as(
            &gguf,
            &format!("drift-{level}"),
            &ExportOptions { accuracy_level: level, ..Default::default() },
        )?;
        models.push((level, LocalModel::load(&rt, &entry, 2)?));
    }
    for prompt in prompts {
        let ids = models[0].1.prompt_ids(prompt)?;
        let mut params = GenerationParams { logprobs: true, ..GenerationParams::greedy(tokens) };
        params.stop.clear();
        let reference = models[0].1.generate_ids(&ids, &params)?;
        let cont = reference.choices[0].token_ids.clone();
        println!("prompt {prompt:?}: {} tokens", cont.len());
        for (level, model) in &models {
            let generated = model.generate_ids(&ids, &params)?;
            let g = &generated.choices[0];
            let same = g.token_ids == cont;
            let scored = model.score_ids(&ids, &cont)?;
            let base = models[0].1.score_ids(&ids, &cont)?;
            // This level's own continuation: generated vs scored log-probabilities.
            let own = model.score_ids(&ids, &g.token_ids)?;
            let gen_vs_score: Vec<f32> =
                g.logprobs.iter().flatten().zip(&own.tokens).map(|(a, b)| (a.logprob - b.logprob).abs()).collect();
            let gen_mean = gen_vs_score.iter().sum::<f32>() / gen_vs_score.len().max(1) as f32;
            let gen_max = gen_vs_score.iter().cloned().fold(0.0, f32::max);
            let vs_f32: Vec<f32> =
                scored.tokens.iter().zip(&base.tokens).map(|(a, b)| (a.logprob - b.logprob).abs()).collect();
            let mean = vs_f32.iter().sum::<f32>() / vs_f32.len().max(1) as f32;
            let max = vs_f32.iter().cloned().fold(0.0, f32::max);
            println!(
                "  level {level}: greedy same as level 0: {same}; |generated - scored| over {} tokens mean {gen_mean:.4} max {gen_max:.1e}; scored vs level 0 mean {mean:.4} max {max:.4}",
                gen_vs_score.len()
            );
        }
    }
    std::fs::remove_dir_all(&scratch)?;
    Ok(())
}
