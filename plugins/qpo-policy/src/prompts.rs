//! Building the policy's input, cleaning the prompts it writes (untrusted
//! text), removing duplicates and embedding the query; Prompt-OIRL's
//! candidate list and reward-model query. Pure functions, unit-tested
//! natively.

use techne_plugin_sdk::serde_json::{self, Value};
use techne_plugin_sdk::template::fill;

use crate::reward;

/// The policy's input: the return-to-go prefix for `target_reward`, then
/// `template` with `{query}` filled in.
pub fn policy_input(target_reward: f64, template: &str, query: &str) -> String {
    format!("{}{}", reward::encode_reward_prefix(target_reward), fill(template, &[("query", query)]))
}

/// The complete prompt for the answering model: `template` with `{prompt}`
/// and `{query}` filled in.
pub fn embed(template: &str, prompt: &str, query: &str) -> String {
    fill(template, &[("prompt", prompt), ("query", query)])
}

/// Labels a policy may put before its prompt (matched without regard to
/// ASCII letter case, followed by `:`).
const LABELS: &[&str] = &["prompt", "instruction"];

/// The prompt in the policy's output: its first paragraph (up to a blank
/// line), without an echoed reward prefix, a `Prompt:` label or surrounding
/// quotes, with runs of white space collapsed to one space. `None` when
/// no letter or digit is left.
pub fn clean(output: &str) -> Option<String> {
    let mut text = output.trim_start();
    if let Some((_, rest)) = reward::decode_reward_prefix(text) {
        text = rest.trim_start();
    }
    let mut paragraph = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            if paragraph.is_empty() {
                continue;
            }
            break;
        }
        paragraph.push(line.trim());
    }
    let joined = paragraph.join(" ");
    let mut text = joined.as_str().trim();
    loop {
        let before = text;
        for label in LABELS {
            if let Some(head) = text.get(..label.len())
                && head.eq_ignore_ascii_case(label)
                && let Some(rest) = text[label.len()..].trim_start().strip_prefix(':')
            {
                text = rest.trim();
            }
        }
        for (open, close) in [('"', '"'), ('\'', '\''), ('\u{201c}', '\u{201d}'), ('`', '`')] {
            if let Some(inner) = text.strip_prefix(open).and_then(|t| t.strip_suffix(close)) {
                text = inner.trim();
            }
        }
        if text == before {
            break;
        }
    }
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    collapsed.chars().any(char::is_alphanumeric).then_some(collapsed)
}

/// The prompts without duplicates, first occurrence kept, order kept. Two
/// prompts are duplicates when they are equal ignoring ASCII letter case and
/// white space.
pub fn dedupe(prompts: Vec<String>) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for prompt in prompts {
        let key = prompt.split_whitespace().collect::<Vec<_>>().join(" ").to_ascii_lowercase();
        if !seen.contains(&key) {
            seen.push(key);
            out.push(prompt);
        }
    }
    out
}

/// Prompt-OIRL's default candidates: well-known zero-shot reasoning prompts
/// (Kojima et al. 2022; APE, Zhou et al. 2022; Plan-and-Solve, Wang et al.
/// 2023; least-to-most-style decomposition), as a JSON list.
pub const DEFAULT_CANDIDATES: &str = r#"["Let's think step by step.", "Let's work this out in a step by step way to be sure we have the right answer.", "Let's first understand the problem and devise a plan to solve the problem. Then, let's carry out the plan and solve the problem step by step.", "First, decompose the question into several sub-questions that need to be solved, and then solve each question step by step.", "Let's think about this logically.", "Let's be realistic and think step by step."]"#;

/// Parses the `candidate-prompts` parameter: a JSON list of non-blank
/// strings (trimmed; duplicates removed).
pub fn parse_candidates(json: &str) -> Result<Vec<String>, String> {
    let value: Value =
        serde_json::from_str(json).map_err(|e| format!("parameter `candidate-prompts` is not valid JSON: {e}"))?;
    let Value::Array(items) = value else {
        return Err("parameter `candidate-prompts` must be a JSON list of strings".into());
    };
    let mut prompts = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item.as_str().map(str::trim) {
            Some(p) if !p.is_empty() => prompts.push(p.to_owned()),
            _ => return Err(format!("parameter `candidate-prompts`: item {i} must be a non-blank string")),
        }
    }
    let prompts = dedupe(prompts);
    if prompts.is_empty() {
        return Err("parameter `candidate-prompts` lists no prompt".into());
    }
    Ok(prompts)
}

