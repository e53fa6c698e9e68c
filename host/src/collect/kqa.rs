//! K-QA's automatic criteria (Manes et al. 2024): **comprehensiveness**, the
//! share of a question's must-have statements that the answer entails, and
//! **contradiction**, how many of its must-have and nice-to-have statements
//! the answer contradicts. Each statement is judged by an LLM with K-QA's
//! own prompts (`kqa_prompts/`, MIT, shipped with attribution), which end in
//! "The answer is True/False."; a reply without a verdict counts as False
//! and is counted in [`KqaScores::unparsed`].
//!
//! [`JudgeMode::Likelihood`] is a cheaper verdict for small judges that do
//! not reliably write one: the judge model's log-likelihood of " The answer
//! is True." against " The answer is False." after the same prompt, through
//! the host's scoring (no generation, never unparsed).

use std::path::Path;

use crate::backends::{ChatMessage, GenerationRequest, ModelSet, Prompt, Role, Sampling};

use super::CollectError;

/// K-QA's entailment prompt (comprehensiveness). Placeholders `{question}`,
/// `{llm_answer}` (the answer judged) and `{answer}` (the statement).
pub const ENTAILS_PROMPT: &str = include_str!("kqa_prompts/is_entails.txt");
/// K-QA's contradiction prompt (hallucination), same placeholders.
pub const CONTRADICTS_PROMPT: &str = include_str!("kqa_prompts/is_contradict.txt");

/// Name of the comprehensiveness criterion (higher is better).
pub const COMPREHENSIVENESS: &str = "comprehensiveness";
/// Name of the contradiction criterion (lower is better).
pub const CONTRADICTION: &str = "contradiction";

/// One K-QA-style record: a question with its must-have and nice-to-have
/// statements.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KqaRecord {
    /// Stable identity: the `id` field, or the 1-based line number.
    pub id: String,
    /// The patient's question.
    pub question: String,
    /// Statements a good answer must contain.
    pub must_have: Vec<String>,
    /// Statements a good answer may contain.
    pub nice_to_have: Vec<String>,
}

/// Reads K-QA JSONL: `Question`, `Must_have`, `Nice_to_have` (or the same
/// names in lower case), optional `id`. Records without a must-have
/// statement are refused, since their comprehensiveness is undefined.
pub fn read_records(path: &Path) -> Result<Vec<KqaRecord>, CollectError> {
    let text = std::fs::read_to_string(path).map_err(|source| CollectError::Io { path: path.to_path_buf(), source })?;
    let bad = |line: usize, message: String| CollectError::Dataset { path: path.to_path_buf(), line, message };
    let mut records = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line).map_err(|e| bad(number, e.to_string()))?;
        let field = |names: &[&str]| names.iter().find_map(|n| value.get(*n));
        let question = field(&["Question", "question"])
            .and_then(|v| v.as_str())
            .filter(|q| !q.trim().is_empty())
            .ok_or_else(|| bad(number, "needs a non-empty string `Question`".into()))?;
        let statements = |names: &[&str]| -> Result<Vec<String>, CollectError> {
            match field(names) {
                None | Some(serde_json::Value::Null) => Ok(Vec::new()),
                Some(serde_json::Value::Array(items)) => items
                    .iter()
                    .map(|s| {
                        s.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| bad(number, format!("`{}` must be a list of strings", names[0])))
                    })
                    .collect(),
                Some(_) => Err(bad(number, format!("`{}` must be a list of strings", names[0]))),
            }
        };
        let must_have = statements(&["Must_have", "must_have"])?;
        if must_have.is_empty() {
            return Err(bad(
                number,
                "has no `Must_have` statement; K-QA's comprehensiveness needs at least one".into(),
            ));
        }
        let id = match value.get("id") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            _ => number.to_string(),
        };
        records.push(KqaRecord {
            id,
            question: question.to_owned(),
            must_have,
            nice_to_have: statements(&["Nice_to_have", "nice_to_have"])?,
        });
    }
    Ok(records)
}

/// Fills K-QA's template (single pass, so a statement or answer containing
/// a placeholder is not expanded again).
pub fn fill(template: &str, question: &str, llm_answer: &str, statement: &str) -> String {
    let values = [("{question}", question), ("{llm_answer}", llm_answer), ("{answer}", statement)];
    let mut out = String::with_capacity(template.len() + llm_answer.len());
    let mut rest = template;
    'outer: while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let at = &rest[open..];
        for (name, value) in values {
            if let Some(after) = at.strip_prefix(name) {
                out.push_str(value);
                rest = after;
                continue 'outer;
            }
        }
        out.push('{');
        rest = &at[1..];
    }
    out.push_str(rest);
    out
}

/// The verdict in a judge's reply: the last "the answer is true/false"
/// (any case), else the last standalone `true`/`false`; `None` without one.
pub fn parse_verdict(reply: &str) -> Option<bool> {
    let lower = reply.to_lowercase();
    let marked = ["the answer is true", "the answer is false"]
        .iter()
        .filter_map(|m| lower.rfind(m).map(|at| (at, m.ends_with("true"))))
        .max_by_key(|(at, _)| *at);
    if let Some((_, verdict)) = marked {
        return Some(verdict);
    }
    lower.split(|c: char| !c.is_alphanumeric()).rev().find_map(|word| match word {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    })
}

/// How the judge reaches a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum JudgeMode {
    /// The judge writes its reasoning and verdict (K-QA's way).
    #[default]
    Generate,
    /// The more likely of the two verdict sentences under the judge model.
    Likelihood,
}

