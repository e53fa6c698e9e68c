//! Text generation and scoring on an exported model with ONNX Runtime.
//!
//! [`LocalModel`] owns an ONNX Runtime session (behind a mutex, so the model
//! is `Send + Sync` and one forward pass runs at a time), the tokenizer and
//! the chat template. The key/value cache lives in a [`KvArena`] of rows; a
//! step binds a view of consecutive rows as both the `past_key_values.*`
//! inputs and the `present.*` outputs (IoBinding), so GroupQueryAttention
//! appends each row's new position in place instead of copying the cache
//! every token, and rows of different lengths can share a step (a
//! right-padded attention mask gives each row its own length).
//!
//! Generation itself (sampling, stop sequences, streaming, `n` choices that
//! share the prompt's prefill) is implemented once, by the batch decoder in
//! [`crate::scheduler`]: a call on [`LocalModel`] decodes its request alone,
//! and a [`crate::scheduler::Scheduler`] batches concurrent requests. Scoring
//! prefills the prompt once and runs each continuation as one chunk on top of
//! the prompt's cache.
//!
//! Reported log-probabilities are those of the model's raw distribution
//! (log-softmax of the logits, before temperature, top-k/top-p and the
//! repetition penalty), so they are comparable with [`LocalModel::score`].

use std::borrow::Cow;
use std::path::Path;
use std::sync::Mutex;

use ort::AsPointer;
use ort::memory::MemoryInfo;
use ort::session::{IoBinding, Session};
use ort::value::{Shape, Tensor, TensorRefMut, Value, ValueTypeMarker};
use serde::{Deserialize, Serialize};

use crate::external::{ConcatLayout, KvLayout, SequenceCache};
use crate::onnx_export::{LlamaConfig, ModelIo};
use crate::registry::{ModelEntry, RegistryError};
use crate::runtime::{Runtime, RuntimeError, ort_err};
use crate::tokenizer::{ChatMessage, ChatTemplate, SpecialTokens, Tokenizer, TokenizerError};

/// Errors raised by generation and scoring.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// ONNX Runtime failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Tokenisation or the chat template failed.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// The model entry is unusable.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The request does not fit in the context window.
    #[error("{needed} tokens do not fit in the model's context of {max} tokens")]
    ContextOverflow {
        /// Tokens needed.
        needed: usize,
        /// The context size.
        max: usize,
    },
    /// The parameters are invalid.
    #[error("invalid parameters: {0}")]
    InvalidParams(String),
    /// Scoring and generation need at least one prompt token.
    #[error("the prompt is empty (and the model has no BOS token to start from)")]
    EmptyPrompt,
    /// The model's output is not what the exporter produces.
    #[error("unexpected model output: {0}")]
    BadOutput(String),
    /// A batched decode step failed; every request in the batch fails with it.
    #[error("the batched decode step failed: {0} (the request can be retried)")]
    BatchFailed(String),
    /// The scheduler's worker thread is gone.
    #[error("the batching scheduler has stopped (its worker thread ended); create a new one")]
    SchedulerStopped,
}

/// A result with an [`EngineError`].
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// Sampling and stopping parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerationParams {
    /// Most tokens to generate per choice.
    pub max_tokens: usize,
    /// Softmax temperature; 0 means greedy decoding.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0 = all).
    pub top_k: usize,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches `top_p`.
    pub top_p: f32,
    /// Divide positive (multiply negative) logits of tokens already in the
    /// prompt or the output by this factor (1 = off).
    pub repetition_penalty: f32,
    /// Random seed; the same seed, prompt and parameters give the same text.
    pub seed: Option<u64>,
    /// Stop when the output contains one of these strings (it is cut before it).
    pub stop: Vec<String>,
    /// Number of choices to generate (they share the prompt prefill).
    pub n: usize,
    /// Return per-token log-probabilities.
    pub logprobs: bool,
    /// How many alternatives to return per token (0–20) when `logprobs` is set.
    pub top_logprobs: usize,
}

impl Default for GenerationParams {
    fn default() -> Self {
        Self {
            max_tokens: 256,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: None,
            stop: Vec::new(),
            n: 1,
            logprobs: false,
            top_logprobs: 0,
        }
    }
}

impl GenerationParams {
    /// Greedy decoding of at most `max_tokens` tokens.
    pub fn greedy(max_tokens: usize) -> Self {
        Self { max_tokens, temperature: 0.0, ..Self::default() }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(EngineError::InvalidParams(m.to_string()));
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad("temperature must be a finite number >= 0");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p must be in (0, 1]");
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return bad("repetition_penalty must be > 0");
        }
        if self.n == 0 || self.n > 64 {
            return bad("n must be between 1 and 64");
        }
        if self.top_logprobs > 20 {
            return bad("top_logprobs must be at most 20");
        }
        if self.stop.iter().any(String::is_empty) {
            return bad("stop sequences must not be empty");
        }
        Ok(())
    }
}

/// Why a choice ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-sequence token or a stop sequence.
    Stop,
    /// `max_tokens` or the context window was reached.
    Length,
    /// The streaming callback asked to stop.
    Cancelled,
}

/// One generated token, reported to a streaming callback.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEvent<'a> {
    /// The choice it belongs to.
    pub index: usize,
    /// The token id (`None` for the final flush of a choice).
    pub token_id: Option<u32>,
    /// New text since the previous event of this choice. Text that could be
    /// the start of a stop sequence, or an incomplete UTF-8 character, is held
    /// back until it is resolved, so the deltas add up to the choice's text.
    pub text: &'a str,
    /// The token's log-probability under the model (when there is a token).
    pub logprob: Option<f32>,
    /// Set on the last event of a choice.
    pub finish_reason: Option<FinishReason>,
}

/// The length of the longest suffix of `text` that is a proper prefix of a stop sequence.
pub(crate) fn stop_prefix_len(text: &str, stops: &[String]) -> usize {
    let mut best = 0;
    for stop in stops {
        for (i, _) in stop.char_indices().skip(1) {
            if text.ends_with(&stop[..i]) {
                best = best.max(i);
            }
        }
    }
    best
}

