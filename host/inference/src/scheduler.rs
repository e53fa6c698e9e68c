//! Continuous batching: many generation requests share batched decode steps.
//!
//! [`BatchDecoder`] is the one implementation of generation in this crate
//! (sampling, stop sequences, streaming, `n` choices): [`LocalModel`]'s own
//! generation calls run a decoder with a single request, and a [`Scheduler`]
//! runs one on a worker thread for requests submitted from any thread.
//!
//! Each active choice is a row of a shared key/value cache ([`KvArena`]).
//! A request is admitted by prefilling its prompt (batch 1) straight into a
//! free row; `n` choices copy that row. Every decode step then runs one token
//! for all active rows at once: rows of different lengths share the step
//! through a right-padded attention mask, each writing its new position at
//! its own length. Each row samples with its request's parameters and its own
//! random generator, so a seeded request gives the same text whatever else is
//! in the batch, and greedy output matches a request decoded alone. Finished
//! rows leave the batch at once (the last row moves into the hole), and
//! waiting requests take their place before the next step.
//!
//! The cache grows (rows in powers of two up to the batch limit, positions in
//! steps of [`SchedulerConfig::capacity_step`]) when an admitted request needs
//! more, is bounded by [`SchedulerConfig::max_cache_bytes`] (a request that
//! does not fit waits until rows finish, unless the batch is empty), and is
//! freed whenever the batch drains.
//!
//! Models from elsewhere ([`crate::external`], present = past ++ new) keep
//! one cache per row instead of a shared buffer, and a decode step runs one
//! ONNX Runtime call per distinct row length (rows of equal length share a
//! call, their caches stacked): the scheduling, sampling and streaming above
//! are the same.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, MutexGuard};

use ort::session::Session;

use crate::engine::{
    Choice, EngineError, FinishReason, Generation, GenerationParams, KvArena, LocalModel, Result, Rng, StreamEvent,
    TokenLogprob, Usage, log_softmax_at, sample, stop_prefix_len,
};
use crate::tokenizer::ChatMessage;

/// How large the batch and its cache may grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// Most rows (choices) decoded together.
    pub max_batch: usize,
    /// Most bytes of key/value cache the batch may hold (a request larger
    /// than this on its own still runs, alone).
    pub max_cache_bytes: usize,
    /// The cache's positions per row grow in multiples of this.
    pub capacity_step: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self { max_batch: 16, max_cache_bytes: 512 << 20, capacity_step: 128 }
    }
}

/// A streaming callback; returning `false` cancels the request.
pub(crate) type TokenCallback<'cb> = Box<dyn FnMut(StreamEvent<'_>) -> bool + 'cb>;

/// A streaming callback that can travel to the worker thread.
type SendTokenCallback = Box<dyn FnMut(StreamEvent<'_>) -> bool + Send>;

/// A request waiting for admission.
pub(crate) struct NewRequest<'cb, T> {
    /// Prompt token ids (non-empty, shorter than the context).
    pub(crate) prompt: Vec<u32>,
    /// Validated parameters.
    pub(crate) params: GenerationParams,
    /// The random seed of choice 0 (the others derive from it).
    pub(crate) seed: u64,
    /// Streaming callback; returning `false` cancels the request.
    pub(crate) on_token: Option<TokenCallback<'cb>>,
    /// Set when nobody waits for the result any more: the request is cancelled.
    pub(crate) abandoned: Option<Arc<AtomicBool>>,
    /// Returned with the result.
    pub(crate) tag: T,
}

struct ChoiceState {
    tokens: Vec<u32>,
    logprobs: Vec<TokenLogprob>,
    finish: Option<FinishReason>,
    text: Option<String>,
    emitted: usize,
    rng: Rng,
}

struct ActiveRequest<'cb, T> {
    prompt: Vec<u32>,
    params: GenerationParams,
    need_text: bool,
    choices: Vec<ChoiceState>,
    unfinished: usize,
    cancelled: bool,
    on_token: Option<TokenCallback<'cb>>,
    abandoned: Option<Arc<AtomicBool>>,
    tag: T,
    /// The logits after the prompt, for a later request with the same
    /// prompt that copies this one's cache instead of running a prefill.
    first_logits: Vec<f32>,
}

/// One choice being decoded: a row of the arena.
struct Row {
    request: usize,
    choice: usize,
    /// Positions in the cache.
    len: usize,
    /// Logits of the next token, waiting to be sampled.
    logits: Vec<f32>,
    pending: bool,
}

