//! Times scoring several continuations of one prompt: `score_many_ids`
//! (the prompt prefilled once; with techne's attention the continuations
//! run as rows of one pass) against `score_ids` for each continuation in
//! turn, on the default model. Prints medians in milliseconds.
//!
//! `cargo run --release -p techne-inference --example score_many -- [continuations] [tokens] [repetitions]`

use std::time::Instant;

use techne_inference::{LocalModel, Registry, Runtime};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let count: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(4);
    let tokens: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(8);
    let reps: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(9).max(1);
    let rt = Runtime::load(None)?;
    let entry = Registry::open_default()?.ensure_default()?;
    let model = LocalModel::load(&rt, &entry, 0)?;
    let prompt = model.prompt_ids("Which of these is the capital of France? Answer with one city.")?;
    let words = ["Paris", "Berlin", "Madrid", "Rome", "Lisbon", "Vienna", "Prague", "Dublin"];
    let continuations: Vec<Vec<u32>> = (0..count)
        .map(|i| {
            let text = format!(" {} is the answer, and here is why it is so:", words[i % words.len()]);
            let ids = model.tokenizer().encode(&text, false)?;
            Ok(ids.into_iter().cycle().take(tokens).collect())
        })
        .collect::<Result<_, Box<dyn std::error::Error>>>()?;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (mut together, mut apart) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let t = Instant::now();
        let many = model.score_many_ids(&prompt, &continuations)?;
        together.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        for (cont, m) in continuations.iter().zip(&many) {
            let one = model.score_ids(&prompt, cont)?;
            assert_eq!(one.total_logprob.to_bits(), m.total_logprob.to_bits(), "scores must not depend on the path");
        }
        apart.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (a, b) = (median(together), median(apart));
    println!(
        "{count} continuations of {tokens} tokens after a {}-token prompt (one pass for all: {}):",
        prompt.len(),
        model.scores_continuations_together()
    );
    println!("  score_many_ids  {a:8.1} ms");
    println!("  score_ids × {count}  {b:8.1} ms   ({:.2}× the time of score_many_ids)", b / a);
    Ok(())
}
