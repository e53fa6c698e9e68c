//! Correctness against an independent reference: llama.cpp's `llama-server`
//! run on the same GGUF file as an imported model.
//!
//! For every prompt of a fixed set (`models/verify-prompts.jsonl`, embedded as
//! [`DEFAULT_PROMPTS`]) the comparison checks:
//!
//! * **tokenizer**: techne's token ids equal llama.cpp's `/tokenize` ids;
//! * **greedy continuation**: llama.cpp's `/completion` (temperature 0, prompt
//!   given as techne's token ids) against techne's greedy generation, token
//!   by token (the first divergence is reported);
//! * **top-1 next token**: at every position of llama.cpp's continuation,
//!   techne's most likely next token (teacher-forced on llama.cpp's tokens, so
//!   one divergence does not cascade) against llama.cpp's (`n_probs`, taken
//!   before sampling).
//!
//! The run passes when the overall top-1 agreement reaches the threshold (95 %
//! by default) and every prompt tokenizes identically. Greedy continuations of
//! two engines that round differently (llama.cpp quantises activations to 8
//! bits for its quantised dot products; techne computes in f32) can part at a
//! near-tie and then legitimately differ, so they are reported, not required.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::engine::{EngineError, GenerationParams, LocalModel};
use crate::tokenizer::ChatMessage;

/// The prompt set shipped with techne (`models/verify-prompts.jsonl`).
pub const DEFAULT_PROMPTS: &str = include_str!("../../../models/verify-prompts.jsonl");

/// The top-1 agreement a run must reach, as a fraction.
pub const DEFAULT_THRESHOLD: f64 = 0.95;

/// Why a comparison could not run.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A line of the prompt file is not a valid prompt.
    #[error("prompt file line {line}: {message}")]
    Prompts {
        /// The 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// The prompt file has no prompts.
    #[error("the prompt file has no prompts: write one JSON object per line, e.g. {{\"id\": \"a\", \"text\": \"…\"}}")]
    NoPrompts,
    /// `llama-server` could not be started or did not become ready.
    #[error("llama-server: {0}")]
    Server(String),
    /// A request to `llama-server` failed or its answer was unexpected.
    #[error("llama-server request {path}: {message}")]
    Request {
        /// The endpoint.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// techne's engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

type Result<T> = std::result::Result<T, VerifyError>;

/// One prompt of the comparison.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyPrompt {
    /// A short name shown in the table.
    pub id: String,
    /// Raw text to continue (tokenized with the model's BOS setting).
    #[serde(default)]
    pub text: Option<String>,
    /// A user message, rendered with the model's chat template.
    #[serde(default)]
    pub chat: Option<String>,
    /// Tokens to generate.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
}

fn default_max_tokens() -> usize {
    32
}

/// Parses a JSON-lines prompt file: one object per line with `id`, exactly one
/// of `text`/`chat`, and optionally `max_tokens` (1–512); blank lines and lines
/// starting with `#` are skipped.
pub fn parse_prompts(source: &str) -> Result<Vec<VerifyPrompt>> {
    let mut prompts = Vec::new();
    for (i, line) in source.lines().enumerate() {
        let line_no = i + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let bad = |message: String| VerifyError::Prompts { line: line_no, message };
        let prompt: VerifyPrompt = serde_json::from_str(trimmed).map_err(|e| bad(e.to_string()))?;
        if prompt.text.is_some() == prompt.chat.is_some() {
            return Err(bad("give exactly one of \"text\" (raw continuation) or \"chat\" (a user message)".into()));
        }
        if !(1..=512).contains(&prompt.max_tokens) {
            return Err(bad(format!("max_tokens is {}; use 1 to 512", prompt.max_tokens)));
        }
        if prompts.iter().any(|p: &VerifyPrompt| p.id == prompt.id) {
            return Err(bad(format!("duplicate id {:?}", prompt.id)));
        }
        prompts.push(prompt);
    }
    if prompts.is_empty() {
        return Err(VerifyError::NoPrompts);
    }
    Ok(prompts)
}

/// A `llama-server` process on `127.0.0.1` and a free port; dropping it stops
/// the process.
pub struct LlamaServer {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl std::fmt::Debug for LlamaServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaServer").field("port", &self.port).field("log", &self.log).finish_non_exhaustive()
    }
}