/// How a decoder is bounded.
#[derive(Debug, Clone)]
pub(crate) struct DecoderLimits {
    pub(crate) max_rows: usize,
    pub(crate) max_cache_bytes: usize,
    pub(crate) capacity_step: usize,
}

/// Decodes a changing set of requests in batched steps (see the module docs).
pub(crate) struct BatchDecoder<'m, 'cb, T> {
    model: &'m LocalModel,
    limits: DecoderLimits,
    arena: Option<KvArena>,
    rows: Vec<Row>,
    requests: Vec<Option<ActiveRequest<'cb, T>>>,
    finished: Vec<(T, Result<Generation>)>,
    history: Vec<u32>,
    /// Prompt prefills run.
    pub(crate) prefills: u64,
    /// Requests admitted by copying the cache of an active request with the
    /// same prompt instead of a prefill.
    pub(crate) shared_prefills: u64,
}

fn lock(model: &LocalModel) -> MutexGuard<'_, Session> {
    model.session.lock().unwrap_or_else(|p| p.into_inner())
}

impl<'m, 'cb, T> BatchDecoder<'m, 'cb, T> {
    /// An empty decoder on `model`.
    pub(crate) fn new(model: &'m LocalModel, limits: DecoderLimits) -> Self {
        Self {
            model,
            limits,
            arena: None,
            rows: Vec::new(),
            requests: Vec::new(),
            finished: Vec::new(),
            history: Vec::new(),
            prefills: 0,
            shared_prefills: 0,
        }
    }

    /// Whether no row is being decoded.
    pub(crate) fn is_idle(&self) -> bool {
        self.rows.is_empty()
    }

    /// Active rows.
    pub(crate) fn active_rows(&self) -> usize {
        self.rows.len()
    }

    /// Results of requests that have finished since the last call.
    pub(crate) fn take_finished(&mut self) -> Vec<(T, Result<Generation>)> {
        std::mem::take(&mut self.finished)
    }

