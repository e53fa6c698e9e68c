//! Training data: JSONL files in TRL's formats, chat templating and
//! tokenization with loss masks.
//!
//! Supervised fine-tuning, one JSON object per line:
//!
//! * `{"messages": [{"role": "user", "content": …}, {"role": "assistant", "content": …}, …]}`
//!   — loss on every assistant message;
//! * `{"prompt": "…", "completion": "…"}` — a user turn and the assistant's
//!   reply (with [`TemplateMode::Raw`]: plain text, the completion followed by EOS);
//! * `{"prompt": [messages…], "completion": [messages…]}` — TRL's
//!   conversational prompt–completion; loss on the completion messages;
//! * `{"text": "…"}` — plain language modelling, loss on every token.
//!
//! Preference data for DPO:
//!
//! * `{"prompt": "…", "chosen": "…", "rejected": "…"}` (strings or message lists);
//! * `{"chosen": [messages…], "rejected": [messages…]}` — TRL's implicit
//!   prompt: the common leading messages are the prompt.
//!
//! Chat mode renders conversations with the model's own chat template
//! (`tokenizer.chat_template`). The assistant part of a turn is the text the
//! template adds for that message after the generation prompt
//! (`<|im_start|>assistant\n`): for ChatML the content, `<|im_end|>` and the
//! newline, so the model learns to stop. The untrained and trained segments
//! are tokenized separately and concatenated, exactly as techne-inference's
//! engine tokenizes a chat prompt and scores a continuation, so training and
//! inference see the same token boundaries.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use techne_inference::gguf::GgufFile;
use techne_inference::tokenizer::{ChatMessage, ChatTemplate, Tokenizer, tokenizer_json_from_gguf};

use crate::error::{Result, TrainError, io_err};

/// How examples become text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum TemplateMode {
    /// Render with the model's chat template (string prompts become a user turn).
    #[default]
    Chat,
    /// Plain text: prompt then completion then EOS, no template.
    Raw,
}

/// The tokenizer, chat template and special ids of a model.
pub struct TextCodec {
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
    eos: Option<u32>,
    bos: Option<u32>,
}

impl std::fmt::Debug for TextCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextCodec").field("template", &self.template.is_some()).field("eos", &self.eos).finish()
    }
}

/// One supervised example: token ids and, per position, whether the token is
/// trained on (predicted from the previous position).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SftExample {
    /// Token ids.
    pub ids: Vec<u32>,
    /// `targets[i]`: the loss includes predicting `ids[i]` (never true for `i = 0`).
    pub targets: Vec<bool>,
}

impl SftExample {
    /// The number of trained tokens.
    pub fn n_targets(&self) -> usize {
        self.targets.iter().filter(|&&t| t).count()
    }
}

/// One preference pair, tokenized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreferenceExample {
    /// Prompt ids (not trained on).
    pub prompt: Vec<u32>,
    /// Chosen completion ids.
    pub chosen: Vec<u32>,
    /// Rejected completion ids.
    pub rejected: Vec<u32>,
}

/// A tokenized data file.
#[derive(Debug, Clone)]
pub struct Dataset<T> {
    /// The examples, in file order.
    pub examples: Vec<T>,
    /// The data file.
    pub path: PathBuf,
    /// SHA-256 of the file's bytes, hex.
    pub sha256: String,
    /// Examples dropped because nothing trainable was left after truncation.
    pub skipped: usize,
    /// Examples whose text was cut to the maximum sequence length.
    pub truncated: usize,
}

fn data_err(path: &Path, line: usize, message: impl Into<String>) -> TrainError {
    TrainError::Data { path: path.to_path_buf(), line, message: message.into() }
}

impl TextCodec {
    /// The tokenizer and chat template stored in a GGUF file.
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let conv = tokenizer_json_from_gguf(g)?;
        let tokenizer = Tokenizer::from_json(&conv.json)?;
        let template = match &conv.chat_template {
            Some(src) => Some(ChatTemplate::new(src, conv.special.bos.as_deref(), conv.special.eos.as_deref())?),
            None => None,
        };
        let id = |t: &Option<String>| t.as_deref().and_then(|t| tokenizer.token_to_id(t));
        let eos = id(&conv.special.eos);
        let bos = id(&conv.special.bos);
        Ok(Self { tokenizer, template, eos, bos })
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The EOS id, if the model has one.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    fn template(&self) -> Result<&ChatTemplate> {
        self.template.as_ref().ok_or_else(|| {
            TrainError::Config(
                "the model has no chat template (tokenizer.chat_template): train with template = raw".into(),
            )
        })
    }

    fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        Ok(self.tokenizer.encode(text, add_special)?)
    }

    /// A raw prompt as the engine's `complete` encodes it (BOS when the model
    /// asks for it, or when the prompt would otherwise be empty).
    fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.encode(text, true)?;
        if ids.is_empty()
            && let Some(b) = self.bos
        {
            ids.push(b);
        }
        Ok(ids)
    }

    /// Splits a conversation into (text, trained) segments: for each message
    /// `i` with `train(i)` (an assistant message), the text the template adds
    /// for the generation prompt is untrained, the rest of the message is
    /// trained.
    pub fn chat_segments(
        &self,
        messages: &[ChatMessage],
        train: impl Fn(usize) -> bool,
    ) -> Result<Vec<(String, bool)>> {
        let t = self.template()?;
        let mut segs = Vec::new();
        let mut done = String::new();
        for i in 0..messages.len() {
            if messages[i].role != "assistant" || !train(i) {
                continue;
            }
            let prefix = t.render(&messages[..i], true)?;
            let full = t.render(&messages[..=i], false)?;
            let (Some(head), Some(body)) = (prefix.strip_prefix(done.as_str()), full.strip_prefix(prefix.as_str()))
            else {
                return Err(TrainError::Config(
                    "the chat template does not render conversations as prefixes of each other, so assistant turns cannot be isolated: train with template = raw".into(),
                ));
            };
            segs.push((head.to_string(), false));
            segs.push((body.to_string(), true));
            done = full;
        }
        Ok(segs)
    }

    fn tokenize_segments(&self, segs: &[(String, bool)]) -> Result<SftExample> {
        let mut ids = Vec::new();
        let mut targets = Vec::new();
        for (text, train) in segs {
            let part = self.encode(text, false)?;
            targets.extend(std::iter::repeat_n(*train, part.len()));
            ids.extend(part);
        }
        if let Some(t) = targets.first_mut() {
            *t = false;
        }
        Ok(SftExample { ids, targets })
    }

    /// Tokenizes one SFT record (see the module docs for the formats).
    pub fn sft_example(&self, v: &Value, mode: TemplateMode) -> std::result::Result<SftExample, String> {
        let obj = v.as_object().ok_or("expected a JSON object")?;
        if let Some(text) = obj.get("text") {
            let text = text.as_str().ok_or("`text` must be a string")?;
            let ids = self.encode_prompt(text).map_err(|e| e.to_string())?;
            let mut targets = vec![true; ids.len()];
            if let Some(t) = targets.first_mut() {
                *t = false;
            }
            return Ok(SftExample { ids, targets });
        }
        if let Some(m) = obj.get("messages") {
            let msgs = parse_messages(m, "messages")?;
            if !msgs.iter().any(|m| m.role == "assistant") {
                return Err("`messages` has no assistant message to train on".into());
            }
            if mode == TemplateMode::Raw {
                return Err("`messages` needs the chat template: remove template = raw".into());
            }
            let segs = self.chat_segments(&msgs, |_| true).map_err(|e| e.to_string())?;
            return self.tokenize_segments(&segs).map_err(|e| e.to_string());
        }
        let (Some(p), Some(c)) = (obj.get("prompt"), obj.get("completion")) else {
            return Err("expected `messages`, `prompt` and `completion`, or `text` (TRL formats)".into());
        };
        match (p, c, mode) {
            (Value::String(p), Value::String(c), TemplateMode::Raw) => {
                let mut ids = self.encode_prompt(p).map_err(|e| e.to_string())?;
                let n = ids.len();
                ids.extend(self.encode(c, false).map_err(|e| e.to_string())?);
                if let Some(e) = self.eos {
                    ids.push(e);
                }
                let targets = (0..ids.len()).map(|i| i >= n && i > 0).collect();
                Ok(SftExample { ids, targets })
            }
            _ => {
                let prompt = as_messages(p, "prompt", "user")?;
                let completion = as_messages(c, "completion", "assistant")?;
                if mode == TemplateMode::Raw {
                    return Err("message lists need the chat template: remove template = raw".into());
                }
                let n = prompt.len();
                let all: Vec<ChatMessage> = prompt.into_iter().chain(completion).collect();
                let segs = self.chat_segments(&all, |i| i >= n).map_err(|e| e.to_string())?;
                if !segs.iter().any(|(_, t)| *t) {
                    return Err("`completion` has no assistant message".into());
                }
                self.tokenize_segments(&segs).map_err(|e| e.to_string())
            }
        }
    }

    /// Tokenizes one preference record.
    pub fn preference_example(&self, v: &Value, mode: TemplateMode) -> std::result::Result<PreferenceExample, String> {
        let obj = v.as_object().ok_or("expected a JSON object")?;
        let (Some(c), Some(r)) = (obj.get("chosen"), obj.get("rejected")) else {
            return Err("expected `prompt`, `chosen` and `rejected` (TRL preference format)".into());
        };
        if let (Some(Value::String(p)), Value::String(c), Value::String(r), TemplateMode::Raw) =
            (obj.get("prompt"), c, r, mode)
        {
            let prompt = self.encode_prompt(p).map_err(|e| e.to_string())?;
            let enc = |s: &str| -> std::result::Result<Vec<u32>, String> {
                let mut ids = self.encode(s, false).map_err(|e| e.to_string())?;
                ids.extend(self.eos);
                Ok(ids)
            };
            return Ok(PreferenceExample { prompt, chosen: enc(c)?, rejected: enc(r)? });
        }
        if mode == TemplateMode::Raw {
            return Err("with template = raw, `prompt`, `chosen` and `rejected` must be strings".into());
        }
        let (prompt, chosen, rejected) = match obj.get("prompt") {
            Some(p) => (
                as_messages(p, "prompt", "user")?,
                as_messages(c, "chosen", "assistant")?,
                as_messages(r, "rejected", "assistant")?,
            ),
            None => {
                let c = parse_messages(c, "chosen")?;
                let r = parse_messages(r, "rejected")?;
                let common = c.iter().zip(&r).take_while(|(a, b)| a == b).count();
                let common =
                    (0..=common).rev().find(|&k| c.get(k).is_some_and(|m| m.role == "assistant")).unwrap_or(common);
                (c[..common].to_vec(), c[common..].to_vec(), r[common..].to_vec())
            }
        };
        if prompt.is_empty() {
            return Err("the prompt is empty".into());
        }
        let t = self.template().map_err(|e| e.to_string())?;
        let head = t.render(&prompt, true).map_err(|e| e.to_string())?;
        let completion = |msgs: &[ChatMessage], what: &str| -> std::result::Result<Vec<u32>, String> {
            if msgs.is_empty() || msgs.iter().any(|m| m.role != "assistant") {
                return Err(format!("`{what}` must be assistant messages after the prompt"));
            }
            let all: Vec<ChatMessage> = prompt.iter().chain(msgs).cloned().collect();
            let full = t.render(&all, false).map_err(|e| e.to_string())?;
            let body = full.strip_prefix(head.as_str()).ok_or(
                "the chat template does not render the prompt as a prefix of the conversation: train with template = raw",
            )?;
            self.encode(body, false).map_err(|e| e.to_string())
        };
        let chosen = completion(&chosen, "chosen")?;
        let rejected = completion(&rejected, "rejected")?;
        let prompt = self.encode(&head, false).map_err(|e| e.to_string())?;
        Ok(PreferenceExample { prompt, chosen, rejected })
    }
}

