//! Tokenizers and chat templates.
//!
//! [`tokenizer_json_from_gguf`] turns the vocabulary stored in a GGUF file
//! (`tokenizer.ggml.*`) into a HuggingFace `tokenizer.json` for a byte-level
//! BPE model, choosing the pre-tokenizer from `tokenizer.ggml.pre` the way
//! llama.cpp does. [`Tokenizer`] loads such a file with the `tokenizers`
//! crate; [`ChatTemplate`] renders the Jinja chat template stored in
//! `tokenizer.chat_template` with `minijinja`, configured like HuggingFace's
//! renderer (`trim_blocks`, `lstrip_blocks`, Python string methods,
//! `raise_exception`).

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::gguf::{GgufError, GgufFile};

/// Errors raised by tokenizers and chat templates.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// The GGUF metadata is missing or malformed.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// The vocabulary uses a model type that cannot be converted.
    #[error(
        "tokenizer model `{0}` is not supported: `gpt2` (byte-level BPE) and `llama` (SentencePiece BPE with \
         byte fallback) vocabularies are; convert the model's tokenizer.json with `techne models import DIR` instead"
    )]
    UnsupportedModel(String),
    /// The pre-tokenizer named by `tokenizer.ggml.pre` is unknown.
    #[error("pre-tokenizer `{0}` (tokenizer.ggml.pre) is not supported")]
    UnsupportedPreTokenizer(String),
    /// The vocabulary is inconsistent.
    #[error("invalid vocabulary: {0}")]
    InvalidVocab(String),
    /// The `tokenizers` crate rejected the tokenizer or the input.
    #[error("tokenizer: {0}")]
    Tokenizers(String),
    /// The tokenizer file could not be read.
    #[error("cannot read tokenizer {path}: {message}")]
    Load {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The chat template failed to compile or render.
    #[error("chat template: {0}")]
    Template(String),
    /// The model has no chat template.
    #[error("the model has no chat template (tokenizer.chat_template)")]
    NoChatTemplate,
}

/// A result with a [`TokenizerError`].
pub type Result<T, E = TokenizerError> = std::result::Result<T, E>;

const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_REGEX: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn byte_level(use_regex: bool) -> Value {
    json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex})
}

fn split(regex: &str) -> Value {
    json!({"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false})
}

/// The HuggingFace pre-tokenizer matching llama.cpp's `tokenizer.ggml.pre`.
pub fn pre_tokenizer_for(pre: &str) -> Result<Value> {
    Ok(match pre {
        "default" | "gpt2" | "gpt-2" | "olmo" | "jais" => byte_level(true),
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva" => json!({
            "type": "Sequence",
            "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level(true)]
        }),
        "llama3" | "llama-v3" | "llama-bpe" | "dbrx" | "smaug-bpe" | "falcon3" | "pixtral" => json!({
            "type": "Sequence",
            "pretokenizers": [split(LLAMA3_REGEX), byte_level(false)]
        }),
        "qwen2" | "deepseek-r1-qwen" | "megrez" | "hunyuan" => json!({
            "type": "Sequence",
            "pretokenizers": [split(QWEN2_REGEX), byte_level(false)]
        }),
        other => return Err(TokenizerError::UnsupportedPreTokenizer(other.to_string())),
    })
}

/// Special-token information read from a GGUF vocabulary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecialTokens {
    /// Beginning-of-sequence token.
    pub bos: Option<String>,
    /// End-of-sequence token.
    pub eos: Option<String>,
    /// Unknown token.
    pub unk: Option<String>,
    /// Padding token.
    pub pad: Option<String>,
    /// Whether a BOS token is prepended when encoding.
    pub add_bos: bool,
    /// Whether an EOS token is appended when encoding.
    pub add_eos: bool,
    /// Token ids that end a generation (EOS, EOT, EOM).
    pub stop_ids: Vec<u32>,
}

/// A tokenizer converted from GGUF metadata.
#[derive(Debug, Clone)]
pub struct ConvertedTokenizer {
    /// The `tokenizer.json` document.
    pub json: Value,
    /// Special tokens.
    pub special: SpecialTokens,
    /// The chat template, if any.
    pub chat_template: Option<String>,
    /// `tokenizer.ggml.model` and `tokenizer.ggml.pre`, e.g. `gpt2/smollm`.
    pub kind: String,
}