    /// Admits `request` (prefilling its prompt into free rows), or gives it
    /// back when the batch has no room for it now. A request that fails (its
    /// prefill, say) or needs no decoding finishes at once (see
    /// [`BatchDecoder::take_finished`]).
    #[allow(clippy::result_large_err)] // giving the request back (not an error) is the point
    pub(crate) fn admit(&mut self, request: NewRequest<'cb, T>) -> std::result::Result<(), NewRequest<'cb, T>> {
        let config = self.model.config();
        let n = request.params.n;
        let prompt_len = request.prompt.len();
        let max_ctx = config.max_context;
        let active = self.rows.len();
        // Room for the prompt and every token but the last (which is never fed back).
        let need = (prompt_len + request.params.max_tokens.saturating_sub(1)).clamp(prompt_len, max_ctx);
        let (rows, capacity) = match &self.arena {
            Some(a) => (a.rows(), a.capacity()),
            None => (0, 0),
        };
        let mut want_rows = rows;
        if active + n > rows {
            want_rows = (active + n).next_power_of_two().min(self.limits.max_rows.max(active + n));
        }
        let step = self.limits.capacity_step.max(1);
        let want_capacity =
            if need > capacity { need.div_ceil(step).saturating_mul(step).min(max_ctx).max(need) } else { capacity };
        if active > 0 && request.params.max_tokens > 0 {
            let bytes = want_rows.saturating_mul(want_capacity).saturating_mul(KvArena::bytes_per_position(config));
            if active + n > self.limits.max_rows || bytes > self.limits.max_cache_bytes {
                return Err(request);
            }
        }
        let choices: Vec<ChoiceState> = (0..n)
            .map(|i| ChoiceState {
                tokens: Vec::new(),
                logprobs: Vec::new(),
                finish: None,
                text: None,
                emitted: 0,
                rng: Rng(request.seed ^ (i as u64).wrapping_mul(0xD1B5_4A32_D192_ED03)),
            })
            .collect();
        let need_text = request.on_token.is_some() || !request.params.stop.is_empty();
        let mut active_request = ActiveRequest {
            prompt: request.prompt,
            params: request.params,
            need_text,
            choices,
            unfinished: n,
            cancelled: false,
            on_token: request.on_token,
            abandoned: request.abandoned,
            tag: request.tag,
            first_logits: Vec::new(),
        };
        if active_request.params.max_tokens == 0 {
            for c in &mut active_request.choices {
                c.finish = Some(FinishReason::Length);
            }
            let result = self.model.assemble(&active_request.prompt, &active_request.params, active_request.choices);
            self.finished.push((active_request.tag, result));
            return Ok(());
        }
        if want_rows != rows || want_capacity != capacity {
            let lens: Vec<usize> = self.rows.iter().map(|r| r.len).collect();
            self.arena = Some(match &self.arena {
                Some(a) => a.grown(want_rows, want_capacity, &lens),
                None => self.model.new_arena(want_rows, want_capacity),
            });
        }
        let Some(arena) = self.arena.as_mut() else {
            unreachable!("the arena was just allocated");
        };
        // A request with the same prompt already holds that prompt's keys and
        // values in its row (positions 0..prompt_len do not change as it
        // decodes) and its first logits: copy them instead of a prefill. The
        // numbers are the ones a prefill would compute. A model from
        // elsewhere keeps whole sequences, so there only a row that has not
        // decoded yet can give its cache.
        let concat = self.model.is_concat_layout();
        let donor = self.rows.iter().position(|r| {
            (!concat || r.len == prompt_len)
                && self.requests[r.request]
                    .as_ref()
                    .is_some_and(|q| q.prompt == active_request.prompt && !q.first_logits.is_empty())
        });
        let first = match donor {
            Some(row) => {
                arena.copy_row(row, active, prompt_len);
                self.shared_prefills += 1;
                let donor_request = self.rows[row].request;
                Ok(self.requests[donor_request].as_ref().map(|q| q.first_logits.clone()).unwrap_or_default())
            }
            None => {
                let ids: Vec<i64> = active_request.prompt.iter().map(|&t| i64::from(t)).collect();
                let mut session = lock(self.model);
                self.prefills += 1;
                self.model.run_rows(&mut session, arena, active, &[0], ids, prompt_len, false)
            }
        };
        let first = match first {
            Ok(l) => l,
            Err(e) => {
                self.finished.push((active_request.tag, Err(e)));
                self.release_if_idle();
                return Ok(());
            }
        };
        for i in 1..n {
            arena.copy_row(active, active + i, prompt_len);
        }
        let key = match self.requests.iter().position(Option::is_none) {
            Some(k) => k,
            None => {
                self.requests.push(None);
                self.requests.len() - 1
            }
        };
        for choice in 0..n {
            self.rows.push(Row { request: key, choice, len: prompt_len, logits: first.clone(), pending: true });
        }
        active_request.first_logits = first;
        self.requests[key] = Some(active_request);
        Ok(())
    }

    /// Samples a token for every row with fresh logits, reports it, and
    /// retires the rows (and completes the requests) that have finished.
    pub(crate) fn sample_pending(&mut self) {
        let mut order: Vec<usize> = (0..self.rows.len()).filter(|&i| self.rows[i].pending).collect();
        order.sort_by_key(|&i| (self.rows[i].request, self.rows[i].choice));
        let mut failed: Vec<(usize, EngineError)> = Vec::new();
        for i in order {
            let row = &mut self.rows[i];
            row.pending = false;
            let Some(request) = self.requests[row.request].as_mut() else { continue };
            if failed.iter().any(|(k, _)| *k == row.request) {
                continue;
            }
            if let Err(e) = advance(self.model, request, row.choice, &row.logits, &mut self.history) {
                failed.push((row.request, e));
            }
        }
        for (key, error) in failed {
            if let Some(request) = self.requests[key].take() {
                self.finished.push((request.tag, Err(error)));
            }
        }
        // Retire finished rows, highest index first so that moving the last
        // row into a hole never moves a row that is still to be looked at.
        for i in (0..self.rows.len()).rev() {
            let row = &self.rows[i];
            let done = match &self.requests[row.request] {
                Some(r) => r.choices[row.choice].finish.is_some(),
                None => true,
            };
            if !done {
                continue;
            }
            let last = self.rows.len() - 1;
            if i != last
                && let Some(arena) = self.arena.as_mut()
            {
                arena.copy_row(last, i, self.rows[last].len);
            }
            self.rows.swap_remove(i);
        }
        if let Some(arena) = self.arena.as_mut() {
            arena.release_rows_from(self.rows.len());
        }
        for key in 0..self.requests.len() {
            if self.requests[key].as_ref().is_some_and(|r| r.unfinished == 0)
                && let Some(request) = self.requests[key].take()
            {
                let result = self.model.assemble(&request.prompt, &request.params, request.choices);
                self.finished.push((request.tag, result));
            }
        }
        self.release_if_idle();
    }

    /// Runs one decode step for every active row (feeding its last sampled
    /// token). A failed step fails every request in the batch.
    pub(crate) fn decode(&mut self) {
        if self.rows.is_empty() {
            return;
        }
        let Some(arena) = self.arena.as_mut() else { return };
        let pad = self.model.special.stop_ids.first().copied().unwrap_or(0);
        let ids: Vec<i64> = self
            .rows
            .iter()
            .map(|r| {
                let token = self.requests[r.request].as_ref().and_then(|q| q.choices[r.choice].tokens.last().copied());
                i64::from(token.unwrap_or(pad))
            })
            .collect();
        let lens: Vec<usize> = self.rows.iter().map(|r| r.len).collect();
        let logits = {
            let mut session = lock(self.model);
            self.model.run_rows(&mut session, arena, 0, &lens, ids, 1, false)
        };
        match logits {
            Ok(logits) => {
                let v = self.model.config().vocab;
                for (row, l) in self.rows.iter_mut().zip(logits.chunks_exact(v)) {
                    row.logits.copy_from_slice(l);
                    row.len += 1;
                    row.pending = true;
                }
            }
            Err(e) => {
                let message = e.to_string();
                self.rows.clear();
                for slot in &mut self.requests {
                    if let Some(request) = slot.take() {
                        self.finished.push((request.tag, Err(EngineError::BatchFailed(message.clone()))));
                    }
                }
                self.release_if_idle();
            }
        }
    }

    fn release_if_idle(&mut self) {
        if self.rows.is_empty() {
            self.arena = None;
        }
    }
}

/// Samples choice `index` of `request` from `logits`, updates its text and
/// finish state, and reports the token to the streaming callback.
fn advance<T>(
    model: &LocalModel,
    request: &mut ActiveRequest<'_, T>,
    index: usize,
    logits: &[f32],
    history: &mut Vec<u32>,
) -> Result<()> {
    let params = &request.params;
    let prompt_len = request.prompt.len();
    let max_ctx = model.config().max_context;
    let st = &mut request.choices[index];
    if st.finish.is_some() {
        return Ok(());
    }
    if request.abandoned.as_ref().is_some_and(|a| a.load(Ordering::Relaxed)) {
        request.cancelled = true;
    }
    if request.cancelled {
        st.finish = Some(FinishReason::Cancelled);
        request.unfinished -= 1;
        return Ok(());
    }
    history.clear();
    history.extend_from_slice(&request.prompt);
    history.extend_from_slice(&st.tokens);
    let tok = sample(logits, history, params, &mut st.rng);
    let mut token_lp = None;
    if model.special.stop_ids.contains(&tok) {
        st.finish = Some(FinishReason::Stop);
    } else {
        st.tokens.push(tok);
        // The log-probability is for `logprobs` and for streaming callers; a
        // softmax over the vocabulary costs a noticeable part of a step.
        if params.logprobs {
            let entry = model.logprob_entry(logits, tok, params.top_logprobs);
            token_lp = Some(entry.logprob);
            st.logprobs.push(entry);
        } else if request.on_token.is_some() {
            let (max, lse) = log_softmax_at(logits);
            token_lp = Some((f64::from(logits[tok as usize] - max) - lse) as f32);
        }
    }
    if !request.need_text {
        if st.finish.is_none() && (st.tokens.len() >= params.max_tokens || prompt_len + st.tokens.len() >= max_ctx) {
            st.finish = Some(FinishReason::Length);
        }
        if st.finish.is_some() {
            request.unfinished -= 1;
        }
        return Ok(());
    }
    let mut text = model.tokenizer().decode(&st.tokens, true)?;
    if st.finish.is_none()
        && let Some(cut) = params.stop.iter().filter_map(|s| text.find(s.as_str())).min()
    {
        text.truncate(cut);
        st.text = Some(text.clone());
        st.finish = Some(FinishReason::Stop);
    }
    if st.finish.is_none() && (st.tokens.len() >= params.max_tokens || prompt_len + st.tokens.len() >= max_ctx) {
        st.finish = Some(FinishReason::Length);
    }
    // Only final text is flushed whole; otherwise hold back an incomplete
    // character or a possible stop-sequence start.
    let safe = if st.finish.is_some() {
        text.len()
    } else if text.ends_with('\u{FFFD}') {
        st.emitted
    } else {
        text.len() - stop_prefix_len(&text, &params.stop)
    };
    let safe = safe.max(st.emitted);
    let delta = text.get(st.emitted..safe).unwrap_or("");
    let keep_going = match request.on_token.as_mut() {
        Some(f) => f(StreamEvent {
            index,
            token_id: token_lp.map(|_| tok),
            text: delta,
            logprob: token_lp,
            finish_reason: st.finish,
        }),
        None => true,
    };
    st.emitted = safe;
    if !keep_going {
        request.cancelled = true;
        if st.finish.is_none() {
            st.finish = Some(FinishReason::Cancelled);
        }
    }
    if st.finish.is_some() {
        request.unfinished -= 1;
    }
    if request.cancelled {
        // The other choices end now, whether or not they were sampled this step.
        for c in request.choices.iter_mut().filter(|c| c.finish.is_none()) {
            c.finish = Some(FinishReason::Cancelled);
            request.unfinished -= 1;
        }
    }
    Ok(())
}

impl LocalModel {
    /// Builds the result of a finished request.
    fn assemble(&self, prompt: &[u32], params: &GenerationParams, choices: Vec<ChoiceState>) -> Result<Generation> {
        let mut out = Vec::with_capacity(choices.len());
        let mut completion_tokens = 0;
        for (index, st) in choices.into_iter().enumerate() {
            completion_tokens += st.tokens.len();
            let text = match st.text {
                Some(t) => t,
                None => self.tokenizer().decode(&st.tokens, true)?,
            };
            out.push(Choice {
                index,
                text,
                finish_reason: st.finish.unwrap_or(FinishReason::Length),
                token_ids: st.tokens,
                logprobs: params.logprobs.then_some(st.logprobs),
            });
        }
        Ok(Generation {
            choices: out,
            usage: Usage {
                prompt_tokens: prompt.len(),
                completion_tokens,
                total_tokens: prompt.len() + completion_tokens,
            },
        })
    }