/// An alternative token and its log-probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopLogprob {
    /// The token id.
    pub token_id: u32,
    /// The token text.
    pub token: String,
    /// Its log-probability.
    pub logprob: f32,
}

/// A token and its log-probability under the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    /// The token id.
    pub token_id: u32,
    /// The token text.
    pub token: String,
    /// Its log-probability.
    pub logprob: f32,
    /// The most likely alternatives at this position (when asked for).
    pub top_logprobs: Vec<TopLogprob>,
}

/// One generated choice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    /// The index among the choices.
    pub index: usize,
    /// The generated text (special tokens removed, cut before a stop sequence).
    pub text: String,
    /// Why generation ended.
    pub finish_reason: FinishReason,
    /// The generated token ids (without the end-of-sequence token).
    pub token_ids: Vec<u32>,
    /// Per-token log-probabilities, when asked for.
    pub logprobs: Option<Vec<TokenLogprob>>,
}

/// Token counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated over all choices.
    pub completion_tokens: usize,
    /// The sum.
    pub total_tokens: usize,
}

/// The result of a generation call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// The choices.
    pub choices: Vec<Choice>,
    /// Token counts.
    pub usage: Usage,
}

/// The log-likelihood of one continuation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContinuationScore {
    /// The continuation's tokens with their log-probabilities.
    pub tokens: Vec<TokenLogprob>,
    /// The sum of the log-probabilities.
    pub total_logprob: f64,
    /// Whether every token is the model's most likely one (greedy).
    pub is_greedy: bool,
}

/// A small deterministic generator (SplitMix64).
#[derive(Debug, Clone)]
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

pub(crate) fn log_softmax_at(logits: &[f32]) -> (f32, f64) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    // Terms below e^-60 cannot move an f64 sum that holds e^0 = 1.
    let sum: f64 = logits.iter().map(|&l| l - max).filter(|&x| x > -60.0).map(|x| f64::from(x.exp())).sum();
    (max, sum.ln())
}

fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

pub(crate) fn sample(logits: &[f32], history: &[u32], p: &GenerationParams, rng: &mut Rng) -> u32 {
    let mut l: Cow<[f32]> = Cow::Borrowed(logits);
    if p.repetition_penalty != 1.0 {
        let lm = l.to_mut();
        let mut seen = std::collections::HashSet::new();
        for &t in history {
            if seen.insert(t)
                && let Some(x) = lm.get_mut(t as usize)
            {
                *x = if *x > 0.0 { *x / p.repetition_penalty } else { *x * p.repetition_penalty };
            }
        }
    }
    if p.temperature <= 1e-6 {
        return argmax(&l) as u32;
    }
    // Integer keys order the tokens by descending logit, then ascending id,
    // and compare without looking the logits up. Only the most likely
    // tokens need an order: top-k keeps k of them and top-p a prefix of
    // them; the others are walked in the (deterministic) order selection
    // leaves them in. Sorting all ~50k logits per token would cost more than
    // a decode step.
    let n = l.len();
    let mut keys: Vec<u64> =
        l.iter().enumerate().map(|(i, &x)| (u64::from(!total_order_bits(x)) << 32) | i as u64).collect();
    let id = |key: u64| (key & 0xFFFF_FFFF) as usize;
    let top_k = p.top_k > 0 && p.top_k < n;
    let head = if top_k { p.top_k } else { SORTED_HEAD.min(n) };
    if head < n {
        keys.select_nth_unstable(head - 1);
    }
    keys[..head].sort_unstable();
    if top_k {
        keys.truncate(head);
    }
    // Every token's weight e^((logit − max)/T) in one SIMD pass (the same
    // bits on every instruction set).
    let max = l[id(keys[0])];
    let mut weights = l.into_owned();
    crate::kernels::exp::exp_scaled_in_place(&mut weights, max, 1.0 / p.temperature);
    let weight = |key: u64| f64::from(weights[id(key)]);
    let total = if top_k { keys.iter().map(|&k| weight(k)).sum() } else { sum_in_fixed_order(&weights) };
    let mut kept = keys.len();
    if p.top_p < 1.0 {
        let nucleus = |keys: &[u64], limit: usize| {
            let mut acc = 0.0;
            keys.iter().take(limit).position(|&k| {
                acc += weight(k) / total;
                acc >= f64::from(p.top_p)
            })
        };
        kept = match nucleus(&keys, head) {
            Some(j) => j + 1,
            None if head < keys.len() => {
                // The nucleus reaches past the sorted head: order everything.
                keys.sort_unstable();
                nucleus(&keys, keys.len()).map_or(keys.len(), |j| j + 1)
            }
            None => keys.len(),
        };
    }
    let kept = &keys[..kept];
    let kept_total = if kept.len() == keys.len() { total } else { kept.iter().map(|&k| weight(k)).sum() };
    let mut u = rng.next_f64() * kept_total;
    for &k in kept {
        u -= weight(k);
        if u < 0.0 {
            return id(k) as u32;
        }
    }
    // Rounding between the total and the walk left a sliver: the last token.
    kept.last().map_or(0, |&k| id(k) as u32)
}

/// A float's bits as an unsigned integer in [`f32::total_cmp`]'s order.
fn total_order_bits(x: f32) -> u32 {
    let b = x.to_bits();
    if b & 0x8000_0000 != 0 { !b } else { b | 0x8000_0000 }
}

/// The sum of `values` in f64, in an order fixed by the code (8 running
/// sums over the positions modulo 8, then added in turn), so that it is the
/// same on every machine.
fn sum_in_fixed_order(values: &[f32]) -> f64 {
    let mut sums = [0f64; 8];
    let mut chunks = values.chunks_exact(8);
    for c in &mut chunks {
        for (s, &v) in sums.iter_mut().zip(c) {
            *s += f64::from(v);
        }
    }
    for (s, &v) in sums.iter_mut().zip(chunks.remainder()) {
        *s += f64::from(v);
    }
    sums.iter().sum()
}

