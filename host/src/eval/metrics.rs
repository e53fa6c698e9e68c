//! Scoring answers against references: exact match, GSM8K-style numeric
//! answers, multiple-choice letters, containment, BLEU-4 and ROUGE-1/2/L.
//! Every metric maps (answer, reference) to a score in [0, 1].

use std::collections::HashMap;

/// A metric for comparing an answer with its reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Metric {
    /// Normalised (case, whitespace, punctuation at the ends) string equality.
    ExactMatch,
    /// The reference occurs in the answer (normalised).
    Contains,
    /// The last number in the answer equals the reference's number (GSM8K:
    /// the reference's number follows `####` when present).
    Numeric,
    /// The chosen option letter (A–J) equals the reference's.
    Choice,
    /// BLEU-4 with brevity penalty and +1 smoothing of higher-order precisions.
    Bleu4,
    /// ROUGE-1 F1.
    Rouge1,
    /// ROUGE-2 F1.
    Rouge2,
    /// ROUGE-L F1 (longest common subsequence).
    RougeL,
}

impl Metric {
    /// Every metric.
    pub const ALL: [Metric; 8] = [
        Metric::ExactMatch,
        Metric::Contains,
        Metric::Numeric,
        Metric::Choice,
        Metric::Bleu4,
        Metric::Rouge1,
        Metric::Rouge2,
        Metric::RougeL,
    ];

    /// The metric's name as written in configurations.
    pub fn name(self) -> &'static str {
        match self {
            Metric::ExactMatch => "exact-match",
            Metric::Contains => "contains",
            Metric::Numeric => "numeric",
            Metric::Choice => "choice",
            Metric::Bleu4 => "bleu4",
            Metric::Rouge1 => "rouge1",
            Metric::Rouge2 => "rouge2",
            Metric::RougeL => "rouge-l",
        }
    }

    /// Score `answer` against `reference`, in [0, 1].
    pub fn score(self, answer: &str, reference: &str) -> f64 {
        match self {
            Metric::ExactMatch => f64::from(u8::from(normalize(answer) == normalize(reference))),
            Metric::Contains => {
                let reference = normalize(reference);
                f64::from(u8::from(!reference.is_empty() && normalize(answer).contains(&reference)))
            }
            Metric::Numeric => match (last_number(answer), reference_number(reference)) {
                (Some(a), Some(r)) => f64::from(u8::from((a - r).abs() < 1e-6)),
                _ => 0.0,
            },
            Metric::Choice => match (choice_letter(answer), choice_letter(reference)) {
                (Some(a), Some(r)) => f64::from(u8::from(a == r)),
                _ => 0.0,
            },
            Metric::Bleu4 => bleu4(&tokens(answer), &tokens(reference)),
            Metric::Rouge1 => rouge_n(&tokens(answer), &tokens(reference), 1),
            Metric::Rouge2 => rouge_n(&tokens(answer), &tokens(reference), 2),
            Metric::RougeL => rouge_l(&tokens(answer), &tokens(reference)),
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Lowercase, collapse whitespace, trim punctuation at both ends.
pub fn normalize(text: &str) -> String {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
    collapsed.trim_matches(|c: char| c.is_ascii_punctuation() || c.is_whitespace()).to_string()
}

/// Lowercased word tokens (letters and digits), for BLEU and ROUGE.
pub fn tokens(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|t| !t.is_empty()).map(str::to_lowercase).collect()
}

/// The numbers in a text, in order (commas in thousands removed, `$` and `%` ignored).
pub fn numbers(text: &str) -> Vec<f64> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let starts_number = chars[i].is_ascii_digit()
            || (chars[i] == '-'
                && chars.get(i + 1).is_some_and(char::is_ascii_digit)
                && (i == 0 || !chars[i - 1].is_alphanumeric()));
        if !starts_number {
            i += 1;
            continue;
        }
        let mut s = String::new();
        if chars[i] == '-' {
            s.push('-');
            i += 1;
        }
        while i < chars.len() {
            let c = chars[i];
            if c.is_ascii_digit() {
                s.push(c);
            } else if c == ',' && chars.get(i + 1).is_some_and(char::is_ascii_digit) {
                // thousands separator
            } else if c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit) {
                s.push('.');
            } else {
                break;
            }
            i += 1;
        }
        if let Ok(v) = s.parse::<f64>() {
            out.push(v);
        }
    }
    out
}