impl LlamaServer {
    /// Starts `binary` on `gguf` (one thread: llama.cpp's spinning thread
    /// barriers slow down badly on a busy machine; a `context`-token context)
    /// with its output in `log`, and waits up to `ready_within` for `/health`.
    pub fn start(binary: &Path, gguf: &Path, context: usize, log: &Path, ready_within: Duration) -> Result<Self> {
        if !binary.is_file() {
            return Err(VerifyError::Server(format!(
                "{} does not exist: build llama.cpp with scripts/build-llama-cpp.sh or pass --server PATH",
                binary.display()
            )));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| VerifyError::Server(format!("no free port: {e}")))?;
        let out = std::fs::File::create(log)
            .map_err(|e| VerifyError::Server(format!("cannot create {}: {e}", log.display())))?;
        let err = out.try_clone().map_err(|e| VerifyError::Server(format!("cannot share {}: {e}", log.display())))?;
        let child = Command::new(binary)
            .arg("--model")
            .arg(gguf)
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--threads", "1"])
            .args(["--ctx-size", &context.to_string(), "--parallel", "1", "--no-webui"])
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| VerifyError::Server(format!("cannot start {}: {e}", binary.display())))?;
        let mut server = Self { child, port, log: log.to_path_buf() };
        let deadline = Instant::now() + ready_within;
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(VerifyError::Server(format!(
                    "exited ({status}) before it was ready:\n{}",
                    server.log_tail()
                )));
            }
            if let Ok((200, _)) = http(port, "GET", "/health", None) {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err(VerifyError::Server(format!("not ready within {ready_within:?}:\n{}", server.log_tail())));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The last lines of the server's output.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let fail = |message: String| VerifyError::Request { path: path.to_string(), message };
        let (status, text) = http(self.port, "POST", path, Some(body)).map_err(fail)?;
        if status != 200 {
            return Err(fail(format!("HTTP {status}: {}", text.chars().take(300).collect::<String>())));
        }
        serde_json::from_str(&text).map_err(|e| fail(format!("not JSON ({e})")))
    }

    /// llama.cpp's token ids for `text` (`add_special`: prepend BOS when the
    /// model says so; special-token text is parsed as special tokens).
    pub fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let answer =
            self.post("/tokenize", &json!({"content": text, "add_special": add_special, "parse_special": true}))?;
        ids_of(&answer["tokens"]).ok_or_else(|| VerifyError::Request {
            path: "/tokenize".into(),
            message: format!("no `tokens` array in {answer}"),
        })
    }

    /// llama.cpp's greedy continuation of `prompt` (token ids): the generated
    /// ids with llama.cpp's own top-1 before sampling at each position.
    pub fn greedy(&self, prompt: &[u32], max_tokens: usize) -> Result<Vec<ReferenceToken>> {
        let body = json!({
            "prompt": prompt,
            "n_predict": max_tokens,
            "temperature": 0.0,
            "n_probs": REFERENCE_ALTERNATIVES,
            "post_sampling_probs": false,
            "cache_prompt": false,
            "samplers": ["top_k"],
            "top_k": 1,
        });
        let answer = self.post("/completion", &body)?;
        let bad = |message: String| VerifyError::Request { path: "/completion".into(), message };
        let probs = answer["completion_probabilities"]
            .as_array()
            .ok_or_else(|| bad("no `completion_probabilities` (a llama.cpp too old for n_probs?)".into()))?;
        probs
            .iter()
            .map(|p| {
                let id = p["id"].as_u64().ok_or_else(|| bad(format!("no token id in {p}")))?;
                let top = p["top_logprobs"]
                    .get(0)
                    .and_then(|t| t["id"].as_u64())
                    .ok_or_else(|| bad(format!("no top_logprobs in {p}")))?;
                let logprob = p["logprob"].as_f64().ok_or_else(|| bad(format!("no logprob in {p}")))?;
                let alternatives = p["top_logprobs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| Some((t["id"].as_u64()? as u32, t["logprob"].as_f64()? as f32)))
                    .collect();
                Ok(ReferenceToken { id: id as u32, top1: top as u32, logprob: logprob as f32, alternatives })
            })
            .collect()
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ids_of(value: &Value) -> Option<Vec<u32>> {
    value.as_array()?.iter().map(|v| v.as_u64().and_then(|n| u32::try_from(n).ok())).collect()
}

/// One HTTP/1.1 exchange with `127.0.0.1:port` (`Connection: close`):
/// the status and the body (chunked bodies are decoded).
fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> std::result::Result<(u16, String), String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("cannot connect: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(300))).map_err(|e| e.to_string())?;
    let payload = body.map(Value::to_string).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{payload}",
        payload.len()
    );
    stream.write_all(request.as_bytes()).map_err(|e| format!("cannot send: {e}"))?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(|e| format!("cannot read the answer: {e}"))?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("the answer has no HTTP header")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let mut body = raw[split + 4..].to_vec();
    if head.lines().any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.contains("chunked")) {
        body = dechunk(&body).ok_or("a malformed chunked body")?;
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// How many of llama.cpp's most likely tokens (with log-probabilities) each
/// reference position records.
pub const REFERENCE_ALTERNATIVES: usize = 5;

/// The default largest log-probability gap between two tokens, in llama.cpp's
/// distribution, at which the engines may part ways: a greedy divergence
/// where llama.cpp's choice led techne's by less is a near-tie (see
/// [`Divergence`]).
pub const DEFAULT_TIE_GAP: f32 = 0.5;

/// One token of llama.cpp's greedy continuation.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceToken {
    /// The generated token.
    pub id: u32,
    /// llama.cpp's most likely token at this position, before sampling.
    pub top1: u32,
    /// llama.cpp's log-probability of `id`.
    pub logprob: f32,
    /// llama.cpp's [`REFERENCE_ALTERNATIVES`] most likely tokens and their
    /// log-probabilities, most likely first.
    pub alternatives: Vec<(u32, f32)>,
}

/// Where two greedy continuations first part: both engines saw the same
/// tokens before `position`, then llama.cpp chose `reference` and techne
/// `techne`. Arithmetic that differs in its rounding (llama.cpp quantises
/// activations to 8 bits) flips the choice only where the two tokens are
/// nearly tied, so the gaps say whether a divergence is such a near-tie or
/// a real disagreement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Divergence {
    /// Position in the continuation.
    pub position: usize,
    /// llama.cpp's token there (`None`: llama.cpp had stopped).
    pub reference: Option<u32>,
    /// techne's token there (`None`: techne had stopped).
    pub techne: Option<u32>,
    /// llama.cpp's log-probability of its token minus that of techne's
    /// (`None` when techne's token is not among llama.cpp's
    /// [`REFERENCE_ALTERNATIVES`] most likely, or one side had stopped).
    pub reference_gap: Option<f32>,
    /// techne's log-probability of its token minus that of llama.cpp's, on
    /// the same prefix (`None` when one side had stopped).
    pub techne_gap: Option<f32>,
}

