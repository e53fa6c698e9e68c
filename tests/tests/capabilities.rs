//! The capabilities as a plugin sees them: models are denied unless
//! allow-listed (with a message that says how to fix it), randomness is
//! reproducible from the run seed, state is shared by a plugin's items,
//! scoring and chat reach the backend.

use std::sync::Arc;

use techne::backends::ModelSet;
use techne::backends::scripted::{ScriptRule, ScriptedBackend, ScriptedConfig};
use techne::sandbox::{Plugin, PluginSpec, SandboxEngine, WorkItem, item_seed};
use techne_integration_tests::{artifacts, test_engine};

fn engine() -> SandboxEngine {
    test_engine(env!("CARGO_TARGET_TMPDIR"))
}

fn models() -> (ModelSet, Arc<ScriptedBackend>) {
    let backend = Arc::new(ScriptedBackend::new(ScriptedConfig {
        rules: vec![ScriptRule { contains: "capital of France".into(), reply: "Paris".into() }],
        ..ScriptedConfig::default()
    }));
    let mut models = ModelSet::new();
    models.insert("allowed", backend.clone());
    models.insert("forbidden", Arc::new(ScriptedBackend::echo()));
    (models, backend)
}

async fn chaos(engine: &SandboxEngine, name: &str, allowed: &[&str], default_model: Option<&str>) -> Plugin {
    let mut spec = PluginSpec::new(name, artifacts::CHAOS);
    spec.allowed_models = allowed.iter().map(|m| m.to_string()).collect();
    spec.default_model = default_model.map(str::to_string);
    engine.load(&spec, &models().0).await.unwrap()
}

fn item(id: &str, run_seed: u64) -> WorkItem {
    WorkItem { id: id.into(), seed: item_seed(run_seed, id) }
}

#[tokio::test]
async fn chat_reaches_an_allowed_model() {
    let engine = engine();
    let (models, backend) = models();
    let mut spec = PluginSpec::new("p", artifacts::CHAOS);
    spec.allowed_models = vec!["allowed".into()];
    spec.default_model = Some("allowed".into());
    let plugin = engine.load(&spec, &models).await.unwrap();
    let answer = plugin.solve(&item("1", 0), "chat:What is the capital of France?").await.unwrap().answer;
    assert_eq!(answer, "Paris");
    assert_eq!(backend.requests(), 1);
    let score = plugin.solve(&item("2", 0), "score:The sky is|very blue").await.unwrap().answer;
    let logprob: f64 = score.parse().unwrap();
    assert!((logprob - (-0.4 - 0.4)).abs() < 1e-6, "{logprob}");
}

#[tokio::test]
async fn with_an_empty_allow_list_every_model_is_denied() {
    let engine = engine();
    let (models, backend) = models();
    let mut spec = PluginSpec::new("nothing", artifacts::CHAOS);
    spec.default_model = Some("allowed".into());
    let plugin = engine.load(&spec, &models).await.unwrap();
    let text = plugin.solve(&item("1", 0), "chat:What is the capital of France?").await.unwrap_err().to_string();
    assert!(text.contains("not allowed for plugin 'nothing' (it may use no model)"), "{text}");
    assert_eq!(backend.requests(), 0, "a denied call never reaches the backend");
}

#[tokio::test]
async fn the_denial_message_says_how_to_fix_it() {
    let engine = engine();
    let (models, _) = models();
    let mut spec = PluginSpec::new("narrow", artifacts::CHAOS);
    spec.allowed_models = vec!["allowed".into()];
    // A default model outside the allow-list can only come from a broken
    // configuration; the host still refuses it at call time.
    spec.default_model = Some("forbidden".into());
    let plugin = engine.load(&spec, &models).await.unwrap();
    let err = plugin.solve(&item("1", 0), "chat:hello").await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("model 'forbidden' is not allowed for plugin 'narrow'"), "{text}");
    assert!(text.contains("add it to `allowed-models`"), "{text}");
}

#[tokio::test]
async fn randomness_is_reproducible_from_the_run_seed() {
    let engine = engine();
    let plugin = chaos(&engine, "seeded", &[], None).await;
    let seed_of = |id: &str, run_seed: u64| {
        let plugin = &plugin;
        let item = item(id, run_seed);
        async move { plugin.solve(&item, "seed").await.unwrap().answer }
    };
    let a = seed_of("a", 1).await;
    assert_eq!(a, seed_of("a", 1).await, "same run seed and item: same randomness");
    assert_ne!(a, seed_of("b", 1).await, "another item: other randomness");
    assert_ne!(a, seed_of("a", 2).await, "another run seed: other randomness");
    let (item_part, wasi_part) = a.split_once('/').expect("SEED/RANDOM");
    assert_eq!(item_part, item_seed(1, "a").to_string());
    assert!(!wasi_part.is_empty());
}

#[tokio::test]
async fn state_is_shared_by_the_items_of_one_plugin_only() {
    let engine = engine();
    let first = chaos(&engine, "first", &[], None).await;
    let second = chaos(&engine, "second", &[], None).await;
    assert_eq!(first.solve(&item("1", 0), "state:colour=blue").await.unwrap().answer, "blue");
    assert_eq!(first.state().get("colour").as_deref(), Some(&b"blue"[..]));
    assert_eq!(second.state().get("colour"), None, "state is scoped to its plugin");
    assert_eq!(second.solve(&item("1", 0), "state:colour=red").await.unwrap().answer, "red");
    assert_eq!(first.state().get("colour").as_deref(), Some(&b"blue"[..]));
}
