//! Key/value state scoped to this plugin within one run, shared by all its
//! work items and kept across rounds of a training loop.
//!
//! Natively (unit tests) the state is an in-memory map per thread, so logic
//! that uses it can be tested.
//!
//! ```no_run
//! use techne_plugin_sdk::state;
//! # fn demo() -> Result<(), techne_plugin_sdk::PluginError> {
//! let seen: u64 = state::get_json("seen")?.unwrap_or(0);
//! state::set_json("seen", &(seen + 1))?;
//! # Ok(()) }
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{HostError, PluginError};

/// The value stored under `key`, if any.
pub fn get(key: &str) -> Option<Vec<u8>> {
    imp::get(key)
}

/// Store `value` under `key`, replacing any previous value. Fails with
/// [`HostError::LimitExceeded`] when the plugin's state would exceed its
/// configured size.
pub fn set(key: &str, value: &[u8]) -> Result<(), HostError> {
    imp::set(key, value)
}

/// Remove `key`; removing a missing key is not an error.
pub fn delete(key: &str) {
    imp::delete(key)
}

/// Every key, sorted.
pub fn keys() -> Vec<String> {
    imp::keys()
}

/// The value under `key` as UTF-8 text, if any. Fails with
/// [`PluginError::Failed`] when the value is not UTF-8.
pub fn get_text(key: &str) -> Result<Option<String>, PluginError> {
    match get(key) {
        None => Ok(None),
        Some(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| PluginError::Failed(format!("state key `{key}` does not hold UTF-8 text"))),
    }
}

/// Store the text `value` under `key`.
pub fn set_text(key: &str, value: &str) -> Result<(), HostError> {
    set(key, value.as_bytes())
}

/// The value under `key` decoded from JSON, if any. Fails with
/// [`PluginError::Failed`] when the stored bytes are not JSON of type `T`.
pub fn get_json<T: DeserializeOwned>(key: &str) -> Result<Option<T>, PluginError> {
    match get(key) {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| PluginError::Failed(format!("state key `{key}` does not hold the expected JSON: {e}"))),
    }
}

/// Store `value` under `key` as JSON.
pub fn set_json<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<(), PluginError> {
    let bytes = serde_json::to_vec(value)
        .map_err(|e| PluginError::Failed(format!("cannot encode the value for state key `{key}` as JSON: {e}")))?;
    set(key, &bytes).map_err(PluginError::from)
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use crate::HostError;
    use crate::bindings::techne::plugin::state as wit;

    pub fn get(key: &str) -> Option<Vec<u8>> {
        wit::get(key)
    }

    pub fn set(key: &str, value: &[u8]) -> Result<(), HostError> {
        wit::set(key, value).map_err(HostError::from)
    }

    pub fn delete(key: &str) {
        wit::delete(key)
    }

    pub fn keys() -> Vec<String> {
        wit::keys()
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use std::cell::RefCell;
    use std::collections::BTreeMap;

    use crate::HostError;

    thread_local! {
        static STATE: RefCell<BTreeMap<String, Vec<u8>>> = const { RefCell::new(BTreeMap::new()) };
    }

    pub fn get(key: &str) -> Option<Vec<u8>> {
        STATE.with(|s| s.borrow().get(key).cloned())
    }

    pub fn set(key: &str, value: &[u8]) -> Result<(), HostError> {
        STATE.with(|s| s.borrow_mut().insert(key.to_owned(), value.to_vec()));
        Ok(())
    }

    pub fn delete(key: &str) {
        STATE.with(|s| s.borrow_mut().remove(key));
    }

    pub fn keys() -> Vec<String> {
        STATE.with(|s| s.borrow().keys().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_state_round_trips() {
        assert_eq!(get("a"), None);
        set("b", b"2").unwrap();
        set_text("a", "1").unwrap();
        assert_eq!(keys(), ["a", "b"]);
        assert_eq!(get_text("a").unwrap().as_deref(), Some("1"));
        delete("a");
        delete("missing");
        assert_eq!(keys(), ["b"]);
    }

    #[test]
    fn json_helpers() {
        set_json("list", &vec![1u32, 2, 3]).unwrap();
        let list: Option<Vec<u32>> = get_json("list").unwrap();
        assert_eq!(list, Some(vec![1, 2, 3]));
        set("bad", b"{").unwrap();
        let bad: Result<Option<Vec<u32>>, _> = get_json("bad");
        assert!(matches!(bad, Err(PluginError::Failed(m)) if m.contains("`bad`")));
        let none: Option<u8> = get_json("absent").unwrap();
        assert_eq!(none, None);
    }
}
