//! The `techne` process exit codes. Scripts may rely on these; they only
//! ever gain new values.

/// Everything succeeded.
pub const SUCCESS: i32 = 0;
/// An unexpected internal error (a bug: please report it).
pub const INTERNAL: i32 = 1;
/// The command line is invalid (unknown flag, missing argument).
pub const USAGE: i32 = 2;
/// The run configuration is invalid (syntax, types, values, references).
pub const CONFIG: i32 = 3;
/// A plugin could not be loaded (not wasm, a core module, wrong WIT
/// version, missing import, sha256 mismatch, wrong role, bad parameters).
pub const PLUGIN: i32 = 4;
/// The run finished but at least one work item failed.
pub const ITEMS_FAILED: i32 = 5;
/// A file could not be read or written (dataset, output directory, scaffold).
pub const IO: i32 = 6;
/// A model could not be opened (ONNX Runtime missing, model not found or not importable), or
/// `techne models verify` found it disagreeing with llama.cpp.
pub const MODEL: i32 = 7;
/// The run stopped when its request or token budget was spent; resumable.
pub const BUDGET: i32 = 8;
/// An external trainer (`techne train --external`) failed, timed out or left no weights.
pub const EXTERNAL: i32 = 9;
/// Interrupted by SIGINT or SIGTERM.
pub const INTERRUPTED: i32 = 130;

/// Every code with its meaning, for `techne --help` and the README.
pub const TABLE: &[(i32, &str)] = &[
    (SUCCESS, "success"),
    (INTERNAL, "internal error"),
    (USAGE, "invalid command line"),
    (CONFIG, "invalid run configuration"),
    (PLUGIN, "a plugin could not be loaded"),
    (ITEMS_FAILED, "the run finished, some items failed"),
    (IO, "a file could not be read or written"),
    (MODEL, "a model could not be opened or run"),
    (BUDGET, "stopped by its budget; resumable"),
    (EXTERNAL, "an external trainer failed or left no weights"),
    (INTERRUPTED, "interrupted"),
];
