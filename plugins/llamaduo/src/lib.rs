//! `llamaduo`: the decisions of LlamaDuo (*LlamaDuo: LLMOps Pipeline for
//! Seamless Migration from Service LLMs to Small-Scale Local LLMs*, Park et
//! al., arXiv 2408.13467) as a techne migration-strategy plugin (world
//! `migration-strategy-plugin`). The host runs the loop (fine-tune the local
//! model, batch-infer the test prompts, evaluate, synthesise more data
//! while the local model falls short); this plugin makes its three
//! decisions with the service model:
//!
//! **`judge`**: the service model compares the local model's response with
//! the reference response, in the style of the paper's judge prompt
//! (instruction, reference, response; a *similarity* and a *precision*
//! score from 1 to 100, with reasons, as JSON). The reply is parsed
//! robustly ([`judge::parse_judgement`]: JSON anywhere in the reply, keys
//! matched loosely, numeric strings, else numbers after the words in the
//! text), each score is clamped to 1..=100, and the scores are averaged over
//! `judge-repeats` judgements (the paper's M; sampled as one request with n
//! choices at `judge-temperature`). Judgements that cannot be read are
//! logged and skipped; when none can be read the call fails with a
//! `PluginError` quoting the reply.
//!
//! **`synthesize`**: Self-Instruct-style generation with the service model.
//! Each call shows `examples-per-call` seed examples (walking through the
//! seeds call by call, from an offset given by the work item's seed and the
//! round) and asks for `pairs-per-call` new (instruction, response) pairs as
//! JSON ([`synth`]); calls repeat until `count` pairs are collected or
//! `max-calls` are spent. Exact duplicates (of each other or of a seed) are
//! dropped; unparsable replies are logged and skipped.
//!
//! **`curate`**: keeps the candidates that are neither contaminated by the
//! test set nor near-duplicates ([`curate`]). Decontamination compares each
//! candidate's prompt with the test prompts by cosine similarity of
//! embeddings from `embedding-model` (contaminated at
//! `decontamination-threshold`); with no embedding model configured it falls
//! back to word n-gram Jaccard similarity (at
//! `ngram-decontamination-threshold`) and logs a warning. Deduplication
//! compares candidates (their prompt, or prompt and response:
//! `dedupe-field`) with `existing` and with the candidates kept before them,
//! by MinHash or exact n-gram Jaccard similarity (`dedupe-method`,
//! duplicates at `dedupe-threshold`); of a group of duplicates the first is
//! kept.
//!
//! Parameters (`[plugins.NAME.params]`):
//!
//! | name | kind | default | meaning |
//! | --- | --- | --- | --- |
//! | `judge-repeats` | integer | 10 | M, judgements averaged per response (official code's `eval_repeat`) |
//! | `judge-temperature` | float | 1.0 | judge sampling temperature |
//! | `judge-prompt` | text | see [`judge::DEFAULT_JUDGE_PROMPT`] | `{instruction}`, `{reference}`, `{response}` |
//! | `max-tokens` | integer | 2048 | token budget of each service reply (official code) |
//! | `temperature` | float | 1.0 | synthesis sampling temperature |
//! | `examples-per-call` | integer | 1 | seed examples per synthesis call (official code: one) |
//! | `pairs-per-call` | integer | 5 | new pairs asked for per call |
//! | `max-calls` | integer | 16 | most service calls per `synthesize` |
//! | `topic` | text | empty | the task's topic, named in the synthesis prompt |
//! | `synthesis-prompt` | text | see [`synth::DEFAULT_SYNTHESIS_PROMPT`] | `{count}`, `{examples}`, `{topic}` |
//! | `dedupe-method` | text | `minhash` | `minhash` or `ngram` |
//! | `dedupe-threshold` | float | 0.8 | Jaccard similarity of duplicates |
//! | `dedupe-field` | text | `prompt` | `prompt` or `both` |
//! | `ngram-size` | integer | 3 | words per shingle |
//! | `minhash-permutations` | integer | 128 | MinHash hash functions |
//! | `embedding-model` | text | empty | decontamination embeddings; empty = n-gram fallback |
//! | `decontamination-threshold` | float | 0.9 | cosine similarity of contamination |
//! | `ngram-decontamination-threshold` | float | 0.5 | n-gram Jaccard of contamination (fallback) |
//!
//! `judge-repeats`, `max-tokens` and `examples-per-call` follow the paper's
//! official implementation; the paper does not fix the curation thresholds,
//! so those are this plugin's defaults.