/// The last number of an answer (GSM8K convention: the final answer comes last).
pub fn last_number(answer: &str) -> Option<f64> {
    numbers(answer).last().copied()
}

/// The number of a reference: after `####` when present, else its last number.
pub fn reference_number(reference: &str) -> Option<f64> {
    match reference.rsplit_once("####") {
        Some((_, tail)) => numbers(tail).first().copied(),
        None => last_number(reference),
    }
}

/// The option letter an answer chooses: `(B)`, `B)`, `answer is B`, or a lone `B`.
pub fn choice_letter(answer: &str) -> Option<char> {
    let upper = answer.to_uppercase();
    let is_option = |c: char| ('A'..='J').contains(&c);
    let bytes: Vec<char> = upper.chars().collect();
    for (i, w) in bytes.windows(3).enumerate() {
        if w[0] == '(' && is_option(w[1]) && w[2] == ')' {
            let _ = i;
            return Some(w[1]);
        }
    }
    for marker in ["ANSWER IS", "ANSWER:", "OPTION"] {
        if let Some(pos) = upper.rfind(marker)
            && let Some(c) = upper[pos + marker.len()..].chars().find(|c| c.is_alphanumeric())
            && is_option(c)
        {
            return Some(c);
        }
    }
    let trimmed = upper.trim().trim_end_matches(['.', ')', ':']);
    if trimmed.chars().count() == 1 {
        return trimmed.chars().next().filter(|&c| is_option(c));
    }
    None
}

fn ngrams(tokens: &[String], n: usize) -> HashMap<&[String], usize> {
    let mut counts = HashMap::new();
    if tokens.len() >= n {
        for gram in tokens.windows(n) {
            *counts.entry(gram).or_insert(0) += 1;
        }
    }
    counts
}

/// Clipped n-gram matches and the candidate's n-gram count.
fn overlap(candidate: &[String], reference: &[String], n: usize) -> (usize, usize) {
    let cand = ngrams(candidate, n);
    let refs = ngrams(reference, n);
    let matches = cand.iter().map(|(g, &c)| c.min(refs.get(g).copied().unwrap_or(0))).sum();
    (matches, candidate.len().saturating_sub(n - 1))
}

/// Sentence BLEU-4: geometric mean of modified 1–4-gram precisions (orders 2–4
/// smoothed with +1, as in Lin & Och's smoothing 1 variant), times the
/// brevity penalty.
pub fn bleu4(candidate: &[String], reference: &[String]) -> f64 {
    if candidate.is_empty() || reference.is_empty() {
        return 0.0;
    }
    let mut log_sum = 0.0;
    for n in 1..=4 {
        let (matches, total) = overlap(candidate, reference, n);
        let p = if n == 1 {
            if matches == 0 {
                return 0.0;
            }
            matches as f64 / total as f64
        } else {
            (matches as f64 + 1.0) / (total as f64 + 1.0)
        };
        log_sum += p.ln() / 4.0;
    }
    let (c, r) = (candidate.len() as f64, reference.len() as f64);
    let brevity = if c > r { 1.0 } else { (1.0 - r / c).exp() };
    brevity * log_sum.exp()
}

/// ROUGE-N F1.
pub fn rouge_n(candidate: &[String], reference: &[String], n: usize) -> f64 {
    let (matches, cand_total) = overlap(candidate, reference, n);
    let ref_total = reference.len().saturating_sub(n - 1);
    f1(matches as f64, cand_total as f64, ref_total as f64)
}

/// ROUGE-L F1 from the longest common subsequence.
pub fn rouge_l(candidate: &[String], reference: &[String]) -> f64 {
    let mut prev = vec![0usize; reference.len() + 1];
    for c in candidate {
        let mut row = vec![0usize; reference.len() + 1];
        for (j, r) in reference.iter().enumerate() {
            row[j + 1] = if c == r { prev[j] + 1 } else { row[j].max(prev[j + 1]) };
        }
        prev = row;
    }
    let lcs = prev[reference.len()] as f64;
    f1(lcs, candidate.len() as f64, reference.len() as f64)
}

