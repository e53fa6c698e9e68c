//! Stopping a run cleanly: on SIGINT/SIGTERM or when the budget is spent,
//! no new item starts, the items in flight finish and are journaled.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// Why a run stopped before its last item.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", tag = "reason", content = "detail")]
pub enum StopReason {
    /// SIGINT or SIGTERM.
    Interrupted,
    /// The request or token budget is spent.
    Budget(String),
}

/// A flag the run checks before starting each item.
#[derive(Debug, Default)]
pub struct StopSignal {
    stopped: AtomicBool,
    reason: Mutex<Option<StopReason>>,
}

impl StopSignal {
    /// A signal that has not fired.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask the run to stop; the first reason given is kept.
    pub fn stop(&self, reason: StopReason) {
        let mut slot = self.reason.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(reason);
        }
        self.stopped.store(true, Ordering::SeqCst);
    }

    /// Whether the run should start no more items.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Why it stopped, if it did.
    pub fn reason(&self) -> Option<StopReason> {
        self.reason.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}
