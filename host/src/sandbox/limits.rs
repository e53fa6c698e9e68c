//! Per-plugin sandbox limits and the resource limiter that enforces the
//! memory, table and instance caps inside a store.

use std::time::Duration;

/// The limits a plugin runs under; set per plugin in the run configuration
/// (`[plugins.NAME.limits]`), with these defaults.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SandboxLimits {
    /// Wall-clock deadline for one export call, host calls included.
    pub timeout: Duration,
    /// Cap on the plugin's linear memory, in bytes.
    pub memory_bytes: u64,
    /// Cap on elements of any one table.
    pub table_elements: usize,
    /// Cap on core instances in one store.
    pub instances: usize,
    /// Cap on tables in one store.
    pub tables: usize,
    /// Cap on linear memories in one store.
    pub memories: usize,
    /// Bytes the host may send into the plugin during one call: the export's
    /// arguments plus every host-call result.
    pub max_input_bytes: u64,
    /// Bytes the plugin may send out during one call: its result plus every
    /// host-call argument.
    pub max_output_bytes: u64,
    /// Cap on the total size of the plugin's key/value state.
    pub state_bytes: u64,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(120),
            memory_bytes: 256 << 20,
            table_elements: 100_000,
            instances: 32,
            tables: 32,
            memories: 4,
            max_input_bytes: 16 << 20,
            max_output_bytes: 16 << 20,
            state_bytes: 16 << 20,
        }
    }
}

/// Enforces [`SandboxLimits`] for one store and remembers which cap was hit,
/// so a trap that follows (a Rust guest aborts when allocation fails) can be
/// reported as the limit it really was.
#[derive(Debug)]
pub(crate) struct SandboxLimiter {
    limits: SandboxLimits,
    /// Set when the plugin tried to grow memory past its cap.
    pub(crate) memory_cap_hit: bool,
    /// Set when the plugin tried to grow a table past its cap.
    pub(crate) table_cap_hit: bool,
}

impl SandboxLimiter {
    pub(crate) fn new(limits: SandboxLimits) -> Self {
        Self { limits, memory_cap_hit: false, table_cap_hit: false }
    }
}

impl wasmtime::ResourceLimiter for SandboxLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired as u64 > self.limits.memory_bytes {
            self.memory_cap_hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.limits.table_elements {
            self.table_cap_hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.limits.instances
    }

    fn tables(&self) -> usize {
        self.limits.tables
    }

    fn memories(&self) -> usize {
        self.limits.memories
    }
}

impl SandboxLimiter {
    /// The limits being enforced.
    pub(crate) fn limits(&self) -> &SandboxLimits {
        &self.limits
    }
}