    /// Checks a request and picks its seed (the given one, or one from the clock).
    pub(crate) fn prepare(&self, prompt: &[u32], params: &GenerationParams) -> Result<u64> {
        params.validate()?;
        if prompt.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        let v = self.config().vocab;
        if let Some(&t) = prompt.iter().find(|&&t| t as usize >= v) {
            return Err(EngineError::InvalidParams(format!("token id {t} is outside the vocabulary of {v}")));
        }
        let max_ctx = self.config().max_context;
        if prompt.len() >= max_ctx {
            return Err(EngineError::ContextOverflow { needed: prompt.len() + 1, max: max_ctx });
        }
        Ok(params.seed.unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            t ^ u64::from(std::process::id()).rotate_left(32)
        }))
    }

    /// Generates for one request alone (the decoder with a batch of one request).
    pub(crate) fn generate_alone(
        &self,
        prompt: &[u32],
        params: &GenerationParams,
        on_token: Option<&mut dyn FnMut(StreamEvent<'_>) -> bool>,
    ) -> Result<Generation> {
        let seed = self.prepare(prompt, params)?;
        let limits = DecoderLimits { max_rows: params.n, max_cache_bytes: usize::MAX, capacity_step: 1 };
        let mut decoder = BatchDecoder::new(self, limits);
        let on_token: Option<TokenCallback<'_>> = match on_token {
            Some(f) => Some(Box::new(move |e: StreamEvent<'_>| f(e))),
            None => None,
        };
        let request =
            NewRequest { prompt: prompt.to_vec(), params: params.clone(), seed, on_token, abandoned: None, tag: () };
        if decoder.admit(request).is_err() {
            return Err(EngineError::BadOutput("an empty decoder refused a request".into()));
        }
        loop {
            decoder.sample_pending();
            if let Some(((), result)) = decoder.take_finished().pop() {
                return result;
            }
            decoder.decode();
        }
    }
}

/// An event of a streamed request (an owned [`StreamEvent`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenEvent {
    /// The choice it belongs to.
    pub index: usize,
    /// The token id (`None` for the final flush of a choice).
    pub token_id: Option<u32>,
    /// New text since the previous event of this choice.
    pub text: String,
    /// The token's log-probability under the model (when there is a token).
    pub logprob: Option<f32>,
    /// Set on the last event of a choice.
    pub finish_reason: Option<FinishReason>,
}

