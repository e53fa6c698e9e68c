//! Runs that survive: a warm cache makes no model calls, `--cache-only`
//! replays without a backend, a run killed with SIGKILL at random points
//! resumes to exactly the uninterrupted results without requesting a
//! finished item again, SIGINT finishes the items in flight and exits 130,
//! a changed configuration is refused unless forced, and a spent budget
//! stops the run cleanly and resumably.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use techne_integration_tests::{artifacts, cli_command};

const CLI: &str = env!("CARGO_BIN_EXE_techne-with-test-doubles");

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    /// A rewriter pipeline over `items` questions; the scripted model answers
    /// after `delay_ms` and logs every request.
    fn new(items: usize, delay_ms: u64, concurrency: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut data = String::new();
        for i in 0..items {
            data.push_str(&format!("{{\"id\": \"q{i:02}\", \"question\": \"Question q{i:02} end\"}}\n"));
        }
        std::fs::write(dir.path().join("items.jsonl"), data).unwrap();
        let fixture = Self { dir };
        fixture.write_config(delay_ms, concurrency, "");
        fixture
    }

    fn write_config(&self, delay_ms: u64, concurrency: usize, extra_run: &str) {
        let config = format!(
            r#"
[run]
name = "survive"
seed = 3
concurrency = {concurrency}
{extra_run}

[models.scripted]
backend = "scripted"
delay-ms = {delay_ms}
request-log = "requests.log"
rules = [{{ contains = "Rewriting question", reply = "Rewritten: please answer this" }}]

[plugins.rewriter]
path = "{}"
allowed-models = ["scripted"]
default-model = "scripted"

[dataset]
path = "items.jsonl"
id-field = "id"

[pipeline]
rewriter = "rewriter"
answer-model = "scripted"
system-prompt = "Answer briefly."
"#,
            artifacts::QUESTION_REWRITER
        );
        std::fs::write(self.path("run.toml"), config).unwrap();
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = cli_command(CLI, args, &self.path("cache"));
        command.current_dir(self.dir.path());
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("requests.log")).unwrap_or_default().lines().map(str::to_string).collect()
    }
}

/// results.jsonl without the timing field.
fn results(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("elapsed_ms");
            v
        })
        .collect()
}

