//! The `randomness` interface: the work item's reproducible seed.

use crate::bindings::capabilities::randomness::Host;

use super::CapabilityContext;

impl Host for CapabilityContext {
    async fn item_seed(&mut self) -> u64 {
        self.item_seed
    }
}
