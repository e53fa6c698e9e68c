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
