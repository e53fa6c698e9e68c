//! `backend = "openai"`: the settings of one OpenAI-compatible endpoint, their
//! defaults, and the checks the run configuration's validation applies
//! (including the `[network] allow-hosts` outbound allow-list).

use std::time::Duration;

use serde::Deserialize;

/// `[models.NAME] backend = "openai"`: a model served by an OpenAI-compatible
/// HTTP endpoint (OpenAI, vLLM, llama.cpp's `llama-server`, ...).
///
/// The API key is never written in the configuration: `api-key-env` names the
/// environment variable that holds it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct OpenAiModelConfig {
    /// The API root, e.g. `https://api.openai.com/v1` or `http://127.0.0.1:8080/v1`;
    /// `/chat/completions`, `/completions` and `/embeddings` are appended.
    pub base_url: String,
    /// The model name the endpoint knows, e.g. `gpt-4o-mini`.
    pub model: String,
    /// The environment variable holding the API key (sent as a bearer token);
    /// without it no `Authorization` header is sent.
    pub api_key_env: Option<String>,
    /// Requests in flight at once to this endpoint.
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: usize,
    /// Requests started per minute (spread evenly, with a burst of one second's worth).
    pub requests_per_minute: Option<u32>,
    /// Tokens (prompt estimate plus `max-tokens` × `n`, corrected by the reported usage) per minute.
    pub tokens_per_minute: Option<u64>,
    /// Limit on establishing a connection, in milliseconds.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Limit on a whole request (connect, send, wait, read the body), in milliseconds.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Longest silence while waiting for or reading a response, in milliseconds.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Retries after the first attempt, for connection errors, timeouts, 408, 409, 429 and 5xx.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Base of the exponential backoff, in milliseconds.
    #[serde(default = "default_retry_base_ms")]
    pub retry_base_ms: u64,
    /// Largest backoff between two attempts, in milliseconds.
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    /// Largest wait a server's `Retry-After` may impose, in milliseconds.
    #[serde(default = "default_retry_after_cap_ms")]
    pub retry_after_cap_ms: u64,
    /// Consecutive failed attempts after which the endpoint cools down (0: never).
    #[serde(default = "default_cooldown_after_failures")]
    pub cooldown_after_failures: u32,
    /// How long a cooling-down endpoint fails fast, in milliseconds.
    #[serde(default = "default_cooldown_ms")]
    pub cooldown_ms: u64,
    /// Models (names of other `[models.*]` tables) that serve a request, in
    /// order, when this one fails after its retries or is cooling down.
    #[serde(default)]
    pub fallbacks: Vec<String>,
}

fn default_max_concurrency() -> usize {
    8
}
fn default_connect_timeout_ms() -> u64 {
    10_000
}
fn default_request_timeout_ms() -> u64 {
    300_000
}
fn default_idle_timeout_ms() -> u64 {
    120_000
}
fn default_max_retries() -> u32 {
    3
}
fn default_retry_base_ms() -> u64 {
    500
}
fn default_retry_max_ms() -> u64 {
    30_000
}
fn default_retry_after_cap_ms() -> u64 {
    60_000
}
fn default_cooldown_after_failures() -> u32 {
    5
}
fn default_cooldown_ms() -> u64 {
    30_000
}

