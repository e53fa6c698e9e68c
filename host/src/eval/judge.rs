//! LLM-as-judge scoring: a judge model reads the question, the reference and
//! an answer through a rubric prompt and replies with a score; the score is
//! read from JSON (`{"score": 7}`) or a bare number (`Score: 7/10`), put on
//! [0, 1] and averaged over repeated judgements. A repeat that fails (the
//! backend errs, the reply holds no score) is recorded, not scored; an item
//! with no readable judgement has no judge score, so it drops out of the
//! means and paired tests instead of counting as a zero.
//!
//! The building blocks ([`fill_template`], [`parse_score`], [`Judge::judge`])
//! are public so other judge-based metrics (K-QA's criteria, for example)
//! can reuse them with their own prompts.

use serde::{Deserialize, Serialize};

use crate::backends::{ChatMessage, GenerationRequest, ModelSet, Prompt, Role, Sampling};

/// The metric name of the judge's score, as written in `[evaluation]`.
pub const METRIC_NAME: &str = "llm-judge";

/// The default rubric: correctness against the reference, 1 to 10, in JSON.
/// Placeholders: `{question}`, `{reference}`, `{answer}`.
pub const DEFAULT_PROMPT: &str = "You are grading an answer to a question against a reference answer.

Question:
{question}

Reference answer:
{reference}

Answer to grade:
{answer}

How correct and complete is the answer compared with the reference? Score it from 1 (wrong or \
irrelevant) to 10 (fully correct and complete). Reply with JSON only: {\"score\": <1-10>, \"reason\": \"<one sentence>\"}";

/// `[evaluation.judge]`: the judge model and how it judges.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct JudgeConfig {
    /// The judge model (a `[models.NAME]`).
    pub model: String,
    /// The rubric prompt; `{question}`, `{reference}` and `{answer}` are
    /// filled in (default: [`DEFAULT_PROMPT`]).
    pub prompt: Option<String>,
    /// Judgements per answer, averaged.
    #[serde(default = "default_repeats")]
    pub repeats: u32,
    /// The lowest and highest score the rubric gives; scores are mapped
    /// linearly onto [0, 1] and clamped.
    #[serde(default = "default_scale")]
    pub scale: [f64; 2],
    /// Token budget of one judgement.
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// Sampling temperature of the judge (repeats differ only when above 0).
    #[serde(default = "default_temperature")]
    pub temperature: f32,
}

fn default_repeats() -> u32 {
    3
}

fn default_scale() -> [f64; 2] {
    [1.0, 10.0]
}

fn default_max_tokens() -> u32 {
    128
}

fn default_temperature() -> f32 {
    0.7
}

impl JudgeConfig {
    /// Check the values the types cannot; returns the key and how to fix it.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.repeats == 0 || self.repeats > 100 {
            return Err(("repeats", "must be between 1 and 100".into()));
        }
        let [low, high] = self.scale;
        if !(low.is_finite() && high.is_finite() && low < high) {
            return Err(("scale", "must be [lowest, highest] with lowest < highest, e.g. [1, 10]".into()));
        }
        if self.max_tokens == 0 {
            return Err(("max-tokens", "must be at least 1".into()));
        }
        if !(self.temperature.is_finite() && (0.0..=2.0).contains(&self.temperature)) {
            return Err(("temperature", "must be between 0 and 2".into()));
        }
        if let Some(prompt) = &self.prompt
            && !prompt.contains("{answer}")
        {
            return Err(("prompt", "must contain `{answer}` (and usually `{question}`, `{reference}`)".into()));
        }
        Ok(())
    }
}

/// The judgements of one answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JudgeOutcome {
    /// The readable scores, on the rubric's scale, one per successful repeat.
    pub scores: Vec<f64>,
    /// Why each other repeat gave no score.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
}

impl JudgeOutcome {
    /// The mean score on [0, 1], or `None` when no repeat gave a score.
    pub fn mean(&self, scale: [f64; 2]) -> Option<f64> {
        if self.scores.is_empty() {
            return None;
        }
        let [low, high] = scale;
        let sum: f64 = self.scores.iter().map(|s| ((s - low) / (high - low)).clamp(0.0, 1.0)).sum();
        Some(sum / self.scores.len() as f64)
    }
}

/// A judge bound to the run's models.
#[derive(Clone)]
pub struct Judge {
    config: JudgeConfig,
    models: ModelSet,
}