impl Divergence {
    /// Whether llama.cpp itself ranked techne's token within `tie_gap` of its
    /// own: a near-tie that either engine's rounding can tip.
    pub fn is_near_tie(&self, tie_gap: f32) -> bool {
        self.reference_gap.is_some_and(|g| g <= tie_gap)
    }
}

/// The comparison of one prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptComparison {
    /// The prompt's id.
    pub id: String,
    /// Prompt tokens (techne's).
    pub prompt_tokens: usize,
    /// Whether techne's prompt token ids equal llama.cpp's `/tokenize`.
    pub tokenizer_match: bool,
    /// Positions compared (llama.cpp's continuation length).
    pub positions: usize,
    /// Positions where techne's top-1 (teacher-forced) equals llama.cpp's.
    pub top1_agree: usize,
    /// Sum over the compared positions of |techne's − llama.cpp's log-probability| of llama.cpp's token.
    pub logprob_abs_diff_sum: f64,
    /// Where the greedy continuations first differ, what the engines chose
    /// there and by how much (`None`: identical).
    pub divergence: Option<Divergence>,
    /// techne's greedy continuation (token ids, end-of-sequence included when generated).
    pub techne_tokens: Vec<u32>,
    /// llama.cpp's greedy continuation (token ids).
    pub reference_tokens: Vec<u32>,
}

