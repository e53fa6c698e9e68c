//! Tokenizer conversion and chat template tests.

use techne_inference::gguf::{GgufFile, GgufWriter, MetaType, MetaValue};
use techne_inference::locate;
use techne_inference::tokenizer::{ChatMessage, ChatTemplate, Tokenizer, tokenizer_json_from_gguf};

mod support;

/// A tiny byte-level BPE vocabulary: all 256 byte symbols, a few merges and
/// two control tokens.
fn tiny_gguf() -> GgufFile {
    let mut tokens = support::byte_level_vocab();
    for t in ["he", "ll", "hell", "hello", "Ġw", "Ġwor", "Ġworld", "or", "ld"] {
        tokens.push(t.to_string());
    }
    let merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld"];
    let types: Vec<MetaValue> = (0..tokens.len()).map(|i| MetaValue::I32(if i < 3 { 3 } else { 1 })).collect();
    let mut w = GgufWriter::new();
    w.kv("general.architecture", MetaValue::String("llama".into()))
        .kv("tokenizer.ggml.model", MetaValue::String("gpt2".into()))
        .kv("tokenizer.ggml.pre", MetaValue::String("smollm".into()))
        .kv("tokenizer.ggml.tokens", support::string_array(&tokens))
        .kv("tokenizer.ggml.token_type", MetaValue::Array(MetaType::I32, types))
        .kv("tokenizer.ggml.merges", support::string_array(&merges))
        .kv("tokenizer.ggml.bos_token_id", MetaValue::U32(1))
        .kv("tokenizer.ggml.eos_token_id", MetaValue::U32(2))
        .kv("tokenizer.ggml.add_bos_token", MetaValue::Bool(false))
        .kv("tokenizer.chat_template", MetaValue::String(CHATML.into()));
    GgufFile::from_bytes(w.to_bytes()).expect("tiny gguf")
}

const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

#[test]
fn converts_and_round_trips_a_tiny_vocabulary() {
    let g = tiny_gguf();
    let conv = tokenizer_json_from_gguf(&g).expect("convert");
    assert_eq!(conv.special.eos.as_deref(), Some("<|im_end|>"));
    assert_eq!(conv.special.stop_ids, vec![2]);
    let tok = Tokenizer::from_json(&conv.json).expect("load");
    let ids = tok.encode("hello world", false).expect("encode");
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(tok.id_to_token(ids[0]).as_deref(), Some("hello"));
    assert_eq!(tok.id_to_token(ids[1]).as_deref(), Some("Ġworld"));
    assert_eq!(tok.decode(&ids, false).expect("decode"), "hello world");
    let ids = tok.encode("<|im_start|>hello<|im_end|>", false).expect("encode");
    assert_eq!(ids.first(), Some(&1));
    assert_eq!(ids.last(), Some(&2));
    assert_eq!(tok.decode(&ids, true).expect("decode"), "hello");
    // Arbitrary bytes round-trip.
    for text in ["héllo wörld ✓ 123", "tabs\tand\nnewlines  ", "🦀🦀"] {
        let ids = tok.encode(text, false).expect("encode");
        assert_eq!(tok.decode(&ids, false).expect("decode"), text);
    }
}

#[test]
fn unsupported_tokenizers_are_clear_errors() {
    let mut w = GgufWriter::new();
    w.kv("tokenizer.ggml.model", MetaValue::String("bert".into()));
    let g = GgufFile::from_bytes(w.to_bytes()).expect("gguf");
    let err = tokenizer_json_from_gguf(&g).expect_err("bert is unsupported");
    assert!(err.to_string().contains("bert"), "{err}");
    let mut w = GgufWriter::new();
    w.kv("tokenizer.ggml.model", MetaValue::String("gpt2".into()))
        .kv("tokenizer.ggml.pre", MetaValue::String("mystery".into()));
    let g = GgufFile::from_bytes(w.to_bytes()).expect("gguf");
    let err = tokenizer_json_from_gguf(&g).expect_err("unknown pre");
    assert!(err.to_string().contains("mystery"), "{err}");
}

#[test]
fn chatml_template_renders_exactly() {
    let t = ChatTemplate::new(CHATML, Some("<|im_start|>"), Some("<|im_end|>")).expect("template");
    let msgs = [ChatMessage::system("You are terse."), ChatMessage::user("What is the capital of France?")];
    let s = t.render(&msgs, true).expect("render");
    assert_eq!(
        s,
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    );
    let s = t.render(&[ChatMessage::user("Hi")], false).expect("render");
    assert_eq!(
        s,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    );
    let bad = ChatTemplate::new("{{ raise_exception('no tools') }}", None, None).expect("compiles");
    assert!(bad.render(&msgs, true).expect_err("raises").to_string().contains("no tools"));
    assert!(ChatTemplate::new("{% for %}", None, None).is_err());
    // Python string methods used by many templates.
    let py = ChatTemplate::new("{{ messages[0]['content'].strip().upper() }}", None, None).expect("compiles");
    assert_eq!(py.render(&[ChatMessage::user("  hi ")], false).expect("render"), "HI");
}

#[test]
fn smollm2_tokenizer_matches_llama_cpp() {
    let Some(path) = locate::smollm2_gguf() else {
        eprintln!("SKIPPED: SmolLM2 GGUF not installed ({})", locate::SMOLLM2_INSTALL);
        return;
    };
    let g = GgufFile::open(&path).expect("open");
    let conv = tokenizer_json_from_gguf(&g).expect("convert");
    let tok = Tokenizer::from_json(&conv.json).expect("load");
    assert_eq!(tok.vocab_size(), 49152);
    let t = ChatTemplate::new(
        conv.chat_template.as_deref().expect("template"),
        conv.special.bos.as_deref(),
        conv.special.eos.as_deref(),
    )
    .expect("compile");
    let prompt = t
        .render(
            &[ChatMessage::system("You are a helpful assistant."), ChatMessage::user("What is the capital of France?")],
            true,
        )
        .expect("render");
    let ids = tok.encode(&prompt, true).expect("encode");
    // Token ids produced by llama.cpp (llama-cpp-python 0.3.x) for the same string.
    assert_eq!(
        ids,
        vec![
            1, 9690, 198, 2683, 359, 253, 5356, 11173, 30, 2, 198, 1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47,
            2, 198, 1, 520, 9531, 198
        ]
    );
    assert_eq!(tok.decode(&ids, false).expect("decode"), prompt);
    let digits = tok.encode("In 2024, 12345 apples.", false).expect("encode");
    assert_eq!(tok.decode(&digits, false).expect("decode"), "In 2024, 12345 apples.");
}
