//! `techne eval` with judges, through the CLI built with the scripted test
//! double: the generic `llm-judge` metric (rubric prompt, repeats averaged,
//! JSON or plain-number replies, failures recorded per item), its
//! configuration errors, and the pipeline's writer (Self-Evolution's
//! evolution-strategy plugin) and judge (LlamaDuo's migration-strategy
//! plugin) stages with the real plugin components.

use std::path::Path;
use std::process::{Command, Output};

use techne_integration_tests::{artifacts, models_available, run_cli, text, write_file as write};

const CLI: &str = env!("CARGO_BIN_EXE_techne-with-test-doubles");

fn techne(args: &[&str], dir: &Path) -> Output {
    run_cli(CLI, args, dir, &dir.join("cache"))
}

fn results(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("results.jsonl"))
        .expect("results.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn summary(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).expect("summary.json")).unwrap()
}

const CAPITALS: &str = r#"{"id": "fr", "q": "Capital of France?", "a": "Paris"}
{"id": "it", "q": "Capital of Italy?", "a": "Rome"}
{"id": "es", "q": "Capital of Spain?", "a": "Madrid"}
"#;

/// The answer model answers from rules; the judge model grades from rules
/// keyed on the answer the rubric shows it.
const JUDGE_CONFIG: &str = r#"
[run]
name = "judged"
seed = 3
concurrency = 2
output-dir = "out"

[models.answerer]
backend = "scripted"
rules = [
  { contains = "France", reply = "Paris" },
  { contains = "Italy", reply = "Milan" },
  { contains = "Spain", reply = "I do not know" },
]

[models.judge]
backend = "scripted"
rules = [
  { contains = "Answer to grade:\nParis", reply = "```json\n{\"score\": 10, \"reason\": \"matches\"}\n```" },
  { contains = "Answer to grade:\nMilan", reply = "Score: 2. Milan is not the capital." },
  { contains = "Answer to grade:", reply = "I cannot grade this." },
]

[dataset]
path = "capitals.jsonl"
input-field = "q"
reference-field = "a"
id-field = "id"

[techniques.baseline]
answer-model = "answerer"

[evaluation]
metric = "llm-judge"
extra-metrics = ["exact-match"]

[evaluation.judge]
model = "judge"
repeats = 3
"#;

