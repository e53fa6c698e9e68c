//! The OpenAI wire format: request bodies built from techne's requests, and
//! the response shapes read back. Responses are read leniently (missing
//! fields default) because OpenAI-compatible servers differ in details, e.g.
//! llama.cpp answers `/completions` log-probabilities in the chat shape
//! (`logprobs.content`) while OpenAI uses the legacy columns (`tokens`,
//! `token_logprobs`, `text_offset`).

use serde::Deserialize;
use serde_json::{Value, json};

use crate::backends::{ChatMessage, Choice, FinishReason, Role, Sampling, TokenLogprob};

/// The seed as sent: its low 31 bits, a value every OpenAI-compatible server
/// accepts (OpenAI takes an int64, llama.cpp a uint32 whose all-ones value means "random").
pub fn wire_seed(seed: u64) -> u64 {
    seed & 0x7fff_ffff
}

fn role(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

/// The sampling fields shared by chat and text completions.
fn sampling_fields(body: &mut serde_json::Map<String, Value>, s: &Sampling) {
    body.insert("max_tokens".into(), json!(s.max_tokens));
    body.insert("temperature".into(), json!(s.temperature));
    body.insert("top_p".into(), json!(s.top_p));
    if !s.stop.is_empty() {
        body.insert("stop".into(), json!(s.stop));
    }
    body.insert("seed".into(), json!(wire_seed(s.seed)));
    body.insert("n".into(), json!(s.n));
}

/// A `/chat/completions` body.
pub fn chat_body(model: &str, messages: &[ChatMessage], s: &Sampling) -> Value {
    let mut body = serde_json::Map::new();
    body.insert("model".into(), json!(model));
    body.insert(
        "messages".into(),
        Value::Array(messages.iter().map(|m| json!({"role": role(m.role), "content": m.content})).collect()),
    );
    sampling_fields(&mut body, s);
    if s.logprobs {
        body.insert("logprobs".into(), json!(true));
        // At least one alternative: llama.cpp returns no log-probabilities at all for 0.
        body.insert("top_logprobs".into(), json!(1));
    }
    Value::Object(body)
}

/// A `/completions` body for raw text.
pub fn completion_body(model: &str, prompt: &str, s: &Sampling) -> Value {
    let mut body = serde_json::Map::new();
    body.insert("model".into(), json!(model));
    body.insert("prompt".into(), json!(prompt));
    sampling_fields(&mut body, s);
    if s.logprobs {
        // The legacy field: how many alternatives per token, the sampled token always included.
        body.insert("logprobs".into(), json!(1));
    }
    Value::Object(body)
}

/// A `/completions` body that scores `text` (prompt and continuation) by
/// echoing it with its tokens' log-probabilities and generating one token.
pub fn scoring_body(model: &str, text: &str) -> Value {
    json!({
        "model": model,
        "prompt": text,
        "echo": true,
        "logprobs": 1,
        "max_tokens": 1,
        "temperature": 0.0,
        "seed": 0,
    })
}

/// An `/embeddings` body.
pub fn embeddings_body(model: &str, texts: &[String]) -> Value {
    json!({"model": model, "input": texts, "encoding_format": "float"})
}

/// `usage`.
#[derive(Debug, Default, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Tokens generated.
    #[serde(default)]
    pub completion_tokens: u64,
}

/// One token's log-probability in the chat shape.
#[derive(Debug, Deserialize)]
pub struct ContentLogprob {
    /// The token text.
    #[serde(default)]
    pub token: String,
    /// Its log-probability (`null` from some servers for impossible tokens).
    pub logprob: Option<f64>,
}

/// `choices[].logprobs`, in either shape.
#[derive(Debug, Default, Deserialize)]
pub struct Logprobs {
    /// Chat shape.
    pub content: Option<Vec<ContentLogprob>>,
    /// Legacy shape: token texts.
    pub tokens: Option<Vec<String>>,
    /// Legacy shape: their log-probabilities (`null` for the first echoed token).
    pub token_logprobs: Option<Vec<Option<f64>>>,
    /// Legacy shape: each token's character offset in the choice text.
    pub text_offset: Option<Vec<usize>>,
}

impl Logprobs {
    /// `(token, logprob)` pairs, whichever shape the server used.
    pub fn pairs(&self) -> Vec<(String, Option<f64>)> {
        if let (Some(tokens), Some(logprobs)) = (&self.tokens, &self.token_logprobs) {
            return tokens.iter().cloned().zip(logprobs.iter().copied()).collect();
        }
        self.content.as_ref().map(|c| c.iter().map(|t| (t.token.clone(), t.logprob)).collect()).unwrap_or_default()
    }
}

/// The assistant message of a chat choice.
#[derive(Debug, Default, Deserialize)]
pub struct AssistantMessage {
    /// Its text (`null` when it only called tools).
    pub content: Option<String>,
}

/// One choice of a chat or text completion.
#[derive(Debug, Default, Deserialize)]
pub struct WireChoice {
    /// Its position.
    #[serde(default)]
    pub index: u32,
    /// Chat: the message.
    pub message: Option<AssistantMessage>,
    /// Completions: the text.
    pub text: Option<String>,
    /// `stop`, `length`, ...
    pub finish_reason: Option<String>,
    /// Log-probabilities, when asked for.
    pub logprobs: Option<Logprobs>,
}

/// A chat or text completion response.
#[derive(Debug, Default, Deserialize)]
pub struct CompletionResponse {
    /// The choices.
    #[serde(default)]
    pub choices: Vec<WireChoice>,
    /// Token counts.
    pub usage: Option<Usage>,
}