/// How many of the most likely tokens [`sample`] sorts before walking the
/// rest unsorted.
const SORTED_HEAD: usize = 256;

/// Key/value cache memory for up to `rows` sequences of `capacity` positions:
/// one buffer per `past_key_values.*` input, laid out `[rows, kv_heads,
/// capacity, head_dim]` like the graph's tensors. A step binds a view over a
/// run of consecutive rows as both the `past_key_values.*` input and the
/// `present.*` output, so GroupQueryAttention writes each row's new positions
/// in place (at that row's own length) instead of copying the cache.
///
/// For a model from elsewhere ([`crate::external::ConcatLayout`]) there are no
/// buffers: each row holds the `present.*` values of its last step instead
/// (`sequences`, shared between rows that copy one another).
pub(crate) struct KvArena {
    buffers: Vec<Vec<f32>>,
    /// Per-row caches of a concat-layout model (empty for the shared-buffer layout).
    sequences: Vec<Option<SequenceCache>>,
    rows: usize,
    capacity: usize,
    heads: usize,
    head_dim: usize,
}

impl KvArena {
    /// Zeroed memory for `rows` rows of `capacity` positions.
    pub(crate) fn new(config: &LlamaConfig, rows: usize, capacity: usize) -> Self {
        let (heads, head_dim) = (config.n_kv_heads, config.head_dim);
        let size = rows * heads * capacity * head_dim;
        let buffers = (0..2 * config.n_layers).map(|_| vec![0.0f32; size]).collect();
        Self { buffers, sequences: Vec::new(), rows, capacity, heads, head_dim }
    }

    /// Room for `rows` per-row caches of a concat-layout model (nothing is allocated).
    pub(crate) fn for_sequences(config: &LlamaConfig, rows: usize, capacity: usize) -> Self {
        let sequences = vec![None; rows];
        Self { buffers: Vec::new(), sequences, rows, capacity, heads: config.n_kv_heads, head_dim: config.head_dim }
    }

    /// The cache of row `row` of a concat-layout model.
    pub(crate) fn sequence(&self, row: usize) -> Option<SequenceCache> {
        self.sequences.get(row).cloned().flatten()
    }

    /// Replaces the cache of row `row` of a concat-layout model (no-op for the shared-buffer layout).
    pub(crate) fn set_sequence(&mut self, row: usize, cache: Option<SequenceCache>) {
        if let Some(slot) = self.sequences.get_mut(row) {
            *slot = cache;
        }
    }

    /// Frees the per-row caches of rows `from..` (no longer in use).
    pub(crate) fn release_rows_from(&mut self, from: usize) {
        for slot in self.sequences.iter_mut().skip(from) {
            *slot = None;
        }
    }

    /// Bytes of cache per position of one row, for `config`.
    pub(crate) fn bytes_per_position(config: &LlamaConfig) -> usize {
        2 * config.n_layers * config.n_kv_heads * config.head_dim * std::mem::size_of::<f32>()
    }

    /// How many rows fit.
    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    /// Positions per row.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    fn row_size(&self) -> usize {
        self.heads * self.capacity * self.head_dim
    }

    /// Copies the first `len` positions of row `from` into row `to`.
    pub(crate) fn copy_row(&mut self, from: usize, to: usize, len: usize) {
        if from == to || len == 0 {
            return;
        }
        if !self.sequences.is_empty() {
            let cache = self.sequence(from);
            self.set_sequence(to, cache);
            return;
        }
        let (row, head, span) = (self.row_size(), self.capacity * self.head_dim, len * self.head_dim);
        for buffer in &mut self.buffers {
            for h in 0..self.heads {
                let src = from * row + h * head;
                buffer.copy_within(src..src + span, to * row + h * head);
            }
        }
    }

    /// A larger arena holding the first `lens[r]` positions of rows `0..lens.len()` of this one.
    pub(crate) fn grown(&self, rows: usize, capacity: usize, lens: &[usize]) -> Self {
        let (rows, capacity) = (rows.max(self.rows), capacity.max(self.capacity));
        if !self.sequences.is_empty() {
            let mut sequences = self.sequences.clone();
            sequences.resize(rows, None);
            return Self { buffers: Vec::new(), sequences, rows, capacity, heads: self.heads, head_dim: self.head_dim };
        }
        let size = rows * self.heads * capacity * self.head_dim;
        let (old_row, old_head) = (self.row_size(), self.capacity * self.head_dim);
        let (new_row, new_head) = (self.heads * capacity * self.head_dim, capacity * self.head_dim);
        let buffers = self
            .buffers
            .iter()
            .map(|old| {
                let mut new = vec![0.0f32; size];
                for (r, &len) in lens.iter().enumerate() {
                    for h in 0..self.heads {
                        let (src, dst, span) =
                            (r * old_row + h * old_head, r * new_row + h * new_head, len * self.head_dim);
                        new[dst..dst + span].copy_from_slice(&old[src..src + span]);
                    }
                }
                new
            })
            .collect();
        Self { buffers, sequences: Vec::new(), rows, capacity, heads: self.heads, head_dim: self.head_dim }
    }
}

/// Binds `value` as input `name` without the copy that `ort` makes of
/// borrowed tensors, so that the same memory can also be bound as an output
/// (GroupQueryAttention detects the shared past/present buffer by address).
fn bind_input_in_place(
    binding: &mut IoBinding,
    name: &str,
    value: &Value<impl ValueTypeMarker + ?Sized>,
) -> Result<()> {
    let name = std::ffi::CString::new(name).map_err(|e| EngineError::BadOutput(format!("input name: {e}")))?;
    // SAFETY: the binding and the value are live ONNX Runtime objects; the
    // caller keeps `value` (and the memory it views) alive until the run that
    // uses this binding has finished.
    let status = unsafe { (ort::api().BindInput)(binding.ptr_mut(), name.as_ptr(), value.ptr()) };
    if status.0.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null status is an error object that we own and release once.
    let message = unsafe {
        let text = std::ffi::CStr::from_ptr((ort::api().GetErrorMessage)(status.0)).to_string_lossy().into_owned();
        (ort::api().ReleaseStatus)(status.0);
        text
    };
    Err(RuntimeError::Ort(format!("binding `{}`: {message}", name.to_string_lossy())).into())
}

