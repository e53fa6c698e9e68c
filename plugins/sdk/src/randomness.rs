//! Reproducible randomness.
//!
//! [`item_seed`] is derived by the host from the run's seed and the work
//! item's identity, so the same run configuration gives the same seed. The
//! host seeds `wasi:random` the same way, so crates that draw from it (e.g.
//! `getrandom`, `rand`'s OS RNG, `HashMap`'s hasher keys) are reproducible
//! too.

/// The seed of the current work item. (0 in native unit tests.)
pub fn item_seed() -> u64 {
    #[cfg(target_arch = "wasm32")]
    {
        crate::bindings::techne::plugin::randomness::item_seed()
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        0
    }
}
