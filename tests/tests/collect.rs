//! Training-data collection through the plugins' training extensions, on
//! the embedded local model (SmolLM2-135M-Instruct):
//!
//! - the question-rewriter component's `build-pairs` applies the dominance
//!   rule and the N+ × N− pairing (deterministic inputs);
//! - `techne collect rewriter-pairs` end to end (K = 2 rewrites, 1 K-QA-style
//!   question; the local model rewrites, answers and judges): the pairs
//!   JSONL is DPO-shaped and every pair agrees with the judged answers;
//! - `techne collect qpo-records` on 2 arithmetic queries: rewarded,
//!   deduplicated, merged records and the policy's SFT data;
//! - Prompt-OIRL's reward model fitted by the qpo-policy component on the
//!   local all-MiniLM embeddings, from a log where one prompt is right for
//!   arithmetic and another for history questions: the prompt-oirl mode
//!   then picks the right prompt for new queries of each kind.
//!
//! Without the model packages these say so and pass, unless
//! `TECHNE_REQUIRE_MODELS=1`. Module `cli` runs `techne collect` (and the
//! Prompt-OIRL model's use in `techne run`) through the CLI with the
//! scripted backend, which needs no model.

use std::collections::BTreeMap;
use std::path::Path;

use techne::backends::ModelSet;
use techne::collect::{CollectSettings, qpo_records, rewriter_pairs};
use techne::config::{Overrides, load_run_config};
use techne::sandbox::plugin::{CriterionScore, JudgedQuestion, LabelledPrompt, TrainerExtension};
use techne::sandbox::{PluginSpec, WorkItem};
use techne_integration_tests::{artifacts, models_available, test_engine};

fn repo_file(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path).display().to_string()
}

