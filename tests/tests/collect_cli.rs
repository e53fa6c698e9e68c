//! `techne collect` through the CLI binary (built with the scripted
//! test-double backend, so these run in seconds and need no model):
//!
//! - `rewriter-pairs`: the progress line per question, the summary, the
//!   pairs and judgements files;
//! - `qpo-records` with the qpo-policy component in `prompt-oirl` mode:
//!   every known prompt is evaluated on every query, records, SFT data and
//!   the outcome log are written, and a second run merges into them;
//! - `oirl-reward-model`: fits Prompt-OIRL's reward model on an outcome log
//!   and writes it; `techne run` then reads it through
//!   `[plugins.NAME.param-files]` and picks, per query, the prompt the log
//!   says works for that kind of query;
//! - the exit codes of a configuration without `[collect]`, a missing
//!   file, a malformed log and a plugin without the training side;
//! - `techne plugin inspect` and `plugin list` name the training extensions
//!   a component exports next to its role.

use std::path::Path;
use std::process::Output;

use techne_integration_tests::{artifacts, run_cli, text, write_file as write};

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

fn repo_file(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path).display().to_string()
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

    // Again: the same records (nothing new), the outcome log grows.
    let out = techne(&["collect", "qpo-records", "collect.toml"], dir.path());
    assert_exit(&out, 0);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("0 new records (mean reward 0.00), 8 in all"), "{stdout}");
    assert!(stdout.contains("(16 in all)"), "{stdout}");
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
        stdout.contains("reward model fitted on 16 outcomes (8 correct) of 2 prompts on 8 queries, training accuracy "),
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
    write(dir.path(), "bad.jsonl", &format!("{}\n{{\"query\": \"q\", \"prompt\": \"p\"}}\n", outcome("q", "p", true)));
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
    assert!(stdout.contains("provides:    prompt policy + prompt-policy trainer + reward-model trainer"), "{stdout}");
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