fn opt_id(g: &GgufFile, key: &str, n: usize) -> Result<Option<u32>> {
    match g.get(key) {
        None => Ok(None),
        Some(v) => {
            let id = v.as_i64().ok_or_else(|| TokenizerError::InvalidVocab(format!("{key} is not an integer")))?;
            if id < 0 {
                return Ok(None);
            }
            if id as usize >= n {
                return Err(TokenizerError::InvalidVocab(format!("{key} = {id} is outside the vocabulary of {n}")));
            }
            Ok(Some(id as u32))
        }
    }
}

/// Builds a HuggingFace `tokenizer.json` from the `tokenizer.ggml.*` metadata.
pub fn tokenizer_json_from_gguf(g: &GgufFile) -> Result<ConvertedTokenizer> {
    let model = g.get_str("tokenizer.ggml.model")?;
    if model != "gpt2" && model != "llama" {
        return Err(TokenizerError::UnsupportedModel(model.to_string()));
    }
    let pre = match g.get("tokenizer.ggml.pre") {
        Some(v) => v.as_str().unwrap_or("default").to_string(),
        None => "default".to_string(),
    };
    // Checked before the vocabulary, so that an unknown value is the error named.
    let pre_tokenizer = if model == "gpt2" { pre_tokenizer_for(&pre)? } else { Value::Null };
    let tokens = g.get_str_array("tokenizer.ggml.tokens")?;
    let n = tokens.len();
    if n == 0 {
        return Err(TokenizerError::InvalidVocab("empty vocabulary".into()));
    }
    let types = match g.get("tokenizer.ggml.token_type") {
        Some(_) => g.get_int_array("tokenizer.ggml.token_type")?,
        None => vec![1; n],
    };
    if types.len() != n {
        return Err(TokenizerError::InvalidVocab(format!("{} token types for {} tokens", types.len(), n)));
    }
    let mut vocab = serde_json::Map::with_capacity(n);
    for (i, t) in tokens.iter().enumerate() {
        if vocab.insert((*t).to_string(), json!(i)).is_some() {
            // Duplicate pieces keep their first id, like llama.cpp's token_to_id map.
            vocab.insert((*t).to_string(), json!(vocab_first_id(&tokens, t)));
        }
    }
    let merge_pairs = if model == "llama" {
        sentencepiece_merges(g, &tokens, &types)?
    } else {
        let merges = g.get_str_array("tokenizer.ggml.merges")?;
        let mut pairs = Vec::with_capacity(merges.len());
        for m in &merges {
            let mut parts = m.splitn(2, ' ');
            match (parts.next(), parts.next()) {
                (Some(a), Some(b)) if !a.is_empty() && !b.is_empty() => pairs.push(json!([a, b])),
                _ => return Err(TokenizerError::InvalidVocab(format!("malformed merge `{m}`"))),
            }
        }
        pairs
    };
    let mut added = Vec::new();
    for (i, (t, ty)) in tokens.iter().zip(&types).enumerate() {
        // 3 = control, 4 = user-defined.
        if *ty == 3 || *ty == 4 {
            added.push(json!({
                "id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                "normalized": false, "special": *ty == 3
            }));
        }
    }
    let bos = opt_id(g, "tokenizer.ggml.bos_token_id", n)?;
    let eos = opt_id(g, "tokenizer.ggml.eos_token_id", n)?;
    let unk = opt_id(g, "tokenizer.ggml.unknown_token_id", n)?;
    let pad = opt_id(g, "tokenizer.ggml.padding_token_id", n)?;
    let eot = opt_id(g, "tokenizer.ggml.eot_token_id", n)?;
    let eom = opt_id(g, "tokenizer.ggml.eom_token_id", n)?;
    // SentencePiece vocabularies (LLaMA 1/2, Mistral, TinyLlama) add BOS
    // unless the file says otherwise, as llama.cpp does.
    let add_bos = g.get_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(model == "llama");
    let add_eos = g.get_bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false);
    let name = |id: Option<u32>| id.map(|i| tokens[i as usize].to_string());
    let mut stop_ids: Vec<u32> = [eos, eot, eom].into_iter().flatten().collect();
    stop_ids.dedup();
    let special = SpecialTokens {
        bos: name(bos),
        eos: name(eos),
        unk: name(unk),
        pad: name(pad),
        add_bos: add_bos && bos.is_some(),
        add_eos: add_eos && eos.is_some(),
        stop_ids,
    };
    let post_processor = if special.add_bos || special.add_eos {
        let mut single = Vec::new();
        let mut pair = Vec::new();
        let mut specials = serde_json::Map::new();
        if let (true, Some(b), Some(id)) = (special.add_bos, &special.bos, bos) {
            single.push(json!({"SpecialToken": {"id": b, "type_id": 0}}));
            pair.push(json!({"SpecialToken": {"id": b, "type_id": 0}}));
            specials.insert(b.clone(), json!({"id": b, "ids": [id], "tokens": [b]}));
        }
        single.push(json!({"Sequence": {"id": "A", "type_id": 0}}));
        pair.push(json!({"Sequence": {"id": "A", "type_id": 0}}));
        if let (true, Some(e), Some(id)) = (special.add_eos, &special.eos, eos) {
            single.push(json!({"SpecialToken": {"id": e, "type_id": 0}}));
            specials.insert(e.clone(), json!({"id": e, "ids": [id], "tokens": [e]}));
        }
        pair.push(json!({"Sequence": {"id": "B", "type_id": 1}}));
        json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials})
    } else if model == "llama" {
        Value::Null
    } else {
        json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false})
    };
    let json = if model == "llama" {
        // SentencePiece BPE as Hugging Face's LLaMA conversion spells it:
        // spaces become `▁` (with one in front when the vocabulary adds a
        // dummy prefix, `tokenizer.ggml.add_space_prefix`, default on), no
        // pre-tokenizer, BPE over characters with merges ranked by the
        // merged piece's score, unknown characters as `<0xNN>` byte pieces.
        let add_space_prefix = g.get_bool("tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
        let replace_spaces = json!({"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"});
        let normalizer = if add_space_prefix {
            json!({"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u{2581}"}, replace_spaces]})
        } else {
            replace_spaces
        };
        let mut decoders = vec![
            json!({"type": "Replace", "pattern": {"String": "\u{2581}"}, "content": " "}),
            json!({"type": "ByteFallback"}),
            json!({"type": "Fuse"}),
        ];
        if add_space_prefix {
            decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
        }
        json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": normalizer,
            "pre_tokenizer": null,
            "post_processor": post_processor,
            "decoder": {"type": "Sequence", "decoders": decoders},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": special.unk, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                "vocab": vocab, "merges": merge_pairs
            }
        })
    } else {
        json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": post_processor,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": special.unk, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab, "merges": merge_pairs
            }
        })
    };
    let chat_template = g.get("tokenizer.chat_template").and_then(|v| v.as_str()).map(str::to_string);
    Ok(ConvertedTokenizer { json, special, chat_template, kind: format!("{model}/{pre}") })
}