fn judged(question: &str, comprehensiveness: f64, contradiction: f64) -> JudgedQuestion {
    JudgedQuestion {
        question: question.into(),
        answer: format!("answer to {question}"),
        scores: vec![
            CriterionScore { name: "comprehensiveness".into(), value: comprehensiveness, higher_is_better: true },
            CriterionScore { name: "contradiction".into(), value: contradiction, higher_is_better: false },
        ],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rewriter_component_pairs_better_with_worse_rewrites() {
    let engine = test_engine(env!("CARGO_TARGET_TMPDIR"));
    let mut spec = PluginSpec::new("rewriter", artifacts::QUESTION_REWRITER);
    spec.params = BTreeMap::from([("better-pairs".into(), "2".into()), ("worse-pairs".into(), "2".into())]);
    let plugin = engine.load(&spec, &ModelSet::new()).await.unwrap();
    assert_eq!(plugin.trainer(), Some(TrainerExtension::RewriterTrainer));
    let mut instance = plugin.instantiate(&WorkItem { id: "q".into(), seed: 11 }).await.unwrap();
    let original = judged("sunburn what to put on it", 0.5, 1.0);
    let rewrites = [
        judged("better-a", 1.0, 1.0),
        judged("worse-a", 0.0, 1.0),
        judged("better-b", 0.5, 0.0),
        judged("mixed", 1.0, 2.0),
        judged("worse-b", 0.5, 3.0),
        judged("same", 0.5, 1.0),
        judged("better-c", 0.75, 1.0),
        judged("worse-c", 0.0, 2.0),
    ];
    let pairs = instance.build_pairs(&original, &rewrites).await.unwrap();
    // N+ = 2 of the 3 better (the two largest improvements: better-b by 1.0, better-a by 0.5), each with
    // N- = 2 distinct worse.
    assert_eq!(pairs.len(), 4, "{pairs:?}");
    let prompt = "Rewriting question to make it more understandable, just give me the rewritten question without any other word: sunburn what to put on it";
    for pair in &pairs {
        assert_eq!(pair.prompt, prompt);
        assert!(["better-a", "better-b"].contains(&pair.chosen.as_str()), "{pair:?}");
        assert!(["worse-a", "worse-b", "worse-c"].contains(&pair.rejected.as_str()), "{pair:?}");
    }
    for chosen in ["better-a", "better-b"] {
        let rejected: Vec<&str> = pairs.iter().filter(|p| p.chosen == chosen).map(|p| p.rejected.as_str()).collect();
        assert_eq!(rejected.len(), 2);
        assert_ne!(rejected[0], rejected[1]);
    }
    // A rewrite judged on other criteria than the original is refused with the reason.
    let mut odd = judged("odd", 1.0, 0.0);
    odd.scores.truncate(1);
    let err = instance.build_pairs(&original, &[odd]).await.unwrap_err().to_string();
    assert!(err.contains("contradiction"), "{err}");
}

fn write_config(dir: &Path, body: &str) -> std::path::PathBuf {
    let path = dir.join("collect.toml");
    std::fs::write(&path, body).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewriter_pairs_are_dpo_records_that_follow_the_judgements() {
    if !models_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(
        dir.path(),
        &format!(
            r#"
[run]
seed = 3
limit = 1

[models.smol]
backend = "local"

[plugins.rewriter]
path = {rewriter:?}
allowed-models = ["smol"]
default-model = "smol"
[plugins.rewriter.params]
rewrites-per-question = 2
max-attempts = 2
max-tokens = 32
better-pairs = 2
worse-pairs = 2

[dataset]
path = {data:?}

[collect]
plugin = "rewriter"
answer-model = "smol"
answer-max-tokens = 32
judge-model = "smol"
judge-max-tokens = 16
"#,
            rewriter = artifacts::QUESTION_REWRITER,
            data = repo_file("examples/data/k-qa-sample.jsonl"),
        ),
    );
    let config = load_run_config(&config_path, &Overrides::default()).unwrap();
    let settings: CollectSettings = config.collect.clone().unwrap();
    let models = techne::runs::build_models(&config).unwrap();
    let out = dir.path().join("pairs.jsonl");
    let mut seen = Vec::new();
    let summary =
        rewriter_pairs::collect(&config, &settings, &models, out.clone(), &mut |q| seen.push(q.clone())).await.unwrap();
    assert_eq!(summary.questions.len(), 1);
    assert_eq!(seen.len(), 1);

    // Judgements: the original and every distinct rewrite of each question, with K-QA's two criteria.
    let judgements: Vec<serde_json::Value> = std::fs::read_to_string(&summary.judgements_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for q in &summary.questions {
        assert!((1..=2).contains(&q.rewrites), "K = 2 at most: {q:?}");
        let rows: Vec<&serde_json::Value> = judgements.iter().filter(|j| j["id"] == q.id.as_str()).collect();
        assert_eq!(rows.len(), 1 + q.rewrites);
        assert_eq!(rows.iter().filter(|j| j["original"] == true).count(), 1);
        let questions: std::collections::BTreeSet<&str> =
            rows.iter().map(|j| j["question"].as_str().unwrap()).collect();
        assert_eq!(questions.len(), rows.len(), "rewrites are distinct and differ from the original");
        for row in rows {
            let c = row["scores"]["comprehensiveness"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&c));
            assert!(row["scores"]["contradiction"].as_f64().unwrap() >= 0.0);
        }
    }

    // Pairs: DPO's prompt/chosen/rejected, chosen dominates the original, the original dominates rejected.
    let text = std::fs::read_to_string(&out).unwrap();
    let pairs: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(pairs.len(), summary.pairs);
    assert_eq!(pairs.len(), summary.questions.iter().map(|q| q.pairs).sum::<usize>());
    for q in &summary.questions {
        assert_eq!(q.pairs, q.better.min(2) * q.worse.min(2), "N+ x N- pairs: {q:?}");
    }
    let scores = |question: &str| {
        let row = judgements.iter().find(|j| j["question"] == question).unwrap();
        (row["scores"]["comprehensiveness"].as_f64().unwrap(), row["scores"]["contradiction"].as_f64().unwrap())
    };
    for pair in &pairs {
        let object = pair.as_object().unwrap();
        assert_eq!(object.len(), 3, "{pair}");
        let prompt = pair["prompt"].as_str().unwrap();
        let original = prompt
            .strip_prefix("Rewriting question to make it more understandable, just give me the rewritten question without any other word: ")
            .unwrap();
        let (oc, ox) = scores(original);
        let (cc, cx) = scores(pair["chosen"].as_str().unwrap());
        let (rc, rx) = scores(pair["rejected"].as_str().unwrap());
        assert!(cc >= oc && cx <= ox && (cc > oc || cx < ox), "chosen must dominate: {pair}");
        assert!(rc <= oc && rx >= ox && (rc < oc || rx > ox), "rejected must be dominated: {pair}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qpo_records_are_rewarded_deduplicated_and_merged() {
    if !models_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(
        dir.path(),
        &format!(
            r#"
[run]
seed = 1
limit = 2

[models.smol]
backend = "local"

[plugins.qpo]
path = {qpo:?}
allowed-models = ["smol"]
default-model = "smol"
[plugins.qpo.params]
max-tokens = 16
min-reward = -1000.0

[dataset]
path = {data:?}
format = "gsm8k"

[collect]
plugin = "qpo"
answer-model = "smol"
answer-max-tokens = 24
metric = "numeric"
seeds = 2
"#,
            qpo = artifacts::QPO_POLICY,
            data = repo_file("examples/data/arithmetic.jsonl"),
        ),
    );
    let config = load_run_config(&config_path, &Overrides::default()).unwrap();
    let settings = config.collect.clone().unwrap();
    let models: ModelSet = techne::runs::build_models(&config).unwrap();
    let out = dir.path().join("records.jsonl");
    let first = qpo_records::collect(&config, &settings, &models, Some(&out), out.clone()).await.unwrap();
    assert_eq!(first.queries, 2);
    assert!(first.prompts >= 2 && first.prompts <= 4, "{first:?}");
    assert!(first.new_records >= 1 && first.new_records <= first.prompts, "{first:?}");
    assert_eq!(first.total_records, first.new_records);
    let records: Vec<serde_json::Value> =
        std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for record in &records {
        let reward = record["reward"].as_f64().unwrap();
        // 10·correct + 10·acc − perplexity, and perplexity ≥ 1.
        assert!(reward < 20.0, "{record}");
        assert!(!record["prompt"].as_str().unwrap().trim().is_empty());
    }
    let sft: Vec<serde_json::Value> =
        std::fs::read_to_string(&first.sft_path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(sft.len(), records.len());
    for (example, record) in sft.iter().zip(&records) {
        let prompt = example["prompt"].as_str().unwrap();
        assert!(prompt.starts_with(&format!("Reward: {:.2}\nQuery: ", record["reward"].as_f64().unwrap())), "{prompt}");
        assert!(prompt.ends_with("\nPrompt:"));
        assert_eq!(example["completion"].as_str().unwrap(), format!(" {}", record["prompt"].as_str().unwrap()));
    }
    assert!(!first.chat);

    // The same step again (same seeds, so the same prompts): nothing new, the dataset unchanged.
    let second = qpo_records::collect(&config, &settings, &models, Some(&out), out.clone()).await.unwrap();
    assert_eq!(second.new_records, 0, "{second:?}");
    assert_eq!(second.total_records, first.total_records);
    // A plugin without the training side is refused with the fix.
    let mut plain = config.clone();
    let solver = plain.plugins.get_mut("qpo").unwrap();
    solver.path = artifacts::SELF_TAUGHT.into();
    solver.params.clear();
    let err = qpo_records::collect(&plain, &settings, &models, None, dir.path().join("x.jsonl")).await.unwrap_err();
    assert!(err.to_string().contains("prompt-policy-trainer"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_oirl_reward_model_learns_which_prompt_suits_which_query_on_minilm() {
    if !models_available() || techne_inference::locate::minilm_onnx().is_none() {
        assert!(std::env::var("TECHNE_REQUIRE_MODELS").as_deref() != Ok("1"), "all-MiniLM missing: scripts/setup.sh");
        return;
    }
    const ARITHMETIC: &str = "Work out the arithmetic step by step, writing down each calculation.";
    const HISTORY: &str = "Recall the relevant historical events, people and dates before answering.";
    let arithmetic = [
        "A shop sells 12 apples per box. How many apples are in 7 boxes?",
        "Tom has 45 marbles and gives away 18. How many are left?",
        "What is 156 divided by 12?",
        "A train travels 60 km per hour for 3 hours. How far does it go?",
        "If a pen costs 3 dollars, how much do 14 pens cost?",
        "What is 25 percent of 240?",
    ];
    let history = [
        "Who was the first emperor of Rome?",
        "In which year did the Berlin Wall fall?",
        "Which empire built Machu Picchu?",
        "Who led the Haitian Revolution?",
        "What treaty ended the First World War?",
        "Which dynasty built most of the Great Wall of China?",
    ];
    let labelled = |query: &str, prompt: &str, correct: bool| LabelledPrompt {
        query: query.into(),
        prompt: prompt.into(),
        correct,
    };
    let mut examples = Vec::new();
    for q in arithmetic {
        examples.extend([labelled(q, ARITHMETIC, true), labelled(q, HISTORY, false)]);
    }
    for q in history {
        examples.extend([labelled(q, ARITHMETIC, false), labelled(q, HISTORY, true)]);
    }
    let mut models = ModelSet::new();
    models.insert(
        "minilm",
        std::sync::Arc::new(techne::backends::local::LocalEmbeddingBackend::open_default(0).unwrap()),
    );
    let engine = test_engine(env!("CARGO_TARGET_TMPDIR"));
    let spec = |params: &[(&str, &str)]| {
        let mut spec = PluginSpec::new("oirl", artifacts::QPO_POLICY);
        spec.allowed_models = vec!["minilm".into()];
        spec.params = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        spec.params.insert("mode".into(), "prompt-oirl".into());
        spec.params.insert("candidate-prompts".into(), serde_json::json!([ARITHMETIC, HISTORY]).to_string());
        spec
    };
    let trainer = engine.load(&spec(&[("embedding-model", "minilm")]), &models).await.unwrap();
    assert!(trainer.fits_reward_model());
    let mut instance = trainer.instantiate(&WorkItem { id: "fit".into(), seed: 1 }).await.unwrap();
    let model = instance.fit_reward_model(&examples).await.unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&model).unwrap();
    assert_eq!(parsed["embedding_dim"], 384, "all-MiniLM-L6-v2");
    let training = &parsed["training"];
    assert!(training["fit"]["train_accuracy"].as_f64().unwrap() >= 0.9, "{training}");
    assert_eq!(training["l2_selection"].as_array().unwrap().len(), 6, "the default grid, cross-validated: {training}");
    // The same log gives the same model.
    let mut again = trainer.instantiate(&WorkItem { id: "fit".into(), seed: 2 }).await.unwrap();
    assert_eq!(again.fit_reward_model(&examples).await.unwrap(), model);

    // Inference: the embedding model defaults to the one the model was fitted with.
    let policy = engine.load(&spec(&[("reward-model", &model)]), &models).await.unwrap();
    for (query, best) in [
        ("A farmer plants 8 rows of 15 trees. How many trees does he plant?", ARITHMETIC),
        ("Who was the king of France during the French Revolution?", HISTORY),
        ("What is 17 times 4?", ARITHMETIC),
        ("Which civilisation built the pyramids of Giza?", HISTORY),
    ] {
        let mut instance = policy.instantiate(&WorkItem { id: query.into(), seed: 3 }).await.unwrap();
        let prompts = instance.propose(query).await.unwrap();
        assert_eq!(prompts, [format!("{best}\n\n{query}")], "{query}");
    }

    // A model fitted on embeddings of another dimension is refused with the fix.
    let mut other: serde_json::Value = parsed.clone();
    other["embedding_dim"] = 8.into();
    for key in ["mean", "scale", "weights"] {
        other["classifier"][key] = serde_json::json!(vec![1.0; 32]);
    }
    let policy = engine.load(&spec(&[("reward-model", &other.to_string())]), &models).await.unwrap();
    let mut instance = policy.instantiate(&WorkItem { id: "dim".into(), seed: 3 }).await.unwrap();
    let err = instance.propose("What is 2 plus 2?").await.unwrap_err().to_string();
    assert!(err.contains("8-dimensional embeddings") && err.contains("refit"), "{err}");
}

/// The registry the loops' trained models go to (shared with tests/loops.rs,
/// so the default model is imported once per build).
fn registry_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("loops-registry")
}

fn remove_models(prefix: &str) {
    if let Ok(registry) = techne_inference::Registry::open(registry_dir()) {
        for round in 1..=3 {
            let _ = registry.remove(&format!("{prefix}-r{round}"));
        }
    }
}

async fn run_loop(config_path: &Path) -> techne::loops::LoopSummary {
    let text = std::fs::read_to_string(config_path).unwrap();
    let config = load_run_config(config_path, &Overrides::default()).unwrap();
    let options = techne::loops::LoopOptions { cache: techne::runs::CacheChoice::Off, ..Default::default() };
    techne::loops::run_loop(&config, &text, config_path, options).await.unwrap()
}

const REWRITE_PROMPT: &str =
    "Rewriting question to make it more understandable, just give me the rewritten question without any other word: ";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewriter_dpo_loop_validates_and_keeps_the_better_model() {
    if !models_available() {
        return;
    }
    remove_models("rewriter-dpo-loop-test");
    let dir = tempfile::tempdir().unwrap();
    let pairs = dir.path().join("pairs.jsonl");
    let mut lines = String::new();
    for (question, chosen, rejected) in [
        ("sunburn what put", "What should I put on a sunburn?", "sunburn"),
        ("sunburn what put", "What can I apply to soothe sunburned skin?", "put what"),
        ("cold how long", "How long does a common cold usually last?", "cold long"),
        ("cold how long", "How many days does a cold last?", "how"),
        ("ibuprofen coffee ok", "Is it safe to take ibuprofen with coffee?", "coffee"),
        ("ibuprofen coffee ok", "Can I drink coffee after taking ibuprofen?", "ok ok"),
    ] {
        let pair = serde_json::json!({"prompt": format!("{REWRITE_PROMPT}{question}"), "chosen": chosen, "rejected": rejected});
        lines.push_str(&format!("{pair}\n"));
    }
    std::fs::write(&pairs, lines).unwrap();
    let out = dir.path().join("loop");
    let config_path = write_config(
        dir.path(),
        &format!(
            r#"
[run]
name = "rewriter-dpo-loop-test"
seed = 2
output-dir = "{out}"

[models.rewriter]
backend = "local"
model = "default"
registry = "{registry}"

[plugins.rewriter]
path = "{plugin}"
allowed-models = ["rewriter"]
default-model = "rewriter"

[loop]
kind = "rewriter-dpo"
rounds = 1
strategy = "rewriter"
model = "rewriter"

[loop.training]
max-steps = 2
max-seq-len = 64
batch-size = 2
learning-rate = 1e-3
merged-format = "q8_0"
checkpoint-every = 1

[loop.rewriter-dpo]
pairs = "{pairs}"
validation-share = 0.34
"#,
            out = out.display(),
            registry = registry_dir().display(),
            plugin = artifacts::QUESTION_REWRITER,
            pairs = pairs.display(),
        ),
    );
    let summary = run_loop(&config_path).await;
    let round = summary.state.round(1).unwrap();
    let steps: Vec<&str> = round.steps.iter().map(String::as_str).collect();
    assert_eq!(steps, ["collect", "split", "score-before", "train", "validate", "done"]);
    let metric = |name: &str| round.metrics[name];
    assert_eq!(metric("pairs"), 6.0);
    assert_eq!((metric("train_pairs"), metric("validation_pairs")), (4.0, 2.0));
    for name in ["preference_before", "preference_after"] {
        assert!([0.0, 0.5, 1.0].contains(&metric(name)), "{name} = {}", metric(name));
    }
    // Training evaluated the validation pairs at every checkpoint and kept the best one.
    assert!([1.0, 2.0].contains(&metric("kept_step")), "kept_step = {}", metric("kept_step"));
    let best = out.join("round-001").join("train").join("best").join("adapter.safetensors");
    assert!(best.is_file(), "{}", best.display());
    // The better-validating model stays current.
    let kept = metric("kept_trained") == 1.0;
    assert_eq!(kept, metric("preference_after") >= metric("preference_before"));
    let expected = if kept { "rewriter-dpo-loop-test-r1" } else { "default" };
    assert_eq!(summary.state.current_model, expected);
    // Validation holds out whole questions.
    let prompts = |file: &str| -> std::collections::BTreeSet<String> {
        std::fs::read_to_string(out.join("round-001").join(file))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["prompt"].as_str().unwrap().to_owned())
            .collect()
    };
    let (train, validation) = (prompts("train.jsonl"), prompts("validation.jsonl"));
    assert_eq!((train.len(), validation.len()), (2, 1));
    assert!(train.is_disjoint(&validation));
    remove_models("rewriter-dpo-loop-test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qpo_loop_trains_on_offline_data_then_collects_merges_and_evaluates() {
    if !models_available() {
        return;
    }
    remove_models("qpo-loop-test");
    let dir = tempfile::tempdir().unwrap();
    let offline = dir.path().join("offline.jsonl");
    let mut lines = String::new();
    for (query, prompt, reward) in [
        ("Tom has 3 apples and buys 4 more. How many apples does he have?", "Add the numbers.", 12.5),
        ("Tom has 3 apples and buys 4 more. How many apples does he have?", "Think step by step.", 8.0),
        ("A box holds 6 eggs. How many eggs are in 5 boxes?", "Multiply carefully.", 11.0),
    ] {
        lines.push_str(&format!("{}\n", serde_json::json!({"query": query, "prompt": prompt, "reward": reward})));
    }
    std::fs::write(&offline, lines).unwrap();
    let out = dir.path().join("loop");
    let config_path = write_config(
        dir.path(),
        &format!(
            r#"
[run]
name = "qpo-loop-test"
seed = 4
limit = 2
output-dir = "{out}"

[models.policy]
backend = "local"
model = "default"
registry = "{registry}"

[models.target]
backend = "local"
model = "default"

[plugins.qpo]
path = "{plugin}"
allowed-models = ["policy"]
default-model = "policy"
[plugins.qpo.params]
max-tokens = 16
min-reward = -1000.0

[dataset]
path = "{data}"
format = "gsm8k"

[collect]
plugin = "qpo"
answer-model = "target"
answer-max-tokens = 16
metric = "numeric"
seeds = 2

[loop]
kind = "qpo"
rounds = 2
strategy = "qpo"
model = "policy"

[loop.training]
max-steps = 2
max-seq-len = 64
batch-size = 2
merged-format = "q8_0"

[loop.qpo]
offline = "{offline}"
"#,
            out = out.display(),
            registry = registry_dir().display(),
            plugin = artifacts::QPO_POLICY,
            data = repo_file("examples/data/arithmetic.jsonl"),
            offline = offline.display(),
        ),
    );
    let summary = run_loop(&config_path).await;
    let first = summary.state.round(1).unwrap();
    assert_eq!(first.steps, ["collect", "train", "done"]);
    assert_eq!(first.metrics["records"], 3.0);
    let second = summary.state.round(2).unwrap();
    assert_eq!(second.steps, ["collect", "train", "evaluate", "done"]);
    // Loop 2 merged its new records into loop 1's dataset.
    let merged = std::fs::read_to_string(out.join("round-002").join("records.jsonl")).unwrap();
    let merged: Vec<serde_json::Value> = merged.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(merged.len() as f64, second.metrics["records"]);
    assert_eq!(merged.len(), 3 + second.metrics["collect_new_records"] as usize);
    assert_eq!(merged[0]["prompt"], "Add the numbers.");
    let sft = std::fs::read_to_string(out.join("round-002").join("records.sft.jsonl")).unwrap();
    assert_eq!(sft.lines().count(), merged.len());
    for name in ["collect_accuracy", "eval_accuracy"] {
        assert!((0.0..=1.0).contains(&second.metrics[name]), "{name}");
    }
    assert_eq!(summary.state.current_model, "qpo-loop-test-r2");
    remove_models("qpo-loop-test");
}

/// `techne collect` through the CLI binary, built with the scripted
/// test-double backend, so these run in seconds and need no model:
///
/// - `rewriter-pairs`: the progress line per question, the summary, the
///   pairs and judgements files;
/// - `qpo-records` with the qpo-policy component in `prompt-oirl` mode:
///   every known prompt is evaluated on every query, records, SFT data and
///   the outcome log are written, and a second run merges into them;
/// - `oirl-reward-model`: fits Prompt-OIRL's reward model on an outcome log
///   and writes it; `techne run` then reads it through
///   `[plugins.NAME.param-files]` and picks, per query, the prompt the log
///   says works for that kind of query;
/// - the exit codes of a configuration without `[collect]`, a missing
///   file, a malformed log and a plugin without the training side;
/// - `techne plugin inspect` and `plugin list` name the training extensions
///   a component exports next to its role.
mod cli {
    use std::path::Path;
    use std::process::Output;

    use techne_integration_tests::{artifacts, run_cli, text, write_file as write};

    use super::repo_file;

    const CLI: &str = env!("CARGO_BIN_EXE_techne-with-test-doubles");

    fn techne(args: &[&str], dir: &Path) -> Output {
        run_cli(CLI, args, dir, &dir.join("cache"))
    }

    fn jsonl(path: &Path) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    fn assert_exit(out: &Output, code: i32) {
        assert_eq!(out.status.code(), Some(code), "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    }

    #[test]
    fn rewriter_pairs_prints_progress_and_writes_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            r#"
    [run]
    seed = 3
    limit = 1

    [models.scripted]
    backend = "scripted"
    rules = [
      {{ contains = "effectively entails", reply = "The premise covers it. The answer is True." }},
      {{ contains = "effectively contradicts", reply = "The answer is False." }},
      {{ contains = "Rewriting question to make it more understandable", reply = "How should I treat a sunburn?" }},
    ]
    fallback = {{ fixed = "Cool the skin with cool water." }}

    [plugins.rewriter]
    path = {rewriter:?}
    allowed-models = ["scripted"]
    default-model = "scripted"
    [plugins.rewriter.params]
    rewrites-per-question = 2
    max-attempts = 2

    [dataset]
    path = {data:?}

    [collect]
    plugin = "rewriter"
    answer-model = "scripted"
    judge-model = "scripted"
    output = "out/pairs.jsonl"
    "#,
            rewriter = artifacts::QUESTION_REWRITER,
            data = repo_file("examples/data/k-qa-sample.jsonl"),
        );
        write(dir.path(), "collect.toml", &config);
        let out = techne(&["collect", "rewriter-pairs", "collect.toml"], dir.path());
        assert_exit(&out, 0);
        let stderr = text(&out.stderr);
        // The scripted model gives the same rewrite every time: one distinct
        // rewrite, as good as the original, so no pair.
        assert!(
            stderr.contains("question kqa-s1: 1 rewrites, original comprehensiveness 1.00 contradiction 0"),
            "{stderr}"
        );
        let stdout = text(&out.stdout);
        assert!(stdout.contains("0 pairs from 1 questions in "), "{stdout}");
        assert!(stdout.contains("(0 judge replies without a verdict)"), "{stdout}");
        let pairs = dir.path().join("out/pairs.jsonl");
        assert!(stdout.contains("pairs:      ./out/pairs.jsonl"), "{stdout}");
        assert!(pairs.is_file() && jsonl(&pairs).is_empty());
        let judgements = jsonl(&dir.path().join("out/pairs.judgements.jsonl"));
        assert_eq!(judgements.len(), 2, "the original and its rewrite: {judgements:?}");
        assert!(judgements.iter().all(|j| j["id"] == "kqa-s1"), "{judgements:?}");
    }

    /// Two known prompts; each suits one kind of query (they share a word with
    /// it, which the scripted backend's bag-of-words embeddings can see).
    const ARITHMETIC_PROMPT: &str = "Add the numbers: compute the plus sum exactly.";
    const RIVER_PROMPT: &str = "Name the river from geography knowledge.";

    /// A scripted model that answers correctly only with the suitable prompt.
    fn oirl_config(extra_plugin_tables: &str) -> String {
        format!(
            r#"
    [run]
    seed = 5
    name = "oirl"

    [models.scripted]
    backend = "scripted"
    rules = [
      {{ contains = "{ARITHMETIC_PROMPT}\n\nWhat is 2 plus 2?", reply = "4" }},
      {{ contains = "{ARITHMETIC_PROMPT}\n\nWhat is 3 plus 4?", reply = "7" }},
      {{ contains = "{ARITHMETIC_PROMPT}\n\nWhat is 10 plus 5?", reply = "15" }},
      {{ contains = "{RIVER_PROMPT}\n\nWhich river flows through Paris?", reply = "Seine" }},
      {{ contains = "{RIVER_PROMPT}\n\nWhich river flows through London?", reply = "Thames" }},
      {{ contains = "{RIVER_PROMPT}\n\nWhich river flows through Cairo?", reply = "Nile" }},
    ]
    fallback = {{ fixed = "I am not sure." }}

    [plugins.qpo]
    path = {qpo:?}
    allowed-models = ["scripted"]
    default-model = "scripted"
    [plugins.qpo.params]
    mode = "prompt-oirl"
    embedding-model = "scripted"
    candidate-prompts = '["{ARITHMETIC_PROMPT}", "{RIVER_PROMPT}"]'
    min-reward = -1000.0
    {extra_plugin_tables}
    [dataset]
    path = "queries.jsonl"
    input-field = "q"
    reference-field = "a"
    id-field = "id"

    [collect]
    plugin = "qpo"
    answer-model = "scripted"
    metric = "exact-match"
    seeds = 2
    output = "data/records.jsonl"

    [pipeline]
    policy = "qpo"
    answer-model = "scripted"
    "#,
            qpo = artifacts::QPO_POLICY,
        )
    }

    const QUERIES: &str = r#"{"id": "a1", "q": "What is 2 plus 2?", "a": "4"}
    {"id": "r1", "q": "Which river flows through Paris?", "a": "Seine"}
    {"id": "a2", "q": "What is 3 plus 4?", "a": "7"}
    {"id": "r2", "q": "Which river flows through London?", "a": "Thames"}
    "#;

    #[test]
    fn qpo_records_in_prompt_oirl_mode_log_every_known_prompt_on_every_query() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "queries.jsonl", QUERIES);
        write(dir.path(), "collect.toml", &oirl_config(""));
        let out = techne(&["collect", "qpo-records", "collect.toml"], dir.path());
        assert_exit(&out, 0);
        let stdout = text(&out.stdout);
        assert!(stdout.contains("4 queries x 2 prompts: 8 evaluated, 4 correct;"), "{stdout}");
        let data = dir.path().join("data");
        assert!(stdout.contains("records:  ./data/records.jsonl"), "{stdout}");
        assert!(stdout.contains("(train with the raw template)"), "{stdout}");
        assert!(stdout.contains("outcomes: ./data/records.outcomes.jsonl (8 in all)"), "{stdout}");

        let outcomes = jsonl(&data.join("records.outcomes.jsonl"));
        assert_eq!(outcomes.len(), 8);
        for outcome in &outcomes {
            let query = outcome["query"].as_str().unwrap();
            let prompt = outcome["prompt"].as_str().unwrap();
            let suits = (query.contains("plus") && prompt == ARITHMETIC_PROMPT)
                || (query.contains("river") && prompt == RIVER_PROMPT);
            assert_eq!(outcome["correct"].as_bool(), Some(suits), "{outcome}");
            assert!(outcome["label_logprob_sum"].as_f64().unwrap() < 0.0, "{outcome}");
        }
        let records = jsonl(&data.join("records.jsonl"));
        assert_eq!(records.len(), 8, "min-reward -1000 keeps every distinct outcome");
        assert_eq!(jsonl(&data.join("records.sft.jsonl")).len(), 8);

        // Again: the same records (nothing new), and the same outcomes are
        // not logged twice (the scripted model answers the same way).
        let out = techne(&["collect", "qpo-records", "collect.toml"], dir.path());
        assert_exit(&out, 0);
        let stdout = text(&out.stdout);
        assert!(stdout.contains("0 new records (mean reward 0.00), 8 in all"), "{stdout}");
        assert!(stdout.contains("(8 in all)"), "{stdout}");
        assert_eq!(jsonl(&data.join("records.outcomes.jsonl")).len(), 8);
    }

    /// A logged outcome line.
    fn outcome(query: &str, prompt: &str, correct: bool) -> String {
        serde_json::json!({ "query": query, "prompt": prompt, "correct": correct }).to_string()
    }

    #[test]
    fn oirl_reward_model_is_fitted_and_picks_the_suitable_prompt_per_query() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = String::new();
        let arithmetic = ["What is 6 plus 1?", "What is 8 plus 9?", "What is 12 plus 30?", "What is 5 plus 5?"];
        let rivers = [
            "Which river flows through Rome?",
            "Which river flows through Vienna?",
            "Which river flows through Budapest?",
            "Which river flows through Kyiv?",
        ];
        for query in arithmetic {
            log += &format!("{}\n{}\n", outcome(query, ARITHMETIC_PROMPT, true), outcome(query, RIVER_PROMPT, false));
        }
        for query in rivers {
            log += &format!("{}\n{}\n", outcome(query, ARITHMETIC_PROMPT, false), outcome(query, RIVER_PROMPT, true));
        }
        write(dir.path(), "log.jsonl", &log);
        write(dir.path(), "collect.toml", &oirl_config(""));
        let out = techne(
            &["collect", "oirl-reward-model", "collect.toml", "--records", "log.jsonl", "--out", "model/oirl.json"],
            dir.path(),
        );
        assert_exit(&out, 0);
        let stdout = text(&out.stdout);
        assert!(
            stdout.contains(
                "reward model fitted on 16 outcomes (8 correct) of 2 prompts on 8 queries, training accuracy "
            ),
            "{stdout}"
        );
        let model_path = dir.path().join("model/oirl.json");
        assert!(stdout.contains("model:    model/oirl.json"), "{stdout}");
        // The hint names the file absolutely: param files resolve against the configuration's directory.
        let absolute = model_path.canonicalize().unwrap().display().to_string();
        assert!(stdout.contains(&format!("reward-model = {absolute:?} with mode = \"prompt-oirl\"")), "{stdout}");
        let model: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&model_path).unwrap()).unwrap();
        assert_eq!(model["format"], "techne-prompt-oirl-reward-model");
        assert_eq!(model["version"], 1);
        assert_eq!(model["embedding_model"], "scripted");
        assert_eq!(model["embedding_dim"], 64, "the scripted backend's embeddings");
        assert_eq!(model["feature_layout"], "q,p,q*p,|q-p|");
        assert_eq!(model["classifier"]["weights"].as_array().unwrap().len(), 4 * 64);
        let fit = &model["training"]["fit"];
        assert!(fit["final_loss"].as_f64().unwrap() < fit["initial_loss"].as_f64().unwrap(), "{fit}");

        // Fitting again gives the same file: the fit is deterministic.
        let first = std::fs::read(&model_path).unwrap();
        let out = techne(
            &["collect", "oirl-reward-model", "collect.toml", "--records", "log.jsonl", "--out", "model/oirl.json"],
            dir.path(),
        );
        assert_exit(&out, 0);
        assert_eq!(std::fs::read(&model_path).unwrap(), first);

        // Inference: new queries of both kinds; the policy reads the model from a param file.
        write(dir.path(), "queries.jsonl", QUERIES);
        write(dir.path(), "run.toml", &oirl_config("[plugins.qpo.param-files]\nreward-model = \"model/oirl.json\"\n"));
        let out = techne(&["run", "run.toml"], dir.path());
        assert_exit(&out, 0);
        let results = jsonl(&dir.path().join("runs/oirl/results.jsonl"));
        let answers: Vec<(&str, &str)> =
            results.iter().map(|r| (r["id"].as_str().unwrap(), r["answer"].as_str().unwrap())).collect();
        assert_eq!(answers, [("a1", "4"), ("r1", "Seine"), ("a2", "7"), ("r2", "Thames")], "{results:?}");
    }

    #[test]
    fn collect_failures_have_their_exit_codes() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "queries.jsonl", QUERIES);
        write(dir.path(), "collect.toml", &oirl_config(""));

        // No [collect] table: a configuration error (3) that says what to add.
        let plain = format!(
            "inputs = [\"q\"]\n[models.scripted]\nbackend = \"scripted\"\n\n[plugins.qpo]\npath = {:?}\n\
             allowed-models = [\"scripted\"]\n\n[pipeline]\npolicy = \"qpo\"\nanswer-model = \"scripted\"\n",
            artifacts::QPO_POLICY
        );
        write(dir.path(), "plain.toml", &plain);
        let out = techne(&["collect", "qpo-records", "plain.toml"], dir.path());
        assert_exit(&out, 3);
        assert!(text(&out.stderr).contains("no [collect] table"), "{}", text(&out.stderr));

        // A missing configuration file, and a missing outcome log: I/O errors (6).
        let out = techne(&["collect", "qpo-records", "absent.toml"], dir.path());
        assert_exit(&out, 6);
        let out = techne(&["collect", "oirl-reward-model", "collect.toml", "--records", "absent.jsonl"], dir.path());
        assert_exit(&out, 6);
        assert!(text(&out.stderr).contains("absent.jsonl"), "{}", text(&out.stderr));

        // A malformed log line: named with its line (6).
        write(
            dir.path(),
            "bad.jsonl",
            &format!("{}\n{{\"query\": \"q\", \"prompt\": \"p\"}}\n", outcome("q", "p", true)),
        );
        let out = techne(&["collect", "oirl-reward-model", "collect.toml", "--records", "bad.jsonl"], dir.path());
        assert_exit(&out, 6);
        assert!(text(&out.stderr).contains("line 2: no outcome"), "{}", text(&out.stderr));

        // Only one kind of outcome: nothing to learn; the plugin says so (4).
        write(dir.path(), "same.jsonl", &format!("{}\n{}\n", outcome("q1", "p", true), outcome("q2", "p", true)));
        let out = techne(&["collect", "oirl-reward-model", "collect.toml", "--records", "same.jsonl"], dir.path());
        assert_exit(&out, 4);
        assert!(text(&out.stderr).contains("both correct and incorrect"), "{}", text(&out.stderr));

        // A plugin without the training side: a configuration error (3) naming the interface.
        let solver = format!(
            "[models.scripted]\nbackend = \"scripted\"\n\n[plugins.qpo]\npath = {:?}\nallowed-models = [\"scripted\"]\n\n\
             [dataset]\npath = \"queries.jsonl\"\ninput-field = \"q\"\nreference-field = \"a\"\n\n\
             [collect]\nplugin = \"qpo\"\nanswer-model = \"scripted\"\nmetric = \"exact-match\"\n",
            artifacts::SELF_TAUGHT
        );
        write(dir.path(), "solver.toml", &solver);
        let out = techne(&["collect", "qpo-records", "solver.toml"], dir.path());
        assert_exit(&out, 3);
        assert!(text(&out.stderr).contains("does not export `prompt-policy-trainer`"), "{}", text(&out.stderr));

        // prompt-oirl inference without a model: the item fails with the fix.
        write(dir.path(), "nomodel.toml", &oirl_config(""));
        let out = techne(&["run", "nomodel.toml"], dir.path());
        assert_exit(&out, 5);
        let results = std::fs::read_to_string(dir.path().join("runs/oirl/results.jsonl")).unwrap();
        assert!(results.contains("techne collect oirl-reward-model"), "{results}");
    }

    #[test]
    fn plugin_inspect_names_the_training_extensions() {
        let dir = tempfile::tempdir().unwrap();
        let out = techne(&["plugin", "inspect", artifacts::QPO_POLICY], dir.path());
        assert_exit(&out, 0);
        let stdout = text(&out.stdout);
        assert!(stdout.contains("world:       techne:plugin/prompt-policy-trainer-plugin@0.1.0"), "{stdout}");
        assert!(
            stdout.contains("provides:    prompt policy + prompt-policy trainer + reward-model trainer"),
            "{stdout}"
        );
        assert!(stdout.contains("  techne:plugin/reward-model-trainer@0.1.0"), "{stdout}");

        let out = techne(&["plugin", "inspect", "--json", artifacts::QUESTION_REWRITER], dir.path());
        assert_exit(&out, 0);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["role"], "rewriter");
        assert_eq!(json["trainer"], "rewriter-trainer");
        assert_eq!(json["reward_model_trainer"], false);
        assert_eq!(json["provides"], "rewriter + rewriter trainer");

        let out = techne(&["plugin", "inspect", "--json", artifacts::SELF_TAUGHT], dir.path());
        assert_exit(&out, 0);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["world"], "techne:plugin/solver-plugin@0.1.0");
        assert_eq!(json["trainer"], serde_json::Value::Null);
        assert_eq!(json["provides"], "solver");

        // `plugin list` shows the world too.
        let plugins = dir.path().join("plugins");
        std::fs::create_dir(&plugins).unwrap();
        std::fs::copy(artifacts::QPO_POLICY, plugins.join("qpo.wasm")).unwrap();
        let out = techne(&["plugin", "list", plugins.to_str().unwrap()], dir.path());
        assert_exit(&out, 0);
        assert!(text(&out.stdout).contains("prompt-policy-trainer-plugin"), "{}", text(&out.stdout));
    }

    /// A prompt-policy trainer built before `reward-model-trainer` existed
    /// still loads and collects; only the reward-model fit is refused.
    #[test]
    fn a_trainer_without_reward_model_trainer_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let out = techne(&["plugin", "inspect", artifacts::PROMPT_POLICY_TRAINER_V0], dir.path());
        assert_exit(&out, 0);
        let stdout = text(&out.stdout);
        assert!(stdout.contains("provides:    prompt policy + prompt-policy trainer\n"), "{stdout}");
        assert!(!stdout.contains("techne:plugin/reward-model-trainer@"), "{stdout}");

        write(dir.path(), "queries.jsonl", QUERIES);
        let config = format!(
            "[models.scripted]\nbackend = \"scripted\"\n\n[plugins.v0]\npath = {:?}\nallowed-models = [\"scripted\"]\n\n\
             [dataset]\npath = \"queries.jsonl\"\ninput-field = \"q\"\nreference-field = \"a\"\n\n\
             [collect]\nplugin = \"v0\"\nanswer-model = \"scripted\"\nmetric = \"exact-match\"\nseeds = 1\n\
             output = \"records.jsonl\"\n",
            artifacts::PROMPT_POLICY_TRAINER_V0
        );
        write(dir.path(), "v0.toml", &config);
        let out = techne(&["collect", "qpo-records", "v0.toml"], dir.path());
        assert_exit(&out, 0);
        assert!(text(&out.stdout).contains("4 queries x 1 prompts: 4 evaluated"), "{}", text(&out.stdout));
        let out = techne(&["collect", "oirl-reward-model", "v0.toml"], dir.path());
        assert_exit(&out, 3);
        assert!(text(&out.stderr).contains("does not export `reward-model-trainer`"), "{}", text(&out.stderr));
    }
}
