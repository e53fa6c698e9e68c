//! Certainty of a pseudo-solution and the keep-the-most-certain rule of
//! SELF-TAUGHT's certainty-based demonstration filtering. Pure functions,
//! unit-tested natively.

/// How the certainty of a pseudo-solution is measured (parameter
/// `certainty`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertaintyMethod {
    /// `exp(mean token log-probability)` of the solution under the solving
    /// model, from the host's scoring: the geometric mean of the token
    /// probabilities, in (0, 1].
    Logprob,
    /// Agreement of the final answers extracted from `consistency-samples`
    /// sampled solutions: the share of samples that give the most common
    /// answer.
    SelfConsistency,
}

impl CertaintyMethod {
    /// Parses the parameter's value: `logprob` or `self-consistency`.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "logprob" => Ok(CertaintyMethod::Logprob),
            "self-consistency" => Ok(CertaintyMethod::SelfConsistency),
            other => Err(format!("parameter `certainty` must be `logprob` or `self-consistency`, got `{other}`")),
        }
    }
}

/// Certainty from a scored continuation: `exp(logprob_sum / token_count)`.
/// An empty continuation (no tokens) or a non-finite sum has certainty 0.
pub fn logprob_certainty(logprob_sum: f64, token_count: u32) -> f64 {
    if token_count == 0 || !logprob_sum.is_finite() {
        return 0.0;
    }
    (logprob_sum / f64::from(token_count)).exp().clamp(0.0, 1.0)
}

/// Self-consistency over the extracted answers of several samples (`None`
/// where no answer could be extracted): the most common answer (the first
/// to reach the top count wins a tie) and its share of *all* samples. No
/// answer at all gives `(None, 0.0)`.
pub fn consistency(answers: &[Option<String>]) -> (Option<String>, f64) {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for answer in answers.iter().flatten() {
        match counts.iter_mut().find(|(a, _)| *a == answer.as_str()) {
            Some((_, n)) => *n += 1,
            None => counts.push((answer, 1)),
        }
    }
    let mut best: Option<(&str, usize)> = None;
    for &(answer, n) in &counts {
        if best.is_none_or(|(_, m)| n > m) {
            best = Some((answer, n));
        }
    }
    match best {
        Some((answer, n)) => (Some(answer.to_owned()), n as f64 / answers.len() as f64),
        None => (None, 0.0),
    }
}

/// One generated pseudo-solution with its certainty.
#[derive(Clone, Debug, PartialEq)]
pub struct Attempt {
    /// The solution text.
    pub solution: String,
    /// Its certainty in [0, 1].
    pub certainty: f64,
}

/// Whether `certainty` clears `threshold` (reaching it is enough).
pub fn clears(certainty: f64, threshold: f64) -> bool {
    certainty >= threshold
}

/// The most certain attempt; the earliest wins a tie. `None` when there is
/// none.
pub fn most_certain(attempts: &[Attempt]) -> Option<&Attempt> {
    let mut best: Option<&Attempt> = None;
    for attempt in attempts {
        if best.is_none_or(|b| attempt.certainty > b.certainty) {
            best = Some(attempt);
        }
    }
    best
}

/// How many attempts are worth making: `max_attempts` (at least 1), but
/// only one when decoding is greedy (`temperature` 0), since every
/// regeneration would repeat the first solution.
pub fn effective_attempts(max_attempts: u32, temperature: f32) -> u32 {
    if temperature <= 0.0 { 1 } else { max_attempts.max(1) }
}

/// Which of several sampled solutions stands for a self-consistency
/// attempt: the first whose extracted answer is the `majority` answer, else
/// the first non-blank one. `None` when every text is blank.
pub fn representative(texts: &[&str], answers: &[Option<String>], majority: Option<&str>) -> Option<usize> {
    if let Some(majority) = majority
        && let Some(i) = answers.iter().position(|a| a.as_deref() == Some(majority))
        && texts.get(i).is_some_and(|t| !t.trim().is_empty())
    {
        return Some(i);
    }
    texts.iter().position(|t| !t.trim().is_empty())
}

/// The text of a `pseudo-solution` trace step: the certainty (3 decimals)
/// and the number of attempts it took, then the solution.
pub fn trace_text(attempt: &Attempt, attempts_made: usize) -> String {
    format!("[certainty {:.3} after {attempts_made} attempt(s)]\n{}", attempt.certainty, attempt.solution)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_parse() {
        assert_eq!(CertaintyMethod::parse("logprob"), Ok(CertaintyMethod::Logprob));
        assert_eq!(CertaintyMethod::parse(" Self-Consistency "), Ok(CertaintyMethod::SelfConsistency));
        assert!(CertaintyMethod::parse("entropy").unwrap_err().contains("`entropy`"));
    }

    #[test]
    fn logprob_certainty_is_the_geometric_mean_probability() {
        // Token probabilities 0.5 and 0.8: exp((ln 0.5 + ln 0.8) / 2) = sqrt(0.4).
        let sum = 0.5f64.ln() + 0.8f64.ln();
        assert!((logprob_certainty(sum, 2) - 0.4f64.sqrt()).abs() < 1e-12);
        assert_eq!(logprob_certainty(0.0, 3), 1.0);
        assert_eq!(logprob_certainty(-1.0, 0), 0.0);
        assert_eq!(logprob_certainty(f64::NEG_INFINITY, 4), 0.0);
        assert!((logprob_certainty(-2.0, 4) - (-0.5f64).exp()).abs() < 1e-12);
    }

    #[test]
    fn consistency_is_the_majority_share_of_all_samples() {
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(consistency(&[s("7"), s("7"), s("8"), None, s("7")]), (s("7"), 0.6));
        // Tie: the first answer to reach the top count wins.
        assert_eq!(consistency(&[s("B"), s("A"), s("A"), s("B")]), (s("B"), 0.5));
        assert_eq!(consistency(&[None, None]), (None, 0.0));
        assert_eq!(consistency(&[]), (None, 0.0));
        assert_eq!(consistency(&[s("x")]), (s("x"), 1.0));
    }

    #[test]
    fn most_certain_keeps_the_earliest_best() {
        let a = |s: &str, c: f64| Attempt { solution: s.into(), certainty: c };
        let attempts = [a("first", 0.5), a("second", 0.75), a("third", 0.75)];
        assert_eq!(most_certain(&attempts).map(|a| a.solution.as_str()), Some("second"));
        assert_eq!(most_certain(&[]), None);
    }

    #[test]
    fn representative_prefers_the_majority() {
        let s = |v: &str| Some(v.to_owned());
        let texts = ["so 8", "so 7", "so 7"];
        let answers = [s("8"), s("7"), s("7")];
        assert_eq!(representative(&texts, &answers, Some("7")), Some(1));
        assert_eq!(representative(&texts, &answers, None), Some(0));
        assert_eq!(representative(&["  ", "x"], &[None, None], None), Some(1));
        assert_eq!(representative(&[" "], &[None], None), None);
    }

    #[test]
    fn trace_text_shows_certainty_and_attempts() {
        let a = Attempt { solution: "3 + 4 = 7. The answer is 7.".into(), certainty: 0.93456 };
        assert_eq!(trace_text(&a, 2), "[certainty 0.935 after 2 attempt(s)]\n3 + 4 = 7. The answer is 7.");
    }

    #[test]
    fn threshold_and_attempts() {
        assert!(clears(0.9, 0.9));
        assert!(!clears(0.89, 0.9));
        assert_eq!(effective_attempts(3, 0.7), 3);
        assert_eq!(effective_attempts(3, 0.0), 1);
        assert_eq!(effective_attempts(0, 0.7), 1);
    }
}