/// BPE merges that reproduce a SentencePiece BPE vocabulary: every way to
/// split a normal piece into two pieces of the vocabulary is a merge, ranked
/// by the merged piece's score (`tokenizer.ggml.scores`, higher first; ties
/// keep vocabulary order), and within one piece by the ids of its halves.
/// SentencePiece's encoder joins the adjacent pair whose union scores
/// highest, which is the merge of best rank.
fn sentencepiece_merges(g: &GgufFile, tokens: &[&str], types: &[i64]) -> Result<Vec<Value>> {
    let n = tokens.len();
    let scores: Vec<f64> = match g.get("tokenizer.ggml.scores").and_then(|v| v.as_array()) {
        Some(values) => values
            .iter()
            .map(|v| {
                v.as_f64()
                    .ok_or_else(|| TokenizerError::InvalidVocab("tokenizer.ggml.scores holds a non-number".into()))
            })
            .collect::<Result<_>>()?,
        None => {
            return Err(TokenizerError::InvalidVocab(
                "a `llama` (SentencePiece) vocabulary needs tokenizer.ggml.scores, which this file lacks".into(),
            ));
        }
    };
    if scores.len() != n {
        return Err(TokenizerError::InvalidVocab(format!("{} scores for {n} tokens", scores.len())));
    }
    // 1 = normal, 4 = user-defined: the pieces merges are made of.
    let mergeable = |i: usize| matches!(types[i], 1 | 4);
    let mut ids: std::collections::HashMap<&str, usize> = std::collections::HashMap::with_capacity(n);
    for (i, t) in tokens.iter().enumerate() {
        if mergeable(i) {
            ids.entry(*t).or_insert(i);
        }
    }
    let mut ranked: Vec<(f64, usize, usize, usize)> = Vec::new();
    for (i, piece) in tokens.iter().enumerate() {
        if !mergeable(i) || ids.get(piece) != Some(&i) {
            continue;
        }
        for (at, _) in piece.char_indices().skip(1) {
            let (left, right) = piece.split_at(at);
            if let (Some(&l), Some(&r)) = (ids.get(left), ids.get(right)) {
                ranked.push((scores[i], i, l, r));
            }
        }
    }
    // Higher score first; a stable order otherwise (the piece's id, then its halves').
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)).then(a.3.cmp(&b.3)));
    Ok(ranked.into_iter().map(|(_, _, l, r)| json!([tokens[l], tokens[r]])).collect())
}