/// The question the reward model answers for Prompt-OIRL: will following
/// `prompt` on `query` give a correct answer? It is scored on the
/// continuations [`YES`] and [`NO`].
pub fn judgement_question(prompt: &str, query: &str) -> String {
    format!(
        "You will be given a question together with an instruction on how to answer it.\n\n\
         Instruction: {prompt}\n\nQuestion: {query}\n\n\
         If you answer the question following the instruction, will your final answer be correct? \
         Reply with Yes or No."
    )
}

/// The continuation whose likelihood is the reward.
pub const YES: &str = "Yes";
/// The alternative continuation that normalises it.
pub const NO: &str = "No";

/// The reward of a candidate: `log P(Yes | Yes or No)` from the
/// log-likelihoods of the two continuations, `ly − log(e^ly + e^ln)`,
/// computed stably. Always ≤ 0; higher is better.
pub fn yes_reward(logprob_yes: f64, logprob_no: f64) -> f64 {
    let max = logprob_yes.max(logprob_no);
    if !max.is_finite() {
        return f64::NEG_INFINITY;
    }
    logprob_yes - (max + ((logprob_yes - max).exp() + (logprob_no - max).exp()).ln())
}

/// Indices of `rewards` from best to worst; ties keep their order, NaN
/// ranks last.
pub fn rank(rewards: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..rewards.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (rewards[a], rewards[b]);
        match (x.is_nan(), y.is_nan()) {
            (true, true) => core::cmp::Ordering::Equal,
            (true, false) => core::cmp::Ordering::Greater,
            (false, true) => core::cmp::Ordering::Less,
            (false, false) => y.total_cmp(&x),
        }
    });
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_input_has_the_reward_prefix() {
        assert_eq!(
            policy_input(20.0, "Query: {query}\nPrompt:", "How many legs has a spider?"),
            "Reward: 20.00\nQuery: How many legs has a spider?\nPrompt:"
        );
        assert_eq!(embed("{prompt}\n\n{query}", "Think twice.", "2+2?"), "Think twice.\n\n2+2?");
    }

    #[test]
    fn clean_keeps_the_first_paragraph() {
        assert_eq!(
            clean(" Let's think step by step.\n\nQuery: next one").as_deref(),
            Some("Let's think step by step.")
        );
        assert_eq!(clean("\n\nPrompt: \"Solve it carefully.\"").as_deref(), Some("Solve it carefully."));
        assert_eq!(
            clean("Reward: 20.00\nINSTRUCTION: Be precise,\n  show   work.").as_deref(),
            Some("Be precise, show work.")
        );
        assert_eq!(clean("   \n \n"), None);
        assert_eq!(clean("Prompt:"), None);
        assert_eq!(clean("... --"), None);
        assert_eq!(clean("Ratio 3:2 explained.").as_deref(), Some("Ratio 3:2 explained."));
    }

    #[test]
    fn dedupe_ignores_case_and_spaces() {
        let prompts = vec!["Think step by step.".to_owned(), "think  step by step.".to_owned(), "Be brief.".to_owned()];
        assert_eq!(dedupe(prompts), ["Think step by step.", "Be brief."]);
    }

    #[test]
    fn candidates_parse() {
        assert_eq!(parse_candidates(DEFAULT_CANDIDATES).unwrap().len(), 6);
        assert_eq!(parse_candidates(r#"[" a ", "A", "b"]"#).unwrap(), ["a", "b"]);
        assert!(parse_candidates("[]").unwrap_err().contains("no prompt"));
        assert!(parse_candidates(r#"["a", 3]"#).unwrap_err().contains("item 1"));
        assert!(parse_candidates("{").unwrap_err().contains("not valid JSON"));
    }

    #[test]
    fn yes_reward_is_the_normalised_log_probability() {
        // P(Yes) = 0.3, P(No) = 0.1: P(Yes | Yes or No) = 0.75.
        let r = yes_reward(0.3f64.ln(), 0.1f64.ln());
        assert!((r - 0.75f64.ln()).abs() < 1e-12);
        // Stable for very small log-probabilities.
        let r = yes_reward(-1000.0, -1001.0);
        assert!((r - (1.0 / (1.0 + (-1.0f64).exp())).ln()).abs() < 1e-9);
        assert_eq!(yes_reward(f64::NEG_INFINITY, f64::NEG_INFINITY), f64::NEG_INFINITY);
    }

    #[test]
    fn rank_orders_best_first() {
        assert_eq!(rank(&[-0.5, -0.1, f64::NAN, -0.1, -2.0]), [1, 3, 0, 4, 2]);
        assert!(rank(&[]).is_empty());
    }

    #[test]
    fn judgement_question_names_both() {
        let q = judgement_question("Think.", "2+2?");
        assert!(q.contains("Instruction: Think.\n\nQuestion: 2+2?\n\n"));
        assert!(q.ends_with("Reply with Yes or No."));
    }
}
