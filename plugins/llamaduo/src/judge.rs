//! LlamaDuo's service-LLM-as-judge: the prompt, the robust parsing of the
//! judge's (untrusted) reply and the averaging over repeats. Pure functions,
//! unit-tested natively.

use techne_plugin_sdk::serde_json::{Deserializer, Value};
use techne_plugin_sdk::template::fill;

/// The default judge prompt, in the style of the paper's: the instruction,
/// the reference (human) response and the local model's response, two
/// scores from 1 to 100 with reasons, in JSON. Placeholders:
/// `{instruction}`, `{reference}`, `{response}`.
pub const DEFAULT_JUDGE_PROMPT: &str = "You are a rigorous quality assessor. Below are an instruction, \
a reference response written by a human, and a response written by a language model.

Instruction:
```
{instruction}
```

Reference response:
```
{reference}
```

Language model response:
```
{response}
```

Assess two things, each on a scale from 1 to 100:
- similarity: how closely the language model response matches the reference response \
(1: nothing in common, 100: the same content);
- precision: how accurately and relevantly the language model response answers the instruction \
(1: wrong or irrelevant, 100: fully correct and relevant).
Be rigorous and thorough. Reply with JSON only, in this format:

{\"similarity_assessment\": {\"score\": <1-100>, \"reason\": \"<how the score was determined>\"}, \
\"precision_assessment\": {\"score\": <1-100>, \"reason\": \"<how the score was determined>\"}}";

/// The judge prompt for one response.
pub fn judge_prompt(template: &str, instruction: &str, reference: &str, response: &str) -> String {
    fill(template, &[("instruction", instruction), ("reference", reference), ("response", response)])
}

/// Scores clamped to the judgement scale.
pub const MIN_SCORE: f64 = 1.0;
/// The top of the scale.
pub const MAX_SCORE: f64 = 100.0;

/// A score clamped to 1..=100; `None` when not finite.
pub fn clamp_score(score: f64) -> Option<f64> {
    score.is_finite().then(|| score.clamp(MIN_SCORE, MAX_SCORE))
}

/// The (similarity, precision) scores in a judge's reply, each clamped to
/// 1..=100, or `None` when the reply holds no readable pair.
///
/// Tried in order: every JSON object in the reply (in code fences or
/// surrounded by prose too), looking for a key containing `similarity` and
/// one containing `precision` (at the top level or one level down), whose
/// value is a number, a numeric string (`"85"`, `"85/100"`), a list starting
/// with one, or an object with a `score`; then the text itself: the first
/// number after the word `similarity` and after the word `precision`.
pub fn parse_judgement(reply: &str) -> Option<(f64, f64)> {
    for (start, _) in reply.match_indices('{') {
        let Some(Ok(value)) = Deserializer::from_str(&reply[start..]).into_iter::<Value>().next() else {
            continue;
        };
        if let (Some(s), Some(p)) = (find_score(&value, "similarity", 2), find_score(&value, "precision", 2))
            && let (Some(s), Some(p)) = (clamp_score(s), clamp_score(p))
        {
            return Some((s, p));
        }
    }
    let s = number_after_word(reply, "similarity", "precision")?;
    let p = number_after_word(reply, "precision", "similarity")?;
    Some((clamp_score(s)?, clamp_score(p)?))
}

/// The score under the first key containing `word` in `value` (searched
/// `depth` levels deep).
fn find_score(value: &Value, word: &str, depth: usize) -> Option<f64> {
    let Value::Object(map) = value else { return None };
    for (key, v) in map {
        if key.to_ascii_lowercase().contains(word)
            && let Some(score) = score_of(v)
        {
            return Some(score);
        }
    }
    if depth > 1 {
        return map.values().find_map(|v| find_score(v, word, depth - 1));
    }
    None
}

/// A score in a JSON value: a number, a numeric string, the first element of
/// a list, or an object's `score`.
fn score_of(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => first_number(s),
        Value::Array(items) => items.first().and_then(score_of),
        Value::Object(map) => map.iter().find(|(k, _)| k.eq_ignore_ascii_case("score")).and_then(|(_, v)| score_of(v)),
        _ => None,
    }
}

/// The first number (digits, optional decimals) after `word` (ASCII case
/// ignored), before the end of its line, the word `other` or 120 bytes,
/// whichever comes first (so that `similarity: high, precision: 50` gives
/// no similarity).
fn number_after_word(text: &str, word: &str, other: &str) -> Option<f64> {
    let lower = text.to_ascii_lowercase();
    for (i, _) in lower.match_indices(word) {
        let start = i + word.len();
        let mut end = (start + 120).min(text.len());
        for stop in [lower[start..].find('\n'), lower[start..].find(other)].into_iter().flatten() {
            end = end.min(start + stop);
        }
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        if let Some(n) = first_number(&text[start..end]) {
            return Some(n);
        }
    }
    None
}