impl PromptComparison {
    /// The first position where the greedy continuations differ (`None`:
    /// identical).
    pub fn first_divergence(&self) -> Option<usize> {
        self.divergence.map(|d| d.position)
    }

    /// Top-1 agreement as a fraction (1 when nothing was compared).
    pub fn agreement(&self) -> f64 {
        if self.positions == 0 { 1.0 } else { self.top1_agree as f64 / self.positions as f64 }
    }
}

/// The result of a comparison over a prompt set.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyReport {
    /// Per prompt, in file order.
    pub prompts: Vec<PromptComparison>,
    /// The required top-1 agreement.
    pub threshold: f64,
    /// The largest llama.cpp log-probability gap at which a greedy
    /// divergence counts as a near-tie ([`DEFAULT_TIE_GAP`]).
    pub tie_gap: f32,
}

impl VerifyReport {
    /// Top-1 agreement over all positions of all prompts.
    pub fn agreement(&self) -> f64 {
        let positions: usize = self.prompts.iter().map(|p| p.positions).sum();
        let agree: usize = self.prompts.iter().map(|p| p.top1_agree).sum();
        if positions == 0 { 1.0 } else { agree as f64 / positions as f64 }
    }

    /// Mean |techne − llama.cpp| log-probability of llama.cpp's tokens over all positions.
    pub fn mean_logprob_diff(&self) -> f64 {
        let positions: usize = self.prompts.iter().map(|p| p.positions).sum();
        let sum: f64 = self.prompts.iter().map(|p| p.logprob_abs_diff_sum).sum();
        sum / positions.max(1) as f64
    }

    /// Prompts whose tokenization differs from llama.cpp's.
    pub fn tokenizer_mismatches(&self) -> usize {
        self.prompts.iter().filter(|p| !p.tokenizer_match).count()
    }

    /// Prompts whose greedy continuations part somewhere other than at a
    /// near-tie (see [`Divergence::is_near_tie`]).
    pub fn real_divergences(&self) -> usize {
        self.prompts.iter().filter(|p| p.divergence.is_some_and(|d| !d.is_near_tie(self.tie_gap))).count()
    }

    /// Whether the agreement reaches the threshold, every prompt tokenized
    /// identically and every greedy continuation agrees with llama.cpp's up
    /// to its end or to a near-tie.
    pub fn passed(&self) -> bool {
        self.agreement() >= self.threshold && self.tokenizer_mismatches() == 0 && self.real_divergences() == 0
    }
}

impl std::fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:<16} {:>7} {:>9} {:>9} {:>9} {:>10} {:>11} {:>9} {:>9} {:>13}",
            "prompt", "prompt", "tokenizer", "compared", "top-1", "mean", "first", "llama", "techne", "continuation"
        )?;
        writeln!(
            f,
            "{:<16} {:>7} {:>9} {:>9} {:>9} {:>10} {:>11} {:>9} {:>9} {:>13}",
            "", "tokens", "", "tokens", "agree", "|Δlogp|", "divergence", "gap", "gap", ""
        )?;
        let gap = |g: Option<f32>| g.map_or("–".to_string(), |g| format!("{g:.3}"));
        for p in &self.prompts {
            let divergence = p.first_divergence().map_or("–".to_string(), |d| format!("token {d}"));
            let verdict = match &p.divergence {
                None => "same",
                Some(d) if d.is_near_tie(self.tie_gap) => "near-tie",
                Some(_) => "DIFFERS",
            };
            let (llama_gap, techne_gap) = match &p.divergence {
                Some(d) => (gap(d.reference_gap), gap(d.techne_gap)),
                None => ("–".to_string(), "–".to_string()),
            };
            writeln!(
                f,
                "{:<16} {:>7} {:>9} {:>9} {:>8.1}% {:>10.3} {:>11} {:>9} {:>9} {:>13}",
                p.id,
                p.prompt_tokens,
                if p.tokenizer_match { "same" } else { "DIFFERS" },
                p.positions,
                100.0 * p.agreement(),
                p.logprob_abs_diff_sum / p.positions.max(1) as f64,
                divergence,
                llama_gap,
                techne_gap,
                verdict
            )?;
        }
        let positions: usize = self.prompts.iter().map(|p| p.positions).sum();
        let same = self.prompts.iter().filter(|p| p.divergence.is_none()).count();
        writeln!(
            f,
            "overall top-1 agreement {:.1}% over {positions} positions (required {:.0}%); mean |Δlogp| {:.3}; \
             identical greedy continuations {same}/{}, the others part at near-ties (llama.cpp gap ≤ {}) \
             except {}; tokenizer mismatches {}",
            100.0 * self.agreement(),
            100.0 * self.threshold,
            self.mean_logprob_diff(),
            self.prompts.len(),
            self.tie_gap,
            self.real_divergences(),
            self.tokenizer_mismatches()
        )?;
        write!(f, "{}", if self.passed() { "PASS" } else { "FAIL" })
    }
}

