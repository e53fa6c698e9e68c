//! Client-side limits of one endpoint: a cap on requests in flight (a
//! semaphore) and requests-per-minute and tokens-per-minute budgets (token
//! buckets), so a run stays under a provider's quotas instead of collecting
//! 429s.
//!
//! The buckets work by reservation: a caller takes what it needs at once,
//! possibly driving the level below zero, and sleeps until the deficit has
//! refilled. Callers are therefore served in arrival order and a burst larger
//! than the bucket waits in proportion to its size. Time is `tokio::time`, so
//! tests can run it on a paused clock.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

/// A token bucket: `capacity` units, refilled at `per_second`.
#[derive(Debug)]
pub struct TokenBucket {
    capacity: f64,
    per_second: f64,
    state: Mutex<BucketState>,
}

#[derive(Debug)]
struct BucketState {
    level: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket of `capacity` units refilled at `per_second` units per second.
    pub fn new(capacity: f64, per_second: f64) -> Self {
        let capacity = capacity.max(1.0);
        Self {
            capacity,
            per_second: per_second.max(f64::MIN_POSITIVE),
            state: Mutex::new(BucketState { level: capacity, updated: Instant::now() }),
        }
    }

    /// `per_minute` units a minute, with a burst of `burst` units.
    pub fn per_minute(per_minute: f64, burst: f64) -> Self {
        Self::new(burst, per_minute / 60.0)
    }

    /// The bucket's size.
    pub fn capacity(&self) -> f64 {
        self.capacity
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BucketState> {
        // The state stays consistent even if a holder panicked: every update is one assignment.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn refill(&self, state: &mut BucketState, now: Instant) {
        let elapsed = now.saturating_duration_since(state.updated).as_secs_f64();
        state.level = (state.level + elapsed * self.per_second).min(self.capacity);
        state.updated = now;
    }

    /// Reserve `amount` units (at most the capacity) and return how long the
    /// caller must wait before using them.
    pub fn reserve(&self, amount: f64) -> Duration {
        let amount = amount.clamp(0.0, self.capacity);
        let now = Instant::now();
        let mut state = self.lock();
        self.refill(&mut state, now);
        state.level -= amount;
        if state.level >= 0.0 { Duration::ZERO } else { Duration::from_secs_f64(-state.level / self.per_second) }
    }

    /// Reserve `amount` units and wait until they are available.
    pub async fn acquire(&self, amount: f64) {
        let wait = self.reserve(amount);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// Correct an earlier reservation by `delta` units (positive: more were
    /// used than reserved; negative: fewer).
    pub fn adjust(&self, delta: f64) {
        let now = Instant::now();
        let mut state = self.lock();
        self.refill(&mut state, now);
        state.level = (state.level - delta).min(self.capacity);
    }
}

/// The limits of one endpoint.
#[derive(Debug)]
pub struct Limits {
    in_flight: Semaphore,
    requests: Option<TokenBucket>,
    tokens: Option<TokenBucket>,
}

impl Limits {
    /// At most `max_concurrency` requests in flight, `requests_per_minute`
    /// requests and `tokens_per_minute` tokens a minute (`None`: no limit).
    pub fn new(max_concurrency: usize, requests_per_minute: Option<u32>, tokens_per_minute: Option<u64>) -> Self {
        Self {
            in_flight: Semaphore::new(max_concurrency.clamp(1, Semaphore::MAX_PERMITS)),
            // Spread requests over the minute; allow one second's worth at once.
            requests: requests_per_minute.map(|rpm| {
                let rpm = f64::from(rpm);
                TokenBucket::per_minute(rpm, (rpm / 60.0).ceil())
            }),
            // A single request may need many tokens: the whole minute's budget is the burst.
            tokens: tokens_per_minute.map(|tpm| TokenBucket::per_minute(tpm as f64, tpm as f64)),
        }
    }

    /// Wait for a slot in flight, then for one request's and `tokens`
    /// tokens' budget. The slot is held until the returned permit drops.
    pub async fn admit(&self, tokens: u64) -> Result<SemaphorePermit<'_>, tokio::sync::AcquireError> {
        let permit = self.in_flight.acquire().await?;
        if let Some(bucket) = &self.requests {
            bucket.acquire(1.0).await;
        }
        if let Some(bucket) = &self.tokens {
            bucket.acquire(tokens as f64).await;
        }
        Ok(permit)
    }

    /// Correct the token budget once the server reported what a request
    /// really used (`estimated` was what [`Limits::admit`] reserved).
    pub fn record_usage(&self, estimated: u64, used: u64) {
        if let Some(bucket) = &self.tokens {
            bucket.adjust(used as f64 - (estimated as f64).min(bucket.capacity()));
        }
    }

    /// Requests that may be in flight now.
    pub fn available_slots(&self) -> usize {
        self.in_flight.available_permits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_allows_a_burst_then_spreads() {
        let bucket = TokenBucket::per_minute(600.0, 10.0); // 10 per second
        for _ in 0..10 {
            assert_eq!(bucket.reserve(1.0), Duration::ZERO);
        }
        let wait = bucket.reserve(1.0);
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "{wait:?}");
        let wait = bucket.reserve(1.0);
        assert!((wait.as_secs_f64() - 0.2).abs() < 1e-6, "{wait:?}");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(bucket.reserve(10.0), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_per_minute_paces_admissions() {
        let limits = Limits::new(4, Some(120), None); // 2 per second, burst 2
        let start = Instant::now();
        for _ in 0..6 {
            drop(limits.admit(0).await.unwrap());
        }
        let elapsed = start.elapsed().as_secs_f64();
        assert!((elapsed - 2.0).abs() < 0.01, "{elapsed}");
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_per_minute_waits_for_the_budget_and_takes_usage_into_account() {
        let limits = Limits::new(4, None, Some(600)); // 10 tokens per second
        let start = Instant::now();
        drop(limits.admit(600).await.unwrap()); // the whole burst
        drop(limits.admit(100).await.unwrap()); // 10 s of refill
        let elapsed = start.elapsed().as_secs_f64();
        assert!((elapsed - 10.0).abs() < 0.01, "{elapsed}");
        // The server says the last request used 200, not 100: 10 s more owed.
        limits.record_usage(100, 200);
        drop(limits.admit(50).await.unwrap());
        let elapsed = start.elapsed().as_secs_f64();
        assert!((elapsed - 25.0).abs() < 0.01, "{elapsed}");
        // Larger than the bucket: clamped to the bucket, not a deadlock.
        drop(limits.admit(10_000).await.unwrap());
    }

    #[tokio::test]
    async fn concurrency_is_capped() {
        let limits = Limits::new(2, None, None);
        let a = limits.admit(0).await.unwrap();
        let _b = limits.admit(0).await.unwrap();
        assert_eq!(limits.available_slots(), 0);
        assert!(tokio::time::timeout(Duration::from_millis(20), limits.admit(0)).await.is_err());
        drop(a);
        assert!(tokio::time::timeout(Duration::from_millis(20), limits.admit(0)).await.is_ok());
    }
}
