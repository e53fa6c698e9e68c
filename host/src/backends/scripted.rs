//! A scripted, in-process model backend: a **test double**.
//!
//! It answers from a list of rules (first rule whose `contains` text occurs in
//! the last user message or raw prompt wins) and otherwise echoes the prompt
//! or returns a fixed reply. Scores and embeddings are deterministic functions
//! of the text (word lengths, hashed bags of words), not a model's.
//!
//! It exists so the host's tests can drive the LLM capability before and
//! beside real backends. It is compiled only with the `test-doubles` cargo
//! feature, which the shipped `techne` binary does not enable, so no user can
//! run it by accident.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{
    BackendError, Choice, ContinuationScore, FinishReason, Generation, GenerationRequest, ModelBackend, Prompt, Role,
    ScoringRequest, TokenLogprob,
};

/// One scripted answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ScriptRule {
    /// The rule applies when the prompt contains this text.
    pub contains: String,
    /// The reply.
    pub reply: String,
}

/// What the backend answers when no rule matches.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fallback {
    /// Repeat the prompt text.
    #[default]
    Echo,
    /// Always this reply.
    Fixed(String),
}

/// Configuration of a scripted backend (`backend = "scripted"` in a run config
/// of a test build).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ScriptedConfig {
    /// Rules, first match wins.
    #[serde(default)]
    pub rules: Vec<ScriptRule>,
    /// Answer when no rule matches.
    #[serde(default)]
    pub fallback: Fallback,
    /// Never answer: every request waits forever (to test deadlines).
    #[serde(default)]
    pub hang: bool,
    /// Wait this long before answering each request.
    #[serde(default)]
    pub delay_ms: u64,
    /// Append the prompt text of every generation request to this file, one
    /// line each (so tests can see which requests a run made).
    #[serde(default)]
    pub request_log: Option<std::path::PathBuf>,
}

/// The scripted backend. See the module documentation.
#[derive(Debug, Default)]
pub struct ScriptedBackend {
    config: ScriptedConfig,
    requests: AtomicU64,
}

impl ScriptedBackend {
    /// A backend with the given script.
    pub fn new(config: ScriptedConfig) -> Self {
        Self { config, requests: AtomicU64::new(0) }
    }

    /// A backend that echoes every prompt.
    pub fn echo() -> Self {
        Self::new(ScriptedConfig::default())
    }

    /// A backend whose requests never complete.
    pub fn hanging() -> Self {
        Self::new(ScriptedConfig { hang: true, ..ScriptedConfig::default() })
    }

    /// How many requests (generation, scoring, embedding) it has received.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    async fn arrive(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if self.config.hang {
            std::future::pending::<()>().await;
        }
        if self.config.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(self.config.delay_ms)).await;
        }
    }

    fn reply_to(&self, prompt_text: &str) -> String {
        self.config
            .rules
            .iter()
            .find(|rule| prompt_text.contains(&rule.contains))
            .map(|rule| rule.reply.clone())
            .unwrap_or_else(|| match &self.config.fallback {
                Fallback::Echo => prompt_text.to_string(),
                Fallback::Fixed(reply) => reply.clone(),
            })
    }
}

/// The text a scripted rule is matched against: the last user message, or the raw text.
fn prompt_text(prompt: &Prompt) -> String {
    match prompt {
        Prompt::Text(text) => text.clone(),
        Prompt::Chat(messages) => {
            messages.iter().rev().find(|m| m.role == Role::User).map(|m| m.content.clone()).unwrap_or_default()
        }
    }
}

/// A deterministic stand-in for a token's log-probability: longer words are less likely.
fn word_logprob(word: &str) -> f32 {
    -(word.chars().count() as f32) / 10.0
}

#[async_trait::async_trait]
impl ModelBackend for ScriptedBackend {
    fn describe(&self) -> String {
        "scripted test double".to_string()
    }

    fn identity(&self) -> String {
        format!("scripted:{:?}", self.config)
    }

    async fn generate(&self, request: GenerationRequest) -> Result<Generation, BackendError> {
        self.arrive().await;
        let text = prompt_text(&request.prompt);
        if let Some(log) = &self.config.request_log {
            use std::io::Write;
            let line = format!("{}\n", text.replace('\n', " "));
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .and_then(|mut f| f.write_all(line.as_bytes()));
            if let Err(e) = written {
                return Err(BackendError::Failed(format!("cannot append to the request log {}: {e}", log.display())));
            }
        }
        let mut reply = self.reply_to(&text);
        let mut finish_reason = FinishReason::Stop;
        if let Some(cut) = request.sampling.stop.iter().filter_map(|s| reply.find(s.as_str())).min() {
            reply.truncate(cut);
        }
        let words: Vec<&str> = reply.split_inclusive(' ').collect();
        if words.len() > request.sampling.max_tokens as usize {
            reply = words[..request.sampling.max_tokens as usize].concat();
            finish_reason = FinishReason::Length;
        }
        let logprobs = if request.sampling.logprobs {
            reply
                .split_inclusive(' ')
                .map(|w| TokenLogprob { token: w.to_string(), logprob: word_logprob(w.trim()) })
                .collect()
        } else {
            Vec::new()
        };
        let completion_tokens = reply.split_inclusive(' ').count() as u32 * request.sampling.n;
        let choice = Choice { text: reply, finish_reason, logprobs };
        Ok(Generation {
            choices: vec![choice; request.sampling.n as usize],
            prompt_tokens: text.split_whitespace().count() as u32,
            completion_tokens,
        })
    }

    async fn score(&self, request: ScoringRequest) -> Result<Vec<ContinuationScore>, BackendError> {
        self.arrive().await;
        Ok(request
            .continuations
            .iter()
            .map(|c| {
                let token_logprobs: Vec<f32> = c.split_whitespace().map(word_logprob).collect();
                ContinuationScore { logprob_sum: token_logprobs.iter().map(|&l| f64::from(l)).sum(), token_logprobs }
            })
            .collect())
    }

    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, BackendError> {
        self.arrive().await;
        Ok(texts.iter().map(|t| hashed_bag_of_words(t, 64)).collect())
    }
}

/// An L2-normalised bag-of-words vector with words hashed into `dims` buckets.
fn hashed_bag_of_words(text: &str, dims: usize) -> Vec<f32> {
    let mut v = vec![0f32; dims];
    for word in text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        // FNV-1a: stable across runs and platforms.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in word.to_lowercase().bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        v[(h % dims as u64) as usize] += 1.0;
    }
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}
