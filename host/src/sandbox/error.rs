//! Typed errors of the sandbox, in two layers: [`LoadError`] when a plugin
//! file cannot become a runnable plugin, [`CallError`] when one call into a
//! plugin fails. (Errors a *plugin* sees from host calls are the WIT `error`
//! variant, built in `crate::capabilities`.)

use std::path::PathBuf;
use std::time::Duration;

/// Why a plugin file could not be loaded. Each message says how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read plugin `{path}`: {source}")]
    Read {
        /// The plugin file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file's sha256 differs from the pin in the run configuration.
    #[error(
        "plugin `{path}` does not match its pinned sha256: expected {expected}, found {actual}. \
         If you rebuilt the plugin on purpose, update `sha256` in the run configuration \
         (`techne plugin inspect {path}` prints it)"
    )]
    Sha256Mismatch {
        /// The plugin file.
        path: PathBuf,
        /// The pinned hash.
        expected: String,
        /// The file's hash.
        actual: String,
    },
    /// The file is not WebAssembly at all.
    #[error(
        "`{path}` is not a WebAssembly file (it does not start with `\\0asm`). \
         Build plugins with `cargo build --target wasm32-wasip2 --release`"
    )]
    NotWasm {
        /// The file.
        path: PathBuf,
    },
    /// The file is a core module, not a component.
    #[error(
        "`{path}` is a core WebAssembly module, not a component. techne loads components: \
         build for the `wasm32-wasip2` target (which emits a component), or wrap a core module \
         with `wasm-tools component new`"
    )]
    CoreModule {
        /// The file.
        path: PathBuf,
    },
    /// The component is malformed or fails validation.
    #[error("`{path}` is not a valid WebAssembly component: {message}")]
    InvalidComponent {
        /// The file.
        path: PathBuf,
        /// What wasmtime reported.
        message: String,
    },
    /// The plugin targets another version of the WIT package.
    #[error(
        "`{path}` was built against techne:plugin@{found} (it uses `{item}`), but this host \
         supports techne:plugin@0.1.x. Rebuild the plugin against the techne:plugin@0.1.0 WIT \
         package (the SDK in plugins/sdk), or use a techne release that supports {found}"
    )]
    IncompatibleWitVersion {
        /// The file.
        path: PathBuf,
        /// The version the plugin was built against.
        found: String,
        /// The first import or export that names that version.
        item: String,
    },
    /// The plugin imports something the host does not provide.
    #[error(
        "`{path}` imports `{import}`, which techne does not provide to plugins. Plugins may import \
         only the techne:plugin interfaces (llm, scoring, embeddings, logging, state, randomness) \
         and the minimal WASI that Rust's std needs (no files, network or environment). \
         Remove the dependency that pulls in `{import}`"
    )]
    ImportNotProvided {
        /// The file.
        path: PathBuf,
        /// The import's name.
        import: String,
    },
    /// The plugin exports no role this host drives, or several.
    #[error(
        "`{path}` must export `techne:plugin/describe` and exactly one role interface \
         (rewriter, prompt-policy, solver, evolution-strategy or migration-strategy); it exports: {exports}. \
         Build it against one of the role worlds of the techne:plugin WIT package"
    )]
    NotAPlugin {
        /// The file.
        path: PathBuf,
        /// What it does export.
        exports: String,
    },
    /// Calling `describe.metadata` failed.
    #[error("reading the metadata of `{path}` failed: {source}")]
    Metadata {
        /// The file.
        path: PathBuf,
        /// Why the call failed.
        source: Box<CallError>,
    },
    /// A parameter in the run configuration is not declared by the plugin, or
    /// has the wrong kind.
    #[error("plugin `{plugin}`: {message}")]
    Parameter {
        /// The plugin's name in the run configuration.
        plugin: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// How a call into a plugin failed. The host keeps serving other items and
/// other plugins after any of these.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// The call ran past its wall-clock deadline (in wasm or inside a host call).
    #[error("timed out after {} ms (limit `timeout-ms`)", limit.as_millis())]
    Timeout {
        /// The deadline that was exceeded.
        limit: Duration,
    },
    /// The plugin tried to grow its memory past its cap.
    #[error("exceeded its memory limit of {} MiB (limit `memory-mib`)", limit_bytes >> 20)]
    MemoryLimit {
        /// The cap in bytes.
        limit_bytes: u64,
    },
    /// The plugin overflowed its stack (e.g. unbounded recursion).
    #[error("overflowed its stack (unbounded recursion?)")]
    StackOverflow,
    /// The plugin panicked.
    #[error("panicked: {message}")]
    Panic {
        /// The panic message the plugin printed, if it printed one.
        message: String,
    },
    /// The plugin trapped for another reason.
    #[error("trapped: {message}")]
    Trap {
        /// The trap and what the plugin printed to stderr.
        message: String,
    },
    /// More bytes crossed the sandbox boundary than the limits allow.
    #[error("sent {bytes} bytes {direction} in one call, over its limit of {limit} (limit `{setting}`)")]
    BoundaryLimit {
        /// `into the plugin` or `out of the plugin`.
        direction: &'static str,
        /// Bytes that crossed.
        bytes: u64,
        /// The cap.
        limit: u64,
        /// The configuration key that sets the cap.
        setting: &'static str,
    },
    /// The plugin returned something that is not a valid result.
    #[error("returned invalid output: {reason}")]
    InvalidOutput {
        /// What is wrong with it.
        reason: String,
    },
    /// The plugin returned its own error for this item.
    #[error("reported an error: {0}")]
    Plugin(PluginReportedError),
    /// The plugin could not be instantiated for this call.
    #[error("could not be instantiated: {message}")]
    Instantiation {
        /// What wasmtime reported.
        message: String,
    },
    /// A reused instance trapped earlier and can no longer be entered.
    #[error("cannot be called again: this instance trapped earlier (use a fresh instance)")]
    Poisoned,
}

impl CallError {
    /// A short, stable name of the failure kind, for results and reports.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Timeout { .. } => "timeout",
            CallError::MemoryLimit { .. } => "memory-limit",
            CallError::StackOverflow => "stack-overflow",
            CallError::Panic { .. } => "panic",
            CallError::Trap { .. } => "trap",
            CallError::BoundaryLimit { .. } => "boundary-limit",
            CallError::InvalidOutput { .. } => "invalid-output",
            CallError::Plugin(_) => "plugin-error",
            CallError::Instantiation { .. } => "instantiation",
            CallError::Poisoned => "poisoned",
        }
    }
}

/// The `plugin-error` a plugin returned, in host terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[serde(tag = "kind", content = "message", rename_all = "kebab-case")]
pub enum PluginReportedError {
    /// The plugin cannot handle the input.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A host call failed and the plugin gave up.
    #[error("a host call failed: {0}")]
    Host(String),
    /// Any other failure.
    #[error("{0}")]
    Failed(String),
}
