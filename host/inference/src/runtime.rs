//! Loading ONNX Runtime and creating sessions.
//!
//! ONNX Runtime is loaded dynamically from a shared library: the path given to
//! [`Runtime::load`], else `ORT_DYLIB_PATH`, else the `libonnxruntime.so` that
//! ships inside the pip package `onnxruntime`. The library can be loaded once
//! per process; later calls share the same environment.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;

use crate::locate;

/// Errors raised while loading ONNX Runtime or a model into it.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// No ONNX Runtime library was found.
    #[error("ONNX Runtime was not found: set ORT_DYLIB_PATH or run `{}`", locate::ORT_INSTALL)]
    NotFound,
    /// The library exists but could not be loaded.
    #[error(
        "cannot load ONNX Runtime from {path}: {message} (install a compatible one with `{}`)",
        locate::ORT_INSTALL
    )]
    Load {
        /// The library.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A different library was already loaded in this process.
    #[error("ONNX Runtime is already loaded from {loaded}; cannot also load {requested}")]
    AlreadyLoaded {
        /// The library in use.
        loaded: PathBuf,
        /// The library asked for.
        requested: PathBuf,
    },
    /// ONNX Runtime rejected a model or a call.
    #[error("ONNX Runtime: {0}")]
    Ort(String),
}

pub(crate) fn ort_err(e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Ort(e.to_string())
}

/// A loaded ONNX Runtime (cheap to clone; keeps the environment alive).
#[derive(Clone, Debug)]
pub struct Runtime {
    env: Environment,
    dylib: PathBuf,
}

static LOADED: OnceLock<Mutex<Option<Runtime>>> = OnceLock::new();

impl Runtime {
    /// Loads ONNX Runtime from `ort_dylib`, `ORT_DYLIB_PATH` or the pip
    /// package `onnxruntime`, in that order.
    pub fn load(ort_dylib: Option<PathBuf>) -> Result<Runtime, RuntimeError> {
        let cell = LOADED.get_or_init(|| Mutex::new(None));
        let mut guard = cell.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rt) = guard.as_ref() {
            if let Some(req) = ort_dylib
                && !same_file(&req, &rt.dylib)
            {
                return Err(RuntimeError::AlreadyLoaded { loaded: rt.dylib.clone(), requested: req });
            }
            return Ok(rt.clone());
        }
        let path = match ort_dylib {
            Some(p) => p,
            None => locate::onnxruntime_dylib().ok_or(RuntimeError::NotFound)?,
        };
        if !path.exists() {
            return Err(RuntimeError::Load { path, message: "file does not exist".into() });
        }
        let builder =
            ort::init_from(&path).map_err(|e| RuntimeError::Load { path: path.clone(), message: e.to_string() })?;
        let env = builder
            .with_name("techne")
            .build()
            .map_err(|e| RuntimeError::Load { path: path.clone(), message: e.to_string() })?;
        let rt = Runtime { env, dylib: path };
        *guard = Some(rt.clone());
        Ok(rt)
    }

    /// The shared library in use.
    pub fn dylib_path(&self) -> &Path {
        &self.dylib
    }

    /// Opens a session on an ONNX file with `threads` intra-op threads
    /// (0 = [`default_threads`]) and ONNX Runtime's operators only. With
    /// `TECHNE_ORT_PROFILE=PREFIX` in the environment, ONNX Runtime writes a
    /// per-operator profile of the session to `PREFIX_<date>.json` when it is
    /// dropped (for developers: where a decode step spends its time).
    pub fn session(&self, model: &Path, threads: usize) -> Result<Session, RuntimeError> {
        self.open(model, threads, false)
    }

    /// [`Runtime::session`] for a language model, with techne's operators
    /// registered ([`crate::kernels`], the `ai.techne` domain of techne's
    /// GGUF exports).
    pub fn llm_session(&self, model: &Path, threads: usize) -> Result<Session, RuntimeError> {
        self.open(model, threads, true)
    }

    fn open(&self, model: &Path, threads: usize, techne_kernels: bool) -> Result<Session, RuntimeError> {
        let threads = if threads == 0 { default_threads() } else { threads };
        let mut builder = Session::builder(&self.env)
            .map_err(ort_err)?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(ort_err)?
            .with_intra_threads(threads)
            .map_err(ort_err)?
            .with_inter_threads(1)
            .map_err(ort_err)?;
        if techne_kernels {
            builder = builder
                .with_operators(crate::kernels::ort_operator::operator_domain(threads).map_err(ort_err)?)
                .map_err(ort_err)?;
        }
        if let Some(prefix) = std::env::var_os(PROFILE_ENV).filter(|p| !p.is_empty()) {
            builder = builder.with_profiling(Path::new(&prefix)).map_err(ort_err)?;
        }
        // ONNX Runtime records a custom operator domain in a process-wide
        // table the first time a session uses it, checking and then adding
        // without a lock: two sessions created at once can both add it, and
        // the second fails ("the domain is already exist"). One session
        // with techne's operators is created at a time.
        static CUSTOM_DOMAIN_SESSIONS: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time =
            techne_kernels.then(|| CUSTOM_DOMAIN_SESSIONS.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        builder.commit_from_file(model).map_err(|e| RuntimeError::Ort(format!("{}: {e}", model.display())))
    }
}