impl std::fmt::Debug for Judge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Judge").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Judge {
    /// A judge that calls `config.model` in `models`.
    pub fn new(config: JudgeConfig, models: ModelSet) -> Self {
        Self { config, models }
    }

    /// Its configuration.
    pub fn config(&self) -> &JudgeConfig {
        &self.config
    }

    /// Judge `answer` to `question` against `reference`, `repeats` times.
    /// Repeat `r` samples with seed `seed + r`, so a rerun (and the call
    /// cache) sees the same requests.
    pub async fn judge(&self, question: &str, reference: &str, answer: &str, seed: u64) -> JudgeOutcome {
        let template = self.config.prompt.as_deref().unwrap_or(DEFAULT_PROMPT);
        let prompt = fill_template(template, &[("question", question), ("reference", reference), ("answer", answer)]);
        let mut outcome = JudgeOutcome::default();
        for repeat in 0..self.config.repeats {
            let request = GenerationRequest {
                prompt: Prompt::Chat(vec![ChatMessage::new(Role::User, prompt.clone())]),
                sampling: Sampling {
                    max_tokens: self.config.max_tokens,
                    temperature: self.config.temperature,
                    seed: seed.wrapping_add(u64::from(repeat)),
                    ..Sampling::default()
                },
            };
            match self.models.generate(&self.config.model, "judge", request).await {
                Ok(generation) => {
                    let reply = generation.choices.into_iter().next().map(|c| c.text).unwrap_or_default();
                    match parse_score(&reply, self.config.scale) {
                        Some(score) => outcome.scores.push(score),
                        None => outcome.failures.push(format!(
                            "repeat {}: no score from {} to {} in the reply {:?}",
                            repeat + 1,
                            self.config.scale[0],
                            self.config.scale[1],
                            shorten(&reply, 200)
                        )),
                    }
                }
                Err(e) => {
                    outcome.failures.push(format!("repeat {}: judge model '{}': {e}", repeat + 1, self.config.model))
                }
            }
        }
        outcome
    }
}

