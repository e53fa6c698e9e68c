//! The wasmtime engine every plugin runs on: component model, async
//! execution on tokio, epoch interruption for deadlines, the pooling
//! allocator, and a linker that provides the `techne:plugin` capabilities
//! plus an empty WASI (no files, environment or network).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::bindings::PluginHost;
use crate::capabilities::CapabilityContext;

use super::component_cache::ComponentCache;
use super::store::StoreData;

/// How often the epoch advances; deadlines are checked at this granularity.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Engine-wide settings.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Where compiled components are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Use the pooling allocator (fast instantiation; reserves virtual memory up front).
    pub pooling: bool,
    /// With pooling: how many plugin instances may be alive at once.
    pub max_live_instances: u32,
    /// The largest memory cap any plugin may be given, in bytes.
    pub max_memory_bytes: u64,
    /// Largest wasm stack of a plugin, in bytes.
    pub max_wasm_stack: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            cache_dir: default_cache_dir(),
            pooling: true,
            max_live_instances: 128,
            max_memory_bytes: 4 << 30,
            max_wasm_stack: 1 << 20,
        }
    }
}

/// The default directory of the compiled-component cache:
/// `$TECHNE_CACHE_DIR/components`, else `$XDG_CACHE_HOME/techne/components`,
/// else `~/.cache/techne/components`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("TECHNE_CACHE_DIR") {
        return Some(PathBuf::from(dir).join("components"));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(dir).join("techne").join("components"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache").join("techne").join("components"))
}

/// Why the engine could not be created.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// wasmtime rejected the configuration.
    #[error("cannot create the WebAssembly engine: {0}")]
    Config(String),
    /// The linker could not be populated.
    #[error("cannot link the plugin capabilities: {0}")]
    Linker(String),
}

/// Advances the engine's epoch on a background thread until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    fn start(engine: &Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let weak = engine.weak();
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("techne-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .ok();
        Self { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The engine, linker and component cache shared by all plugins of a process.
pub struct SandboxEngine {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<StoreData>,
    pub(crate) cache: Option<ComponentCache>,
    pub(crate) options: EngineOptions,
    _ticker: EpochTicker,
}

impl SandboxEngine {
    /// Create the engine. With `pooling`, falls back to on-demand allocation
    /// when the pooling allocator cannot reserve its memory.
    pub fn new(options: EngineOptions) -> Result<Self, EngineError> {
        let engine = match Engine::new(&engine_config(&options, options.pooling)) {
            Ok(engine) => engine,
            Err(pooling_error) if options.pooling => {
                tracing::warn!("pooling allocator unavailable ({pooling_error:#}); using on-demand allocation");
                Engine::new(&engine_config(&options, false)).map_err(|e| EngineError::Config(format!("{e:#}")))?
            }
            Err(e) => return Err(EngineError::Config(format!("{e:#}"))),
        };
        let mut linker: Linker<StoreData> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| EngineError::Linker(format!("{e:#}")))?;
        PluginHost::add_to_linker::<StoreData, HasSelf<CapabilityContext>>(&mut linker, |data| &mut data.capabilities)
            .map_err(|e| EngineError::Linker(format!("{e:#}")))?;
        let cache = options.cache_dir.as_ref().map(|dir| ComponentCache::new(dir, &engine));
        let ticker = EpochTicker::start(&engine);
        Ok(Self { engine, linker, cache, options, _ticker: ticker })
    }

    /// The settings the engine was created with.
    pub fn options(&self) -> &EngineOptions {
        &self.options
    }

    /// The underlying wasmtime engine.
    pub fn wasmtime_engine(&self) -> &Engine {
        &self.engine
    }

    /// Compile `bytes` (whose sha256 is `sha256`), or load the compiled form
    /// from the cache. Compilation runs on a blocking thread.
    pub(crate) async fn compile(&self, bytes: Arc<Vec<u8>>, sha256: &str) -> wasmtime::Result<Component> {
        if let Some(component) = self.cache.as_ref().and_then(|c| c.load(sha256)) {
            return Ok(component);
        }
        let engine = self.engine.clone();
        let compiled = tokio::task::spawn_blocking(move || Component::new(&engine, bytes.as_slice()))
            .await
            .map_err(|e| wasmtime::Error::msg(format!("compiler thread failed: {e}")))??;
        if let Some(cache) = &self.cache {
            cache.store(sha256, &compiled);
        }
        Ok(compiled)
    }
}

fn engine_config(options: &EngineOptions, pooling: bool) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.max_wasm_stack(options.max_wasm_stack);
    config.async_stack_size(options.max_wasm_stack + (1 << 20));
    if pooling {
        let n = options.max_live_instances.max(1);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(n)
            .total_core_instances(n.saturating_mul(8))
            .total_memories(n.saturating_mul(2))
            .total_tables(n.saturating_mul(8))
            .total_stacks(n)
            .max_memory_size(usize::try_from(options.max_memory_bytes).unwrap_or(usize::MAX));
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}