#![warn(missing_docs)]

use techne_plugin_sdk::prelude::*;

pub mod config;
pub mod curate;
pub mod judge;
pub mod similarity;
pub mod synth;

use config::{CurateConfig, JudgeConfig, SynthConfig};

/// Texts embedded per host request.
const EMBED_BATCH: usize = 64;

/// The LlamaDuo migration-strategy plugin.
pub struct LlamaDuo;

impl Plugin for LlamaDuo {
    fn metadata() -> Metadata {
        let mut metadata = Metadata::new(
            "llamaduo",
            env!("CARGO_PKG_VERSION"),
            "LlamaDuo (LLMOps Pipeline for Seamless Migration from Service LLMs to Small-Scale Local LLMs, arXiv \
             2408.13467): the service model judges local responses against references for similarity and \
             precision (1-100, averaged over M repeats), synthesises new (prompt, response) pairs from seed \
             examples, and curation drops test-set contamination (embedding cosine, or n-gram overlap) and \
             near-duplicates (MinHash or n-gram Jaccard).",
        );
        for parameter in config::parameters() {
            metadata = metadata.parameter(parameter);
        }
        metadata
    }
}

impl MigrationStrategy for LlamaDuo {
    fn judge(
        reference: &Example,
        response: &str,
        service_model: &str,
        params: &Params,
    ) -> Result<Judgement, PluginError> {
        let config = JudgeConfig::from_params(params)?;
        let model = llm::resolve_model(service_model)?;
        let prompt = judge::judge_prompt(&config.prompt, &reference.prompt, &reference.response, response);
        let sampling =
            Sampling::default().max_tokens(config.max_tokens).temperature(config.temperature).n(config.repeats);
        let completion = llm::chat(&model, &[Message::user(prompt)], &sampling)?;
        let mut judgements = Vec::new();
        for (i, text) in completion.texts().enumerate() {
            match judge::parse_judgement(text) {
                Some(j) => judgements.push(j),
                None => {
                    log::warn(format!("judgement {} of {} is unreadable, skipped", i + 1, completion.choices.len()))
                }
            }
        }
        let Some((similarity, precision)) = judge::average(&judgements) else {
            return Err(PluginError::failed(format!(
                "none of the {} judgements of `{model}` holds readable similarity and precision scores; first \
                 reply: {:?}",
                completion.choices.len(),
                judge::snippet(completion.text(), 300)
            )));
        };
        Ok(Judgement::new(similarity, precision))
    }