/// A chat/completion model loaded into ONNX Runtime.
pub struct LocalModel {
    pub(crate) session: Mutex<Session>,
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
    pub(crate) special: SpecialTokens,
    config: LlamaConfig,
    past_names: Vec<String>,
    present_names: Vec<String>,
    /// Whether the graph takes `logits_to_keep` (graph version 2 and later).
    logits_to_keep: bool,
    /// The names and cache layout of a model from elsewhere (`None`: techne's own export).
    concat: Option<ConcatLayout>,
    /// Decode steps with fewer rows than this run one ONNX Runtime call per
    /// row (see [`single_row_steps_below`]).
    single_row_steps_below: usize,
    /// The graph's attention takes several rows of several new positions in
    /// one call (techne's `CausalAttention`): continuations are scored
    /// together.
    multi_row_passes: bool,
    name: String,
    _runtime: Runtime,
}

/// The logits a many-row scoring pass may hold at once (`rows × positions ×
/// vocab` f32 values; 64 MB).
const SCORING_PASS_LOGITS: usize = 16 << 20;

/// Indices of `continuations` in groups scored by one pass each: in order,
/// as many as keep the padded pass within [`SCORING_PASS_LOGITS`] (a
/// continuation longer than that is a group of its own).
fn score_groups(continuations: &[Vec<u32>], vocab: usize) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut longest = 0;
    for (i, cont) in continuations.iter().enumerate() {
        let fed = cont.len().saturating_sub(1);
        match groups.last_mut() {
            Some(group) if (group.len() + 1) * longest.max(fed) * vocab <= SCORING_PASS_LOGITS => {
                group.push(i);
                longest = longest.max(fed);
            }
            _ => {
                groups.push(vec![i]);
                longest = fed;
            }
        }
    }
    groups
}

/// Below how many rows a decode step of techne's own export is cheaper as
/// one ONNX Runtime call per row. Only the f32 export on stock operators
/// (`stock_operators`, or a CPU without the kernel's SIMD paths) gains: its `MatMulNBits`
/// takes a fused one-row kernel, but for two or more rows it dequantises the
/// weights and runs an f32 GEMM (measured on 2 cores: 7.7 ms for one row,
/// 20.6 for two, 24.3 for four, so two rows go faster one at a time). techne's
/// `BlockQuantMatMul` and the int8 kernels decode each block once for all
/// rows: always batch. Either way each row's numbers are the same.
pub fn single_row_steps_below(options: &crate::onnx_export::ExportOptions) -> usize {
    if options.accuracy_level == 0 && !options.uses_block_quant_kernel() { 3 } else { 0 }
}

impl std::fmt::Debug for LocalModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalModel").field("name", &self.name).field("config", &self.config).finish_non_exhaustive()
    }
}

impl LocalModel {
    /// Loads a registry entry with `threads` intra-op threads (0 = physical cores).
    pub fn load(runtime: &Runtime, entry: &ModelEntry, threads: usize) -> Result<Self> {
        let m = &entry.manifest;
        let tokenizer = Tokenizer::from_file(entry.dir.join(&m.tokenizer_file))?;
        let template = match &m.chat_template {
            Some(src) => {
                Some(ChatTemplate::new(src, m.special_tokens.bos.as_deref(), m.special_tokens.eos.as_deref())?)
            }
            None => None,
        };
        if let KvLayout::Concat(layout) = &m.layout {
            let model_path = entry.dir.join(&m.model_file);
            let session = runtime.llm_session(&model_path, threads)?;
            let names: Vec<&str> = session.inputs().iter().map(|o| o.name()).collect();
            if let Some(missing) = m.io.inputs.iter().find(|n| !names.contains(&n.as_str())) {
                return Err(EngineError::BadOutput(format!(
                    "{} has no input `{missing}` although the manifest records it: re-import the model directory",
                    model_path.display()
                )));
            }
            return Ok(Self {
                session: Mutex::new(session),
                tokenizer,
                template,
                special: m.special_tokens.clone(),
                config: m.config.clone(),
                past_names: layout.past_keys.clone(),
                present_names: layout.present_keys.clone(),
                logits_to_keep: false,
                concat: Some(ConcatLayout::clone(layout)),
                single_row_steps_below: 0,
                multi_row_passes: false,
                name: entry.name.clone(),
                _runtime: runtime.clone(),
            });
        }
        let mut model = Self::from_parts(
            runtime,
            &entry.dir.join(&m.model_file),
            tokenizer,
            template,
            m.special_tokens.clone(),
            m.config.clone(),
            &m.io,
            &entry.name,
            threads,
        )?;
        model.single_row_steps_below = single_row_steps_below(&m.export_options);
        model.multi_row_passes = matches!(m.layout, KvLayout::SharedBuffer)
            && m.graph_version >= crate::onnx_export::FIRST_GRAPH_WITH_TECHNE_ATTENTION
            && m.export_options.uses_techne_attention();
        Ok(model)
    }

    /// Decode steps with fewer rows than this run one ONNX Runtime call per
    /// row (0: every step is one call).
    pub fn single_row_steps_below(&self) -> usize {
        self.single_row_steps_below
    }

    /// Whether several continuations are scored in one many-row pass
    /// (techne's export with its attention operator), rather than one after
    /// another.
    pub fn scores_continuations_together(&self) -> bool {
        self.multi_row_passes
    }