/// A request on its way to the worker.
struct Job {
    prompt: Vec<u32>,
    params: GenerationParams,
    seed: u64,
    on_token: Option<SendTokenCallback>,
    abandoned: Arc<AtomicBool>,
    reply: mpsc::Sender<Result<Generation>>,
}

impl Job {
    fn into_request(self) -> NewRequest<'static, mpsc::Sender<Result<Generation>>> {
        NewRequest {
            prompt: self.prompt,
            params: self.params,
            seed: self.seed,
            on_token: self.on_token.map(|f| -> TokenCallback<'static> { f }),
            abandoned: Some(self.abandoned),
            tag: self.reply,
        }
    }
}

/// A submitted request: wait for its result with [`Pending::wait`].
/// Dropping it cancels the request.
#[derive(Debug)]
pub struct Pending {
    result: mpsc::Receiver<Result<Generation>>,
    abandoned: Arc<AtomicBool>,
}

impl Pending {
    /// Blocks until the request has finished.
    pub fn wait(self) -> Result<Generation> {
        self.result.recv().unwrap_or(Err(EngineError::SchedulerStopped))
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.abandoned.store(true, Ordering::Relaxed);
    }
}

/// Counters of a [`Scheduler`]'s work so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SchedulerStats {
    /// Batched decode steps run.
    pub steps: u64,
    /// Rows decoded over all steps (divided by `steps`: the mean batch).
    pub row_steps: u64,
    /// The most rows decoded in one step.
    pub largest_batch: u64,
    /// Prompt prefills run.
    pub prefills: u64,
    /// Requests that copied the prompt cache of an active request with the
    /// same prompt instead of running a prefill.
    pub shared_prefills: u64,
}

