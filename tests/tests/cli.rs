//! The `techne` CLI end to end: the rewriter pipeline, documented exit
//! codes, configuration errors with locations, plugin inspection and
//! scaffolding. Runs the CLI built with the scripted test-double backend.

use std::path::Path;
use std::process::{Command, Output};

use techne_integration_tests::{artifacts, rewriter_versus_baseline_tables, run_cli, text, write_file as write};

const CLI: &str = env!("CARGO_BIN_EXE_techne-with-test-doubles");

fn techne(args: &[&str], dir: &Path) -> Output {
    run_cli(CLI, args, dir, &Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-cache"))
}

/// A rewriter pipeline over a JSONL dataset; the scripted model rewrites on
/// the paper's prompt and answers the rewritten question.
fn rewriter_config(rewriter: &str) -> String {
    format!(
        r#"
[run]
name = "rewriter-demo"
seed = 7
concurrency = 3

[models.scripted]
backend = "scripted"
rules = [
  {{ contains = "Rewriting question to make it more understandable, just give me the rewritten question without any other word: capital", reply = "\"What is the capital city of France?\"" }},
  {{ contains = "Rewriting question to make it more understandable", reply = "Rewritten question: How many legs does a spider have?" }},
  {{ contains = "capital city of France", reply = "Paris" }},
  {{ contains = "legs does a spider", reply = "Eight" }},
]

[plugins.rewriter]
path = "{rewriter}"
allowed-models = ["scripted"]
default-model = "scripted"

[plugins.rewriter.limits]
timeout-ms = 5000
memory-mib = 64

[dataset]
path = "questions.jsonl"
input-field = "q"
reference-field = "a"
id-field = "id"

[pipeline]
rewriter = "rewriter"
answer-model = "scripted"
"#
    )
}

#[test]
fn the_rewriter_pipeline_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "questions.jsonl",
        "{\"id\": \"fr\", \"q\": \"capital france??\", \"a\": \"Paris\"}\n{\"id\": \"sp\", \"q\": \"spider legs how many\", \"a\": \"8\"}\n",
    );
    write(dir.path(), "run.toml", &rewriter_config(artifacts::QUESTION_REWRITER));
    let out = techne(&["config", "check", "run.toml"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("question → rewriter(rewriter) → answer-model(scripted)"),
        "{}",
        text(&out.stdout)
    );

    let out = techne(&["run", "run.toml"], dir.path());
    assert_eq!(out.status.code(), Some(0), "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
    let run_dir = dir.path().join("runs").join("rewriter-demo");
    let results: Vec<serde_json::Value> = std::fs::read_to_string(run_dir.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["id"], "fr");
    // The plugin strips the quotes and the label the model added.
    assert_eq!(results[0]["rewritten"], "What is the capital city of France?");
    assert_eq!(results[0]["answer"], "Paris");
    assert_eq!(results[1]["rewritten"], "How many legs does a spider have?");
    assert_eq!(results[1]["answer"], "Eight");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["succeeded"], 2);
    assert_eq!(summary["plugins"]["rewriter"]["role"], "rewriter");
    assert!(run_dir.join("config.toml").is_file());

    // A flag overrides the file: another output directory.
    let out = techne(&["run", "run.toml", "--output-dir", "elsewhere"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(dir.path().join("elsewhere").join("results.jsonl").is_file());
}

#[test]
fn failing_items_are_recorded_and_exit_5() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
inputs = ["echo:fine", "panic", "loop", "echo:also fine"]

[run]
name = "chaos"

[plugins.chaos]
path = "{}"

[plugins.chaos.limits]
timeout-ms = 300

[pipeline]
solver = "chaos"
"#,
        artifacts::CHAOS
    );
    write(dir.path(), "run.toml", &config);
    let out = techne(&["run", "run.toml"], dir.path());
    assert_eq!(out.status.code(), Some(5), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("4 items, 2 succeeded, 2 failed"), "{stdout}");
    let results = std::fs::read_to_string(dir.path().join("runs/chaos/results.jsonl")).unwrap();
    let kinds: Vec<String> = results
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|v| v["failure"]["kind"].as_str().unwrap_or("ok").to_string())
        .collect();
    assert_eq!(kinds, ["ok", "panic", "timeout", "ok"]);
}