    /// Loads a model from its parts.
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        runtime: &Runtime,
        model_path: &Path,
        tokenizer: Tokenizer,
        template: Option<ChatTemplate>,
        special: SpecialTokens,
        config: LlamaConfig,
        io: &ModelIo,
        name: &str,
        threads: usize,
    ) -> Result<Self> {
        let session = runtime.llm_session(model_path, threads)?;
        let names: Vec<&str> = session.inputs().iter().map(|o| o.name()).collect();
        for want in &io.inputs {
            if !names.contains(&want.as_str()) {
                return Err(EngineError::BadOutput(format!("model has no input `{want}`")));
            }
        }
        let past_names = io.inputs.iter().filter(|n| n.starts_with("past_key_values.")).cloned().collect::<Vec<_>>();
        let present_names = io.outputs.iter().filter(|n| n.starts_with("present.")).cloned().collect::<Vec<_>>();
        if past_names.len() != 2 * config.n_layers || present_names.len() != past_names.len() {
            return Err(EngineError::BadOutput("past/present names do not match the layer count".into()));
        }
        Ok(Self {
            session: Mutex::new(session),
            tokenizer,
            template,
            special,
            config,
            past_names,
            present_names,
            logits_to_keep: io.inputs.iter().any(|n| n == "logits_to_keep"),
            concat: None,
            single_row_steps_below: 0,
            multi_row_passes: false,
            name: name.to_string(),
            _runtime: runtime.clone(),
        })
    }

    /// The model name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The hyperparameters.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// Whether the model is a model from elsewhere, decoded one sequence per
    /// ONNX Runtime call with the concat cache layout (see [`crate::external`]).
    pub fn is_concat_layout(&self) -> bool {
        self.concat.is_some()
    }

    /// An empty key/value cache for `rows` sequences of up to `capacity` positions.
    pub(crate) fn new_arena(&self, rows: usize, capacity: usize) -> KvArena {
        match self.concat {
            Some(_) => KvArena::for_sequences(&self.config, rows, capacity),
            None => KvArena::new(&self.config, rows, capacity),
        }
    }

    /// The largest number of tokens (prompt + output) per sequence.
    pub fn max_context(&self) -> usize {
        self.config.max_context
    }

    /// Renders a conversation with the chat template and the assistant header.
    pub fn render_chat(&self, messages: &[ChatMessage]) -> Result<String> {
        let t = self.template.as_ref().ok_or(TokenizerError::NoChatTemplate)?;
        Ok(t.render(messages, true)?)
    }

    /// The prompt token ids of a conversation (the chat template with the assistant header).
    pub fn chat_ids(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        let prompt = self.render_chat(messages)?;
        // The template writes any BOS itself, so no special tokens are added.
        Ok(self.tokenizer.encode(&prompt, false)?)
    }

    /// The prompt token ids of a raw text prompt (with the tokenizer's BOS, if any).
    pub fn prompt_ids(&self, prompt: &str) -> Result<Vec<u32>> {
        self.encode_prompt(prompt)
    }

    /// Generates assistant replies to a conversation.
    pub fn chat(&self, messages: &[ChatMessage], params: &GenerationParams) -> Result<Generation> {
        let ids = self.chat_ids(messages)?;
        self.generate_ids(&ids, params)
    }

    /// Continues a raw text prompt.
    pub fn complete(&self, prompt: &str, params: &GenerationParams) -> Result<Generation> {
        let ids = self.encode_prompt(prompt)?;
        self.generate_ids(&ids, params)
    }

    /// Scores continuations of a raw text prompt: the log-likelihood of each
    /// continuation's tokens given the prompt (prompt and continuation are
    /// tokenized separately; the prompt is prefilled once for all of them).
    pub fn score(&self, prompt: &str, continuations: &[String]) -> Result<Vec<ContinuationScore>> {
        let p = self.encode_prompt(prompt)?;
        let conts = continuations.iter().map(|c| self.tokenizer.encode(c, false)).collect::<Result<Vec<_>, _>>()?;
        self.score_many_ids(&p, &conts)
    }

    /// Scores assistant replies to a conversation.
    pub fn score_chat(&self, messages: &[ChatMessage], continuations: &[String]) -> Result<Vec<ContinuationScore>> {
        let prompt = self.render_chat(messages)?;
        let p = self.tokenizer.encode(&prompt, false)?;
        let conts = continuations.iter().map(|c| self.tokenizer.encode(c, false)).collect::<Result<Vec<_>, _>>()?;
        self.score_many_ids(&p, &conts)
    }

    fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>> {
        let mut ids = self.tokenizer.encode(prompt, true)?;
        if ids.is_empty()
            && let Some(bos) = self.special.bos.as_deref().and_then(|b| self.tokenizer.token_to_id(b))
        {
            ids.push(bos);
        }
        Ok(ids)
    }

    fn token_text(&self, id: u32) -> String {
        self.tokenizer.decode(&[id], false).unwrap_or_default()
    }

    pub(crate) fn logprob_entry(&self, logits: &[f32], id: u32, top: usize) -> TokenLogprob {
        let (max, lse) = log_softmax_at(logits);
        let lp = |i: usize| (f64::from(logits[i] - max) - lse) as f32;
        let mut top_logprobs = Vec::new();
        if top > 0 {
            let mut idx: Vec<usize> = (0..logits.len()).collect();
            let cmp = |a: &usize, b: &usize| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b));
            let k = top.min(idx.len());
            idx.select_nth_unstable_by(k - 1, cmp);
            idx.truncate(k);
            idx.sort_unstable_by(cmp);
            top_logprobs = idx
                .into_iter()
                .map(|i| TopLogprob { token_id: i as u32, token: self.token_text(i as u32), logprob: lp(i) })
                .collect();
        }
        TokenLogprob { token_id: id, token: self.token_text(id), logprob: lp(id as usize), top_logprobs }
    }

    /// Scores `continuation` token ids after `prompt` token ids.
    pub fn score_ids(&self, prompt: &[u32], continuation: &[u32]) -> Result<ContinuationScore> {
        let mut v = self.score_many_ids(prompt, std::slice::from_ref(&continuation.to_vec()))?;
        v.pop().ok_or_else(|| EngineError::BadOutput("no score".into()))
    }

    /// Scores several continuations of one prompt: the prompt is prefilled
    /// once, then each continuation runs as one chunk on the prompt's cache.
    pub fn score_many_ids(&self, prompt: &[u32], continuations: &[Vec<u32>]) -> Result<Vec<ContinuationScore>> {
        self.score_many_ids_with_top(prompt, continuations, 0)
    }

    /// Scores `continuation` token ids after `prompt` token ids, teacher-forced,
    /// with the model's `top` most likely tokens at every position (in each
    /// token's `top_logprobs`; `top_logprobs[0]` is the model's own top-1).
    pub fn score_ids_with_top(&self, prompt: &[u32], continuation: &[u32], top: usize) -> Result<ContinuationScore> {
        let mut v = self.score_many_ids_with_top(prompt, std::slice::from_ref(&continuation.to_vec()), top)?;
        v.pop().ok_or_else(|| EngineError::BadOutput("no score".into()))
    }

    fn score_many_ids_with_top(
        &self,
        prompt: &[u32],
        continuations: &[Vec<u32>],
        top: usize,
    ) -> Result<Vec<ContinuationScore>> {
        if prompt.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        let v = self.config.vocab;
        for &t in prompt.iter().chain(continuations.iter().flatten()) {
            if t as usize >= v {
                return Err(EngineError::InvalidParams(format!("token id {t} is outside the vocabulary of {v}")));
            }
        }
        let longest = continuations.iter().map(Vec::len).max().unwrap_or(0);
        let capacity = prompt.len() + longest.saturating_sub(1);
        if capacity > self.config.max_context {
            return Err(EngineError::ContextOverflow { needed: capacity, max: self.config.max_context });
        }
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        // Continuations of two or more tokens, in groups that run as one
        // many-row pass where the graph allows it (each row a copy of the
        // prompt's cache, shorter continuations padded at their end: a
        // position never attends to later ones, so a row's numbers are those
        // of scoring it alone), else one by one.
        let groups = if self.multi_row_passes {
            score_groups(continuations, self.config.vocab)
        } else {
            (0..continuations.len()).map(|i| vec![i]).collect()
        };
        let rows = groups.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let mut kv = self.new_arena(rows, capacity);
        let ids: Vec<i64> = prompt.iter().map(|&t| i64::from(t)).collect();
        let first = self.run_rows(&mut session, &mut kv, 0, &[0], ids, prompt.len(), false)?;
        // A concat-layout cache grows with each continuation: go back to the prompt's.
        let prompt_cache = kv.sequence(0);
        // Each continuation's logits after the prompt's last position.
        let mut fed_logits: Vec<Vec<f32>> = vec![Vec::new(); continuations.len()];
        for group in &groups {
            let seq = group.iter().map(|&i| continuations[i].len()).max().unwrap_or(0).saturating_sub(1);
            if seq == 0 {
                continue;
            }
            kv.set_sequence(0, prompt_cache.clone());
            for row in 1..group.len() {
                kv.copy_row(0, row, prompt.len());
            }
            let mut fed = Vec::with_capacity(group.len() * seq);
            for &i in group {
                let cont = &continuations[i];
                let tokens = &cont[..cont.len().saturating_sub(1)];
                let pad = tokens.last().or(prompt.last()).copied().unwrap_or(0);
                fed.extend(tokens.iter().chain(std::iter::repeat(&pad)).take(seq).map(|&t| i64::from(t)));
            }
            let lens = vec![prompt.len(); group.len()];
            let logits = self.run_rows(&mut session, &mut kv, 0, &lens, fed, seq, true)?;
            for (row, &i) in group.iter().enumerate() {
                let real = continuations[i].len().saturating_sub(1);
                fed_logits[i] = logits[row * seq * v..][..real * v].to_vec();
            }
        }
        let mut out = Vec::with_capacity(continuations.len());
        for (cont, fed) in continuations.iter().zip(fed_logits) {
            let mut tokens = Vec::with_capacity(cont.len());
            let mut is_greedy = true;
            let mut sum = 0.0;
            for (j, &t) in cont.iter().enumerate() {
                let row = if j == 0 { &first[..] } else { &fed[(j - 1) * v..j * v] };
                is_greedy &= argmax(row) == t as usize;
                let e = self.logprob_entry(row, t, top);
                sum += f64::from(e.logprob);
                tokens.push(e);
            }
            out.push(ContinuationScore { tokens, total_logprob: sum, is_greedy });
        }
        Ok(out)
    }

    /// Runs `seq` new tokens for each of the rows `first_row..first_row + lens.len()`
    /// of `kv` (row `i` has `lens[i]` cached positions; `ids` holds `seq` ids
    /// per row); each row's new keys and values land at its own length. Returns
    /// the logits of each row's last position (`[rows][vocab]`), or of every new
    /// position (`[rows][seq][vocab]`) when `all_positions` is set. Rows of
    /// different lengths share a step through a right-padded attention mask:
    /// the graph takes each row's length from the sum of its mask. A one-token
    /// step of fewer rows than [`single_row_steps_below`] runs one call per row.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_rows(
        &self,
        session: &mut Session,
        kv: &mut KvArena,
        first_row: usize,
        lens: &[usize],
        ids: Vec<i64>,
        seq: usize,
        all_positions: bool,
    ) -> Result<Vec<f32>> {
        if let Some(layout) = &self.concat {
            return self.run_rows_concat(layout, session, kv, first_row, lens, ids, seq, all_positions);
        }
        if seq == 1 && lens.len() > 1 && lens.len() < self.single_row_steps_below && ids.len() == lens.len() {
            // Cheaper one row at a time (see `single_row_steps_below`).
            let mut out = Vec::with_capacity(lens.len() * self.config.vocab);
            for (row, (&len, id)) in lens.iter().zip(ids).enumerate() {
                out.extend(self.run_rows(session, kv, first_row + row, &[len], vec![id], 1, all_positions)?);
            }
            return Ok(out);
        }
        let batch = lens.len();
        let many_rows_of_many = seq > 1 && batch > 1 && !self.multi_row_passes;
        if batch == 0 || first_row + batch > kv.rows || ids.len() != batch * seq || many_rows_of_many {
            return Err(EngineError::BadOutput(format!(
                "invalid step: rows {first_row}+{batch} of {}, {} ids for {seq} per row",
                kv.rows,
                ids.len()
            )));
        }
        let longest = lens.iter().copied().max().unwrap_or(0) + seq;
        if longest > kv.capacity {
            return Err(EngineError::ContextOverflow { needed: longest, max: kv.capacity });
        }
        let (b, s, t) = (batch as i64, seq as i64, longest as i64);
        let input_ids = Tensor::from_array((vec![b, s], ids)).map_err(ort_err)?;
        let mut mask = vec![0i64; batch * longest];
        for (row, &len) in mask.chunks_mut(longest).zip(lens) {
            row[..len + seq].fill(1);
        }
        let mask = Tensor::from_array((vec![b, t], mask)).map_err(ort_err)?;
        // Only the last position's logits when that is all the caller wants
        // (a prefill for generation): the graph then skips the head for the rest.
        let keep_last = !all_positions && seq > 1 && self.logits_to_keep;
        let keep = Tensor::from_array((vec![1i64], vec![i64::from(keep_last)])).map_err(ort_err)?;
        let logits_len = if keep_last { 1 } else { seq };
        let shape = [b, kv.heads as i64, kv.capacity as i64, kv.head_dim as i64];
        let offset = first_row * kv.row_size();
        let mut views = Vec::with_capacity(kv.buffers.len());
        for buffer in &mut kv.buffers {
            // SAFETY: `offset + batch * row_size <= buffer.len()` (checked
            // above: first_row + batch <= rows), the memory is CPU memory, and
            // the views (and the binding that holds them) are dropped before
            // this function returns, while `kv` is still mutably borrowed.
            let view = unsafe {
                TensorRefMut::<f32>::from_raw(
                    MemoryInfo::default(),
                    buffer.as_mut_ptr().add(offset).cast(),
                    Shape::new(shape),
                )
            }
            .map_err(ort_err)?;
            views.push(view);
        }
        let mut binding = session.create_binding().map_err(ort_err)?;
        binding.bind_input("input_ids", &input_ids).map_err(ort_err)?;
        binding.bind_input("attention_mask", &mask).map_err(ort_err)?;
        if self.logits_to_keep {
            binding.bind_input("logits_to_keep", &keep).map_err(ort_err)?;
        }
        for ((past, present), view) in self.past_names.iter().zip(&self.present_names).zip(views) {
            bind_input_in_place(&mut binding, past, &view)?;
            // The binding keeps the view's ONNX value alive until it is dropped.
            binding.bind_output(present.as_str(), view).map_err(ort_err)?;
        }
        {
            let mem = session.allocator().memory_info();
            binding.bind_output_to_device("logits", mem).map_err(ort_err)?;
        }
        let outputs = session.run_binding(&binding).map_err(ort_err)?;
        let value = outputs.get("logits").ok_or_else(|| EngineError::BadOutput("no `logits` output".into()))?;
        let (shape, data) = value.try_extract_tensor::<f32>().map_err(ort_err)?;
        let v = self.config.vocab;
        if shape.len() != 3 || shape[0] != b || shape[1] != logits_len as i64 || shape[2] != v as i64 {
            return Err(EngineError::BadOutput(format!("logits shape {shape:?}")));
        }
        let out = if all_positions {
            data.to_vec()
        } else {
            let mut out = Vec::with_capacity(batch * v);
            for r in 0..batch {
                let last = (r * logits_len + logits_len - 1) * v;
                out.extend_from_slice(&data[last..last + v]);
            }
            out
        };
        Ok(out)
    }

    /// Generates from prompt token ids.
    pub fn generate_ids(&self, prompt: &[u32], params: &GenerationParams) -> Result<Generation> {
        self.generate_alone(prompt, params, None)
    }

    /// [`LocalModel::chat`] with a callback for every token; the callback
    /// returns `false` to stop (unfinished choices end as `Cancelled`).
    pub fn chat_stream(
        &self,
        messages: &[ChatMessage],
        params: &GenerationParams,
        on_token: &mut dyn FnMut(StreamEvent<'_>) -> bool,
    ) -> Result<Generation> {
        let ids = self.chat_ids(messages)?;
        self.generate_ids_stream(&ids, params, on_token)
    }

    /// [`LocalModel::complete`] with a callback for every token.
    pub fn complete_stream(
        &self,
        prompt: &str,
        params: &GenerationParams,
        on_token: &mut dyn FnMut(StreamEvent<'_>) -> bool,
    ) -> Result<Generation> {
        let ids = self.encode_prompt(prompt)?;
        self.generate_ids_stream(&ids, params, on_token)
    }

    /// [`LocalModel::generate_ids`] with a callback for every token.
    pub fn generate_ids_stream(
        &self,
        prompt: &[u32],
        params: &GenerationParams,
        on_token: &mut dyn FnMut(StreamEvent<'_>) -> bool,
    ) -> Result<Generation> {
        self.generate_alone(prompt, params, Some(on_token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoring_groups_keep_order_and_the_logits_budget() {
        let lens = [3usize, 0, 1, 40, 2, 5];
        let conts: Vec<Vec<u32>> = lens.iter().map(|&n| vec![7; n]).collect();
        // A vocabulary so large that 80 padded positions fit in one pass: 4 × 39
        // do not, 2 × 39 do.
        let vocab = SCORING_PASS_LOGITS / 80;
        let groups = score_groups(&conts, vocab);
        assert_eq!(groups.concat(), (0..lens.len()).collect::<Vec<_>>(), "every continuation once, in order");
        for group in &groups {
            let longest = group.iter().map(|&i| lens[i].saturating_sub(1)).max().unwrap_or(0);
            assert!(group.len() == 1 || group.len() * longest * vocab <= SCORING_PASS_LOGITS, "{groups:?}");
        }
        assert_eq!(groups, vec![vec![0, 1, 2], vec![3, 4], vec![5]]);
        // A small vocabulary: one pass for all; none for no continuations.
        assert_eq!(score_groups(&conts, 100), vec![(0..lens.len()).collect::<Vec<_>>()]);
        assert!(score_groups(&[], 100).is_empty());
    }

    #[test]
    fn greedy_and_sampling_are_deterministic() {
        let logits = vec![0.1, 2.0, 1.9, -1.0];
        let p = GenerationParams::greedy(1);
        assert_eq!(sample(&logits, &[], &p, &mut Rng(1)), 1);
        let p = GenerationParams { temperature: 1.0, ..Default::default() };
        let a: Vec<u32> = {
            let mut r = Rng(42);
            (0..20).map(|_| sample(&logits, &[], &p, &mut r)).collect()
        };
        let b: Vec<u32> = {
            let mut r = Rng(42);
            (0..20).map(|_| sample(&logits, &[], &p, &mut r)).collect()
        };
        assert_eq!(a, b);
        let p = GenerationParams { temperature: 1.0, top_k: 1, ..Default::default() };
        assert!((0..20).all(|s| sample(&logits, &[], &p, &mut Rng(s)) == 1));
        let p = GenerationParams { temperature: 1.0, top_p: 0.01, ..Default::default() };
        assert!((0..20).all(|s| sample(&logits, &[], &p, &mut Rng(s)) == 1));
        // A strong repetition penalty moves greedy off the repeated token.
        let p = GenerationParams { temperature: 0.0, repetition_penalty: 10.0, ..Default::default() };
        assert_eq!(sample(&logits, &[1], &p, &mut Rng(0)), 2);
    }

    /// The sampler before it sorted only the head: every token ordered.
    fn sample_fully_sorted(l: &[f32], p: &GenerationParams, rng: &mut Rng) -> u32 {
        let mut idx: Vec<usize> = (0..l.len()).collect();
        idx.sort_unstable_by(|a, b| l[*b].total_cmp(&l[*a]).then(a.cmp(b)));
        if p.top_k > 0 && p.top_k < idx.len() {
            idx.truncate(p.top_k);
        }
        // The same weights as `sample` (e^((logit − max)/T) in f32).
        let max = l[idx[0]];
        let mut probs: Vec<f64> = idx
            .iter()
            .map(|&i| f64::from(crate::kernels::exp::exp_f32((l[i] - max) * (1.0 / p.temperature))))
            .collect();
        let total: f64 = probs.iter().sum();
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            let keep = probs.iter().position(|pr| {
                acc += pr / total;
                acc >= f64::from(p.top_p)
            });
            probs.truncate(keep.map_or(probs.len(), |j| j + 1));
        }
        let mut u = rng.next_f64() * probs.iter().sum::<f64>();
        for (j, pr) in probs.iter().enumerate() {
            u -= pr;
            if u < 0.0 {
                return idx[j] as u32;
            }
        }
        idx[probs.len() - 1] as u32
    }

    #[test]
    fn sampling_a_large_vocabulary_draws_as_a_full_sort_would() {
        // A vocabulary the size of SmolLM2's: a peaked one (the nucleus lies
        // in the sorted head) and a flat one (it reaches past the head).
        let mut r = Rng(7);
        let peaked: Vec<f32> = (0..49152).map(|_| (r.next_f64() * 12.0) as f32).collect();
        let flat: Vec<f32> = (0..49152).map(|_| (r.next_f64() * 0.5) as f32).collect();
        for logits in [&peaked, &flat] {
            for (top_p, top_k) in [(0.9, 0), (0.5, 0), (0.9, 40), (1.0, 300)] {
                let p = GenerationParams { temperature: 0.8, top_p, top_k, ..Default::default() };
                for seed in 0..10 {
                    let ours = sample(logits, &[], &p, &mut Rng(seed));
                    let full = sample_fully_sorted(logits, &p, &mut Rng(seed));
                    assert_eq!(ours, full, "top_p {top_p} top_k {top_k} seed {seed}");
                }
            }
        }
        // Without a nucleus the tail is walked unsorted: the same distribution,
        // other tokens for a given seed. On a 4096-token vocabulary where the
        // 256 sorted tokens hold about half the mass, that share and the mean
        // logit drawn match the full sort's within sampling noise.
        let logits: Vec<f32> = (0..4096).map(|i| if i % 16 == 0 { 3.0 } else { 0.0 }).collect();
        let p = GenerationParams { temperature: 1.0, ..Default::default() };
        let stats = |draw: &dyn Fn(&mut Rng) -> u32| {
            let mut rng = Rng(3);
            let drawn: Vec<u32> = (0..2000).map(|_| draw(&mut rng)).collect();
            let high = drawn.iter().filter(|&&t| t % 16 == 0).count() as f64 / 2000.0;
            let mean = drawn.iter().map(|&t| f64::from(logits[t as usize])).sum::<f64>() / 2000.0;
            (high, mean)
        };
        let (ours, ours_mean) = stats(&|rng| sample(&logits, &[], &p, rng));
        let (full, full_mean) = stats(&|rng| sample_fully_sorted(&logits, &p, rng));
        // Expected share: 256·e³ / (256·e³ + 3840) ≈ 0.57; one standard error ≈ 0.011.
        assert!((ours - 0.572).abs() < 0.04 && (full - 0.572).abs() < 0.04, "{ours} vs {full}");
        assert!((ours_mean - full_mean).abs() < 0.2, "{ours_mean} vs {full_mean}");
    }

    #[test]
    fn params_are_validated() {
        assert!(GenerationParams { top_p: 0.0, ..Default::default() }.validate().is_err());
        assert!(GenerationParams { temperature: f32::NAN, ..Default::default() }.validate().is_err());
        assert!(GenerationParams { n: 0, ..Default::default() }.validate().is_err());
        assert!(GenerationParams { stop: vec![String::new()], ..Default::default() }.validate().is_err());
        assert!(GenerationParams::default().validate().is_ok());
    }

    #[test]
    fn model_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<LocalModel>();
    }
}