/// Compares `model` with `server` (llama.cpp on the model's source GGUF) on
/// `prompts`; `progress` is called with each prompt's comparison as it finishes.
pub fn compare(
    model: &LocalModel,
    server: &LlamaServer,
    prompts: &[VerifyPrompt],
    threshold: f64,
    tie_gap: f32,
    mut progress: impl FnMut(&PromptComparison),
) -> Result<VerifyReport> {
    let mut out = Vec::with_capacity(prompts.len());
    for prompt in prompts {
        let (text, add_special) = match (&prompt.text, &prompt.chat) {
            (Some(text), _) => (text.clone(), true),
            (None, Some(message)) => (model.render_chat(&[ChatMessage::user(message.clone())])?, false),
            (None, None) => {
                return Err(VerifyError::Prompts { line: 0, message: format!("prompt {:?} has no text", prompt.id) });
            }
        };
        let ids = model.tokenizer().encode(&text, add_special).map_err(EngineError::from)?;
        let reference_ids = server.tokenize(&text, add_special)?;
        let tokenizer_match = ids == reference_ids;
        // Both engines continue the same ids, so a tokenizer difference shows
        // up only in the tokenizer column.
        let reference = server.greedy(&ids, prompt.max_tokens)?;
        let reference_tokens: Vec<u32> = reference.iter().map(|t| t.id).collect();
        let mut params = GenerationParams::greedy(prompt.max_tokens);
        params.stop.clear();
        let generation = model.generate_ids(&ids, &params)?;
        let choice =
            generation.choices.first().ok_or_else(|| EngineError::BadOutput("a generation without choices".into()))?;
        let mut techne_tokens = choice.token_ids.clone();
        // techne's token ids leave out the end-of-sequence token it stopped on;
        // llama.cpp lists it, so compare it too.
        if techne_tokens.len() < prompt.max_tokens
            && let Some(&next) = reference_tokens.get(techne_tokens.len())
            && matches!(choice.finish_reason, crate::engine::FinishReason::Stop)
            && is_special(model, next)
        {
            techne_tokens.push(next);
        }
        let first_divergence = (0..techne_tokens.len().max(reference_tokens.len()))
            .find(|&i| techne_tokens.get(i) != reference_tokens.get(i));
        let scored = if reference_tokens.is_empty() {
            Vec::new()
        } else {
            model.score_ids_with_top(&ids, &reference_tokens, REFERENCE_ALTERNATIVES)?.tokens
        };
        let divergence = first_divergence.map(|position| {
            let reference_token = reference_tokens.get(position).copied();
            let techne_token = techne_tokens.get(position).copied();
            let (mut reference_gap, mut techne_gap) = (None, None);
            if let (Some(_), Some(b), Some(theirs), Some(ours)) =
                (reference_token, techne_token, reference.get(position), scored.get(position))
            {
                reference_gap = theirs.alternatives.iter().find(|(t, _)| *t == b).map(|&(_, lb)| theirs.logprob - lb);
                techne_gap = ours.top_logprobs.iter().find(|t| t.token_id == b).map(|t| t.logprob - ours.logprob);
            }
            Divergence { position, reference: reference_token, techne: techne_token, reference_gap, techne_gap }
        });
        let logprob_abs_diff_sum =
            scored.iter().zip(&reference).map(|(ours, theirs)| f64::from((ours.logprob - theirs.logprob).abs())).sum();
        let top1_agree = scored
            .iter()
            .zip(&reference)
            .filter(|(ours, theirs)| ours.top_logprobs.first().map(|t| t.token_id) == Some(theirs.top1))
            .count();
        let comparison = PromptComparison {
            id: prompt.id.clone(),
            prompt_tokens: ids.len(),
            tokenizer_match,
            positions: reference.len(),
            top1_agree,
            logprob_abs_diff_sum,
            divergence,
            techne_tokens,
            reference_tokens,
        };
        progress(&comparison);
        out.push(comparison);
    }
    Ok(VerifyReport { prompts: out, threshold, tie_gap })
}

