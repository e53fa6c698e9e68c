//! When to try a request again and how long to wait: which failures are
//! transient, exponential backoff with full jitter, the server's
//! `Retry-After`, and the cooldown (a circuit breaker) that makes an endpoint
//! that keeps failing fail fast for a while.
//!
//! The one retry loop that uses these lives in `client.rs`.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// Backoff settings of one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Base of the exponential backoff.
    pub base: Duration,
    /// Largest backoff.
    pub max: Duration,
    /// Largest wait a `Retry-After` may impose.
    pub retry_after_cap: Duration,
}

impl RetryPolicy {
    /// The backoff before retry number `retry` (0 for the first retry): a
    /// uniformly random duration in `[0, min(max, base * 2^retry)]` ("full
    /// jitter", so that clients that failed together do not retry together).
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self.base.saturating_mul(2u32.saturating_pow(retry.min(31))).min(self.max);
        let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::random_range(0..=millis))
    }

    /// How long to wait before the next attempt: the server's `Retry-After`
    /// when it gave one (at most `retry_after_cap`), otherwise the jittered
    /// backoff.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(wait) => wait.min(self.retry_after_cap),
            None => self.backoff(retry),
        }
    }
}

/// Whether a response status is worth another attempt: 408 (request
/// timeout), 409 (conflict, e.g. a model still loading), 429 (rate limited)
/// and 5xx other than 501 (not implemented, which no retry changes). 400,
/// 401, 403, 404, 422 and every other status are final.
pub fn status_is_retryable(status: u16) -> bool {
    matches!(status, 408 | 409 | 429) || ((500..600).contains(&status) && status != 501)
}

/// The wait a response asks for: `retry-after-ms` (milliseconds, sent by
/// OpenAI), else `Retry-After` as delay-seconds (fractions accepted) or an
/// HTTP date. `now` is the wall clock for the date form.
pub fn parse_retry_after(headers: &reqwest::header::HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = value("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64((ms / 1000.0).min(86_400.0)));
    }
    let text = value("retry-after")?;
    if let Ok(seconds) = text.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(86_400.0)));
    }
    let date = httpdate::parse_http_date(text).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The cooldown of one endpoint: after `threshold` consecutive failed
/// attempts it is open (fails fast) for `cooldown`. When that has passed,
/// requests go through again; the first success closes it, a further failure
/// opens it again at once.
#[derive(Debug)]
pub struct CircuitBreaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<BreakerState>,
}

#[derive(Debug, Default)]
struct BreakerState {
    consecutive_failures: u32,
    open_until: Option<Instant>,
}

impl CircuitBreaker {
    /// A closed breaker; `threshold` 0 never opens.
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        Self { threshold, cooldown, state: Mutex::new(BreakerState::default()) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `Some(remaining)` while the endpoint is cooling down.
    pub fn open_for(&self) -> Option<Duration> {
        let now = Instant::now();
        let state = self.lock();
        state.open_until.filter(|until| *until > now).map(|until| until - now)
    }

    /// An attempt succeeded (or got a final answer): the endpoint is healthy.
    pub fn record_success(&self) {
        let mut state = self.lock();
        state.consecutive_failures = 0;
        state.open_until = None;
    }

    /// An attempt failed transiently. Returns whether the breaker opened.
    pub fn record_failure(&self) -> bool {
        if self.threshold == 0 {
            return false;
        }
        let mut state = self.lock();
        state.consecutive_failures = state.consecutive_failures.saturating_add(1);
        if state.consecutive_failures >= self.threshold {
            state.open_until = Some(Instant::now() + self.cooldown);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_retries: 3,
            base: Duration::from_millis(100),
            max: Duration::from_millis(1000),
            retry_after_cap: Duration::from_secs(5),
        }
    }

    #[test]
    fn backoff_is_jittered_below_an_exponential_ceiling() {
        let p = policy();
        for retry in 0..40 {
            let ceiling = Duration::from_millis((100u64 << retry.min(20)).min(1000));
            for _ in 0..50 {
                assert!(p.backoff(retry) <= ceiling);
            }
        }
        // Jitter: not every draw is the same.
        let draws: std::collections::BTreeSet<_> = (0..50).map(|_| p.backoff(3)).collect();
        assert!(draws.len() > 1);
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap() {
        let p = policy();
        assert_eq!(p.delay(0, Some(Duration::from_secs(2))), Duration::from_secs(2));
        assert_eq!(p.delay(0, Some(Duration::from_secs(600))), Duration::from_secs(5));
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        assert_eq!(parse_retry_after(&h, now), None);
        h.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(parse_retry_after(&h, now), Some(Duration::from_secs(3)));
        h.insert("retry-after", HeaderValue::from_static("0.5"));
        assert_eq!(parse_retry_after(&h, now), Some(Duration::from_millis(500)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(7));
        h.insert("retry-after", HeaderValue::from_str(&date).unwrap());
        assert_eq!(parse_retry_after(&h, now), Some(Duration::from_secs(7)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(7));
        h.insert("retry-after", HeaderValue::from_str(&past).unwrap());
        assert_eq!(parse_retry_after(&h, now), Some(Duration::ZERO));
        h.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(parse_retry_after(&h, now), None);
        h.insert("retry-after-ms", HeaderValue::from_static("250"));
        assert_eq!(parse_retry_after(&h, now), Some(Duration::from_millis(250)));
    }

    #[test]
    fn retryable_statuses() {
        for s in [408, 409, 429, 500, 502, 503, 504, 599] {
            assert!(status_is_retryable(s), "{s}");
        }
        for s in [200, 301, 400, 401, 403, 404, 413, 422, 501] {
            assert!(!status_is_retryable(s), "{s}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_opens_after_threshold_and_recloses() {
        let b = CircuitBreaker::new(3, Duration::from_secs(10));
        assert!(!b.record_failure());
        assert!(!b.record_failure());
        assert_eq!(b.open_for(), None);
        assert!(b.record_failure());
        assert_eq!(b.open_for(), Some(Duration::from_secs(10)));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(b.open_for(), None);
        // Half open: one more failure reopens at once.
        assert!(b.record_failure());
        assert!(b.open_for().is_some());
        tokio::time::advance(Duration::from_secs(11)).await;
        b.record_success();
        assert!(!b.record_failure());
        assert_eq!(b.open_for(), None);
        let never = CircuitBreaker::new(0, Duration::from_secs(10));
        for _ in 0..100 {
            assert!(!never.record_failure());
        }
    }
}
