//! The `state` interface: key/value state scoped to one plugin within a run,
//! shared by its work items, with a size cap.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::bindings::capabilities::state::Host;
use crate::bindings::capabilities::types::Error as WitError;

use super::CapabilityContext;

/// One plugin's key/value state.
#[derive(Debug)]
pub struct PluginState {
    entries: Mutex<BTreeMap<String, Vec<u8>>>,
    max_bytes: u64,
}

impl PluginState {
    /// Empty state holding at most `max_bytes` of keys and values.
    pub fn new(max_bytes: u64) -> Self {
        Self { entries: Mutex::new(BTreeMap::new()), max_bytes }
    }

    /// State restored from earlier entries (e.g. a previous round).
    pub fn with_entries(max_bytes: u64, entries: BTreeMap<String, Vec<u8>>) -> Self {
        Self { entries: Mutex::new(entries), max_bytes }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        // A panic while holding the lock cannot leave the map inconsistent
        // (every update is a single insert or remove), so recover the guard.
        self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A copy of every entry.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        self.lock().clone()
    }

    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.lock().get(key).cloned()
    }

    /// Store `value` under `key`, unless the state would exceed its cap.
    pub fn set(&self, plugin: &str, key: String, value: Vec<u8>) -> Result<(), WitError> {
        let mut entries = self.lock();
        let current: u64 = entries.iter().map(|(k, v)| (k.len() + v.len()) as u64).sum();
        let replaced = entries.get(&key).map(|v| (key.len() + v.len()) as u64).unwrap_or(0);
        let after = current - replaced + (key.len() + value.len()) as u64;
        if after > self.max_bytes {
            return Err(WitError::LimitExceeded(format!(
                "state of plugin '{plugin}' would hold {after} bytes, over its limit of {}: delete keys you no longer need or raise `state-bytes` in [plugins.{plugin}.limits]",
                self.max_bytes
            )));
        }
        entries.insert(key, value);
        Ok(())
    }

    /// Remove `key`.
    pub fn delete(&self, key: &str) {
        self.lock().remove(key);
    }

    /// Every key, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }
}

impl Host for CapabilityContext {
    async fn get(&mut self, key: String) -> Option<Vec<u8>> {
        if self.traffic.send_out(key.len() as u64).is_err() {
            return None;
        }
        let value = self.state.get(&key)?;
        self.traffic.send_in(value.len() as u64).ok()?;
        Some(value)
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), WitError> {
        self.traffic.send_out((key.len() + value.len()) as u64)?;
        self.state.set(&self.grant.plugin, key, value)
    }

    async fn delete(&mut self, key: String) {
        self.state.delete(&key);
    }

    async fn keys(&mut self) -> Vec<String> {
        self.state.keys()
    }
}