fn parse_messages(v: &Value, field: &str) -> std::result::Result<Vec<ChatMessage>, String> {
    let arr = v.as_array().ok_or_else(|| format!("`{field}` must be a list of {{\"role\", \"content\"}} messages"))?;
    let mut out = Vec::with_capacity(arr.len());
    for (i, m) in arr.iter().enumerate() {
        let role =
            m.get("role").and_then(Value::as_str).ok_or_else(|| format!("`{field}[{i}]` has no string `role`"))?;
        let content = match m.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => {
                // OpenAI-style content parts: keep the text parts.
                let mut s = String::new();
                for p in parts {
                    match (p.get("type").and_then(Value::as_str), p.get("text").and_then(Value::as_str)) {
                        (Some("text"), Some(t)) => s.push_str(t),
                        _ => {
                            return Err(format!(
                                "`{field}[{i}].content` has a non-text part; only text can be trained on"
                            ));
                        }
                    }
                }
                s
            }
            _ => return Err(format!("`{field}[{i}]` has no string `content`")),
        };
        out.push(ChatMessage::new(role, content));
    }
    if out.is_empty() {
        return Err(format!("`{field}` is empty"));
    }
    Ok(out)
}

/// A string becomes one message of `role`; a list is parsed as messages.
fn as_messages(v: &Value, field: &str, role: &str) -> std::result::Result<Vec<ChatMessage>, String> {
    match v {
        Value::String(s) => Ok(vec![ChatMessage::new(role, s.clone())]),
        _ => parse_messages(v, field),
    }
}

