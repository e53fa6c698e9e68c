//! The HTTP side of one OpenAI-compatible endpoint: the `reqwest` client
//! (rustls, no proxies, no redirects to other hosts, reqwest's own retries
//! off), and **the** retry loop: each attempt passes the cooldown check and
//! the endpoint's limits, then its outcome is classified as a success, a
//! final answer, or a transient failure worth another attempt.

use std::time::{Duration, SystemTime};

use reqwest::header::{AUTHORIZATION, HeaderValue};

use super::config::{OpenAiModelConfig, url_host};
use super::rate_limit::Limits;
use super::retry::{CircuitBreaker, RetryPolicy, parse_retry_after, status_is_retryable};

/// Largest response body read, in bytes.
const MAX_BODY_BYTES: usize = 64 << 20;

/// Why a call to the endpoint failed, after the retry loop.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// The server answered with a status that no retry changes.
    #[error("HTTP {status}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The server's error message, or the start of its body.
        message: String,
    },
    /// Every attempt failed transiently.
    #[error("{attempts} attempt(s) failed; the last: {last}")]
    Exhausted {
        /// Attempts made.
        attempts: u32,
        /// What went wrong the last time.
        last: String,
    },
    /// The endpoint is cooling down after consecutive failures.
    #[error("cooling down for another {} ms after {failures} consecutive failed attempts{}", remaining.as_millis(), last.as_deref().map(|l| format!(" (the last: {l})")).unwrap_or_default())]
    CoolingDown {
        /// Time left.
        remaining: Duration,
        /// The threshold that opened the cooldown.
        failures: u32,
        /// The last failure this request saw, if any.
        last: Option<String>,
    },
    /// The server says it cannot do this at all.
    #[error("{0}")]
    Unsupported(String),
    /// The server redirected to a host techne does not follow.
    #[error("{0}")]
    RedirectRefused(String),
    /// A request that could not be built or sent for a reason no retry changes.
    #[error("{0}")]
    Request(String),
}

/// The outcome of one attempt.
enum Attempt {
    /// A final error: return it.
    Final(CallError),
    /// A transient failure: maybe retry, after the server's `Retry-After` if it gave one.
    Transient { message: String, retry_after: Option<Duration> },
}

/// The refusal a redirect to another host produces (its text ends up in the error).
#[derive(Debug, thiserror::Error)]
#[error(
    "refused a redirect from {from} to {to}: techne follows redirects only within the same host (and never from https to http)"
)]
struct RedirectRefusal {
    from: String,
    to: String,
}

/// An API key: never printed, never in a `Debug` output, sent as a sensitive header.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wrap a key.
    pub fn new(key: String) -> Self {
        Self(key)
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(redacted)")
    }
}

/// One OpenAI-compatible endpoint: the client, its limits and its retry state.
#[derive(Debug)]
pub struct Endpoint {
    http: reqwest::Client,
    base: String,
    host: String,
    authorization: Option<HeaderValue>,
    api_key: Option<ApiKey>,
    policy: RetryPolicy,
    breaker: CircuitBreaker,
    cooldown_after_failures: u32,
    limits: Limits,
}

