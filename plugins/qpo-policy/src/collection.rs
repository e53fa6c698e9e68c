//! QPO's offline-data decisions (arXiv 2408.10504, the collection step of
//! each loop): reward every (query, prompt) outcome with the paper's
//! formula, keep the records above the task's minimum, drop duplicates of
//! each other and of the existing dataset, and format a record as the
//! policy's supervised example (the reward prefix, then the query; the
//! prompt as the target). Pure functions, unit-tested natively.

use techne_plugin_sdk::prompt_policy_trainer::{OfflineRecord, PolicyExample, PromptOutcome};

use crate::prompts;
use crate::reward;

/// The key two records are duplicates under: the query exactly, the prompt
/// without regard to ASCII case and white space.
pub fn record_key(query: &str, prompt: &str) -> (String, String) {
    (query.to_owned(), prompt.split_whitespace().collect::<Vec<_>>().join(" ").to_ascii_lowercase())
}

/// The paper's reward of every outcome, in order: `10·correct + 10·acc(p) −
/// ppl(label)`, where `acc(p)` is the accuracy of the same prompt (same
/// [`record_key`] prompt part) over every outcome given.
pub fn reward_outcomes(outcomes: &[PromptOutcome]) -> Vec<f64> {
    let prompt_key = |o: &PromptOutcome| record_key("", &o.prompt).1;
    outcomes
        .iter()
        .map(|outcome| {
            let key = prompt_key(outcome);
            let results: Vec<bool> = outcomes.iter().filter(|o| prompt_key(o) == key).map(|o| o.correct).collect();
            let perplexity = reward::label_perplexity(outcome.label_logprob_sum, outcome.label_token_count);
            reward::reward(outcome.correct, reward::average_accuracy(&results), perplexity)
        })
        .collect()
}

/// The new records to keep: every outcome rewarded ([`reward_outcomes`]),
/// those with a reward of at least `min_reward` kept, and of records with
/// the same [`record_key`] (among themselves or with `existing`) only the
/// best new one, and none at all when `existing` has it. Order: first
/// occurrence.
pub fn curate(outcomes: &[PromptOutcome], existing: &[OfflineRecord], min_reward: f64) -> Vec<OfflineRecord> {
    let rewards = reward_outcomes(outcomes);
    let known: std::collections::HashSet<(String, String)> =
        existing.iter().map(|r| record_key(&r.query, &r.prompt)).collect();
    let mut kept: Vec<OfflineRecord> = Vec::new();
    let mut kept_keys: Vec<(String, String)> = Vec::new();
    for (outcome, reward) in outcomes.iter().zip(rewards) {
        if !reward.is_finite() || reward < min_reward || prompts::clean(&outcome.prompt).is_none() {
            continue;
        }
        let key = record_key(&outcome.query, &outcome.prompt);
        if known.contains(&key) {
            continue;
        }
        match kept_keys.iter().position(|k| *k == key) {
            Some(i) => {
                if reward > kept[i].reward {
                    kept[i].reward = reward;
                }
            }
            None => {
                kept_keys.push(key);
                kept.push(OfflineRecord { query: outcome.query.clone(), prompt: outcome.prompt.clone(), reward });
            }
        }
    }
    kept
}

/// The policy's supervised example for `record`: the input it sees at
/// inference ([`prompts::policy_input`] with the record's reward as the
/// return-to-go) and the prompt as the target; a raw-text target starts with
/// a space so that it continues `Prompt:` as generation does.
pub fn policy_example(record: &OfflineRecord, policy_template: &str, chat: bool) -> PolicyExample {
    let input = prompts::policy_input(record.reward, policy_template, &record.query);
    let target = if chat { record.prompt.clone() } else { format!(" {}", record.prompt) };
    PolicyExample { input, target, chat }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(query: &str, prompt: &str, correct: bool, logprob_sum: f64, tokens: u32) -> PromptOutcome {
        PromptOutcome {
            query: query.into(),
            prompt: prompt.into(),
            correct,
            label_logprob_sum: logprob_sum,
            label_token_count: tokens,
        }
    }

    #[test]
    fn rewards_use_the_prompts_accuracy_across_queries() {
        let outcomes = [
            outcome("q1", "Think step by step.", true, 0.0, 2),    // ppl 1
            outcome("q2", "think  step by step.", false, -2.0, 2), // same prompt, ppl e
            outcome("q1", "Be brief.", true, 0.0, 0),              // ppl 1 (empty label)
        ];
        let rewards = reward_outcomes(&outcomes);
        // "Think step by step." is right on 1 of 2 queries: acc 0.5.
        assert!((rewards[0] - (10.0 + 5.0 - 1.0)).abs() < 1e-12);
        assert!((rewards[1] - (0.0 + 5.0 - std::f64::consts::E)).abs() < 1e-12);
        assert!((rewards[2] - (10.0 + 10.0 - 1.0)).abs() < 1e-12);
    }

    #[test]
    fn curate_keeps_above_the_minimum_and_drops_duplicates() {
        let outcomes = [
            outcome("q1", "Think step by step.", true, 0.0, 1), // 10 + 10·(2/3) − 1 ≈ 15.67
            outcome("q2", "Think step by step.", true, 0.0, 1), // same
            outcome("q3", "Think step by step.", false, 0.0, 1), // 0 + 6.67 − 1 = 5.67
            outcome("q1", "THINK step  by step.", true, -1.0, 1), // duplicate of the first, lower reward
            outcome("q1", "Known prompt.", true, 0.0, 1),       // in `existing`
            outcome("q2", "  ", true, 0.0, 1),                  // blank prompt
        ];
        let existing = [OfflineRecord { query: "q1".into(), prompt: "known  PROMPT.".into(), reward: 3.0 }];
        let kept = curate(&outcomes, &existing, 10.0);
        let summary: Vec<(&str, &str)> = kept.iter().map(|r| (r.query.as_str(), r.prompt.as_str())).collect();
        assert_eq!(summary, [("q1", "Think step by step."), ("q2", "Think step by step.")]);
        // The duplicate of q1 has acc 3/4 (four outcomes share the prompt) and ppl e; the first has ppl 1 and wins.
        assert!((kept[0].reward - (10.0 + 7.5 - 1.0)).abs() < 1e-12);
        // A low minimum keeps q3 too.
        assert_eq!(curate(&outcomes, &existing, -100.0).len(), 3);
        assert!(curate(&[], &existing, 0.0).is_empty());
    }

    #[test]
    fn the_example_is_what_the_policy_sees_at_inference() {
        let record = OfflineRecord { query: "2+2?".into(), prompt: "Add carefully.".into(), reward: 17.456 };
        let raw = policy_example(&record, "Query: {query}\nPrompt:", false);
        assert_eq!(raw.input, "Reward: 17.46\nQuery: 2+2?\nPrompt:");
        assert_eq!(raw.target, " Add carefully.");
        assert!(!raw.chat);
        // What inference cleans out of the generated text is the prompt again.
        assert_eq!(prompts::clean(&raw.target).as_deref(), Some("Add carefully."));
        let chat = policy_example(&record, "Query: {query}\nPrompt:", true);
        assert_eq!((chat.target.as_str(), chat.chat), ("Add carefully.", true));
    }
}