/// Whether `id` is a special (control) token: it decodes to nothing when
/// special tokens are skipped.
fn is_special(model: &LocalModel, id: u32) -> bool {
    model.tokenizer().decode(&[id], true).is_ok_and(|text| text.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_prompt_set_parses() {
        let prompts = parse_prompts(DEFAULT_PROMPTS).expect("models/verify-prompts.jsonl");
        assert!(prompts.len() >= 8, "{} prompts", prompts.len());
        assert!(prompts.iter().any(|p| p.chat.is_some()) && prompts.iter().any(|p| p.text.is_some()));
    }

    #[test]
    fn bad_prompt_lines_name_the_line_and_the_fix() {
        let e = parse_prompts("{\"id\": \"a\", \"text\": \"x\"}\n\n{\"id\": \"b\"}\n").unwrap_err().to_string();
        assert!(e.contains("line 3") && e.contains("exactly one of"), "{e}");
        let e = parse_prompts("{\"id\": \"a\", \"text\": \"x\", \"max_tokens\": 0}").unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("1 to 512"), "{e}");
        let e = parse_prompts("{\"id\": \"a\", \"text\": \"x\"}\n{\"id\": \"a\", \"chat\": \"y\"}").unwrap_err();
        assert!(e.to_string().contains("duplicate id"), "{e}");
        assert!(matches!(parse_prompts("# only a comment\n"), Err(VerifyError::NoPrompts)));
        assert!(parse_prompts("{\"id\": \"a\", \"txt\": \"x\"}").unwrap_err().to_string().contains("unknown field"));
    }

    #[test]
    fn chunked_bodies_are_decoded() {
        assert_eq!(dechunk(b"4\r\nWiki\r\n5;x=1\r\npedia\r\n0\r\n\r\n").as_deref(), Some(&b"Wikipedia"[..]));
        assert_eq!(dechunk(b"9\r\nshort"), None);
    }

    #[test]
    fn the_report_passes_only_above_the_threshold_with_matching_tokenizers() {
        let prompt = |agree, tokenizer_match| PromptComparison {
            id: "p".into(),
            prompt_tokens: 3,
            tokenizer_match,
            positions: 10,
            top1_agree: agree,
            logprob_abs_diff_sum: 0.0,
            divergence: None,
            techne_tokens: vec![],
            reference_tokens: vec![],
        };
        let report = VerifyReport {
            prompts: vec![prompt(10, true), prompt(9, true)],
            threshold: 0.95,
            tie_gap: DEFAULT_TIE_GAP,
        };
        assert!((report.agreement() - 0.95).abs() < 1e-12);
        assert!(report.passed());
        assert!(report.to_string().ends_with("PASS"));
        let low = VerifyReport { prompts: vec![prompt(10, true), prompt(8, true)], ..report.clone() };
        assert!(!low.passed() && low.to_string().ends_with("FAIL"));
        let mismatch = VerifyReport { prompts: vec![prompt(10, false)], ..report.clone() };
        assert!(!mismatch.passed() && mismatch.to_string().contains("DIFFERS"));
        // A greedy divergence passes only at a near-tie in llama.cpp's distribution.
        let diverging = |reference_gap| {
            let mut p = prompt(10, true);
            p.divergence = Some(Divergence {
                position: 3,
                reference: Some(7),
                techne: Some(8),
                reference_gap,
                techne_gap: Some(0.01),
            });
            VerifyReport { prompts: vec![p], ..report.clone() }
        };
        let tie = diverging(Some(0.2));
        assert!(tie.passed() && tie.real_divergences() == 0, "{tie}");
        assert!(tie.to_string().contains("near-tie"), "{tie}");
        for apart in [diverging(Some(1.5)), diverging(None)] {
            assert!(!apart.passed() && apart.real_divergences() == 1, "{apart}");
            assert!(apart.to_string().contains("DIFFERS"), "{apart}");
        }
    }
}