#[test]
fn configuration_errors_name_file_line_column_and_key_and_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[run]\nseed = = 1\n", "run.toml:2:", ""),
        (
            "inputs = [\"q\"]\n[pipeline]\nsolver = \"s\"\n[plugins.s]\npath = \"s.wasm\"\nsha = \"x\"\n",
            "run.toml:6:1",
            "unknown field `sha`",
        ),
        (
            "inputs = [\"q\"]\n[run]\nconcurrency = \"two\"\n[pipeline]\nsolver = \"s\"\n",
            "run.toml:3:",
            "run.concurrency",
        ),
        ("inputs = [\"q\"]\n[pipeline]\nrewriter = \"nope\"\nsolver = \"s\"\n", "run.toml:3:1", "[plugins.nope]"),
        (
            "inputs = [\"q\"]\n[models.m]\nbackend = \"telepathy\"\n[pipeline]\nanswer-model = \"m\"\n",
            "run.toml:",
            "unknown variant `telepathy`",
        ),
    ];
    for (toml, location, detail) in cases {
        write(dir.path(), "run.toml", toml);
        let out = techne(&["config", "check", "run.toml"], dir.path());
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{toml}\n{stderr}");
        assert!(stderr.contains(location), "{toml}\n{stderr}");
        assert!(stderr.contains(detail), "{toml}\n{stderr}");
    }
    let out = techne(&["config", "check", "missing.toml"], dir.path());
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));
}