fn vocab_first_id(tokens: &[&str], t: &str) -> usize {
    tokens.iter().position(|x| *x == t).unwrap_or(0)
}

/// A loaded tokenizer.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").field("vocab_size", &self.vocab_size()).finish()
    }
}

fn tk_err(e: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::Tokenizers(e.to_string())
}

impl Tokenizer {
    /// Loads a `tokenizer.json` file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| TokenizerError::Load { path: path.display().to_string(), message: e.to_string() })?;
        Ok(Self { inner })
    }

    /// Loads a `tokenizer.json` document.
    pub fn from_json(json: &Value) -> Result<Self> {
        let bytes = serde_json::to_vec(json).map_err(tk_err)?;
        Self::from_bytes(&bytes)
    }

    /// Loads a serialised `tokenizer.json`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        Ok(Self { inner: tokenizers::Tokenizer::from_bytes(bytes).map_err(tk_err)? })
    }

    /// The underlying `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Mutable access to the underlying tokenizer (padding, truncation).
    pub fn inner_mut(&mut self) -> &mut tokenizers::Tokenizer {
        &mut self.inner
    }

    /// The vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Encodes text. Special tokens written in the text (e.g. `<|im_start|>`)
    /// are always recognised; `add_special` adds the post-processor's tokens
    /// (BOS/EOS) where the model asks for them.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        Ok(self.inner.encode(text, add_special).map_err(tk_err)?.get_ids().to_vec())
    }

    /// Decodes ids to text.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner.decode(ids, skip_special).map_err(tk_err)
    }

    /// The id of a token string.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The token string of an id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }
}

/// One message of a chat conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message with any role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self { role: role.into(), content: content.into() }
    }
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }
    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// A compiled Jinja chat template.
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").field("source", &self.source).finish()
    }
}

impl ChatTemplate {
    /// Compiles a template; `bos_token` and `eos_token` are exposed to it.
    pub fn new(source: &str, bos_token: Option<&str>, eos_token: Option<&str>) -> Result<Self> {
        let mut env = minijinja::Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        env.add_template_owned("chat", source.to_string()).map_err(|e| TokenizerError::Template(e.to_string()))?;
        Ok(Self {
            env,
            source: source.to_string(),
            bos_token: bos_token.unwrap_or_default().to_string(),
            eos_token: eos_token.unwrap_or_default().to_string(),
        })
    }

    /// The template source.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders a conversation; `add_generation_prompt` appends the header of
    /// the assistant turn.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let tmpl = self.env.get_template("chat").map_err(|e| TokenizerError::Template(e.to_string()))?;
        tmpl.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token,
            eos_token => self.eos_token,
        })
        .map_err(|e| TokenizerError::Template(format!("{e:#}")))
    }
}
