//! Embeds the plugin SDK's sources and the plugin templates into the
//! `techne` binary, so `techne plugin new` can write a self-contained plugin
//! project anywhere (the SDK is vendored into the new project's `sdk/`).
//! A missing SDK or template file fails the build.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest.parent().expect("host/ lives in the repository root").to_path_buf();
    let sdk = root.join("plugins").join("sdk");
    let templates = manifest.join("templates").join("plugin");
    let mut files = Vec::new();
    for name in ["Cargo.toml", "build.rs"] {
        files.push((format!("sdk/{name}"), sdk.join(name)));
    }
    files.push(("sdk/wit/techne-plugin.wit".to_string(), root.join("wit").join("techne-plugin.wit")));
    let mut sources: Vec<PathBuf> = std::fs::read_dir(sdk.join("src"))
        .expect("plugins/sdk/src must exist")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    sources.sort();
    for path in sources {
        let name = path.file_name().and_then(|n| n.to_str()).expect("UTF-8 file name").to_string();
        files.push((format!("sdk/src/{name}"), path));
    }
    let mut out = String::from(
        "/// The SDK files vendored into new plugin projects: (path in the project, contents).\npub(crate) const SDK_FILES: &[(&str, &str)] = &[\n",
    );
    for (name, path) in &files {
        assert!(path.is_file(), "missing SDK file {}", path.display());
        writeln!(out, "    ({name:?}, include_str!({:?})),", path.display().to_string()).unwrap();
    }
    out.push_str("];\n\n/// The plugin templates: (template file name, contents).\npub(crate) const TEMPLATE_FILES: &[(&str, &str)] = &[\n");
    for name in [
        "Cargo.toml.tmpl",
        "README.md.tmpl",
        ".gitignore.tmpl",
        "src/lib.rs.rewriter.tmpl",
        "src/lib.rs.prompt-policy.tmpl",
        "src/lib.rs.solver.tmpl",
        "src/lib.rs.evolution-strategy.tmpl",
        "src/lib.rs.migration-strategy.tmpl",
    ] {
        let path = templates.join(name);
        assert!(path.is_file(), "missing plugin template {}", path.display());
        writeln!(out, "    ({name:?}, include_str!({:?})),", path.display().to_string()).unwrap();
    }
    out.push_str("];\n");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out_dir.join("embedded_plugin_files.rs"), out).expect("write OUT_DIR/embedded_plugin_files.rs");
    for dir in [&sdk, &templates, &root.join("wit")] {
        rerun_if_changed(dir);
    }
}

fn rerun_if_changed(path: &Path) {
    println!("cargo:rerun-if-changed={}", path.display());
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.filter_map(Result::ok) {
            let p = entry.path();
            if p.is_dir() && p.file_name().is_some_and(|n| n != "target") {
                rerun_if_changed(&p);
            }
        }
    }
}