#[derive(Debug, Default)]
struct StatCounters {
    steps: AtomicU64,
    row_steps: AtomicU64,
    largest_batch: AtomicU64,
    prefills: AtomicU64,
    shared_prefills: AtomicU64,
}

/// Continuous batching for a [`LocalModel`]: requests submitted from any
/// thread are decoded together by one worker thread (see the module docs).
/// Dropping the scheduler lets the worker finish what it holds and exit.
pub struct Scheduler {
    model: Arc<LocalModel>,
    jobs: mpsc::Sender<Job>,
    stats: Arc<StatCounters>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler").field("model", &self.model.name()).finish_non_exhaustive()
    }
}

impl Scheduler {
    /// Starts the worker thread for `model`.
    pub fn new(model: Arc<LocalModel>, config: SchedulerConfig) -> Result<Self> {
        if config.max_batch == 0 {
            return Err(EngineError::InvalidParams("max_batch must be at least 1".into()));
        }
        let (jobs, queue) = mpsc::channel::<Job>();
        let worker_model = model.clone();
        let stats = Arc::new(StatCounters::default());
        let worker_stats = stats.clone();
        std::thread::Builder::new()
            .name(format!("techne-batch-{}", model.name()))
            .spawn(move || run_worker(&worker_model, &config, &queue, &worker_stats))
            .map_err(|e| EngineError::BadOutput(format!("cannot start the batching thread: {e}")))?;
        Ok(Self { model, jobs, stats })
    }

    /// What the worker has done so far.
    pub fn stats(&self) -> SchedulerStats {
        SchedulerStats {
            steps: self.stats.steps.load(Ordering::Relaxed),
            row_steps: self.stats.row_steps.load(Ordering::Relaxed),
            largest_batch: self.stats.largest_batch.load(Ordering::Relaxed),
            prefills: self.stats.prefills.load(Ordering::Relaxed),
            shared_prefills: self.stats.shared_prefills.load(Ordering::Relaxed),
        }
    }

    /// The model.
    pub fn model(&self) -> &Arc<LocalModel> {
        &self.model
    }

    /// Submits a request on prompt token ids; it joins the batch at the next step.
    pub fn submit_ids(&self, prompt: &[u32], params: &GenerationParams) -> Pending {
        self.submit_inner(prompt, params, None)
    }

    /// [`Scheduler::submit_ids`] that also sends every token event to `events`
    /// (the request is cancelled if `events`' receiver is dropped).
    pub fn submit_ids_stream(
        &self,
        prompt: &[u32],
        params: &GenerationParams,
        events: mpsc::Sender<TokenEvent>,
    ) -> Pending {
        self.submit_inner(prompt, params, Some(events))
    }

