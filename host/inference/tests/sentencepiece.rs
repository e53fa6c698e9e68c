//! SentencePiece (`tokenizer.ggml.model = "llama"`) vocabularies: the
//! tokenizer.json converted from GGUF metadata must give the ids that
//! SentencePiece itself gives. The reference is
//! `fixtures/sentencepiece-vocab.json`, made by
//! `fixtures/make-sentencepiece-vocab.py` with the `sentencepiece` package
//! from a llama-style model (BPE, byte fallback, dummy prefix) trained on
//! text this project ships.

use techne_inference::gguf::{GgufFile, GgufWriter, MetaType, MetaValue};
use techne_inference::tokenizer::{Tokenizer, tokenizer_json_from_gguf};

struct Reference {
    tokens: Vec<String>,
    scores: Vec<f32>,
    token_type: Vec<i32>,
    cases: Vec<(String, Vec<u32>)>,
}

fn reference() -> Reference {
    let text = include_str!("fixtures/sentencepiece-vocab.json");
    let v: serde_json::Value = serde_json::from_str(text).expect("the fixture is JSON");
    let strings = |key: &str| v[key].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
    Reference {
        tokens: strings("tokens"),
        scores: v["scores"].as_array().unwrap().iter().map(|s| s.as_f64().unwrap() as f32).collect(),
        token_type: v["token_type"].as_array().unwrap().iter().map(|t| t.as_i64().unwrap() as i32).collect(),
        cases: v["cases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let ids = c["ids"].as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as u32).collect();
                (c["text"].as_str().unwrap().to_string(), ids)
            })
            .collect(),
    }
}

/// A GGUF that carries `r`'s vocabulary the way llama.cpp's converter writes a LLaMA tokenizer.model.
fn gguf(r: &Reference, extra: &[(&str, MetaValue)]) -> GgufFile {
    let mut w = GgufWriter::new();
    w.kv("general.architecture", MetaValue::String("llama".into()))
        .kv("tokenizer.ggml.model", MetaValue::String("llama".into()))
        .kv(
            "tokenizer.ggml.tokens",
            MetaValue::Array(MetaType::String, r.tokens.iter().map(|t| MetaValue::String(t.clone())).collect()),
        )
        .kv(
            "tokenizer.ggml.scores",
            MetaValue::Array(MetaType::F32, r.scores.iter().map(|s| MetaValue::F32(*s)).collect()),
        )
        .kv(
            "tokenizer.ggml.token_type",
            MetaValue::Array(MetaType::I32, r.token_type.iter().map(|t| MetaValue::I32(*t)).collect()),
        )
        .kv("tokenizer.ggml.unknown_token_id", MetaValue::U32(0))
        .kv("tokenizer.ggml.bos_token_id", MetaValue::U32(1))
        .kv("tokenizer.ggml.eos_token_id", MetaValue::U32(2));
    for (k, v) in extra {
        w.kv(k, v.clone());
    }
    GgufFile::from_bytes(w.to_bytes()).expect("the written GGUF reads back")
}

#[test]
fn ids_match_sentencepiece_on_every_reference_text() {
    let r = reference();
    let converted = tokenizer_json_from_gguf(&gguf(&r, &[])).unwrap();
    assert_eq!(converted.kind, "llama/default");
    assert_eq!(converted.special.stop_ids, vec![2]);
    let tokenizer = Tokenizer::from_json(&converted.json).unwrap();
    assert_eq!(tokenizer.vocab_size(), r.tokens.len());
    for (text, ids) in &r.cases {
        let ours = tokenizer.encode(text, false).unwrap();
        let show = |ids: &[u32]| ids.iter().map(|&i| r.tokens[i as usize].as_str()).collect::<Vec<_>>().join("|");
        assert_eq!(&ours, ids, "{text:?}\n ours: {}\n spm:  {}", show(&ours), show(ids));
    }
    // Byte fallback covers characters the vocabulary lacks (the fixture's
    // CJK and emoji), and decoding gives the text back.
    assert!(r.cases.iter().any(|(_, ids)| ids.iter().any(|&i| r.token_type[i as usize] == 6)));
    for (text, ids) in &r.cases {
        assert_eq!(&tokenizer.decode(ids, true).unwrap(), text, "decode of {ids:?}");
    }
}

#[test]
fn bos_is_added_by_default_and_the_file_can_turn_it_and_the_space_prefix_off() {
    let r = reference();
    let (text, ids) = &r.cases[0];
    let with_bos = Tokenizer::from_json(&tokenizer_json_from_gguf(&gguf(&r, &[])).unwrap().json).unwrap();
    let encoded = with_bos.encode(text, true).unwrap();
    assert_eq!(encoded[0], 1, "BOS first");
    assert_eq!(&encoded[1..], &ids[..]);

    let off = gguf(
        &r,
        &[
            ("tokenizer.ggml.add_bos_token", MetaValue::Bool(false)),
            ("tokenizer.ggml.add_space_prefix", MetaValue::Bool(false)),
        ],
    );
    let plain = Tokenizer::from_json(&tokenizer_json_from_gguf(&off).unwrap().json).unwrap();
    let encoded = plain.encode("The page", true).unwrap();
    assert_ne!(encoded[0], 1, "no BOS");
    // Without the dummy prefix the first word is not a `▁`-word piece.
    assert!(!r.tokens[encoded[0] as usize].starts_with('\u{2581}'), "{:?}", r.tokens[encoded[0] as usize]);
    assert_eq!(plain.decode(&encoded, true).unwrap(), "The page");
}

#[test]
fn a_sentencepiece_vocabulary_without_scores_says_what_is_missing() {
    let r = reference();
    let mut w = GgufWriter::new();
    w.kv("tokenizer.ggml.model", MetaValue::String("llama".into())).kv(
        "tokenizer.ggml.tokens",
        MetaValue::Array(MetaType::String, r.tokens.iter().map(|t| MetaValue::String(t.clone())).collect()),
    );
    let g = GgufFile::from_bytes(w.to_bytes()).unwrap();
    let err = tokenizer_json_from_gguf(&g).unwrap_err().to_string();
    assert!(err.contains("tokenizer.ggml.scores"), "{err}");
    let mut w = GgufWriter::new();
    w.kv("tokenizer.ggml.model", MetaValue::String("bert".into()));
    let err = tokenizer_json_from_gguf(&GgufFile::from_bytes(w.to_bytes()).unwrap()).unwrap_err().to_string();
    assert!(err.contains("`bert` is not supported") && err.contains("`llama`"), "{err}");
}