impl WireChoice {
    /// techne's choice.
    pub fn into_choice(self) -> Choice {
        let finish_reason = match self.finish_reason.as_deref() {
            Some("length") => FinishReason::Length,
            _ => FinishReason::Stop,
        };
        let logprobs = self
            .logprobs
            .map(|l| {
                l.pairs()
                    .into_iter()
                    .map(|(token, logprob)| TokenLogprob {
                        token,
                        logprob: logprob.map(|l| l as f32).unwrap_or(f32::NEG_INFINITY),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let text = self.message.and_then(|m| m.content).or(self.text).unwrap_or_default();
        Choice { text, finish_reason, logprobs }
    }
}

/// One embedding.
#[derive(Debug, Deserialize)]
pub struct EmbeddingItem {
    /// Its position in the input.
    pub index: Option<usize>,
    /// The vector.
    pub embedding: Vec<f32>,
}

/// An `/embeddings` response.
#[derive(Debug, Deserialize)]
pub struct EmbeddingResponse {
    /// One item per input.
    pub data: Vec<EmbeddingItem>,
}

/// Where the continuation's tokens are in an echoed scoring answer.
///
/// `prompt_chars` and `total_chars` are character counts of the prompt and
/// of prompt + continuation. A token belongs to the continuation when it ends
/// after the prompt and starts before the end of the continuation (a token
/// straddling the boundary counts: its probability is the continuation's
/// first). Offsets come from `text_offset` or, failing that, from the token
/// texts laid end to end. Returns `None` when the answer does not cover the
/// whole echoed text (the server did not echo it).
pub fn continuation_logprobs(logprobs: &Logprobs, prompt_chars: usize, total_chars: usize) -> Option<Vec<Option<f64>>> {
    let pairs = logprobs.pairs();
    let offsets: Vec<usize> = match &logprobs.text_offset {
        Some(offsets) if offsets.len() == pairs.len() => offsets.clone(),
        _ => pairs
            .iter()
            .scan(0usize, |at, (token, _)| {
                let start = *at;
                *at += token.chars().count();
                Some(start)
            })
            .collect(),
    };
    let end_of =
        |i: usize| -> usize { offsets.get(i + 1).copied().unwrap_or_else(|| offsets[i] + pairs[i].0.chars().count()) };
    let covered = (0..pairs.len()).map(end_of).max().unwrap_or(0);
    if pairs.is_empty() || covered < total_chars {
        return None;
    }
    Some(
        (0..pairs.len())
            .filter(|&i| end_of(i) > prompt_chars && offsets[i] < total_chars)
            .map(|i| pairs[i].1)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_body_maps_every_sampling_field() {
        let s = Sampling {
            max_tokens: 7,
            temperature: 0.5,
            top_p: 0.9,
            stop: vec!["\n".into()],
            seed: (1 << 40) + 5,
            n: 3,
            logprobs: true,
        };
        let body = chat_body("m", &[ChatMessage::new(Role::User, "hi")], &s);
        assert_eq!(body["model"], "m");
        assert_eq!(body["messages"], json!([{"role": "user", "content": "hi"}]));
        assert_eq!(body["max_tokens"], 7);
        assert_eq!(body["n"], 3);
        assert_eq!(body["stop"], json!(["\n"]));
        assert_eq!(body["seed"], 5);
        assert_eq!(body["logprobs"], true);
        assert_eq!(body["top_logprobs"], 1);
        let plain = chat_body("m", &[], &Sampling::default());
        assert!(plain.get("stop").is_none() && plain.get("logprobs").is_none());
    }

    #[test]
    fn both_logprob_shapes_are_read() {
        let legacy: Logprobs =
            serde_json::from_value(json!({"tokens": ["a", "b"], "token_logprobs": [null, -1.5]})).unwrap();
        assert_eq!(legacy.pairs(), vec![("a".into(), None), ("b".into(), Some(-1.5))]);
        let chat: Logprobs = serde_json::from_value(json!({"content": [{"token": "a", "logprob": -0.5}]})).unwrap();
        assert_eq!(chat.pairs(), vec![("a".into(), Some(-0.5))]);
    }

    #[test]
    fn continuation_tokens_are_found_by_offset() {
        // "The capital is" + " Paris" + generated "."
        let l: Logprobs = serde_json::from_value(json!({
            "tokens": ["The", " capital", " is", " Par", "is", "."],
            "token_logprobs": [null, -3.0, -1.0, -0.5, -0.1, -2.0],
            "text_offset": [0, 3, 11, 14, 18, 20]
        }))
        .unwrap();
        let got = continuation_logprobs(&l, 14, 20).unwrap();
        assert_eq!(got, vec![Some(-0.5), Some(-0.1)]);
        // Without offsets: the tokens laid end to end.
        let no_offsets = Logprobs { text_offset: None, ..l };
        assert_eq!(continuation_logprobs(&no_offsets, 14, 20).unwrap(), vec![Some(-0.5), Some(-0.1)]);
        // Not echoed: only the generated token came back.
        let generated: Logprobs = serde_json::from_value(json!({"tokens": ["."], "token_logprobs": [-2.0]})).unwrap();
        assert_eq!(continuation_logprobs(&generated, 14, 20), None);
    }

    #[test]
    fn choices_convert() {
        let c: WireChoice = serde_json::from_value(json!({
            "index": 0, "message": {"role": "assistant", "content": "Paris"}, "finish_reason": "length",
            "logprobs": {"content": [{"token": "Paris", "logprob": -0.25}]}
        }))
        .unwrap();
        let c = c.into_choice();
        assert_eq!(c.text, "Paris");
        assert_eq!(c.finish_reason, FinishReason::Length);
        assert_eq!(c.logprobs, vec![TokenLogprob { token: "Paris".into(), logprob: -0.25 }]);
    }
}
