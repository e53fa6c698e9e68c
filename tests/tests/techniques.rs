//! Each technique plugin runs as a component in the real sandbox on the
//! embedded local model (SmolLM2-135M-Instruct, through ONNX Runtime): the
//! SELF-TAUGHT solver and the QPO policy in a pipeline, the Self-Evolution
//! strategy's write-pair and select, the LlamaDuo strategy's curate with the
//! local embeddings. LlamaDuo's judge and synthesize need a model that
//! writes JSON, which a 135M model does not: they run against the scripted
//! test double, which does.
//!
//! The local-model parts need the packages of `models/requirements*.txt`;
//! without them they say so and pass, unless `TECHNE_REQUIRE_MODELS=1`.

use std::sync::Arc;

use techne::backends::ModelSet;
use techne::backends::local::{LocalBackend, LocalEmbeddingBackend, LocalModelSource};
use techne::backends::scripted::{ScriptRule, ScriptedBackend, ScriptedConfig};
use techne::sandbox::{Example, PluginSpec, SandboxEngine, ScoredPair, WorkItem};
use techne_integration_tests::{artifacts, models_available, test_engine};

fn engine() -> SandboxEngine {
    test_engine(env!("CARGO_TARGET_TMPDIR"))
}

fn local_models() -> Option<ModelSet> {
    if !models_available() {
        return None;
    }
    let mut models = ModelSet::new();
    models.insert("smol", Arc::new(LocalBackend::open(&LocalModelSource::Default, None, 0).unwrap()));
    if techne_inference::locate::minilm_onnx().is_some() {
        models.insert("minilm", Arc::new(LocalEmbeddingBackend::open_default(0).unwrap()));
    }
    Some(models)
}

fn spec(name: &str, path: &str, params: &[(&str, &str)]) -> PluginSpec {
    let mut spec = PluginSpec::new(name, path);
    spec.allowed_models = vec!["smol".into(), "minilm".into()];
    spec.default_model = Some("smol".into());
    spec.params = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    spec
}

fn item(id: &str) -> WorkItem {
    WorkItem { id: id.into(), seed: techne::sandbox::item_seed(5, id) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_taught_and_qpo_run_on_the_local_model() {
    let Some(models) = local_models() else { return };
    let engine = engine();
    let solver = engine
        .load(
            &spec(
                "self-taught",
                artifacts::SELF_TAUGHT,
                &[("pseudo-problems", "1"), ("max-attempts", "1"), ("max-tokens", "64")],
            ),
            &models,
        )
        .await
        .unwrap();
    let solution =
        solver.solve(&item("1"), "Tom has 3 apples and buys 4 more. How many apples does he have?").await.unwrap();
    let labels: Vec<&str> = solution.trace.iter().map(|s| s.label.as_str()).collect();
    assert!(labels.contains(&"knowledge") && labels.contains(&"answer"), "{labels:?}");
    assert!(!solution.answer.trim().is_empty());

    let policy = engine.load(&spec("qpo", artifacts::QPO_POLICY, &[("max-tokens", "24")]), &models).await.unwrap();
    let prompts = policy.propose(&item("2"), "What is 6 times 5?").await.unwrap();
    assert!(!prompts.is_empty());
    assert!(prompts[0].contains("What is 6 times 5?"), "the prompt embeds the query: {prompts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_evolution_writes_scored_pairs_and_selects_by_ifd() {
    let Some(models) = local_models() else { return };
    let engine = engine();
    let plugin = engine
        .load(&spec("self-evolution", artifacts::SELF_EVOLUTION, &[("max-tokens", "48"), ("top-k", "1")]), &models)
        .await
        .unwrap();
    let fragments =
        ["Paris is the capital and largest city of France.", "Water boils at 100 degrees Celsius at sea level."];
    let mut pairs: Vec<ScoredPair> = Vec::new();
    for (i, fragment) in fragments.iter().enumerate() {
        let mut instance = plugin.instantiate(&item(&format!("f{i}"))).await.unwrap();
        let pair = instance.write_pair(fragment, 0, "smol").await.unwrap();
        assert_eq!(pair.pair.fragment, *fragment);
        assert!(pair.ifd.is_finite() && pair.ifd > 0.0, "{pair:?}");
        pairs.push(pair);
    }
    let mut instance = plugin.instantiate(&item("select")).await.unwrap();
    let chosen = instance.select(&pairs, 0).await.unwrap();
    assert_eq!(chosen.len(), 1, "top-k = 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llamaduo_curates_with_local_embeddings() {
    let Some(models) = local_models() else { return };
    if models.get("minilm").is_none() {
        return;
    }
    let engine = engine();
    let plugin = engine
        .load(
            &spec(
                "llamaduo",
                artifacts::LLAMADUO,
                &[("embedding-model", "minilm"), ("decontamination-threshold", "0.9")],
            ),
            &models,
        )
        .await
        .unwrap();
    let example = |p: &str, r: &str| Example { prompt: p.into(), response: r.into() };
    let candidates = vec![
        example("Summarise the water cycle in one sentence.", "Water evaporates, condenses and falls."),
        example("Summarise the water cycle in one sentence.", "A duplicate of the first."),
        example("What is the capital of France?", "Paris."),
        example("Explain photosynthesis briefly.", "Plants turn light into sugar."),
    ];
    let test_prompts = vec!["What is the capital of France?".to_string()];
    let mut instance = plugin.instantiate(&item("curate")).await.unwrap();
    let kept = instance.curate(&candidates, &[], &test_prompts).await.unwrap();
    assert!(kept.contains(&0) && kept.contains(&3), "{kept:?}");
    assert!(!kept.contains(&1), "the duplicate is dropped: {kept:?}");
    assert!(!kept.contains(&2), "the test prompt is decontaminated: {kept:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llamaduo_judges_and_synthesizes_with_a_json_writing_model() {
    let engine = engine();
    let judge_reply = r#"{"similarity": 80, "precision": 60}"#;
    let synth_reply = r#"[{"prompt": "Name a primary colour.", "response": "Red."}, {"prompt": "Name a planet.", "response": "Mars."}]"#;
    let backend = ScriptedBackend::new(ScriptedConfig {
        rules: vec![
            ScriptRule { contains: "similarity".into(), reply: judge_reply.into() },
            ScriptRule { contains: "precision".into(), reply: judge_reply.into() },
        ],
        fallback: techne::backends::scripted::Fallback::Fixed(synth_reply.into()),
        ..ScriptedConfig::default()
    });
    let mut models = ModelSet::new();
    models.insert("service", Arc::new(backend));
    let mut spec = PluginSpec::new("llamaduo", artifacts::LLAMADUO);
    spec.allowed_models = vec!["service".into()];
    spec.default_model = Some("service".into());
    spec.params.insert("judge-repeats".into(), "3".into());
    let plugin = engine.load(&spec, &models).await.unwrap();
    let reference = Example { prompt: "Name a colour.".into(), response: "Blue.".into() };
    let mut instance = plugin.instantiate(&item("judge")).await.unwrap();
    let judgement = instance.judge(&reference, "Green.", "service").await.unwrap();
    assert_eq!((judgement.similarity, judgement.precision), (80.0, 60.0));
    let mut instance = plugin.instantiate(&item("synth")).await.unwrap();
    let seeds = vec![reference];
    let synthetic = instance.synthesize(&seeds, 2, "service", 0).await.unwrap();
    assert!(synthetic.iter().any(|e| e.prompt == "Name a planet." && e.response == "Mars."), "{synthetic:?}");
}