/// The two verdict continuations of [`JudgeMode::Likelihood`].
const VERDICTS: [&str; 2] = [" The answer is True.", " The answer is False."];

/// An answer's K-QA scores.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KqaScores {
    /// Share of must-have statements entailed, in [0, 1].
    pub comprehensiveness: f64,
    /// Statements (must-have and nice-to-have) contradicted.
    pub contradiction: f64,
    /// Judge replies without a verdict (counted as False).
    pub unparsed: u32,
}

/// The LLM judge of K-QA's criteria.
#[derive(Debug, Clone)]
pub struct KqaJudge {
    models: ModelSet,
    model: String,
    max_tokens: u32,
    mode: JudgeMode,
}

/// Caller tag of the judge's model calls (cache key, logs).
const CALLER: &str = "k-qa-judge";

impl KqaJudge {
    /// A judge that asks `model` (greedy, at most `max_tokens` per verdict).
    pub fn new(models: ModelSet, model: impl Into<String>, max_tokens: u32) -> Self {
        Self { models, model: model.into(), max_tokens, mode: JudgeMode::Generate }
    }

    /// The same judge reaching its verdicts by `mode`.
    pub fn with_mode(mut self, mode: JudgeMode) -> Self {
        self.mode = mode;
        self
    }

    async fn verdict(
        &self,
        template: &str,
        question: &str,
        answer: &str,
        statement: &str,
    ) -> Result<Option<bool>, CollectError> {
        let prompt = fill(template, question, answer, statement);
        if self.mode == JudgeMode::Likelihood {
            let request = crate::backends::ScoringRequest {
                prompt: Prompt::Chat(vec![ChatMessage::new(Role::User, prompt)]),
                continuations: VERDICTS.iter().map(|v| (*v).to_owned()).collect(),
            };
            let scores = self
                .models
                .score(&self.model, CALLER, request)
                .await
                .map_err(|source| CollectError::Model { model: self.model.clone(), source })?;
            return Ok(match scores.as_slice() {
                [yes, no] => Some(yes.logprob_sum > no.logprob_sum),
                _ => None,
            });
        }
        let request = GenerationRequest {
            prompt: Prompt::Chat(vec![ChatMessage::new(Role::User, prompt)]),
            sampling: Sampling { max_tokens: self.max_tokens, stop: vec!["###".into()], ..Sampling::default() },
        };
        let generation = self
            .models
            .generate(&self.model, CALLER, request)
            .await
            .map_err(|source| CollectError::Model { model: self.model.clone(), source })?;
        Ok(generation.choices.first().and_then(|c| parse_verdict(&c.text)))
    }

    /// Scores `answer` to `record.question` on both criteria: one
    /// entailment verdict per must-have statement, one contradiction
    /// verdict per statement.
    pub async fn score(&self, record: &KqaRecord, answer: &str) -> Result<KqaScores, CollectError> {
        let mut unparsed = 0u32;
        let mut entailed = 0usize;
        for statement in &record.must_have {
            match self.verdict(ENTAILS_PROMPT, &record.question, answer, statement).await? {
                Some(true) => entailed += 1,
                Some(false) => {}
                None => unparsed += 1,
            }
        }
        let mut contradicted = 0usize;
        for statement in record.must_have.iter().chain(&record.nice_to_have) {
            match self.verdict(CONTRADICTS_PROMPT, &record.question, answer, statement).await? {
                Some(true) => contradicted += 1,
                Some(false) => {}
                None => unparsed += 1,
            }
        }
        Ok(KqaScores {
            comprehensiveness: entailed as f64 / record.must_have.len() as f64,
            contradiction: contradicted as f64,
            unparsed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_prompts_have_the_placeholders() {
        for template in [ENTAILS_PROMPT, CONTRADICTS_PROMPT] {
            for name in ["{question}", "{llm_answer}", "{answer}"] {
                assert!(template.contains(name), "{name}");
            }
        }
        let filled = fill(ENTAILS_PROMPT, "Q?", "It is {answer}.", "S");
        assert!(
            filled
                .ends_with("Question: Q? Let's think step by step.\nPremise: It is {answer}.\nHypothesis: S\nAnswer:")
        );
    }

    #[test]
    fn verdicts() {
        assert_eq!(parse_verdict("Both mention it. The answer is True."), Some(true));
        assert_eq!(parse_verdict("the answer is true... wait. The answer is False"), Some(false));
        assert_eq!(parse_verdict("False"), Some(false));
        assert_eq!(parse_verdict("It is true that x; overall false."), Some(false));
        assert_eq!(parse_verdict("I cannot tell."), None);
        assert_eq!(parse_verdict("untrue statements"), None);
    }

    #[test]
    fn records_read_and_refuse_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.jsonl");
        std::fs::write(
            &path,
            "{\"Question\": \"Q1?\", \"Must_have\": [\"a\", \"b\"], \"Nice_to_have\": [\"c\"]}\n\n{\"question\": \"Q2?\", \"must_have\": [\"d\"], \"id\": 7}\n",
        )
        .unwrap();
        let records = read_records(&path).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!((records[0].id.as_str(), records[0].must_have.len(), records[0].nice_to_have.len()), ("1", 2, 1));
        assert_eq!((records[1].id.as_str(), records[1].nice_to_have.len()), ("7", 0));
        std::fs::write(&path, "{\"Question\": \"Q\", \"Must_have\": []}\n").unwrap();
        let err = read_records(&path).unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("Must_have"), "{err}");
    }
}
