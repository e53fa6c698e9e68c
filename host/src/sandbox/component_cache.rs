//! Compiled components on disk, so a plugin is compiled once per machine.
//!
//! Layout: `DIR/<engine-key>/<plugin-sha256>.cwasm` plus a `.sha256` file
//! holding the hash of the `.cwasm` itself. The engine key hashes wasmtime's
//! version and every engine setting that affects code
//! (`Engine::precompile_compatibility_hash`). Entries are written atomically
//! (temporary file + rename) and verified before use; a corrupt or foreign
//! entry is a miss, never a crash.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The compiled-component cache of one engine configuration.
#[derive(Clone)]
pub struct ComponentCache {
    dir: PathBuf,
    engine: Engine,
}

impl std::fmt::Debug for ComponentCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComponentCache").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl ComponentCache {
    /// The cache for `engine` under `root`.
    pub fn new(root: &Path, engine: &Engine) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let key = format!("wasmtime-{}-{:016x}", wasmtime_version(), hasher.finish());
        Self { dir: root.join(key), engine: engine.clone() }
    }

    /// The directory holding this engine's entries.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn paths(&self, plugin_sha256: &str) -> (PathBuf, PathBuf) {
        (self.dir.join(format!("{plugin_sha256}.cwasm")), self.dir.join(format!("{plugin_sha256}.cwasm.sha256")))
    }

    /// The cached compiled component, if present and intact.
    pub fn load(&self, plugin_sha256: &str) -> Option<Component> {
        let (cwasm, checksum) = self.paths(plugin_sha256);
        let bytes = std::fs::read(&cwasm).ok()?;
        let expected = std::fs::read_to_string(&checksum).ok()?;
        if hex::encode(Sha256::digest(&bytes)) != expected.trim() {
            tracing::warn!("compiled-component cache entry {} is corrupt; recompiling", cwasm.display());
            return None;
        }
        // SAFETY: the bytes were produced by `Component::serialize` of an
        // engine with the same compatibility hash (the directory key) and are
        // unchanged since (their sha256 matches the checksum written with them).
        match unsafe { Component::deserialize(&self.engine, &bytes) } {
            Ok(component) => Some(component),
            Err(e) => {
                tracing::warn!("compiled-component cache entry {} is unusable ({e:#}); recompiling", cwasm.display());
                None
            }
        }
    }

    /// Store a compiled component. Failures are logged, never fatal: the
    /// cache is an optimisation.
    pub fn store(&self, plugin_sha256: &str, component: &Component) {
        if let Err(e) = self.try_store(plugin_sha256, component) {
            tracing::warn!("cannot write the compiled-component cache in {}: {e}", self.dir.display());
        }
    }

    fn try_store(&self, plugin_sha256: &str, component: &Component) -> std::io::Result<()> {
        let bytes = component.serialize().map_err(|e| std::io::Error::other(format!("{e:#}")))?;
        std::fs::create_dir_all(&self.dir)?;
        let (cwasm, checksum) = self.paths(plugin_sha256);
        write_atomically(&cwasm, &bytes)?;
        write_atomically(&checksum, hex::encode(Sha256::digest(&bytes)).as_bytes())
    }
}

/// Write `bytes` to `path` through a temporary file in the same directory,
/// flushed to disk before it replaces `path`.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_replacing(path, bytes, true)
}

/// Write `bytes` to `path` through a temporary file and a rename; with
/// `durable`, the file is flushed to disk first. Without it a crash may
/// leave an empty or partial file, which readers must treat as missing.
pub(crate) fn write_replacing(path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let unique = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".{file_name}.{}.{unique}.tmp", std::process::id()));
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        if durable {
            file.sync_all()?;
        }
    }
    std::fs::rename(&tmp, path)
}

/// The wasmtime version this host was built with.
pub fn wasmtime_version() -> &'static str {
    "48.0.8"
}
