//! Chat templating, tokenization and loss masks (tiny byte-level model).

mod common;

use serde_json::json;
use techne_inference::gguf::GgufFile;
use techne_training::TrainError;
use techne_training::data::{self, SftExample, TemplateMode, TextCodec};

fn codec() -> TextCodec {
    let g = GgufFile::from_bytes(common::tiny_gguf(1)).expect("gguf");
    TextCodec::from_gguf(&g).expect("codec")
}

fn split(c: &TextCodec, ex: &SftExample) -> (String, String) {
    let pick = |want: bool| -> String {
        let ids: Vec<u32> = ex.ids.iter().zip(&ex.targets).filter(|(_, t)| **t == want).map(|(i, _)| *i).collect();
        c.tokenizer().decode(&ids, false).expect("decode")
    };
    (pick(false), pick(true))
}

#[test]
fn loss_is_on_assistant_tokens_only() {
    let c = codec();
    let ex = c
        .sft_example(
            &json!({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}]}),
            TemplateMode::Chat,
        )
        .expect("example");
    let (prompt, answer) = split(&c, &ex);
    assert_eq!(prompt, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    assert_eq!(answer, "hello there<|im_end|>\n");
    assert!(!ex.targets[0]);
    // The trained tokens are one contiguous block at the end.
    let first = ex.targets.iter().position(|&t| t).expect("targets");
    assert!(ex.targets[first..].iter().all(|&t| t));
}

#[test]
fn every_assistant_turn_is_trained_in_multi_turn_chats() {
    let c = codec();
    let v = json!({"messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "1"},
        {"role": "user", "content": "two"},
        {"role": "assistant", "content": "2"}
    ]});
    let ex = c.sft_example(&v, TemplateMode::Chat).expect("example");
    let (prompt, answer) = split(&c, &ex);
    assert_eq!(answer, "1<|im_end|>\n2<|im_end|>\n");
    assert_eq!(
        prompt,
        "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\none<|im_end|>\n<|im_start|>assistant\n<|im_start|>user\ntwo<|im_end|>\n<|im_start|>assistant\n"
    );
    // The whole sequence is the template's rendering of the conversation.
    let all = c.tokenizer().decode(&ex.ids, false).expect("decode");
    assert!(all.ends_with("<|im_start|>assistant\n2<|im_end|>\n"), "{all}");
}

#[test]
fn prompt_completion_strings_equal_the_messages_form() {
    let c = codec();
    let a = c.sft_example(&json!({"prompt": "ping", "completion": "pong"}), TemplateMode::Chat).expect("pc");
    let b = c
        .sft_example(
            &json!({"messages": [{"role": "user", "content": "ping"}, {"role": "assistant", "content": "pong"}]}),
            TemplateMode::Chat,
        )
        .expect("messages");
    assert_eq!(a, b);
    let conv = c
        .sft_example(
            &json!({"prompt": [{"role": "user", "content": "ping"}], "completion": [{"role": "assistant", "content": "pong"}]}),
            TemplateMode::Chat,
        )
        .expect("conversational");
    assert_eq!(a, conv);
}

#[test]
fn conversational_prompt_assistant_turns_are_not_trained() {
    let c = codec();
    let v = json!({
        "prompt": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}],
        "completion": [{"role": "assistant", "content": "d"}]
    });
    let ex = c.sft_example(&v, TemplateMode::Chat).expect("example");
    assert_eq!(split(&c, &ex).1, "d<|im_end|>\n");
}

#[test]
fn raw_mode_trains_the_completion_and_eos() {
    let c = codec();
    let ex = c.sft_example(&json!({"prompt": "Q: 1+1\nA:", "completion": " 2"}), TemplateMode::Raw).expect("raw");
    let (prompt, answer) = split(&c, &ex);
    assert_eq!(prompt, "Q: 1+1\nA:");
    assert_eq!(answer, " 2<|im_end|>");
    let t = c.sft_example(&json!({"text": "abc"}), TemplateMode::Chat).expect("text");
    assert_eq!(t.targets, vec![false, true, true]);
}