/// Fill `{name}` placeholders of `template` in one pass: substituted text is
/// not scanned again (an answer containing `{reference}` stays as written),
/// and unknown placeholders stay.
pub fn fill_template(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let filled = values.iter().find(|(name, _)| after.starts_with(name) && after[name.len()..].starts_with('}'));
        match filled {
            Some((name, value)) => {
                out.push_str(value);
                rest = &after[name.len() + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The score in a judge's reply, on `scale` (`[lowest, highest]`), or `None`.
///
/// Tried in order: a JSON object in the reply (bare or in a code fence)
/// with a numeric `score` (or `rating`, or `grade`) field, also one level
/// down (`{"assessment": {"score": 8}}`), given as a number or as text; then
/// `score: N` / `rating: N` / `N/10` / `N out of 10` patterns; then a reply
/// that is just a number. A value outside the scale is not a score (a judge
/// that says `15` on a 1–10 rubric did not follow it).
pub fn parse_score(reply: &str, scale: [f64; 2]) -> Option<f64> {
    let in_scale = |v: f64| (v.is_finite() && v >= scale[0] && v <= scale[1]).then_some(v);
    for (start, _) in reply.match_indices('{') {
        let mut stream = serde_json::Deserializer::from_str(&reply[start..]).into_iter::<serde_json::Value>();
        if let Some(Ok(value)) = stream.next()
            && let Some(score) = json_score(&value).and_then(in_scale)
        {
            return Some(score);
        }
    }
    let lower = reply.to_lowercase();
    for marker in ["score", "rating", "grade"] {
        for (at, _) in lower.match_indices(marker) {
            let tail = &lower[at + marker.len()..];
            let tail = tail.trim_start_matches(|c: char| c == '"' || c == ':' || c == '=' || c.is_whitespace());
            let tail = tail.strip_prefix("is").unwrap_or(tail).trim_start();
            if let Some(score) = leading_number(tail).and_then(in_scale) {
                return Some(score);
            }
        }
    }
    let high = format_number(scale[1]);
    for pattern in [format!("/{high}"), format!("/ {high}"), format!(" out of {high}")] {
        if let Some(at) = lower.find(&pattern) {
            let head = lower[..at].trim_end();
            let start = head.rfind(|c: char| !(c.is_ascii_digit() || c == '.')).map(|i| i + 1).unwrap_or(0);
            if let Some(score) = head[start..].parse::<f64>().ok().and_then(in_scale) {
                return Some(score);
            }
        }
    }
    let bare = reply.trim().trim_end_matches('.');
    bare.parse::<f64>().ok().and_then(in_scale)
}

fn json_score(value: &serde_json::Value) -> Option<f64> {
    let object = value.as_object()?;
    for key in ["score", "rating", "grade"] {
        match object.get(key) {
            Some(serde_json::Value::Number(n)) => return n.as_f64(),
            Some(serde_json::Value::String(s)) => {
                if let Some(v) = leading_number(s.trim()) {
                    return Some(v);
                }
            }
            _ => {}
        }
    }
    object.values().filter(|v| v.is_object()).find_map(json_score)
}

/// The number at the start of `text` (`8`, `7.5`, `-1`).
fn leading_number(text: &str) -> Option<f64> {
    let end = text
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || (i == 0 && c == '-')))
        .map(|(i, _)| i)
        .unwrap_or(text.len());
    text[..end].trim_end_matches('.').parse().ok()
}

fn format_number(v: f64) -> String {
    if v.fract() == 0.0 { format!("{}", v as i64) } else { v.to_string() }
}

fn shorten(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_string();
    }
    let mut short: String = text.chars().take(max_chars).collect();
    short.push('…');
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN: [f64; 2] = [1.0, 10.0];

    #[test]
    fn scores_are_read_from_json_in_its_usual_disguises() {
        assert_eq!(parse_score(r#"{"score": 7, "reason": "mostly right"}"#, TEN), Some(7.0));
        assert_eq!(parse_score("Sure!\n```json\n{\"score\": \"8\", \"reason\": \"ok\"}\n```", TEN), Some(8.0));
        assert_eq!(parse_score(r#"{"assessment": {"rating": 6.5}}"#, TEN), Some(6.5));
        // A first object without a score does not hide a later one.
        assert_eq!(parse_score(r#"{"note": "x"} then {"score": 3}"#, TEN), Some(3.0));
    }

    #[test]
    fn scores_are_read_from_plain_text() {
        assert_eq!(parse_score("Score: 9\nThe answer matches.", TEN), Some(9.0));
        assert_eq!(parse_score("The rating is 4.", TEN), Some(4.0));
        assert_eq!(parse_score("I would give it 6/10.", TEN), Some(6.0));
        assert_eq!(parse_score("That is 3 out of 10", TEN), Some(3.0));
        assert_eq!(parse_score(" 5 ", TEN), Some(5.0));
        assert_eq!(parse_score("85/100", [1.0, 100.0]), Some(85.0));
    }

    #[test]
    fn unreadable_or_out_of_scale_replies_give_no_score() {
        assert_eq!(parse_score("The answer is good.", TEN), None);
        assert_eq!(parse_score(r#"{"score": 15}"#, TEN), None);
        assert_eq!(parse_score("score: 0", TEN), None);
        assert_eq!(parse_score("", TEN), None);
        assert_eq!(parse_score("{not json", TEN), None);
    }

    #[test]
    fn the_mean_is_on_zero_to_one_and_skips_failed_repeats() {
        let outcome = JudgeOutcome { scores: vec![10.0, 1.0, 5.5], failures: vec!["repeat 4: x".into()] };
        assert!((outcome.mean(TEN).unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(JudgeOutcome::default().mean(TEN), None);
    }

    #[test]
    fn templates_fill_once_and_keep_unknown_braces() {
        let filled =
            fill_template("Q: {question} A: {answer} {json}", &[("question", "what is {answer}?"), ("answer", "42")]);
        assert_eq!(filled, "Q: what is {answer}? A: 42 {json}");
        assert_eq!(fill_template("{\"score\": 1}", &[("answer", "x")]), "{\"score\": 1}");
    }

    #[test]
    fn config_checks_name_the_key() {
        let config = JudgeConfig {
            model: "j".into(),
            prompt: None,
            repeats: 3,
            scale: [1.0, 10.0],
            max_tokens: 64,
            temperature: 0.7,
        };
        assert!(config.check().is_ok());
        assert_eq!(JudgeConfig { repeats: 0, ..config.clone() }.check().unwrap_err().0, "repeats");
        assert_eq!(JudgeConfig { scale: [5.0, 5.0], ..config.clone() }.check().unwrap_err().0, "scale");
        assert_eq!(JudgeConfig { prompt: Some("no slot".into()), ..config }.check().unwrap_err().0, "prompt");
    }
}