    fn synthesize(
        seeds: &[Example],
        count: u32,
        service_model: &str,
        round: u32,
        params: &Params,
    ) -> Result<Vec<Example>, PluginError> {
        let config = SynthConfig::from_params(params)?;
        if count == 0 {
            return Ok(Vec::new());
        }
        if seeds.is_empty() {
            return Err(PluginError::invalid_input("synthesize needs at least one seed example"));
        }
        let model = llm::resolve_model(service_model)?;
        let sampling = Sampling::default().max_tokens(config.max_tokens).temperature(config.temperature);
        let offset = randomness::item_seed().wrapping_add(u64::from(round).wrapping_mul(0x9E37_79B9));
        let mut seen: Vec<String> = seeds.iter().map(|s| synth::exact_key(&s.prompt, &s.response)).collect();
        let mut out: Vec<Example> = Vec::new();
        let mut calls = 0;
        while out.len() < count as usize && calls < config.max_calls {
            let picked: Vec<(&str, &str)> = synth::pick_seeds(seeds.len(), config.examples_per_call, offset, calls)
                .into_iter()
                .map(|i| (seeds[i].prompt.as_str(), seeds[i].response.as_str()))
                .collect();
            let want = config.pairs_per_call.min(count as usize - out.len());
            let prompt = synth::synthesis_prompt(&config.prompt, &picked, want, &config.topic);
            calls += 1;
            let reply = llm::chat(&model, &[Message::user(prompt)], &sampling)?;
            let pairs = synth::parse_pairs(reply.text());
            if pairs.is_empty() {
                log::warn(format!("synthesis call {calls}: no readable pair in the reply, skipped"));
            }
            for (prompt, response) in pairs {
                let key = synth::exact_key(&prompt, &response);
                if out.len() < count as usize && !seen.contains(&key) {
                    seen.push(key);
                    out.push(Example::new(prompt, response));
                }
            }
        }
        if out.is_empty() {
            return Err(PluginError::failed(format!(
                "`{model}` wrote no new readable (instruction, response) pair in {calls} call(s)"
            )));
        }
        if out.len() < count as usize {
            log::warn(format!("asked for {count} examples, synthesised {} in {calls} call(s)", out.len()));
        }
        Ok(out)
    }

    fn curate(
        candidates: &[Example],
        existing: &[Example],
        test_prompts: &[String],
        params: &Params,
    ) -> Result<Vec<u32>, PluginError> {
        let config = CurateConfig::from_params(params)?;
        let prompts: Vec<String> = candidates.iter().map(|c| c.prompt.clone()).collect();

        let contaminated = if test_prompts.is_empty() {
            vec![false; candidates.len()]
        } else if config.embedding_model.is_empty() {
            log::warn(
                "no `embedding-model` configured: decontaminating by n-gram overlap with the test prompts instead \
                 of embedding similarity",
            );
            curate::contaminated_by_ngrams(
                &prompts,
                test_prompts,
                config.dedupe.ngram_size,
                config.ngram_decontamination_threshold,
            )
        } else {
            let candidate_vectors = embed_all(&config.embedding_model, &prompts)?;
            let test_vectors = embed_all(&config.embedding_model, test_prompts)?;
            curate::contaminated_by_embeddings(&candidate_vectors, &test_vectors, config.decontamination_threshold)
        };

        let texts: Vec<String> = candidates.iter().map(|c| config.field.text(&c.prompt, &c.response)).collect();
        let existing: Vec<String> = existing.iter().map(|e| config.field.text(&e.prompt, &e.response)).collect();
        // Contaminated candidates are out already; they must not shadow clean duplicates.
        let clean: Vec<usize> = (0..candidates.len()).filter(|&i| !contaminated[i]).collect();
        let clean_texts: Vec<String> = clean.iter().map(|&i| texts[i].clone()).collect();
        let mut unique = vec![false; candidates.len()];
        for (keep, &i) in curate::dedupe(&clean_texts, &existing, &config.dedupe).into_iter().zip(&clean) {
            unique[i] = keep;
        }
        let kept = curate::kept_indices(&contaminated, &unique);
        log::info(format!(
            "curate: kept {} of {} candidates ({} contaminated, {} duplicates)",
            kept.len(),
            candidates.len(),
            contaminated.iter().filter(|&&c| c).count(),
            clean.len() - kept.len()
        ));
        Ok(kept)
    }
}

/// Embeds `texts` in batches of [`EMBED_BATCH`], checking the host returned
/// one vector per text.
fn embed_all(model: &str, texts: &[String]) -> Result<Vec<Vec<f32>>, PluginError> {
    let mut vectors = Vec::with_capacity(texts.len());
    for batch in texts.chunks(EMBED_BATCH) {
        let got = embeddings::embed(model, batch)?;
        if got.len() != batch.len() {
            return Err(PluginError::failed(format!(
                "embedding model `{model}` returned {} vectors for {} texts",
                got.len(),
                batch.len()
            )));
        }
        vectors.extend(got);
    }
    Ok(vectors)
}

export_migration_strategy!(LlamaDuo);