/// The environment variable that turns on ONNX Runtime's profiler for every
/// session ([`Runtime::session`]).
pub const PROFILE_ENV: &str = "TECHNE_ORT_PROFILE";

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The number of physical CPU cores available to this process (at least 1):
/// one thread per core, as ONNX Runtime recommends for its intra-op pool
/// (hyperthreads share a core's vector units, which the kernels saturate).
pub fn default_threads() -> usize {
    let logical = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    threads_for(&cpuinfo, logical)
}

/// [`default_threads`] for a machine whose `/proc/cpuinfo` reads `cpuinfo`
/// and that lets this process run `logical` threads at once.
fn threads_for(cpuinfo: &str, logical: usize) -> usize {
    physical_cores(cpuinfo).unwrap_or(logical).clamp(1, logical.max(1))
}

/// Distinct (physical id, core id) pairs in a `/proc/cpuinfo` text.
fn physical_cores(info: &str) -> Option<usize> {
    let mut cores = std::collections::HashSet::new();
    let (mut phys, mut core) = (None::<String>, None::<String>);
    for line in info.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            if let (Some(p), Some(c)) = (phys.take(), core.take()) {
                cores.insert((p, c));
            }
            continue;
        }
        let mut kv = line.splitn(2, ':');
        match (kv.next().map(str::trim), kv.next().map(str::trim)) {
            (Some("physical id"), Some(v)) => phys = Some(v.to_string()),
            (Some("core id"), Some(v)) => core = Some(v.to_string()),
            _ => {}
        }
    }
    (!cores.is_empty()).then_some(cores.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `/proc/cpuinfo` of `sockets × cores` physical cores with `smt`
    /// hardware threads each.
    fn cpuinfo(sockets: usize, cores: usize, smt: usize) -> String {
        let mut text = String::new();
        let mut processor = 0;
        for _ in 0..smt {
            for socket in 0..sockets {
                for core in 0..cores {
                    text += &format!(
                        "processor\t: {processor}\nphysical id\t: {socket}\nsiblings\t: {}\ncore id\t\t: {core}\nflags\t\t: fpu avx2\n\n",
                        cores * smt
                    );
                    processor += 1;
                }
            }
        }
        text
    }

    #[test]
    fn one_thread_per_physical_core_on_small_and_large_machines() {
        // This 2-core VM: two cores, one thread each.
        assert_eq!(threads_for(&cpuinfo(1, 2, 1), 2), 2);
        // A 64-core server: two sockets of 32 cores with two hardware threads each.
        assert_eq!(threads_for(&cpuinfo(2, 32, 2), 128), 64);
        // A container limited to 8 of those 128 threads.
        assert_eq!(threads_for(&cpuinfo(2, 32, 2), 8), 8);
        // No core topology (some VMs, other systems): every logical CPU.
        assert_eq!(threads_for("processor\t: 0\n\nprocessor\t: 1\n", 2), 2);
        assert_eq!(threads_for("", 0), 1);
    }
}