impl OpenAiModelConfig {
    /// A configuration with every optional setting at its default.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            model: model.into(),
            api_key_env: None,
            max_concurrency: default_max_concurrency(),
            requests_per_minute: None,
            tokens_per_minute: None,
            connect_timeout_ms: default_connect_timeout_ms(),
            request_timeout_ms: default_request_timeout_ms(),
            idle_timeout_ms: default_idle_timeout_ms(),
            max_retries: default_max_retries(),
            retry_base_ms: default_retry_base_ms(),
            retry_max_ms: default_retry_max_ms(),
            retry_after_cap_ms: default_retry_after_cap_ms(),
            cooldown_after_failures: default_cooldown_after_failures(),
            cooldown_ms: default_cooldown_ms(),
            fallbacks: Vec::new(),
        }
    }

    /// `connect-timeout-ms` as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    /// `request-timeout-ms` as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// `idle-timeout-ms` as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// Check the values that the types cannot, given the run's outbound
    /// allow-list and the names of every configured model. Returns the key
    /// (relative to `models.NAME`) and how to fix it.
    pub fn check(&self, name: &str, allow_hosts: &[String], model_names: &[&str]) -> Result<(), (String, String)> {
        let url = parse_base_url(&self.base_url).map_err(|m| ("base-url".to_string(), m))?;
        let host = url_host(&url).unwrap_or_default();
        if !host_allowed(allow_hosts, &host) {
            return Err((
                "base-url".into(),
                format!(
                    "outbound connections to {host} are not allowed: add \"{host}\" to [network] allow-hosts \
                     (the allow-list of hosts techne may contact)"
                ),
            ));
        }
        if self.model.trim().is_empty() {
            return Err(("model".into(), "give the model name the endpoint knows, e.g. \"gpt-4o-mini\"".into()));
        }
        if let Some(var) = &self.api_key_env
            && (var.is_empty() || var.contains('=') || var.contains('\0') || var.chars().any(char::is_whitespace))
        {
            return Err((
                "api-key-env".into(),
                "must be the name of an environment variable (e.g. \"OPENAI_API_KEY\"), not the key itself".into(),
            ));
        }
        if self.max_concurrency == 0 {
            return Err(("max-concurrency".into(), "must be at least 1".into()));
        }
        if self.requests_per_minute == Some(0) {
            return Err(("requests-per-minute".into(), "must be at least 1 (remove it for no limit)".into()));
        }
        if self.tokens_per_minute == Some(0) {
            return Err(("tokens-per-minute".into(), "must be at least 1 (remove it for no limit)".into()));
        }
        const DAY_MS: u64 = 86_400_000;
        for (key, value) in [
            ("connect-timeout-ms", self.connect_timeout_ms),
            ("request-timeout-ms", self.request_timeout_ms),
            ("idle-timeout-ms", self.idle_timeout_ms),
            ("retry-base-ms", self.retry_base_ms),
            ("retry-max-ms", self.retry_max_ms),
        ] {
            if value == 0 || value > DAY_MS {
                return Err((key.into(), format!("must be between 1 and {DAY_MS} (one day)")));
            }
        }
        if self.retry_after_cap_ms > DAY_MS {
            return Err(("retry-after-cap-ms".into(), format!("must be at most {DAY_MS} (one day)")));
        }
        if self.cooldown_ms > DAY_MS {
            return Err(("cooldown-ms".into(), format!("must be at most {DAY_MS} (one day)")));
        }
        if self.retry_base_ms > self.retry_max_ms {
            return Err(("retry-base-ms".into(), "must not exceed retry-max-ms".into()));
        }
        if self.max_retries > 100 {
            return Err(("max-retries".into(), "must be at most 100".into()));
        }
        for (i, fallback) in self.fallbacks.iter().enumerate() {
            let key = format!("fallbacks[{i}]");
            if fallback == name {
                return Err((key, format!("model '{name}' cannot be its own fallback: remove it from the list")));
            }
            if !model_names.contains(&fallback.as_str()) {
                return Err((
                    key,
                    format!(
                        "model '{fallback}' is not defined: add a [models.{fallback}] table or remove it from the list"
                    ),
                ));
            }
            if self.fallbacks[..i].contains(fallback) {
                return Err((key, format!("model '{fallback}' is listed twice: remove one")));
            }
        }
        Ok(())
    }
}

/// Parse and check a `base-url`: http or https, a host, no credentials, no
/// query or fragment. The message says how to fix it.
pub(crate) fn parse_base_url(text: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(text)
        .map_err(|e| format!("not a URL ({e}): write the API root, e.g. \"https://api.openai.com/v1\""))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("scheme `{}` is not supported: use http:// or https://", url.scheme()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host: write e.g. \"http://127.0.0.1:8080/v1\"".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("do not put credentials in base-url: name the environment variable that holds the API key \
                    in `api-key-env`"
            .into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(
            "remove the query and fragment: base-url is the API root, e.g. \"https://api.openai.com/v1\"".into()
        );
    }
    Ok(url)
}

/// The host of a URL as the allow-list spells it: lower case, IPv6 without brackets.
pub(crate) fn url_host(url: &reqwest::Url) -> Option<String> {
    url.host_str().map(|h| h.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase())
}

/// Whether `host` matches an entry of `[network] allow-hosts`: equal (ignoring
/// case), or under a `*.example.com` wildcard entry.
pub fn host_allowed(allow_hosts: &[String], host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    allow_hosts.iter().any(|entry| {
        let entry = entry.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        match entry.strip_prefix("*.") {
            Some(suffix) => host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}")),
            None => entry == host,
        }
    })
}