/// The first unsigned decimal number in `text`.
pub fn first_number(text: &str) -> Option<f64> {
    let bytes = text.as_bytes();
    let start = bytes.iter().position(u8::is_ascii_digit)?;
    let mut end = start;
    while end < bytes.len() && bytes[end].is_ascii_digit() {
        end += 1;
    }
    if end + 1 < bytes.len() && bytes[end] == b'.' && bytes[end + 1].is_ascii_digit() {
        end += 1;
        while end < bytes.len() && bytes[end].is_ascii_digit() {
            end += 1;
        }
    }
    text[start..end].parse().ok()
}

/// The mean (similarity, precision) of several judgements; `None` when
/// there is none.
pub fn average(judgements: &[(f64, f64)]) -> Option<(f64, f64)> {
    if judgements.is_empty() {
        return None;
    }
    let n = judgements.len() as f64;
    let (s, p) = judgements.iter().fold((0.0, 0.0), |(s, p), (a, b)| (s + a, p + b));
    Some((s / n, p / n))
}

/// At most `max` characters of `text`, for error messages.
pub fn snippet(text: &str, max: usize) -> String {
    let mut out: String = text.chars().take(max).collect();
    if text.chars().count() > max {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_is_filled() {
        let p = judge_prompt(DEFAULT_JUDGE_PROMPT, "Sum 2 and 2.", "4", "The sum is {reference} 4.");
        assert!(p.contains("Instruction:\n```\nSum 2 and 2.\n```"));
        assert!(p.contains("Reference response:\n```\n4\n```"));
        assert!(p.contains("Language model response:\n```\nThe sum is {reference} 4.\n```"));
        assert!(p.contains("\"similarity_assessment\""));
    }

    #[test]
    fn json_replies() {
        let reply = r#"{"similarity_assessment": {"score": 85, "reason": "close"}, "precision_assessment": {"score": 90, "reason": "right"}}"#;
        assert_eq!(parse_judgement(reply), Some((85.0, 90.0)));
        let fenced = "Here is my assessment:\n```json\n{\"similarity_assessment\": {\"score\": \"72/100\"}, \
                      \"precision_assessment\": {\"score\": [64]}}\n```\nThanks.";
        assert_eq!(parse_judgement(fenced), Some((72.0, 64.0)));
        assert_eq!(parse_judgement(r#"{"Similarity": 40.5, "precision_score": 0}"#), Some((40.5, 1.0)));
        assert_eq!(
            parse_judgement(r#"{"result": {"similarity": 150, "precision": {"Score": 99}}}"#),
            Some((100.0, 99.0))
        );
    }

    #[test]
    fn text_replies_and_failures() {
        assert_eq!(parse_judgement("Similarity score: 80\nPrecision: 75 (minor errors)"), Some((80.0, 75.0)));
        // A JSON object without the keys falls back to the text.
        assert_eq!(parse_judgement("{\"note\": 1} similarity = 60, precision = 70"), Some((60.0, 70.0)));
        assert_eq!(parse_judgement("I cannot judge this."), None);
        // A word instead of a number is not read from the next field.
        assert_eq!(parse_judgement("similarity: high, precision: 50"), None);
        assert_eq!(parse_judgement("Similarity: high\nPrecision: 50\nSimilarity (again): 40"), Some((40.0, 50.0)));
        assert_eq!(parse_judgement("{\"similarity_assessment\": {\"score\": 85}"), None);
    }

    #[test]
    fn numbers_and_clamping() {
        assert_eq!(first_number("score: 85.5/100"), Some(85.5));
        assert_eq!(first_number("no"), None);
        assert_eq!(first_number("7."), Some(7.0));
        assert_eq!(clamp_score(0.0), Some(1.0));
        assert_eq!(clamp_score(101.0), Some(100.0));
        assert_eq!(clamp_score(f64::NAN), None);
    }

    #[test]
    fn averaging() {
        assert_eq!(average(&[(80.0, 90.0), (60.0, 70.0), (70.0, 80.0)]), Some((70.0, 80.0)));
        assert_eq!(average(&[]), None);
        assert_eq!(snippet("abcdef", 3), "abc…");
        assert_eq!(snippet("ab", 3), "ab");
    }
}