#[test]
fn bad_records_name_the_line_and_the_fix() {
    let c = codec();
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}, {\"role\": \"assistant\", \"content\": \"y\"}]}\nnot json\n",
            2,
            "not valid JSON",
        ),
        ("{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}\n", 1, "no assistant message"),
        ("{\"question\": \"x\"}\n", 1, "expected `messages`"),
        ("\n\n{\"messages\": [{\"role\": \"user\"}]}\n", 3, "no string `content`"),
        (
            "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\"}]}, {\"role\": \"assistant\", \"content\": \"y\"}]}\n",
            1,
            "non-text part",
        ),
        ("", 0, "no examples"),
    ];
    for (text, line, needle) in cases {
        let p = dir.path().join("d.jsonl");
        std::fs::write(&p, text).expect("write");
        match data::load_sft(&p, &c, TemplateMode::Chat, 128) {
            Err(TrainError::Data { line: l, message, .. }) => {
                assert_eq!(l, line, "{message}");
                assert!(message.contains(needle), "{message}");
            }
            other => panic!("expected a data error for {text:?}, got {other:?}"),
        }
    }
    let p = dir.path().join("missing.jsonl");
    assert!(matches!(data::load_sft(&p, &c, TemplateMode::Chat, 128), Err(TrainError::Io { .. })));
}

#[test]
fn truncation_and_skipping() {
    let c = codec();
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("d.jsonl");
    std::fs::write(&p, common::sft_jsonl()).expect("write");
    let full = data::load_sft(&p, &c, TemplateMode::Chat, 4096).expect("load");
    assert_eq!(full.examples.len(), 8);
    assert_eq!((full.skipped, full.truncated), (0, 0));
    assert_eq!(full.sha256, data::sha256_hex(&std::fs::read(&p).expect("read")));
    // 40 tokens: the prompts alone take 36 or more, so some answers vanish entirely.
    let cut = data::load_sft(&p, &c, TemplateMode::Chat, 40).expect("load");
    assert!(cut.truncated > 0 && cut.skipped > 0, "{} truncated, {} skipped", cut.truncated, cut.skipped);
    assert!(cut.examples.iter().all(|e| e.ids.len() <= 40 && e.n_targets() > 0));
    assert!(matches!(data::load_sft(&p, &c, TemplateMode::Chat, 8), Err(TrainError::Data { line: 0, .. })));
}

#[test]
fn preference_formats() {
    let c = codec();
    let a = c
        .preference_example(&json!({"prompt": "hi", "chosen": "hello", "rejected": "go away"}), TemplateMode::Chat)
        .expect("strings");
    let dec = |ids: &[u32]| c.tokenizer().decode(ids, false).expect("decode");
    assert_eq!(dec(&a.prompt), "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    assert_eq!(dec(&a.chosen), "hello<|im_end|>\n");
    assert_eq!(dec(&a.rejected), "go away<|im_end|>\n");
    let conv = c
        .preference_example(
            &json!({
                "prompt": [{"role": "user", "content": "hi"}],
                "chosen": [{"role": "assistant", "content": "hello"}],
                "rejected": [{"role": "assistant", "content": "go away"}]
            }),
            TemplateMode::Chat,
        )
        .expect("conversational");
    assert_eq!(a, conv);
    let implicit = c
        .preference_example(
            &json!({
                "chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
                "rejected": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "go away"}]
            }),
            TemplateMode::Chat,
        )
        .expect("implicit prompt");
    assert_eq!(a, implicit);
    let raw = c
        .preference_example(&json!({"prompt": "Q:", "chosen": " yes", "rejected": " no"}), TemplateMode::Raw)
        .expect("raw");
    assert_eq!(dec(&raw.chosen), " yes<|im_end|>");
    assert!(c.preference_example(&json!({"prompt": "x", "chosen": "y"}), TemplateMode::Chat).is_err());
}

#[test]
fn long_preference_prompts_lose_their_start() {
    let c = codec();
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("p.jsonl");
    let long = "x".repeat(100);
    std::fs::write(&p, json!({"prompt": long, "chosen": "a", "rejected": "bb"}).to_string() + "\n").expect("write");
    let d = data::load_preferences(&p, &c, TemplateMode::Chat, 50).expect("load");
    let ex = &d.examples[0];
    assert_eq!(d.truncated, 1);
    assert_eq!(ex.prompt.len() + ex.rejected.len(), 50);
    let tail = c.tokenizer().decode(&ex.prompt, false).expect("decode");
    assert!(tail.ends_with("<|im_end|>\n<|im_start|>assistant\n"), "{tail}");
}
