//! QPO's reward and its encoding as a return-to-go prefix of the policy's
//! input. Pure functions, unit-tested natively; the training-side data
//! collection (a later loop) uses the same formula and prefix.
//!
//! The reward of a prompt `p` for a query `q` with label `y` on the target
//! LLM (QPO, arXiv 2408.10504):
//!
//! ```text
//! r(q, p) = 10 · 1[answer to (p, q) is correct] + 10 · acc(p) − ppl(y | p, q)
//! ```
//!
//! where `acc(p)` is the prompt's average accuracy over the task's queries
//! and `ppl(y | p, q)` the perplexity of the label under the target LLM.

/// Weight of the query-level correctness term.
pub const CORRECT_WEIGHT: f64 = 10.0;

/// Weight of the prompt's average accuracy.
pub const ACCURACY_WEIGHT: f64 = 10.0;

/// The bound of the reward's first two terms (10 + 10): the return-to-go a
/// trained policy is conditioned on to ask for its best prompt. (The
/// perplexity term is at least 1, so observed rewards stay below it.)
pub const TOP_REWARD: f64 = CORRECT_WEIGHT + ACCURACY_WEIGHT;

/// The reward of one (query, prompt) pair: `10·correct + 10·accuracy −
/// perplexity`. `prompt_accuracy` is the prompt's average accuracy in [0,
/// 1]; `label_perplexity` the label's perplexity (at least 1).
pub fn reward(correct: bool, prompt_accuracy: f64, label_perplexity: f64) -> f64 {
    let correct = if correct { 1.0 } else { 0.0 };
    CORRECT_WEIGHT * correct + ACCURACY_WEIGHT * prompt_accuracy - label_perplexity
}

/// Average accuracy of a prompt over the queries it was tried on (0 when it
/// was tried on none).
pub fn average_accuracy(results: &[bool]) -> f64 {
    if results.is_empty() {
        return 0.0;
    }
    results.iter().filter(|&&ok| ok).count() as f64 / results.len() as f64
}

/// Perplexity of the label from its scored tokens: `exp(−logprob_sum /
/// token_count)`; 1 for an empty label.
pub fn label_perplexity(logprob_sum: f64, token_count: u32) -> f64 {
    if token_count == 0 { 1.0 } else { (-logprob_sum / f64::from(token_count)).exp() }
}

/// How the reward prefix starts.
pub const REWARD_PREFIX: &str = "Reward: ";

/// The return-to-go prefix of the policy's input: `Reward: 20.00` and a line
/// break (two decimals, so the policy sees a stable token pattern).
pub fn encode_reward_prefix(reward: f64) -> String {
    format!("{REWARD_PREFIX}{reward:.2}\n")
}

/// Splits a policy input into its reward and the rest, if it starts with a
/// reward prefix (`Reward: <number>` and a line break or the end).
pub fn decode_reward_prefix(text: &str) -> Option<(f64, &str)> {
    let rest = text.strip_prefix(REWARD_PREFIX)?;
    let (number, rest) = match rest.find('\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, ""),
    };
    let reward: f64 = number.trim().parse().ok()?;
    reward.is_finite().then_some((reward, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reward_formula() {
        assert_eq!(reward(true, 0.75, 1.5), 10.0 + 7.5 - 1.5);
        assert_eq!(reward(false, 0.5, 2.0), 3.0);
        assert_eq!(reward(true, 1.0, 1.0), 19.0);
        assert_eq!(TOP_REWARD, 20.0);
    }

    #[test]
    fn accuracy_and_perplexity() {
        assert_eq!(average_accuracy(&[true, false, true, true]), 0.75);
        assert_eq!(average_accuracy(&[]), 0.0);
        // Two tokens with probabilities 0.5 and 0.25: exp(-(ln .5 + ln .25) / 2) = sqrt(8).
        let sum = 0.5f64.ln() + 0.25f64.ln();
        assert!((label_perplexity(sum, 2) - 8f64.sqrt()).abs() < 1e-12);
        assert_eq!(label_perplexity(0.0, 0), 1.0);
    }

    #[test]
    fn prefix_round_trips() {
        let input = format!("{}Query: 2+2?\nPrompt:", encode_reward_prefix(20.0));
        assert_eq!(input, "Reward: 20.00\nQuery: 2+2?\nPrompt:");
        assert_eq!(decode_reward_prefix(&input), Some((20.0, "Query: 2+2?\nPrompt:")));
        assert_eq!(decode_reward_prefix(&encode_reward_prefix(-3.456)), Some((-3.46, "")));
        assert_eq!(decode_reward_prefix("Reward: 17.5"), Some((17.5, "")));
        assert_eq!(decode_reward_prefix("Reward: high\nx"), None);
        assert_eq!(decode_reward_prefix("Query: x"), None);
        assert_eq!(decode_reward_prefix("Reward: NaN\n"), None);
    }
}
