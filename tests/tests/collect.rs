//! Training-data collection through the plugins' training extensions, on
//! the embedded local model (SmolLM2-135M-Instruct):
//!
//! - the question-rewriter component's `build-pairs` applies the dominance
//!   rule and the N+ × N− pairing (deterministic inputs);
//! - `techne collect rewriter-pairs` end to end (K = 2 rewrites, 1 K-QA-style
//!   question; the local model rewrites, answers and judges): the pairs
//!   JSONL is DPO-shaped and every pair agrees with the judged answers;
//! - `techne collect qpo-records` on 2 arithmetic queries: rewarded,
//!   deduplicated, merged records and the policy's SFT data.
//!
//! Without the model packages these say so and pass, unless
//! `TECHNE_REQUIRE_MODELS=1`.

use std::collections::BTreeMap;
use std::path::Path;

use techne::backends::ModelSet;
use techne::collect::{CollectSettings, qpo_records, rewriter_pairs};
use techne::config::{Overrides, load_run_config};
use techne::sandbox::plugin::{CriterionScore, JudgedQuestion, TrainerExtension};
use techne::sandbox::{PluginSpec, WorkItem};
use techne_integration_tests::{artifacts, test_engine};

fn models_present() -> bool {
    let found =
        techne_inference::locate::smollm2_gguf().is_some() && techne_inference::locate::onnxruntime_dylib().is_some();
    if !found {
        assert!(
            std::env::var("TECHNE_REQUIRE_MODELS").as_deref() != Ok("1"),
            "model packages missing: run scripts/setup.sh"
        );
        eprintln!("skipped: install the model packages with scripts/setup.sh");
    }
    found
}

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
    if !models_present() {
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
    if !models_present() {
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
