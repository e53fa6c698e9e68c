//! `techne loop` end to end, through the CLI built with the scripted test
//! double, on the real embedded model (SmolLM2-135M-Instruct) with tiny
//! settings (2 rounds, 3 fragments, 2 training steps of 64 tokens):
//!
//! - a Self-Evolution loop is killed (`kill -9`) during its first round,
//!   resumed with `--resume`, and finishes 2 generations: every step is
//!   recorded exactly once in `steps.jsonl` (none redone), each generation's
//!   model is registered with its lineage, BLEU-4/ROUGE are in `loop.json`
//!   per round, and the fragment the strategy plugin fails on is recorded
//!   with its reason while the loop goes on;
//! - a LlamaDuo loop whose service model is the scripted test double (it
//!   writes the judge's JSON, which a 135M model cannot) stops at the
//!   threshold when the judge's means reach it and runs to the round limit
//!   when they do not, synthesising and curating data in between;
//! - resuming with a changed configuration is refused unless `--force`.
//!
//! Needs the model packages (scripts/setup.sh); without them the tests say
//! so and pass, unless `TECHNE_REQUIRE_MODELS=1`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use techne_integration_tests::{artifacts, cli_command, models_available, text};

const CLI: &str = env!("CARGO_BIN_EXE_techne-with-test-doubles");

/// The loops train models: one at a time on a small machine.
static HEAVY: Mutex<()> = Mutex::new(());

/// Starts a test that runs a loop: `None` (the test then passes) without
/// the model packages; otherwise the lock that runs loops one at a time and
/// a scratch directory.
fn start_heavy_test() -> Option<(MutexGuard<'static, ()>, tempfile::TempDir)> {
    if !models_available() {
        return None;
    }
    let heavy = HEAVY.lock().unwrap_or_else(PoisonError::into_inner);
    Some((heavy, tempfile::tempdir().unwrap()))
}

/// The registry the loops' models go to, shared by the tests of one build
/// (the default model is imported into it once).
fn registry_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("loops-registry")
}

fn remove_models(prefix: &str) {
    if let Ok(registry) = techne_inference::Registry::open(registry_dir()) {
        for round in 1..=4 {
            let _ = registry.remove(&format!("{prefix}-r{round}"));
        }
    }
}

fn command(args: &[&str]) -> Command {
    cli_command(CLI, args, &Path::new(env!("CARGO_TARGET_TMPDIR")).join("loops-cache"))
}

fn techne(args: &[&str]) -> Output {
    command(args).output().expect("run the techne CLI")
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data")
}

fn loop_state(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("loop.json")).expect("loop.json");
    serde_json::from_str(&text).expect("loop.json is JSON")
}