impl Endpoint {
    /// The client for `config` with `api_key` (already read from the environment).
    pub fn new(config: &OpenAiModelConfig, api_key: Option<ApiKey>) -> Result<Self, String> {
        let base_url = super::config::parse_base_url(&config.base_url)?;
        let host = url_host(&base_url).unwrap_or_default();
        let origin_https = base_url.scheme() == "https";
        let origin_host = host.clone();
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            let to = url_host(attempt.url()).unwrap_or_default();
            let downgrade = origin_https && attempt.url().scheme() != "https";
            if to != origin_host || downgrade {
                let refusal = RedirectRefusal { from: origin_host.clone(), to: attempt.url().to_string() };
                attempt.error(refusal)
            } else if attempt.previous().len() >= 5 {
                attempt.error("more than 5 redirects")
            } else {
                attempt.follow()
            }
        });
        let http = reqwest::Client::builder()
            .user_agent(concat!("techne/", env!("CARGO_PKG_VERSION")))
            .no_proxy()
            .redirect(redirects)
            .retry(reqwest::retry::never())
            .connect_timeout(config.connect_timeout())
            .timeout(config.request_timeout())
            .read_timeout(config.idle_timeout())
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| format!("cannot create the HTTP client: {}", error_chain(&e)))?;
        let authorization = match &api_key {
            Some(ApiKey(key)) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                    "the API key contains characters that cannot go into an HTTP header: check the environment \
                     variable named by api-key-env"
                        .to_string()
                })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        Ok(Self {
            http,
            base: base_url.as_str().trim_end_matches('/').to_string(),
            host,
            authorization,
            api_key,
            policy: RetryPolicy {
                max_retries: config.max_retries,
                base: Duration::from_millis(config.retry_base_ms),
                max: Duration::from_millis(config.retry_max_ms),
                retry_after_cap: Duration::from_millis(config.retry_after_cap_ms),
            },
            breaker: CircuitBreaker::new(config.cooldown_after_failures, Duration::from_millis(config.cooldown_ms)),
            cooldown_after_failures: config.cooldown_after_failures,
            limits: Limits::new(config.max_concurrency, config.requests_per_minute, config.tokens_per_minute),
        })
    }

    /// The endpoint's host.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The full URL of `path` (e.g. `chat/completions`).
    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path.trim_start_matches('/'))
    }

    /// `text` with the API key, should a server echo it, blanked out.
    pub fn redact(&self, text: String) -> String {
        match &self.api_key {
            Some(ApiKey(key)) if !key.is_empty() => text.replace(key.as_str(), "[redacted]"),
            _ => text,
        }
    }

    /// POST `body` as JSON to `path` and return the JSON answer, retrying
    /// transient failures. `estimated_tokens` is charged to the
    /// tokens-per-minute budget (corrected by the answer's `usage`).
    pub async fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
        estimated_tokens: u64,
    ) -> Result<serde_json::Value, CallError> {
        let url = self.url(path);
        let mut retries = 0u32;
        let mut last: Option<String> = None;
        loop {
            if let Some(remaining) = self.breaker.open_for() {
                return Err(CallError::CoolingDown { remaining, failures: self.cooldown_after_failures, last });
            }
            let outcome = {
                let _slot = self
                    .limits
                    .admit(estimated_tokens)
                    .await
                    .map_err(|_| CallError::Request("the endpoint's request limiter was closed".into()))?;
                self.attempt(&url, body).await
            };
            match outcome {
                Ok(value) => {
                    self.breaker.record_success();
                    if let Some(used) = value.pointer("/usage/total_tokens").and_then(serde_json::Value::as_u64) {
                        self.limits.record_usage(estimated_tokens, used);
                    }
                    return Ok(value);
                }
                Err(Attempt::Final(error)) => {
                    if matches!(error, CallError::Status { .. } | CallError::Unsupported(_)) {
                        // The server answered: it is up.
                        self.breaker.record_success();
                    }
                    return Err(error);
                }
                Err(Attempt::Transient { message, retry_after }) => {
                    let message = self.redact(message);
                    tracing::debug!(endpoint = %url, attempt = retries + 1, "transient failure: {message}");
                    let opened = self.breaker.record_failure();
                    if retries >= self.policy.max_retries {
                        return Err(CallError::Exhausted { attempts: retries + 1, last: message });
                    }
                    if opened {
                        let remaining = self.breaker.open_for().unwrap_or_default();
                        return Err(CallError::CoolingDown {
                            remaining,
                            failures: self.cooldown_after_failures,
                            last: Some(message),
                        });
                    }
                    let delay = self.policy.delay(retries, retry_after);
                    last = Some(message);
                    retries += 1;
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// One HTTP exchange.
    async fn attempt(&self, url: &str, body: &serde_json::Value) -> Result<serde_json::Value, Attempt> {
        let mut request = self.http.post(url).json(body);
        if let Some(value) = &self.authorization {
            request = request.header(AUTHORIZATION, value.clone());
        }
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(e) => return Err(self.classify_send_error(&e)),
        };
        let status = response.status().as_u16();
        let retry_after = parse_retry_after(response.headers(), SystemTime::now());
        let body = read_body(&mut response).await;
        if (200..300).contains(&status) {
            let bytes = body.map_err(|e| Attempt::Transient {
                message: format!("the response body was cut short: {e}"),
                retry_after: None,
            })?;
            return serde_json::from_slice(&bytes).map_err(|e| Attempt::Transient {
                message: format!("the response body is not complete JSON ({e}): {}", snippet(&bytes)),
                retry_after: None,
            });
        }
        let message =
            body.map(|b| self.redact(error_message(&b))).unwrap_or_else(|e| format!("(body unreadable: {e})"));
        if status == 501 || (status >= 500 && says_unsupported(&message)) {
            return Err(Attempt::Final(CallError::Unsupported(message)));
        }
        if status_is_retryable(status) {
            return Err(Attempt::Transient { message: format!("HTTP {status}: {message}"), retry_after });
        }
        Err(Attempt::Final(CallError::Status { status, message }))
    }

    fn classify_send_error(&self, error: &reqwest::Error) -> Attempt {
        let text = self.redact(error_chain(error));
        if error.is_redirect() {
            return Attempt::Final(CallError::RedirectRefused(text));
        }
        if error.is_builder() {
            return Attempt::Final(CallError::Request(text));
        }
        let kind = if error.is_timeout() {
            "timed out"
        } else if error.is_connect() {
            "could not connect"
        } else {
            "the exchange failed"
        };
        Attempt::Transient { message: format!("{kind}: {text}"), retry_after: None }
    }
}

/// Read a body up to [`MAX_BODY_BYTES`]; an error if it ends early or is too large.
async fn read_body(response: &mut reqwest::Response) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if out.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(format!("the body exceeds {MAX_BODY_BYTES} bytes"));
                }
                out.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(out),
            Err(e) => return Err(error_chain(&e)),
        }
    }
}

