//! Run configurations: what `techne run CONFIG.toml` reads.
//!
//! A configuration names the models, the plugins (file, optional sha256 pin,
//! limits, allowed models, parameters), the inputs (a dataset file or inline
//! questions), the pipeline and the output directory. Values are layered
//! with the precedence defaults < file < environment < command-line flags
//! ([`Overrides`]). Every error names the file, line and column and the key
//! path, and says how to fix it.

mod load;
mod model;

pub use load::{ConfigError, Overrides, load_run_config, parse_run_config, resolve_run_config};
pub use model::*;
