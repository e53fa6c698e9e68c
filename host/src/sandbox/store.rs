//! What each store holds: the empty WASI context, the capability context,
//! the resource limiter, the plugin's captured stderr and its deadline.

use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::StdRng;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::capabilities::CapabilityContext;

use super::limits::SandboxLimiter;

/// Most bytes of a plugin's stderr kept (panic messages land there).
const STDERR_CAPTURE_BYTES: usize = 64 * 1024;

/// The data of one plugin store.
pub(crate) struct StoreData {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: SandboxLimiter,
    pub(crate) capabilities: CapabilityContext,
    pub(crate) stderr: MemoryOutputPipe,
    /// When the current call must end.
    pub(crate) deadline: Instant,
    /// Set by the epoch callback when it interrupts the plugin.
    pub(crate) timed_out: bool,
}

impl StoreData {
    /// Store data with an empty WASI context: no arguments, environment,
    /// files, sockets or name lookups; stdin empty; stdout discarded; stderr
    /// captured; `wasi:random` seeded from the work item.
    pub(crate) fn new(limiter: SandboxLimiter, capabilities: CapabilityContext) -> Self {
        let stderr = MemoryOutputPipe::new(STDERR_CAPTURE_BYTES);
        let seed = capabilities.item_seed;
        let wasi = WasiCtx::builder()
            .stderr(stderr.clone())
            .secure_random(StdRng::seed_from_u64(seed))
            .insecure_random(StdRng::seed_from_u64(seed ^ 0x5EED))
            .insecure_random_seed(u128::from(seed))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(|_, _| Box::pin(async { false }))
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter,
            capabilities,
            stderr,
            deadline: Instant::now(),
            timed_out: false,
        }
    }

    /// What the plugin wrote to stderr, as text.
    pub(crate) fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr.contents()).trim().to_string()
    }
}

impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}