#[test]
fn plugin_problems_exit_4_and_usage_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "core.wasm", "\0asm\u{1}\0\0\0");
    let config = "inputs = [\"q\"]\n[plugins.s]\npath = \"core.wasm\"\n[pipeline]\nsolver = \"s\"\n";
    write(dir.path(), "run.toml", config);
    let out = techne(&["run", "run.toml"], dir.path());
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("core WebAssembly module, not a component"), "{}", text(&out.stderr));

    let wrong_role = format!(
        "inputs = [\"q\"]\n[plugins.s]\npath = \"{}\"\n[pipeline]\nsolver = \"s\"\n",
        artifacts::QUESTION_REWRITER
    );
    write(dir.path(), "run.toml", &wrong_role);
    let out = techne(&["run", "run.toml"], dir.path());
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("which is a rewriter plugin"), "{}", text(&out.stderr));

    let out = techne(&["plugin", "inspect", artifacts::FUTURE_VERSION], dir.path());
    assert_eq!(out.status.code(), Some(4));
    let out = techne(&["run"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let out = techne(&["frobnicate"], dir.path());
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn inspect_prints_json_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let out = techne(&["plugin", "inspect", "--json", artifacts::QUESTION_REWRITER], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["role"], "rewriter");
    assert_eq!(json["metadata"]["name"], "question-rewriter");
    assert_eq!(json["sha256"].as_str().unwrap().len(), 64);
}

/// `techne plugin new` makes a project that builds with cargo for
/// wasm32-wasip2, outside this repository, and runs in techne unchanged.
#[test]
fn a_scaffolded_plugin_builds_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = techne(&["plugin", "new", "my-solver", "--world", "solver"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let project = dir.path().join("my-solver");
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("scaffold-target");
    let build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(&project)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .output()
        .unwrap();
    assert!(build.status.success(), "{}", text(&build.stderr));
    let wasm = target.join("wasm32-wasip2/release/my_solver.wasm");
    let out = techne(&["plugin", "inspect", wasm.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("techne:plugin/solver-plugin@0.1.0"), "{}", text(&out.stdout));

    let config = format!(
        r#"
inputs = ["What is the capital of France?"]
[models.scripted]
backend = "scripted"
rules = [{{ contains = "capital of France", reply = "Paris" }}]
[plugins.mine]
path = "{}"
allowed-models = ["scripted"]
default-model = "scripted"
[pipeline]
solver = "mine"
"#,
        wasm.display()
    );
    write(dir.path(), "run.toml", &config);
    let out = techne(&["run", "run.toml"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let results = std::fs::read_to_string(dir.path().join("runs/run/results.jsonl")).unwrap();
    assert!(results.contains("Paris"), "{results}");
}

/// `techne eval`: a baseline and a technique on the same items, scored,
/// with intervals and a paired comparison, on the terminal and in the report.
#[test]
fn eval_compares_techniques_on_the_same_items() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = String::new();
    for i in 0..20 {
        let (q, a) =
            if i % 2 == 0 { (format!("hard question {i}"), "Paris") } else { (format!("easy question {i}"), "Rome") };
        data.push_str(&format!("{{\"id\": \"{i}\", \"q\": \"{q}\", \"a\": \"{a}\"}}\n"));
    }
    write(dir.path(), "items.jsonl", &data);
    let config = format!(
        r#"
[run]
name = "eval"
seed = 1

[models.scripted]
backend = "scripted"
rules = [
  {{ contains = "Rewriting question", reply = "clear question" }},
  {{ contains = "clear question", reply = "Paris" }},
  {{ contains = "easy question", reply = "Rome" }},
]
fallback = {{ fixed = "I do not know" }}
{tables}
[evaluation]
metric = "contains"
extra-metrics = ["exact-match", "rouge1"]
baseline = "baseline"
"#,
        tables = rewriter_versus_baseline_tables("rewritten")
    );
    write(dir.path(), "eval.toml", &config);
    let out = techne(&["eval", "eval.toml"], dir.path());
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("| baseline | 20 | 0 | 0.500"), "{stdout}");
    assert!(stdout.contains("| rewritten | 20 | 0 |"), "{stdout}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("runs/eval/summary.json")).unwrap()).unwrap();
    let techniques = summary["techniques"].as_array().unwrap();
    assert_eq!(techniques[0]["name"], "baseline");
    assert_eq!(techniques[0]["scores"]["contains"]["mean"], 0.5);
    // The rewriter turns every question into "clear question": all answers become Paris.
    assert_eq!(techniques[1]["scores"]["contains"]["mean"], 0.5);
    assert_eq!(techniques[1]["versus_baseline"]["result"]["difference"]["mean"], 0.0);
    let report = std::fs::read_to_string(dir.path().join("runs/eval/report.md")).unwrap();
    assert!(report.contains("## Techniques"), "{report}");

    // Without [evaluation] there is nothing to compare.
    write(dir.path(), "run.toml", &config.replace("[evaluation]\nmetric = \"contains\"\nextra-metrics = [\"exact-match\", \"rouge1\"]\nbaseline = \"baseline\"\n", ""));
    let out = techne(&["eval", "run.toml"], dir.path());
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
}

#[test]
fn plugin_list_shows_roles_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    for (name, source) in [("rewriter.wasm", artifacts::QUESTION_REWRITER), ("future.wasm", artifacts::FUTURE_VERSION)]
    {
        std::fs::copy(source, dir.path().join(name)).unwrap();
    }
    std::fs::write(dir.path().join("notes.txt"), "not a plugin").unwrap();
    let out = techne(&["plugin", "list", "."], dir.path());
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "a directory with an unloadable plugin exits 4: {stdout}");
    assert!(stdout.contains("rewriter-trainer-plugin") && stdout.contains("question-rewriter 0.1.0"), "{stdout}");
    assert!(stdout.contains("future") && stdout.contains("(not loadable)") && stdout.contains("0.2.0"), "{stdout}");
    assert!(!stdout.contains("notes"), "{stdout}");
    std::fs::remove_file(dir.path().join("future.wasm")).unwrap();
    let out = techne(&["plugin", "list", "."], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}

/// A service model that is down falls back to the next model in its chain,
/// so the run keeps going (LlamaDuo's "service continuity"); without the
/// allow-listed host the configuration is refused.
#[test]
fn a_service_model_that_is_down_falls_back() {
    let dir = tempfile::tempdir().unwrap();
    // A port nobody listens on: bind, read the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = format!(
        r#"
inputs = ["What is the capital of France?", "Name a colour."]

[network]
allow-hosts = ["127.0.0.1"]

[models.service]
backend = "openai"
base-url = "http://127.0.0.1:{port}/v1"
model = "gpt-somewhere"
max-retries = 1
retry-base-ms = 10
connect-timeout-ms = 500
fallbacks = ["local"]

[models.local]
backend = "scripted"
rules = [{{ contains = "capital of France", reply = "Paris" }}]
fallback = {{ fixed = "Blue" }}

[pipeline]
answer-model = "service"
"#
    );
    write(dir.path(), "run.toml", &config);
    let out = techne(&["run", "run.toml", "--no-cache"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    let results = std::fs::read_to_string(dir.path().join("runs/run/results.jsonl")).unwrap();
    assert!(results.contains("\"answer\":\"Paris\"") && results.contains("\"answer\":\"Blue\""), "{results}");

    write(dir.path(), "run.toml", &config.replace("allow-hosts = [\"127.0.0.1\"]", "allow-hosts = []"));
    let out = techne(&["config", "check", "run.toml"], dir.path());
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("allow-hosts"), "{}", text(&out.stderr));
}