    fn submit_inner(
        &self,
        prompt: &[u32],
        params: &GenerationParams,
        events: Option<mpsc::Sender<TokenEvent>>,
    ) -> Pending {
        let (reply, result) = mpsc::channel();
        let abandoned = Arc::new(AtomicBool::new(false));
        let pending = Pending { result, abandoned: abandoned.clone() };
        let seed = match self.model.prepare(prompt, params) {
            Ok(seed) => seed,
            Err(e) => {
                let _ = reply.send(Err(e));
                return pending;
            }
        };
        // Only a streamed request has a callback: without one the decoder
        // need not track the text of requests that have no stop strings.
        let on_token = events.map(|tx| -> SendTokenCallback {
            Box::new(move |e: StreamEvent<'_>| {
                tx.send(TokenEvent {
                    index: e.index,
                    token_id: e.token_id,
                    text: e.text.to_string(),
                    logprob: e.logprob,
                    finish_reason: e.finish_reason,
                })
                .is_ok()
            })
        });
        let job = Job { prompt: prompt.to_vec(), params: params.clone(), seed, on_token, abandoned, reply };
        if let Err(mpsc::SendError(job)) = self.jobs.send(job) {
            let _ = job.reply.send(Err(EngineError::SchedulerStopped));
        }
        pending
    }

    /// Generates from prompt token ids, batched with concurrent requests.
    pub fn generate_ids(&self, prompt: &[u32], params: &GenerationParams) -> Result<Generation> {
        self.submit_ids(prompt, params).wait()
    }

    /// Generates assistant replies to a conversation, batched with concurrent requests.
    pub fn chat(&self, messages: &[ChatMessage], params: &GenerationParams) -> Result<Generation> {
        let ids = self.model.chat_ids(messages)?;
        self.generate_ids(&ids, params)
    }

    /// Continues a raw text prompt, batched with concurrent requests.
    pub fn complete(&self, prompt: &str, params: &GenerationParams) -> Result<Generation> {
        let ids = self.model.prompt_ids(prompt)?;
        self.generate_ids(&ids, params)
    }
}

/// The worker: admit waiting requests, sample, decode one step, repeat.
fn run_worker(model: &LocalModel, config: &SchedulerConfig, queue: &mpsc::Receiver<Job>, stats: &StatCounters) {
    let limits = DecoderLimits {
        max_rows: config.max_batch,
        max_cache_bytes: config.max_cache_bytes,
        capacity_step: config.capacity_step,
    };
    let mut decoder: BatchDecoder<'_, 'static, mpsc::Sender<Result<Generation>>> = BatchDecoder::new(model, limits);
    let mut waiting: VecDeque<NewRequest<'static, mpsc::Sender<Result<Generation>>>> = VecDeque::new();
    let mut open = true;
    loop {
        if decoder.is_idle() && waiting.is_empty() {
            if !open {
                return;
            }
            match queue.recv() {
                Ok(job) => waiting.push_back(job.into_request()),
                Err(_) => return,
            }
        }
        loop {
            match queue.try_recv() {
                Ok(job) => waiting.push_back(job.into_request()),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        // First come, first served: a request that does not fit blocks those behind it.
        while let Some(request) = waiting.pop_front() {
            if let Err(request) = decoder.admit(request) {
                waiting.push_front(request);
                break;
            }
        }
        // Before any reply goes out, so that a caller sees its own prefill counted.
        stats.prefills.store(decoder.prefills, Ordering::Relaxed);
        stats.shared_prefills.store(decoder.shared_prefills, Ordering::Relaxed);
        decoder.sample_pending();
        for (reply, result) in decoder.take_finished() {
            let _ = reply.send(result);
        }
        let rows = decoder.active_rows() as u64;
        if rows > 0 {
            stats.steps.fetch_add(1, Ordering::Relaxed);
            stats.row_steps.fetch_add(rows, Ordering::Relaxed);
            stats.largest_batch.fetch_max(rows, Ordering::Relaxed);
        }
        decoder.decode();
        for (reply, result) in decoder.take_finished() {
            let _ = reply.send(result);
        }
        tracing::trace!(rows = decoder.active_rows(), waiting = waiting.len(), "batch step");
    }
}
