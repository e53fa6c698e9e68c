//! The HTML report is self-contained (no scripts, no external resources),
//! carries its charts, and renders in a real headless browser (Debian's
//! chromium) to a screenshot.
//!
//! The browser part needs `chromium`; without it the test says so and
//! passes, unless `TECHNE_REQUIRE_BROWSER=1` (set by CI), where it fails.

use std::path::Path;
use std::process::Command;

use techne_integration_tests::{rewriter_versus_baseline_tables, run_cli, text, write_file};

const CLI: &str = env!("CARGO_BIN_EXE_techne-with-test-doubles");

fn make_report(dir: &Path) -> std::path::PathBuf {
    let mut data = String::new();
    for i in 0..30 {
        data.push_str(&format!(
            "{{\"id\": \"{i}\", \"q\": \"question {i} <b>&\", \"a\": \"{}\"}}\n",
            if i % 3 == 0 { "yes" } else { "no" }
        ));
    }
    std::fs::write(dir.join("items.jsonl"), data).unwrap();
    let config = format!(
        r#"
[run]
name = "report <demo>"
[models.scripted]
backend = "scripted"
fallback = {{ fixed = "no" }}
rules = [{{ contains = "Rewriting", reply = "question rewritten" }}, {{ contains = "rewritten", reply = "yes" }}]
{tables}
[evaluation]
metric = "exact-match"
"#,
        tables = rewriter_versus_baseline_tables("rewriter")
    );
    write_file(dir, "eval.toml", &config);
    let out = run_cli(CLI, &["eval", "eval.toml", "--output-dir", "out", "--no-cache"], dir, &dir.join("cache"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    dir.join("out").join("report.html")
}

#[test]
fn the_html_report_is_self_contained_and_renders_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let report = make_report(dir.path());
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(html.starts_with("<!doctype html>"));
    assert!(html.contains("techne run <code>report &lt;demo&gt;</code>"), "names are escaped");
    assert_eq!(html.matches("<svg").count(), 3, "score, latency and token charts");
    assert!(html.contains("aria-label=\"score per technique\""));
    assert!(html.contains("exact-match (95% CI)"));
    for external in ["<script", "src=\"http", "href=\"http", "<link", "@import"] {
        assert!(!html.contains(external), "the report must work offline: found {external}");
    }

    let browser = ["chromium", "chromium-browser"].into_iter().find(|b| {
        Command::new("sh")
            .args(["-c", &format!("command -v {b}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    });
    if browser.is_none() {
        assert!(
            std::env::var("TECHNE_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "TECHNE_REQUIRE_BROWSER=1 but chromium is missing: apt-get install chromium"
        );
        eprintln!("skipped the browser check: apt-get install chromium");
        return;
    }
    let png = dir.path().join("report.png");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = Command::new(root.join("scripts/screenshot-report.sh")).arg(&report).arg(&png).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    // IHDR: width and height, big-endian, at bytes 16..24.
    let width = u32::from_be_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]);
    let height = u32::from_be_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]);
    assert_eq!((width, height), (960, 1400));
    assert!(bytes.len() > 20_000, "a rendered report with charts is more than a blank page ({} bytes)", bytes.len());
    if let Ok(keep) = std::env::var("TECHNE_KEEP_SCREENSHOT") {
        std::fs::copy(&png, keep).unwrap();
    }
}