/// SHA-256 of bytes, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn read_lines(path: &Path) -> Result<(Vec<(usize, Value)>, String)> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let sha = sha256_hex(&bytes);
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| data_err(path, 0, format!("the file is not UTF-8 ({e}); save it as UTF-8 JSONL")))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line)
            .map_err(|e| data_err(path, i + 1, format!("not valid JSON ({e}); each line must be one JSON object")))?;
        out.push((i + 1, v));
    }
    if out.is_empty() {
        return Err(data_err(path, 0, "the file has no examples (expected one JSON object per line)"));
    }
    Ok((out, sha))
}

/// Reads and tokenizes an SFT file; examples longer than `max_len` tokens are
/// cut at the end, and examples left without trained tokens are skipped.
pub fn load_sft(path: &Path, codec: &TextCodec, mode: TemplateMode, max_len: usize) -> Result<Dataset<SftExample>> {
    let (lines, sha256) = read_lines(path)?;
    let mut examples = Vec::with_capacity(lines.len());
    let (mut skipped, mut truncated) = (0, 0);
    for (line, v) in lines {
        let mut ex = codec.sft_example(&v, mode).map_err(|m| data_err(path, line, m))?;
        if ex.ids.len() > max_len {
            ex.ids.truncate(max_len);
            ex.targets.truncate(max_len);
            truncated += 1;
        }
        if ex.n_targets() == 0 {
            skipped += 1;
            continue;
        }
        examples.push(ex);
    }
    if examples.is_empty() {
        return Err(data_err(
            path,
            0,
            format!(
                "no example has a trained token within max_seq_len = {max_len}; raise max_seq_len or add assistant turns"
            ),
        ));
    }
    Ok(Dataset { examples, path: path.to_path_buf(), sha256, skipped, truncated })
}

/// Reads and tokenizes a preference file. When prompt plus the longer
/// completion exceed `max_len`, the prompt loses tokens from its start (at
/// least one is kept), then the completions are cut at the end.
pub fn load_preferences(
    path: &Path,
    codec: &TextCodec,
    mode: TemplateMode,
    max_len: usize,
) -> Result<Dataset<PreferenceExample>> {
    let (lines, sha256) = read_lines(path)?;
    let mut examples = Vec::with_capacity(lines.len());
    let (mut skipped, mut truncated) = (0, 0);
    for (line, v) in lines {
        let mut ex = codec.preference_example(&v, mode).map_err(|m| data_err(path, line, m))?;
        let longest = ex.chosen.len().max(ex.rejected.len());
        if ex.prompt.len() + longest > max_len {
            truncated += 1;
            let keep_prompt = max_len.saturating_sub(longest).max(1).min(ex.prompt.len());
            ex.prompt.drain(..ex.prompt.len() - keep_prompt);
            let room = max_len.saturating_sub(ex.prompt.len());
            ex.chosen.truncate(room);
            ex.rejected.truncate(room);
        }
        if ex.prompt.is_empty() || ex.chosen.is_empty() || ex.rejected.is_empty() {
            skipped += 1;
            continue;
        }
        examples.push(ex);
    }
    if examples.is_empty() {
        return Err(data_err(
            path,
            0,
            format!("no usable preference pair within max_seq_len = {max_len}; raise max_seq_len"),
        ));
    }
    Ok(Dataset { examples, path: path.to_path_buf(), sha256, skipped, truncated })
}
