//! Usage of a run's models: requests that reached a backend (cache hits do
//! not count) and tokens, checked against the run's budget.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of a run's model usage.
#[derive(Debug, Default)]
pub struct UsageMeter {
    requests: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    /// Estimated spend in millionths of a currency unit.
    cost_micros: AtomicU64,
}

/// The price of a model's tokens, per million (`[run.prices.MODEL]`).
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Price {
    /// Per million prompt tokens.
    pub prompt: f64,
    /// Per million generated tokens.
    pub completion: f64,
}

impl Price {
    /// The cost of one call.
    pub fn cost(&self, prompt_tokens: u32, completion_tokens: u32) -> f64 {
        (f64::from(prompt_tokens) * self.prompt + f64::from(completion_tokens) * self.completion) / 1e6
    }
}

/// A snapshot of [`UsageMeter`].
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// Requests that reached a backend.
    pub requests: u64,
    /// Prompt tokens over all calls (cached ones included).
    pub prompt_tokens: u64,
    /// Generated tokens over all calls (cached ones included).
    pub completion_tokens: u64,
    /// Estimated spend of the calls that reached a backend (cache hits are free).
    #[serde(default)]
    pub cost: f64,
}

/// Limits on a run's model usage (`[run] max-requests`, `max-tokens`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Budget {
    /// Most requests that may reach a backend.
    pub max_requests: Option<u64>,
    /// Most tokens (prompt + generated) over all calls.
    pub max_tokens: Option<u64>,
    /// Most estimated spend (`[run.prices]` sets the prices).
    pub max_cost: Option<f64>,
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

    /// Add the estimated cost of a call that reached a backend.
    pub fn count_cost(&self, cost: f64) {
        if cost.is_finite() && cost > 0.0 {
            self.cost_micros.fetch_add((cost * 1e6).round() as u64, Ordering::Relaxed);
        }
    }

    /// The counters now.
    pub fn usage(&self) -> Usage {
        Usage {
            requests: self.requests.load(Ordering::Relaxed),
            prompt_tokens: self.prompt_tokens.load(Ordering::Relaxed),
            completion_tokens: self.completion_tokens.load(Ordering::Relaxed),
            cost: self.cost_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }

    /// Why the budget is spent, if it is.
    pub fn exhausted(&self, budget: &Budget) -> Option<String> {
        let usage = self.usage();
        if let Some(max) = budget.max_requests
            && usage.requests >= max
        {
            return Some(format!("the request budget is spent ({} of max-requests = {max})", usage.requests));
        }
        if let Some(max) = budget.max_tokens {
            let tokens = usage.prompt_tokens + usage.completion_tokens;
            if tokens >= max {
                return Some(format!("the token budget is spent ({tokens} of max-tokens = {max})"));
            }
        }
        if let Some(max) = budget.max_cost
            && usage.cost >= max
        {
            return Some(format!("the cost budget is spent ({:.4} of max-cost = {max})", usage.cost));
        }
        None
    }
}