fn steps(dir: &Path) -> Vec<(u64, String)> {
    std::fs::read_to_string(dir.join("steps.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| (v["round"].as_u64().unwrap_or(99), v["step"].as_str().unwrap_or("").to_string()))
        .collect()
}

/// Start `techne loop CONFIG` and kill -9 it once `step` of `round` is
/// recorded in `out`'s steps.jsonl.
fn kill_after_step(config: &Path, out: &Path, round: u64, step: &str) {
    let mut child =
        command(&["loop", config.to_str().unwrap()]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        if steps(out).iter().any(|(r, s)| *r == round && s == step) {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the loop ended before it could be killed: {status}");
        }
        assert!(Instant::now() < deadline, "round {round} never completed `{step}`");
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// The `[run]` and `[models.student]` tables every loop configuration starts
/// with: run `name` writes to `out`, and the student is the default model in
/// the tests' registry.
fn run_and_student(name: &str, seed: u64, out: &Path) -> String {
    format!(
        r#"
[run]
name = "{name}"
seed = {seed}
concurrency = 2
output-dir = "{out}"

[models.student]
backend = "local"
model = "default"
registry = "{registry}"
"#,
        out = out.display(),
        registry = registry_dir().display(),
    )
}

/// The loops' training: 2 steps of 64-token sequences.
const TINY_TRAINING: &str = r#"[loop.training]
max-steps = 2
max-seq-len = 64
batch-size = 2
merged-format = "q8_0"
"#;

fn self_evolution_config(name: &str, out: &Path, fragments: &Path) -> String {
    format!(
        r#"{head}
[plugins.evolution]
path = "{plugin}"
allowed-models = ["student"]
default-model = "student"

[plugins.evolution.params]
max-tokens = 24
max-ifd = 100.0

[loop]
kind = "self-evolution"
rounds = 2
strategy = "evolution"
model = "student"

{training}
[loop.self-evolution]
fragments = "{fragments}"
eval = "{eval}"
eval-limit = 2
answer-max-tokens = 16
"#,
        head = run_and_student(name, 3, out),
        training = TINY_TRAINING,
        plugin = artifacts::SELF_EVOLUTION,
        fragments = fragments.display(),
        eval = examples().join("ops-eval.jsonl").display(),
    )
}

#[test]
fn self_evolution_loop_killed_mid_round_resumes_without_redoing_steps() {
    let Some((_heavy, tmp)) = start_heavy_test() else {
        return;
    };
    let name = "loops-test-se";
    remove_models(name);
    // Two real fragments and an empty one, which the strategy rejects.
    let all = std::fs::read_to_string(examples().join("ops-fragments.jsonl")).unwrap();
    let mut fragments: Vec<&str> = all.lines().take(2).collect();
    fragments.insert(1, r#"{"fragment": "   "}"#);
    let fragments_path = tmp.path().join("fragments.jsonl");
    std::fs::write(&fragments_path, fragments.join("\n")).unwrap();
    let out = tmp.path().join("loop");
    let config = tmp.path().join("loop.toml");
    std::fs::write(&config, self_evolution_config(name, &out, &fragments_path)).unwrap();

    // Kill -9 once round 1's selection is recorded: in the middle of its training.
    kill_after_step(&config, &out, 1, "select");
    let before = steps(&out);
    assert!(!before.iter().any(|(r, s)| *r == 1 && s == "train"), "killed before round 1's training completed");

    // A fresh start in the same directory is refused; --resume finishes it.
    let again = techne(&["loop", config.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(3), "{}", text(&again.stderr));
    assert!(text(&again.stderr).contains("--resume"), "{}", text(&again.stderr));
    let resumed = techne(&["loop", "--resume", out.to_str().unwrap()]);
    assert!(resumed.status.success(), "stdout: {}\nstderr: {}", text(&resumed.stdout), text(&resumed.stderr));

    // Every step ran exactly once, across the kill.
    let after = steps(&out);
    let mut counts: BTreeMap<(u64, String), usize> = BTreeMap::new();
    for step in &after {
        *counts.entry(step.clone()).or_default() += 1;
    }
    assert!(counts.values().all(|&n| n == 1), "a step was redone: {after:?}");
    assert_eq!(&after[..before.len()], &before[..], "the steps done before the kill were kept");
    for round in 1..=2 {
        for step in ["write-pairs", "select", "train", "evaluate", "done"] {
            assert!(counts.contains_key(&(round, step.to_string())), "round {round} lacks {step}: {after:?}");
        }
    }
    assert!(counts.contains_key(&(0, "baseline".to_string())));

    // Per-round metrics, registered models with lineage, the recorded failure.
    let state = loop_state(&out);
    assert_eq!(state["finished"], "round limit (2) reached");
    assert_eq!(state["current_model"], format!("{name}-r2"));
    let registry = techne_inference::Registry::open(registry_dir()).unwrap();
    for round in 1..=2u64 {
        let record = &state["rounds"][(round - 1) as usize];
        let metrics = &record["metrics"];
        for metric in ["bleu4", "rouge1", "rouge2", "rouge-l"] {
            let v = metrics[metric].as_f64().unwrap_or(-1.0);
            assert!((0.0..=1.0).contains(&v), "round {round} {metric} = {v}");
        }
        assert_eq!(metrics["pairs_written"], 2.0, "round {round}: two fragments give pairs");
        assert_eq!(record["failures"], 1, "round {round}: the empty fragment failed");
        assert_eq!(record["losses"].as_array().map(Vec::len), Some(2), "two training steps");
        let model = format!("{name}-r{round}");
        assert_eq!(record["model"], model);
        let entry = registry.get(&model).expect("the round's model is registered");
        assert!(entry.dir.join("lineage.json").is_file(), "lineage recorded for {model}");
    }
    assert_eq!(state["rounds"][1]["metrics"]["candidates"], 4.0, "generation 2 selects among both generations");
    let failures = std::fs::read_to_string(out.join("round-001/failures.jsonl")).unwrap();
    assert!(failures.contains("fragment-1") && failures.contains("empty"), "{failures}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(report.contains("| 2 |") && report.contains("bleu4"), "{report}");
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("Training loss per round"));
    remove_models(name);
}

#[test]
fn a_strategy_s_key_value_state_is_kept_across_rounds_and_a_kill() {
    let Some((_heavy, tmp)) = start_heavy_test() else {
        return;
    };
    let name = "loops-test-state";
    remove_models(name);
    let all = std::fs::read_to_string(examples().join("ops-fragments.jsonl")).unwrap();
    let fragments_path = tmp.path().join("fragments.jsonl");
    std::fs::write(&fragments_path, all.lines().take(2).collect::<Vec<_>>().join("\n")).unwrap();
    let out = tmp.path().join("loop");
    let config = tmp.path().join("loop.toml");
    // The counting strategy numbers its pairs in its state; one item at a
    // time, since the count is a read-modify-write.
    let config_text = self_evolution_config(name, &out, &fragments_path)
        .replace(artifacts::SELF_EVOLUTION, artifacts::COUNTING_EVOLUTION)
        .replace("concurrency = 2", "concurrency = 1")
        .replace("[plugins.evolution.params]\nmax-tokens = 24\nmax-ifd = 100.0\n", "");
    std::fs::write(&config, config_text).unwrap();

    // Killed in round 1's training, after the state was written by two
    // write-pair calls and a select, then resumed.
    kill_after_step(&config, &out, 1, "select");
    let resumed = techne(&["loop", "--resume", out.to_str().unwrap()]);
    assert!(resumed.status.success(), "stdout: {}\nstderr: {}", text(&resumed.stdout), text(&resumed.stderr));

    let questions = |round: u32| -> Vec<String> {
        let path = out.join(format!("round-{round:03}/candidates.jsonl"));
        let mut lines: Vec<(u64, String)> = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|v| (v["index"].as_u64().unwrap(), v["pair"]["pair"]["question"].as_str().unwrap().to_string()))
            .collect();
        lines.sort();
        lines.into_iter().map(|(_, q)| q).collect()
    };
    let first = questions(1);
    let second = questions(2);
    assert_eq!(first.len(), 2, "{first:?}");
    assert_eq!(second.len(), 2, "{second:?}");
    let numbers = |qs: &[String]| -> Vec<u64> {
        let mut n: Vec<u64> = qs
            .iter()
            .map(|q| q.strip_prefix("Question ").and_then(|r| r.split(' ').next()).unwrap().parse().unwrap())
            .collect();
        n.sort();
        n
    };
    assert_eq!(numbers(&first), vec![1, 2], "{first:?}");
    assert_eq!(numbers(&second), vec![3, 4], "round 2 continues round 1's count across the kill: {second:?}");
    assert!(second.iter().all(|q| q.contains("(generation 1)")), "{second:?}");

    // loop.json holds the state as of the last step (hex-encoded values).
    let state = loop_state(&out);
    assert_eq!(state["finished"], "round limit (2) reached");
    assert_eq!(state["strategy_state"]["pairs-written"], hex("4"), "{}", state["strategy_state"]);
    assert_eq!(state["strategy_state"]["selections"], hex("2"), "{}", state["strategy_state"]);
    remove_models(name);
}

fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}

fn llamaduo_config(name: &str, out: &Path, threshold: u32, rounds: u32) -> String {
    let judge = r#"{\"similarity\": 80, \"precision\": 60}"#;
    let synth = r#"[{\"prompt\": \"Explain in one sentence what a page cache is.\", \"response\": \"The page cache keeps file data in RAM.\"}, {\"prompt\": \"Explain in one sentence what a load balancer does.\", \"response\": \"It spreads requests over servers.\"}, {\"prompt\": \"Explain in one sentence what an MTU is.\", \"response\": \"A copy of a test prompt.\"}]"#;
    format!(
        r#"{head}
[models.service]
backend = "scripted"
rules = [{{ contains = "similarity", reply = "{judge}" }}]
fallback = {{ fixed = "{synth}" }}

[plugins.duo]
path = "{plugin}"
allowed-models = ["service"]
default-model = "service"

[plugins.duo.params]
pairs-per-call = 3
max-calls = 1

[loop]
kind = "llamaduo"
rounds = {rounds}
strategy = "duo"
model = "student"

{training}
[loop.llamaduo]
data = "{data}"
test-size = 2
service-model = "service"
response-max-tokens = 12
threshold = {threshold}
synthetic-per-round = 3
judge-repeats = 2
"#,
        head = run_and_student(name, 5, out),
        training = TINY_TRAINING,
        plugin = artifacts::LLAMADUO,
        data = examples().join("llamaduo-coverage.jsonl").display(),
    )
}

#[test]
fn llamaduo_loop_stops_at_the_threshold_or_runs_to_the_round_limit() {
    let Some((_heavy, tmp)) = start_heavy_test() else {
        return;
    };

    // Precision 60 < 70: round 1 synthesises and curates, round 2 retrains and hits the limit.
    let name = "loops-test-duo-continue";
    remove_models(name);
    let out = tmp.path().join("continue");
    let config = tmp.path().join("continue.toml");
    std::fs::write(&config, llamaduo_config(name, &out, 70, 2)).unwrap();
    let run = techne(&["loop", config.to_str().unwrap()]);
    assert!(run.status.success(), "stdout: {}\nstderr: {}", text(&run.stdout), text(&run.stderr));
    let state = loop_state(&out);
    assert_eq!(state["finished"], "round limit (2) reached");
    let r1 = &state["rounds"][0]["metrics"];
    assert_eq!((r1["similarity"].as_f64(), r1["precision"].as_f64()), (Some(80.0), Some(60.0)));
    assert_eq!(r1["threshold_reached"], 0.0);
    assert_eq!(r1["synthesized"], 3.0);
    assert_eq!(r1["kept"], 2.0, "the pair whose prompt is a test prompt is decontaminated: {r1}");
    let r2 = &state["rounds"][1]["metrics"];
    assert_eq!(r2["synthetic_total"], 2.0, "round 2 trains on the kept synthetic pairs");
    assert_eq!(r2["train_examples"], 12.0, "10 train examples + 2 synthetic");
    assert!(r2.get("synthesized").is_none(), "no synthesis after the last round");
    let train = std::fs::read_to_string(out.join("round-002/train.jsonl")).unwrap();
    assert!(train.contains("page cache"), "{train}");
    remove_models(name);

    // Both means at least 50: the loop stops after round 1 of 3.
    let name = "loops-test-duo-stop";
    remove_models(name);
    let out = tmp.path().join("stop");
    let config = tmp.path().join("stop.toml");
    std::fs::write(&config, llamaduo_config(name, &out, 50, 3)).unwrap();
    let run = techne(&["loop", config.to_str().unwrap()]);
    assert!(run.status.success(), "stdout: {}\nstderr: {}", text(&run.stdout), text(&run.stderr));
    let state = loop_state(&out);
    assert_eq!(state["rounds"].as_array().map(Vec::len), Some(1), "{state}");
    assert!(state["finished"].as_str().unwrap_or("").contains("reached the threshold 50"), "{state}");
    assert!(!out.join("round-001/candidates.jsonl").exists(), "no synthesis once the threshold is reached");

    // A changed configuration is refused on resume, unless --force.
    std::fs::write(&config, llamaduo_config(name, &out, 55, 3)).unwrap();
    let refused = techne(&["loop", config.to_str().unwrap(), "--resume", out.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(3), "{}", text(&refused.stderr));
    assert!(text(&refused.stderr).contains("--force"), "{}", text(&refused.stderr));
    let forced = techne(&["loop", config.to_str().unwrap(), "--resume", out.to_str().unwrap(), "--force"]);
    assert!(forced.status.success(), "{}", text(&forced.stderr));
    assert_eq!(loop_state(&out)["rounds"].as_array().map(Vec::len), Some(1), "a finished loop stays finished");
    remove_models(name);
}
