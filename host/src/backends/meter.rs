//! Usage of a run's models: requests that reached a backend (cache hits do
//! not count) and tokens, checked against the run's budget.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of a run's model usage.
#[derive(Debug, Default)]
pub struct UsageMeter {
    requests: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
}

/// A snapshot of [`UsageMeter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// Requests that reached a backend.
    pub requests: u64,
    /// Prompt tokens over all calls (cached ones included).
    pub prompt_tokens: u64,
    /// Generated tokens over all calls (cached ones included).
    pub completion_tokens: u64,
}

/// Limits on a run's model usage (`[run] max-requests`, `max-tokens`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Budget {
    /// Most requests that may reach a backend.
    pub max_requests: Option<u64>,
    /// Most tokens (prompt + generated) over all calls.
    pub max_tokens: Option<u64>,
}

impl UsageMeter {
    /// Count one request that reaches a backend.
    pub fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Count the tokens of one answer.
    pub fn count_tokens(&self, prompt: u32, completion: u32) {
        self.prompt_tokens.fetch_add(u64::from(prompt), Ordering::Relaxed);
        self.completion_tokens.fetch_add(u64::from(completion), Ordering::Relaxed);
    }

    /// The counters now.
    pub fn usage(&self) -> Usage {
        Usage {
            requests: self.requests.load(Ordering::Relaxed),
            prompt_tokens: self.prompt_tokens.load(Ordering::Relaxed),
            completion_tokens: self.completion_tokens.load(Ordering::Relaxed),
        }
    }

    /// Why the budget is spent, if it is.
    pub fn exhausted(&self, budget: &Budget) -> Option<String> {
        let usage = self.usage();
        if let Some(max) = budget.max_requests {
            if usage.requests >= max {
                return Some(format!("the request budget is spent ({} of max-requests = {max})", usage.requests));
            }
        }
        if let Some(max) = budget.max_tokens {
            let tokens = usage.prompt_tokens + usage.completion_tokens;
            if tokens >= max {
                return Some(format!("the token budget is spent ({tokens} of max-tokens = {max})"));
            }
        }
        None
    }
}
