//! techne: run LLM-optimization techniques as sandboxed WebAssembly
//! components, with the models they need served by the host.
//!
//! The crate is laid out as the architecture:
//! - [`cli`]: the thin command-line layer (`techne run`, `techne plugin …`).
//! - [`config`]: run configurations (TOML) with precise error locations.
//! - [`sandbox`]: the wasmtime engine, plugin loading, limits and typed failures.
//! - [`capabilities`]: the host side of each `techne:plugin` interface.
//! - [`backends`]: the models behind the capabilities.
//! - [`runs`]: datasets, pipelines and run output.
//! - [`loops`]: multi-round loops (`techne loop`): strategy plugins decide, the host generates, trains, evaluates.
//! - [`collect`]: training-data collection driven by plugins' training extensions.
//! - [`data`]: the catalog of public datasets and `techne data fetch`.
//! - [`scaffold`]: `techne plugin new`.
//! - [`bench`]: `techne bench`.
//! - [`training`]: training runs (`techne train`, the loops): progress, control, reports, external trainers.

mod bindings;

pub mod backends;
pub mod bench;
pub mod capabilities;
pub mod cli;
pub mod collect;
pub mod config;
pub mod data;
pub mod eval;
pub mod loops;
pub mod runs;
pub mod sandbox;
pub mod scaffold;
pub mod training;