#[test]
fn llm_judge_scores_average_repeats_and_record_failures() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "capitals.jsonl", CAPITALS);
    let config = write(dir.path(), "judged.toml", JUDGE_CONFIG);
    let out = techne(&["eval", config.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(0), "stdout:\n{}\nstderr:\n{}", text(&out.stdout), text(&out.stderr));
    let run = dir.path().join("out");
    let by_id: std::collections::BTreeMap<String, serde_json::Value> =
        results(&run).into_iter().map(|r| (r["id"].as_str().unwrap().to_string(), r)).collect();
    // 10 on a 1–10 rubric is 1.0; 2 is (2 − 1) / 9.
    assert_eq!(by_id["fr"]["scores"]["llm-judge"], 1.0);
    assert_eq!(by_id["fr"]["judge"]["scores"], serde_json::json!([10.0, 10.0, 10.0]));
    let milan = by_id["it"]["scores"]["llm-judge"].as_f64().unwrap();
    assert!((milan - 1.0 / 9.0).abs() < 1e-9, "{milan}");
    assert_eq!(by_id["it"]["scores"]["exact-match"], 0.0);
    // No readable score: no llm-judge score, and every repeat's reason kept.
    assert!(by_id["es"]["scores"].get("llm-judge").is_none(), "{}", by_id["es"]);
    let failures = by_id["es"]["judge"]["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 3, "{failures:?}");
    assert!(failures[0].as_str().unwrap().contains("I cannot grade this."), "{failures:?}");
    // The summary's mean covers the two judged items.
    let summary = summary(&run);
    let judged = &summary["techniques"][0]["scores"]["llm-judge"];
    assert!((judged["mean"].as_f64().unwrap() - (1.0 + 1.0 / 9.0) / 2.0).abs() < 1e-9, "{judged}");
    assert!(text(&out.stdout).contains("llm-judge"), "{}", text(&out.stdout));
}

#[test]
fn llm_judge_without_a_judge_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "capitals.jsonl", CAPITALS);
    let without = JUDGE_CONFIG.split("[evaluation.judge]").next().unwrap();
    let config = write(dir.path(), "nojudge.toml", without);
    let out = techne(&["config", "check", config.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("evaluation.judge") && err.contains("[evaluation.judge]"), "{err}");
    let bad_repeats = JUDGE_CONFIG.replace("repeats = 3", "repeats = 0");
    let config = write(dir.path(), "zero.toml", &bad_repeats);
    let out = techne(&["config", "check", config.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("evaluation.judge.repeats"), "{}", text(&out.stderr));
}

/// The two stages with the real plugins: the writer writes a QA pair from
/// the item (as a knowledge fragment), the judge plugin grades the
/// baseline's answer.
#[test]
fn writer_and_judge_plugin_stages_run_in_an_eval() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "facts.jsonl",
        "{\"id\": \"1\", \"q\": \"The capital of France is Paris.\", \"a\": \"Paris\"}\n\
         {\"id\": \"2\", \"q\": \"The capital of Italy is Rome.\", \"a\": \"Rome\"}\n",
    );
    let config = format!(
        r#"
[run]
name = "stages"
seed = 5
concurrency = 1
output-dir = "out"

[models.local]
backend = "scripted"
rules = [
  {{ contains = "```\nThe capital of Italy is Rome.\n```", reply = "Looks fine to me." }},
  {{ contains = "Write one question that this knowledge answers", reply = "What is the capital of France?" }},
  {{ contains = "Answer the question using the knowledge below", reply = "Paris" }},
  {{ contains = "rigorous quality assessor", reply = "{{\"similarity_assessment\": {{\"score\": 91, \"reason\": \"same\"}}, \"precision_assessment\": {{\"score\": 100, \"reason\": \"right\"}}}}" }},
  {{ contains = "The capital of France is Paris.", reply = "Paris is the capital." }},
  {{ contains = "The capital of Italy is Rome.", reply = "Rome." }},
]

[plugins.self-evolution]
path = "{evolution}"
allowed-models = ["local"]
default-model = "local"
[plugins.self-evolution.params]
max-tokens = 32

[plugins.llamaduo]
path = "{llamaduo}"
allowed-models = ["local"]
default-model = "local"
[plugins.llamaduo.params]
judge-repeats = 2
max-tokens = 64

[dataset]
path = "facts.jsonl"
input-field = "q"
reference-field = "a"
id-field = "id"

[techniques.baseline]
answer-model = "local"

[techniques.self-evolution]
writer = "self-evolution"
answer-model = "local"

[techniques.llamaduo]
answer-model = "local"
judge = "llamaduo"
judge-model = "local"

[evaluation]
metric = "contains"
"#,
        evolution = artifacts::SELF_EVOLUTION,
        llamaduo = artifacts::LLAMADUO
    );
    let config = write(dir.path(), "stages.toml", &config);
    let out = techne(&["eval", config.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(0), "stdout:\n{}\nstderr:\n{}", text(&out.stdout), text(&out.stderr));
    let run = dir.path().join("out");
    let by_technique: std::collections::BTreeMap<String, serde_json::Value> = results(&run)
        .into_iter()
        .filter(|r| r["id"] == "1")
        .map(|r| (r["technique"].as_str().unwrap().to_string(), r))
        .collect();
    let written = &by_technique["self-evolution"];
    assert_eq!(written["prompt"], "What is the capital of France?", "{written}");
    assert_eq!(written["answer"], "Paris");
    assert_eq!(written["scores"]["contains"], 1.0);
    let ifd = written["trace"].as_array().unwrap().iter().find(|s| s["label"] == "ifd").expect("an ifd step");
    assert!(ifd["text"].as_str().unwrap().parse::<f64>().unwrap().is_finite(), "{ifd}");
    let judged = &by_technique["llamaduo"];
    assert_eq!(judged["answer"], "Paris is the capital.");
    assert!((judged["scores"]["judge-similarity"].as_f64().unwrap() - 90.0 / 99.0).abs() < 1e-9, "{judged}");
    assert_eq!(judged["scores"]["judge-precision"], 1.0);
    // An answer the judge cannot grade stays answered and scored, unjudged.
    let unjudged = results(&run).into_iter().find(|r| r["technique"] == "llamaduo" && r["id"] == "2").unwrap();
    assert!(unjudged.get("failure").is_none(), "{unjudged}");
    assert_eq!(unjudged["scores"]["contains"], 1.0);
    assert!(unjudged["scores"].get("judge-similarity").is_none(), "{unjudged}");
    let step = unjudged["trace"].as_array().unwrap().iter().find(|s| s["label"] == "judge-failure").expect("a reason");
    assert!(step["text"].as_str().unwrap().contains("Looks fine to me."), "{step}");
    // The stage scores reach the summary and the printed table.
    let summary = summary(&run);
    let llamaduo = summary["techniques"].as_array().unwrap().iter().find(|t| t["name"] == "llamaduo").unwrap();
    assert!(llamaduo["scores"].get("judge-similarity").is_some(), "{llamaduo}");
    assert!(text(&out.stdout).contains("judge-precision"), "{}", text(&out.stdout));
    // A judge plugin needs its model.
    let broken = std::fs::read_to_string(&config).unwrap().replace("judge-model = \"local\"\n", "");
    let broken = write(dir.path(), "broken.toml", &broken);
    let out = techne(&["config", "check", broken.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("techniques.llamaduo.judge-model"), "{}", text(&out.stderr));
}

/// The main job's configuration, one item per technique, on the real
/// embedded model: every row (the five techniques and the baseline) runs,
/// no item fails. Needs the model packages (`scripts/setup.sh`); skipped
/// without them unless `TECHNE_REQUIRE_MODELS=1`.
#[test]
fn the_main_job_runs_one_item_of_every_technique_on_the_embedded_model() {
    if !models_available() {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = tempfile::tempdir().unwrap();
    let output = Command::new(CLI)
        .current_dir(root)
        .args(["eval", "examples/eval.toml", "--limit", "1", "--no-cache", "--output-dir"])
        .arg(out.path())
        .output()
        .expect("run the techne CLI");
    assert_eq!(output.status.code(), Some(0), "stdout:\n{}\nstderr:\n{}", text(&output.stdout), text(&output.stderr));
    let rows = results(out.path());
    let techniques: Vec<&str> = rows.iter().map(|r| r["technique"].as_str().unwrap()).collect();
    assert_eq!(
        techniques,
        ["baseline", "question-rewriter", "qpo", "zero-shot-cot", "self-taught", "self-evolution", "llamaduo"]
    );
    for row in &rows {
        assert!(row.get("failure").is_none(), "{row}");
        assert!(row["answer"].as_str().is_some_and(|a| !a.trim().is_empty()), "{row}");
    }
    let written = &rows[5];
    assert!(written["trace"].as_array().unwrap().iter().any(|s| s["label"] == "ifd"), "{written}");
    // The judge ran: scores, or the reason the 135M judge's reply held none.
    let judged = &rows[6];
    let has_scores = judged["scores"].get("judge-similarity").is_some();
    let has_reason = judged["trace"].as_array().is_some_and(|t| t.iter().any(|s| s["label"] == "judge-failure"));
    assert!(has_scores || has_reason, "{judged}");
}

/// K-QA's criteria through `techne eval`: every statement of a K-QA record
/// goes to the judge with K-QA's entailment (must-have) and contradiction
/// (all statements) prompts; the scripted judge answers per hypothesis.
#[test]
fn k_qa_metrics_judge_each_statement_and_record_replies_without_a_verdict() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "kqa.jsonl",
        concat!(
            r#"{"Question": "What is the capital of France?", "Free_form_answer": "Paris.", "Must_have": ["Paris is the capital", "France has a king"], "Nice_to_have": ["Lyon is the capital"]}"#,
            "\n",
            r#"{"Question": "What is the capital of Atlantis?", "Free_form_answer": "Unknown.", "Must_have": ["an unknowable fact"]}"#,
            "\n"
        ),
    );
    let config = write(
        dir.path(),
        "kqa.toml",
        r#"
[run]
name = "kqa"
output-dir = "out"

[models.answerer]
backend = "scripted"
rules = [
  { contains = "capital of France", reply = "Paris is the capital of France." },
  { contains = "Atlantis", reply = "Nobody knows." },
]

[models.judge]
backend = "scripted"
rules = [
  { contains = "Hypothesis: Paris is the capital", reply = "Both say so. The answer is True." },
  { contains = "Hypothesis: France has a king", reply = "Nothing about a king. The answer is False." },
  { contains = "Hypothesis: Lyon is the capital", reply = "Two capitals conflict. The answer is True." },
]
fallback = { fixed = "I cannot tell." }

[dataset]
path = "kqa.jsonl"
format = "k-qa"

[techniques.baseline]
answer-model = "answerer"

[evaluation]
metric = "k-qa-comprehensiveness"
extra-metrics = ["k-qa-contradiction"]

[evaluation.judge]
model = "judge"
"#,
    );
    let out = techne(&["eval", config.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(0), "stdout:\n{}\nstderr:\n{}", text(&out.stdout), text(&out.stderr));
    let rows = results(&dir.path().join("out"));
    let paris = rows.iter().find(|r| r["id"] == "1").expect("item 1");
    // One of two must-haves entailed; the judge called "Paris …" and "Lyon …" contradicted.
    assert_eq!(paris["scores"]["k-qa-comprehensiveness"], 0.5, "{paris}");
    assert_eq!(paris["scores"]["k-qa-contradiction"], 2.0, "{paris}");
    assert!(paris.get("kqa_failure").is_none(), "{paris}");
    let atlantis = rows.iter().find(|r| r["id"] == "2").expect("item 2");
    assert_eq!(atlantis["scores"]["k-qa-comprehensiveness"], 0.0, "{atlantis}");
    assert!(atlantis["kqa_failure"].as_str().unwrap().contains("2 judge replies had no verdict"), "{atlantis}");
    // Without a judge the configuration is refused with the fix.
    let no_judge = std::fs::read_to_string(&config).unwrap().replace("[evaluation.judge]\nmodel = \"judge\"\n", "");
    let config = write(dir.path(), "no-judge.toml", &no_judge);
    let out = techne(&["eval", config.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("[evaluation.judge]"), "{}", text(&out.stderr));
}