/// Check one `[network] allow-hosts` entry: a host name, an IP address or a
/// `*.domain` wildcard, without scheme, port or path.
pub fn check_allow_host(entry: &str) -> Result<(), String> {
    let bare = entry.strip_prefix("*.").unwrap_or(entry);
    let bare = bare.trim_start_matches('[').trim_end_matches(']');
    if bare.is_empty() {
        return Err("must not be empty: write a host name such as \"api.openai.com\"".into());
    }
    if entry.contains("://") || entry.contains('/') {
        return Err(format!(
            "write the host name only, without scheme or path (e.g. \"{}\")",
            entry.split("://").last().unwrap_or(entry).split('/').next().unwrap_or(entry)
        ));
    }
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    if bare.contains(':') {
        return Err("write the host name only, without a port: every port of an allowed host is allowed".into());
    }
    if !bare.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') || bare.contains('*') {
        return Err(format!("`{entry}` is not a host name: use letters, digits, '-' and '.', or a leading '*.'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn hosts_match_exactly_or_by_wildcard() {
        let allow = hosts(&["127.0.0.1", "API.openai.com", "*.example.com", "::1"]);
        assert!(host_allowed(&allow, "127.0.0.1"));
        assert!(host_allowed(&allow, "api.openai.com"));
        assert!(host_allowed(&allow, "a.b.example.com"));
        assert!(host_allowed(&allow, "[::1]"));
        assert!(!host_allowed(&allow, "example.com"));
        assert!(!host_allowed(&allow, "evil-example.com"));
        assert!(!host_allowed(&allow, "localhost"));
        assert!(!host_allowed(&[], "127.0.0.1"));
    }

    #[test]
    fn allow_host_entries_are_checked() {
        assert!(check_allow_host("api.openai.com").is_ok());
        assert!(check_allow_host("*.openai.azure.com").is_ok());
        assert!(check_allow_host("::1").is_ok());
        assert!(check_allow_host("https://api.openai.com/v1").unwrap_err().contains("\"api.openai.com\""));
        assert!(check_allow_host("localhost:8080").unwrap_err().contains("port"));
        assert!(check_allow_host("").is_err());
    }

    #[test]
    fn base_url_problems_say_how_to_fix_them() {
        assert!(parse_base_url("http://127.0.0.1:8080/v1").is_ok());
        assert!(parse_base_url("ftp://host/v1").unwrap_err().contains("http://"));
        assert!(parse_base_url("https://user:secret@host/v1").unwrap_err().contains("api-key-env"));
        assert!(parse_base_url("not a url").unwrap_err().contains("API root"));
    }

    #[test]
    fn checks_name_the_key() {
        let mut c = OpenAiModelConfig::new("http://127.0.0.1:1/v1", "m");
        let allow = hosts(&["127.0.0.1"]);
        assert_eq!(c.check("a", &allow, &["a", "b"]), Ok(()));
        assert_eq!(c.check("a", &[], &["a"]).unwrap_err().0, "base-url");
        assert!(c.check("a", &[], &["a"]).unwrap_err().1.contains("add \"127.0.0.1\" to [network] allow-hosts"));
        c.fallbacks = vec!["b".into(), "c".into()];
        let (key, message) = c.check("a", &allow, &["a", "b"]).unwrap_err();
        assert_eq!(key, "fallbacks[1]");
        assert!(message.contains("[models.c]"));
        c.fallbacks = vec!["a".into()];
        assert_eq!(c.check("a", &allow, &["a"]).unwrap_err().0, "fallbacks[0]");
        c.fallbacks.clear();
        c.retry_base_ms = 60_000;
        assert_eq!(c.check("a", &allow, &["a"]).unwrap_err().0, "retry-base-ms");
        c.retry_base_ms = 10;
        c.api_key_env = Some("sk-abc def".into());
        assert_eq!(c.check("a", &allow, &["a"]).unwrap_err().0, "api-key-env");
    }
}