fn journal_ids(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("journal.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect()
}

fn stdout(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn a_warm_cache_makes_no_model_calls_and_cache_only_replays() {
    let f = Fixture::new(6, 0, 3);
    let out = f.run(&["run", "run.toml", "--output-dir", "first"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let cold = f.requests().len();
    assert_eq!(cold, 12, "two requests per item");

    let out = f.run(&["run", "run.toml", "--output-dir", "second"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(f.requests().len(), cold, "a warm cache makes zero model calls");
    assert!(stdout(&out).contains("0 model requests, 12 cache hits"), "{}", stdout(&out));
    assert_eq!(results(&f.path("first")), results(&f.path("second")));

    let out = f.run(&["run", "run.toml", "--output-dir", "replay", "--cache-only"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(f.requests().len(), cold);
    assert_eq!(results(&f.path("first")), results(&f.path("replay")));

    let out = f.run(&["run", "run.toml", "--output-dir", "bypass", "--no-cache"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(f.requests().len(), 2 * cold, "--no-cache calls the model again");

    // A different seed is a different request: replay has nothing to offer.
    let out = f.run(&["run", "run.toml", "--output-dir", "other-seed", "--cache-only", "--seed", "4"]);
    assert_eq!(out.status.code(), Some(5), "{}", stdout(&out));
    let r = results(&f.path("other-seed"));
    assert!(r.iter().all(|v| v["failure"]["message"].as_str().unwrap_or("").contains("--cache-only")), "{r:?}");
}

#[test]
fn a_run_killed_at_random_points_resumes_to_the_uninterrupted_results() {
    let f = Fixture::new(24, 40, 4);
    // A first run compiles the plugin into the component cache; the timed,
    // clean run after it starts as fast as the killed runs will.
    let out = f.run(&["run", "run.toml", "--output-dir", "warm-up", "--no-cache"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let clean_start = Instant::now();
    let out = f.run(&["run", "run.toml", "--output-dir", "clean", "--no-cache"]);
    // Kill points spread over the run's own duration on this machine.
    let window_ms = (clean_start.elapsed().as_millis() as u64 * 7 / 10).max(50);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let expected = results(&f.path("clean"));
    assert_eq!(expected.len(), 24);

    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut interrupted_runs = 0;
    for trial in 0..10 {
        let out_dir = format!("killed-{trial}");
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let kill_after = Duration::from_millis(20 + state % window_ms);
        let mut child = f
            .command(&["run", "run.toml", "--output-dir", &out_dir, "--no-cache"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while start.elapsed() < kill_after {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let dir = f.path(&out_dir);
        let finished_before = journal_ids(&dir);
        if finished_before.len() < 24 {
            interrupted_runs += 1;
        }
        // Tear the journal's last line on some trials, as a crash mid-write would.
        if trial % 3 == 1 && dir.join("journal.jsonl").exists() {
            use std::io::Write;
            let mut j = std::fs::OpenOptions::new().append(true).open(dir.join("journal.jsonl")).unwrap();
            j.write_all(b"{\"id\":\"q99\",\"inp").unwrap();
        }
        let log_before = f.requests().len();
        let resumed = if dir.join("run.json").exists() {
            f.run(&["run", "--resume", &out_dir, "--no-cache"])
        } else {
            // Killed before the run directory existed: start it again.
            f.run(&["run", "run.toml", "--output-dir", &out_dir, "--no-cache", "--overwrite"])
        };
        assert_eq!(resumed.status.code(), Some(0), "trial {trial}: {}", stdout(&resumed));
        assert_eq!(results(&dir), expected, "trial {trial}: resumed results differ");
        let after: Vec<String> = f.requests()[log_before..].to_vec();
        for id in &finished_before {
            let needle = format!("Question {id} end");
            assert!(
                !after.iter().any(|r| r.contains(&needle)),
                "trial {trial}: finished item {id} was requested again"
            );
        }
    }
    eprintln!("{interrupted_runs} of 10 kills interrupted the run");
    assert!(interrupted_runs >= 5, "only {interrupted_runs} of 10 kills interrupted the run; the test proves little");
}

#[test]
fn sigint_finishes_items_in_flight_and_exits_130_then_resumes() {
    let f = Fixture::new(40, 40, 2);
    let child =
        f.command(&["run", "run.toml", "--output-dir", "int", "--no-cache"]).stdout(Stdio::piped()).spawn().unwrap();
    // Interrupt once the run is under way: a few items journaled.
    let started = Instant::now();
    while journal_ids(&f.path("int")).len() < 2 && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stdout(&out));
    assert!(stdout(&out).contains("--resume"), "{}", stdout(&out));
    let dir = f.path("int");
    let journaled = journal_ids(&dir);
    assert!(!journaled.is_empty() && journaled.len() < 40, "{} items journaled", journaled.len());
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["stopped"]["reason"], "interrupted");
    assert_eq!(
        summary["items"].as_u64().unwrap() as usize,
        journaled.len(),
        "every started item finished and was journaled"
    );
    let out = f.run(&["run", "--resume", "int", "--no-cache"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(results(&dir).len(), 40);
}

#[test]
fn resuming_with_a_changed_configuration_is_refused_unless_forced() {
    let f = Fixture::new(4, 0, 2);
    let out = f.run(&["run", "run.toml", "--output-dir", "r"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    // Running again into the same directory needs --resume or --overwrite.
    let out = f.run(&["run", "run.toml", "--output-dir", "r"]);
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    assert!(stdout(&out).contains("--resume"), "{}", stdout(&out));
    f.write_config(0, 3, "");
    let out = f.run(&["run", "--resume", "r", "run.toml"]);
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    assert!(stdout(&out).contains("another configuration"), "{}", stdout(&out));
    let out = f.run(&["run", "--resume", "r", "run.toml", "--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let out = f.run(&["run", "--resume", "nowhere"]);
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
}

#[test]
fn a_spent_budget_stops_cleanly_and_the_run_resumes() {
    let f = Fixture::new(10, 0, 1);
    let out = f.run(&["run", "run.toml", "--output-dir", "b", "--no-cache", "--max-requests", "6"]);
    assert_eq!(out.status.code(), Some(8), "{}", stdout(&out));
    assert!(stdout(&out).contains("request budget is spent"), "{}", stdout(&out));
    assert_eq!(journal_ids(&f.path("b")).len(), 3, "three items of two requests each fit in six requests");
    let out = f.run(&["run", "--resume", "b", "--no-cache"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(results(&f.path("b")).len(), 10);
    assert_eq!(f.requests().len(), 20, "no item was requested twice");
}

#[test]
fn a_cost_budget_stops_the_run_and_needs_prices() {
    let f = Fixture::new(8, 0, 1);
    // The scripted model counts words as tokens; price generated tokens at
    // 1 per token (1e6 per million) and stop at 12.
    f.write_config(0, 1, "max-cost = 12.0\n[run.prices]\nscripted = { prompt = 0.0, completion = 1000000.0 }\n");
    let out = f.run(&["run", "run.toml", "--output-dir", "c", "--no-cache"]);
    assert_eq!(out.status.code(), Some(8), "{}", stdout(&out));
    assert!(stdout(&out).contains("cost budget is spent"), "{}", stdout(&out));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(f.path("c/summary.json")).unwrap()).unwrap();
    let cost = summary["usage"]["cost"].as_f64().unwrap();
    assert!(cost >= 12.0, "{cost}");
    let finished = journal_ids(&f.path("c")).len();
    assert!(finished > 0 && finished < 8, "{finished}");
    let out = f.run(&["run", "--resume", "c", "--no-cache", "--max-cost", "1000"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(results(&f.path("c")).len(), 8);

    f.write_config(0, 1, "max-cost = 1.0\n");
    let out = f.run(&["run", "run.toml", "--output-dir", "d"]);
    assert_eq!(out.status.code(), Some(3), "a cost budget without prices is a configuration error");
    assert!(stdout(&out).contains("[run.prices]"), "{}", stdout(&out));
}