/// An error and its causes, `: `-separated (reqwest's own text omits the cause).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The error message of an error body: `error.message`, `error` (text),
/// `message` or `detail`, else the start of the body.
fn error_message(body: &[u8]) -> String {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        for pointer in ["/error/message", "/error", "/message", "/detail"] {
            if let Some(text) = value.pointer(pointer).and_then(serde_json::Value::as_str) {
                return text.chars().take(500).collect();
            }
        }
    }
    snippet(body)
}

/// The first few hundred characters of a body, for messages.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".into();
    }
    let mut out: String = text.chars().take(300).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

/// Whether a server error says a feature is missing (not a transient fault).
fn says_unsupported(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("not supported")
        || m.contains("unsupported")
        || m.contains("not implemented")
        || m.contains("only no echo")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_are_extracted() {
        assert_eq!(error_message(br#"{"error":{"message":"bad key","type":"x"}}"#), "bad key");
        assert_eq!(error_message(br#"{"error":"overloaded"}"#), "overloaded");
        assert_eq!(error_message(br#"{"detail":"nope"}"#), "nope");
        assert_eq!(error_message(b"plain text"), "plain text");
        assert_eq!(error_message(b""), "(empty body)");
    }

    #[test]
    fn the_key_is_never_shown() {
        let config = OpenAiModelConfig::new("http://127.0.0.1:9/v1", "m");
        let endpoint = Endpoint::new(&config, Some(ApiKey::new("sk-secret-123".into()))).unwrap();
        assert!(!format!("{endpoint:?}").contains("sk-secret-123"));
        assert_eq!(endpoint.redact("echo sk-secret-123 back".into()), "echo [redacted] back");
        assert_eq!(endpoint.url("/chat/completions"), "http://127.0.0.1:9/v1/chat/completions");
    }

    #[test]
    fn unsupported_features_are_recognised() {
        assert!(says_unsupported("Only no echo is supported"));
        assert!(says_unsupported("Unsupported param: best_of"));
        assert!(!says_unsupported("CUDA out of memory"));
    }
}
