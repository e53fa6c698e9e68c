//! The sandbox: compiles plugin components once, instantiates them into a
//! fresh, limited store per work item, and turns every way a call can fail
//! into a typed [`CallError`].
//!
//! - [`engine`]: the wasmtime engine (component model, async, epoch
//!   interruption, pooling allocator), the linker with the capabilities and
//!   an empty WASI, and the epoch ticker.
//! - [`component_cache`]: compiled components on disk, keyed by the engine's
//!   compatibility hash and the plugin's sha256.
//! - [`plugin`]: a loaded plugin (role, metadata, pre-instantiated
//!   component) and the calls into it.
//! - [`limits`]: per-plugin limits and the resource limiter.
//! - [`store`]: what each store holds.
//! - [`inspect`]: what `techne plugin inspect` reports.

pub mod component_cache;
pub mod engine;
pub mod error;
pub mod inspect;
pub mod limits;
pub mod plugin;
pub(crate) mod store;

pub use engine::{EngineOptions, SandboxEngine};
pub use error::{CallError, LoadError, PluginReportedError};
pub use inspect::{PluginInspection, inspect_plugin};
pub use limits::SandboxLimits;
pub use plugin::{
    Example, Judgement, Metadata, Parameter, ParameterKind, Plugin, PluginInstance, PluginSpec, QaPair, Role,
    ScoredPair, Solution, TraceStep, WorkItem, sha256_hex,
};

/// Derive a child seed from a parent seed and an index (SplitMix64 finaliser),
/// so that every work item and every request gets a distinct, reproducible seed.
pub fn derive_seed(parent: u64, index: u64) -> u64 {
    let mut z = parent ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed of a work item: derived from the run seed and the item's id.
pub fn item_seed(run_seed: u64, item_id: &str) -> u64 {
    // FNV-1a of the id: stable across platforms and releases.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in item_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    derive_seed(run_seed, h)
}
