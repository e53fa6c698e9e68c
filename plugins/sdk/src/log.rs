//! Messages for the run log, tagged by the host with the plugin and the work
//! item. Natively (unit tests) they go to standard error.
//!
//! ```no_run
//! use techne_plugin_sdk::log;
//! log::info("rewriting");
//! log::warn(format!("empty answer after {} tries", 3));
//! ```

pub use crate::bindings::techne::plugin::logging::Level;

/// Write `message` to the run log at `level`.
pub fn log(level: Level, message: impl AsRef<str>) {
    #[cfg(target_arch = "wasm32")]
    {
        crate::bindings::techne::plugin::logging::log(level, message.as_ref());
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        eprintln!("[{}] {}", level_name(level), message.as_ref());
    }
}

/// Fine-grained tracing.
pub fn trace(message: impl AsRef<str>) {
    log(Level::Trace, message);
}

/// Debugging detail.
pub fn debug(message: impl AsRef<str>) {
    log(Level::Debug, message);
}

/// Normal progress.
pub fn info(message: impl AsRef<str>) {
    log(Level::Info, message);
}

/// Something unexpected that the plugin recovered from.
pub fn warn(message: impl AsRef<str>) {
    log(Level::Warn, message);
}

/// A failure.
pub fn error(message: impl AsRef<str>) {
    log(Level::Error, message);
}

/// The level's name as the WIT spells it, e.g. `warn`.
pub fn level_name(level: Level) -> &'static str {
    match level {
        Level::Trace => "trace",
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    }
}