fn f1(matches: f64, candidate: f64, reference: f64) -> f64 {
    if matches == 0.0 || candidate == 0.0 || reference == 0.0 {
        return 0.0;
    }
    let (p, r) = (matches / candidate, matches / reference);
    2.0 * p * r / (p + r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Vec<String> {
        tokens(s)
    }

    #[test]
    fn exact_match_and_contains_normalise() {
        assert_eq!(Metric::ExactMatch.score("  Paris. ", "paris"), 1.0);
        assert_eq!(Metric::ExactMatch.score("Paris, France", "paris"), 0.0);
        assert_eq!(Metric::Contains.score("The capital is Paris.", "paris"), 1.0);
        assert_eq!(Metric::Contains.score("Lyon", "paris"), 0.0);
        assert_eq!(Metric::Contains.score("anything", ""), 0.0);
    }

    #[test]
    fn numeric_answers_follow_gsm8k() {
        assert_eq!(Metric::Numeric.score("She pays 5 + 13 = 18 dollars. The answer is 18.", "Janet...\n#### 18"), 1.0);
        assert_eq!(Metric::Numeric.score("It costs $1,234.50 in total", "#### 1234.5"), 1.0);
        assert_eq!(Metric::Numeric.score("The result is -3", "-3"), 1.0);
        assert_eq!(Metric::Numeric.score("about 17", "#### 18"), 0.0);
        assert_eq!(Metric::Numeric.score("no idea", "#### 18"), 0.0);
        assert_eq!(numbers("x-1 and 2-3"), vec![1.0, 2.0, 3.0]);
    }

    #[test]
    fn choice_letters_are_extracted() {
        assert_eq!(choice_letter("The answer is (C)."), Some('C'));
        assert_eq!(choice_letter("So the answer is B"), Some('B'));
        assert_eq!(choice_letter("d"), Some('D'));
        assert_eq!(choice_letter("Answer: A) blue"), Some('A'));
        assert_eq!(choice_letter("I am not sure"), None);
        assert_eq!(Metric::Choice.score("answer is (b)", "(B)"), 1.0);
    }

    #[test]
    fn bleu4_matches_hand_computed_values() {
        assert!((bleu4(&t("the cat sat on the mat"), &t("the cat sat on the mat")) - 1.0).abs() < 1e-12);
        // candidate 4 tokens vs reference 6: p1 = 4/4, p2 = (3+1)/(3+1), p3 = (2+1)/(2+1), p4 = (1+1)/(1+1);
        // brevity = exp(1 - 6/4).
        let b = bleu4(&t("the cat sat on"), &t("the cat sat on the mat"));
        assert!((b - (1.0f64 - 1.5).exp()).abs() < 1e-12, "{b}");
        // p1 = 2/3, p2 = 1/3 (0 matches +1 / 2 +1), p3 = 1/2, p4 = 1/1 (no 4-grams: 0+1 / 0+1).
        let b = bleu4(&t("a b x"), &t("a b y"));
        let expected = ((2.0f64 / 3.0).ln() / 4.0 + (2.0f64 / 3.0).ln() / 4.0 + (0.5f64).ln() / 4.0 + 0.0).exp();
        assert!((b - expected).abs() < 1e-12, "{b} vs {expected}");
        assert_eq!(bleu4(&t("x y z"), &t("a b c")), 0.0);
    }

    #[test]
    fn rouge_matches_hand_computed_values() {
        let (c, r) = (t("the cat was found under the bed"), t("the cat was under the bed"));
        // ROUGE-1: 6 matches, P = 6/7, R = 6/6.
        assert!((rouge_n(&c, &r, 1) - 2.0 * (6.0 / 7.0) / (6.0 / 7.0 + 1.0)).abs() < 1e-12);
        // ROUGE-2: bigrams of c: 6, of r: 5; matches: the-cat, cat-was, under-the, the-bed = 4.
        let (p, rr) = (4.0 / 6.0, 4.0 / 5.0);
        assert!((rouge_n(&c, &r, 2) - 2.0 * p * rr / (p + rr)).abs() < 1e-12);
        // ROUGE-L: LCS = 6.
        assert!((rouge_l(&c, &r) - rouge_n(&c, &r, 1)).abs() < 1e-12);
        assert_eq!(rouge_l(&t("a b c"), &t("c b a")), 2.0 * (1.0 / 3.0) * (1.0 / 3.0) / (2.0 / 3.0));
        assert_eq!(rouge_n(&t(""), &t("a"), 1), 0.0);
    }
}
