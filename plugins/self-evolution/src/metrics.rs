//! BLEU-4 (Papineni et al. 2002) and ROUGE-1/2/L (Lin 2004), the text
//! metrics Self-Evolution reports, as pure functions over token sequences,
//! with a tokenizer. Written to be reused as the reference algorithm by the
//! host's `techne eval`; unit-tested natively against hand-computed values.
//!
//! Conventions (stated, since implementations differ):
//!
//! - [`tokenize`]: lowercase; runs of letters and digits are tokens, every
//!   other character separates them, except that each CJK ideograph or kana
//!   is a token of its own (so Chinese and Japanese text is scored per
//!   character, as is usual).
//! - BLEU: modified (clipped) n-gram precisions for n = 1..4, uniform
//!   weights, brevity penalty `exp(1 − r/c)` when the candidate length `c`
//!   is below the effective reference length `r` (per sentence, the
//!   reference length closest to `c`, the shorter on a tie). Corpus BLEU sums
//!   matches, totals and lengths over sentences before combining. Without
//!   smoothing any zero precision gives 0; [`Smoothing::AddOne`] is Lin and
//!   Och's (2004) add-one on orders n > 1, for sentence-level scores.
//! - ROUGE-N: clipped n-gram overlap; precision over the candidate's n-grams,
//!   recall over the reference's, F1 their harmonic mean. ROUGE-L: the same
//!   with the longest common subsequence (F1, β = 1, as the `rouge-score`
//!   package). Empty inputs give 0.

use std::collections::HashMap;
use std::hash::Hash;

/// Splits `text` into lowercase tokens (see the module's conventions).
pub fn tokenize(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        if is_cjk(c) {
            if !word.is_empty() {
                tokens.push(std::mem::take(&mut word));
            }
            tokens.push(c.to_string());
        } else if c.is_alphanumeric() {
            word.extend(c.to_lowercase());
        } else if !word.is_empty() {
            tokens.push(std::mem::take(&mut word));
        }
    }
    if !word.is_empty() {
        tokens.push(word);
    }
    tokens
}

/// CJK ideographs (unified, extension A, compatibility) and kana.
fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF)
}

/// Counts of every n-gram of `tokens`.
fn ngram_counts<T: Hash + Eq>(tokens: &[T], n: usize) -> HashMap<&[T], usize> {
    let mut counts = HashMap::new();
    if n > 0 && tokens.len() >= n {
        for gram in tokens.windows(n) {
            *counts.entry(gram).or_insert(0) += 1;
        }
    }
    counts
}

/// Smoothing of BLEU's n-gram precisions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Smoothing {
    /// None: a zero precision makes BLEU 0 (corpus-level BLEU).
    None,
    /// Lin and Och (2004): `(matches + 1) / (total + 1)` for n > 1.
    AddOne,
}

/// The order of BLEU-4.
pub const BLEU_ORDER: usize = 4;

/// BLEU-4 of one candidate against one or more references.
pub fn sentence_bleu<T: Hash + Eq>(candidate: &[T], references: &[&[T]], smoothing: Smoothing) -> f64 {
    corpus_bleu(&[(candidate, references)], smoothing)
}

/// Corpus BLEU-4 of (candidate, references) pairs: matches, totals and
/// lengths are summed over the pairs before the precisions are combined.
pub fn corpus_bleu<T: Hash + Eq>(pairs: &[(&[T], &[&[T]])], smoothing: Smoothing) -> f64 {
    let mut matches = [0usize; BLEU_ORDER];
    let mut totals = [0usize; BLEU_ORDER];
    let (mut candidate_len, mut reference_len) = (0usize, 0usize);
    for (candidate, references) in pairs {
        candidate_len += candidate.len();
        reference_len += closest_length(candidate.len(), references);
        for n in 1..=BLEU_ORDER {
            let counts = ngram_counts(candidate, n);
            let mut max_ref: HashMap<&[T], usize> = HashMap::new();
            for reference in references.iter() {
                for (gram, count) in ngram_counts(reference, n) {
                    let entry = max_ref.entry(gram).or_insert(0);
                    *entry = (*entry).max(count);
                }
            }
            totals[n - 1] += candidate.len().saturating_sub(n - 1);
            matches[n - 1] +=
                counts.iter().map(|(gram, &count)| count.min(max_ref.get(gram).copied().unwrap_or(0))).sum::<usize>();
        }
    }
    if candidate_len == 0 {
        return 0.0;
    }
    let mut log_sum = 0.0;
    for n in 0..BLEU_ORDER {
        let (m, t) = match smoothing {
            Smoothing::AddOne if n > 0 => (matches[n] + 1, totals[n] + 1),
            _ => (matches[n], totals[n]),
        };
        if m == 0 || t == 0 {
            return 0.0;
        }
        log_sum += (m as f64 / t as f64).ln() / BLEU_ORDER as f64;
    }
    brevity_penalty(candidate_len, reference_len) * log_sum.exp()
}

/// The reference length closest to `candidate_len` (the shorter on a tie;
/// 0 without references).
fn closest_length<T>(candidate_len: usize, references: &[&[T]]) -> usize {
    references.iter().map(|r| r.len()).min_by_key(|&len| (len.abs_diff(candidate_len), len)).unwrap_or(0)
}

/// BLEU's brevity penalty: 1 when the candidate is longer than the
/// reference, else `exp(1 − r/c)`.
pub fn brevity_penalty(candidate_len: usize, reference_len: usize) -> f64 {
    if candidate_len == 0 {
        0.0
    } else if candidate_len > reference_len {
        1.0
    } else {
        (1.0 - reference_len as f64 / candidate_len as f64).exp()
    }
}

/// Precision, recall and F1 of a ROUGE score.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rouge {
    /// Overlap over the candidate's units.
    pub precision: f64,
    /// Overlap over the reference's units.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
}

impl Rouge {
    fn from_overlap(overlap: usize, candidate_units: usize, reference_units: usize) -> Self {
        let ratio = |units: usize| if units == 0 { 0.0 } else { overlap as f64 / units as f64 };
        let (precision, recall) = (ratio(candidate_units), ratio(reference_units));
        let f1 = if precision + recall == 0.0 { 0.0 } else { 2.0 * precision * recall / (precision + recall) };
        Rouge { precision, recall, f1 }
    }
}

/// ROUGE-N: clipped n-gram overlap of `candidate` and `reference`.
pub fn rouge_n<T: Hash + Eq>(candidate: &[T], reference: &[T], n: usize) -> Rouge {
    let c = ngram_counts(candidate, n);
    let r = ngram_counts(reference, n);
    let overlap = c.iter().map(|(gram, &count)| count.min(r.get(gram).copied().unwrap_or(0))).sum();
    Rouge::from_overlap(overlap, c.values().sum(), r.values().sum())
}

/// ROUGE-L: longest-common-subsequence overlap of `candidate` and
/// `reference`.
pub fn rouge_l<T: Eq>(candidate: &[T], reference: &[T]) -> Rouge {
    Rouge::from_overlap(lcs_len(candidate, reference), candidate.len(), reference.len())
}

/// Length of the longest common subsequence (O(n·m) time, O(m) memory).
pub fn lcs_len<T: Eq>(a: &[T], b: &[T]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    let mut row = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            row[j + 1] = if x == y { prev[j] + 1 } else { row[j].max(prev[j + 1]) };
        }
        std::mem::swap(&mut prev, &mut row);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str) -> Vec<String> {
        tokenize(text)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn tokenizer() {
        assert_eq!(t("The cat, the MAT!  42x"), ["the", "cat", "the", "mat", "42x"]);
        assert_eq!(t("水在100度沸腾"), ["水", "在", "100", "度", "沸", "腾"]);
        assert_eq!(t("Ünïcode café"), ["ünïcode", "café"]);
        assert!(t(" ,.; ").is_empty());
    }

    #[test]
    fn bleu_of_a_hand_worked_pair() {
        // Candidate "the cat sat on the mat", reference "the cat is on the mat":
        // p1 = 5/6, p2 = 3/5 (the cat, on the, the mat), p3 = 1/4 (on the mat), p4 = 0/3.
        let (c, r) = (t("the cat sat on the mat"), t("the cat is on the mat"));
        assert_eq!(sentence_bleu(&c, &[&r], Smoothing::None), 0.0);
        // Add-one on n > 1: 5/6 · 4/6 · 2/5 · 1/4 = 1/18, BLEU = 18^(-1/4); same lengths, BP = 1.
        assert!(close(sentence_bleu(&c, &[&r], Smoothing::AddOne), 18f64.powf(-0.25)));
    }

    #[test]
    fn bleu_identity_brevity_and_clipping() {
        let r = t("the cat is on the mat");
        assert!(close(sentence_bleu(&r, &[&r], Smoothing::None), 1.0));
        // All precisions 1, c = 5, r = 6: BP = exp(1 - 6/5).
        let c = t("the cat is on the");
        assert!(close(sentence_bleu(&c, &[&r], Smoothing::None), (-0.2f64).exp()));
        assert!(close(brevity_penalty(5, 6), (-0.2f64).exp()));
        assert_eq!(brevity_penalty(7, 6), 1.0);
        // Papineni's example: "the" x7 against a reference with two "the": p1 = 2/7.
        let c = t("the the the the the the the");
        let counts = ngram_counts(&c, 1);
        assert_eq!(counts.values().sum::<usize>(), 7);
        let r1 = t("the cat is on the mat");
        assert_eq!(sentence_bleu(&c, &[&r1], Smoothing::None), 0.0);
        // Unigram-only check through ROUGE-1 precision (same clipping): 2/7.
        assert!(close(rouge_n(&c, &r1, 1).precision, 2.0 / 7.0));
        // Empty candidate.
        let empty: Vec<String> = Vec::new();
        assert_eq!(sentence_bleu(&empty, &[&r], Smoothing::AddOne), 0.0);
    }

    #[test]
    fn bleu_uses_the_closest_reference_and_max_counts() {
        let c = t("the cat is on the mat");
        let short = t("a cat");
        let exact = t("the cat is on the mat");
        assert!(close(sentence_bleu(&c, &[&short, &exact], Smoothing::None), 1.0));
        assert_eq!(closest_length(5, &[&t("a b c d"), &t("a b c d e f")]), 4);
        assert_eq!(closest_length::<String>(5, &[]), 0);
    }

    #[test]
    fn corpus_bleu_sums_before_combining() {
        let (c1, r1) = (t("the cat is on the mat"), t("the cat is on the mat"));
        let (c2, r2) = (t("a b c d"), t("a b c d e f g h"));
        // p_n over both: (6+4)/(6+4), (5+3)/(5+3), (4+2)/(4+2), (3+1)/(3+1) = 1;
        // c = 10, r = 14: BP = exp(1 - 14/10).
        let score = corpus_bleu(&[(&c1[..], &[&r1[..]][..]), (&c2[..], &[&r2[..]][..])], Smoothing::None);
        assert!(close(score, (-0.4f64).exp()));
    }

    #[test]
    fn rouge_of_hand_worked_pairs() {
        let (c, r) = (t("the cat sat on the mat"), t("the cat is on the mat"));
        let r1 = rouge_n(&c, &r, 1);
        assert!(close(r1.precision, 5.0 / 6.0) && close(r1.recall, 5.0 / 6.0) && close(r1.f1, 5.0 / 6.0));
        let r2 = rouge_n(&c, &r, 2);
        assert!(close(r2.f1, 0.6));
        let rl = rouge_l(&c, &r);
        assert_eq!(lcs_len(&c, &r), 5);
        assert!(close(rl.f1, 5.0 / 6.0));

        let short = t("the cat");
        let r1 = rouge_n(&short, &r, 1);
        assert!(close(r1.precision, 1.0) && close(r1.recall, 1.0 / 3.0) && close(r1.f1, 0.5));
        assert!(close(rouge_l(&short, &r).f1, 0.5));
        // Order matters for ROUGE-L, not for ROUGE-1.
        let reversed = t("mat the on is cat the");
        assert!(close(rouge_n(&reversed, &r, 1).f1, 1.0));
        // e.g. "the is the" or "the on the".
        assert_eq!(lcs_len(&reversed, &r), 3);
        assert!(close(rouge_l(&reversed, &r).f1, 0.5));
    }

    #[test]
    fn rouge_edge_cases() {
        let empty: Vec<String> = Vec::new();
        let r = t("a b");
        assert_eq!(rouge_n(&empty, &r, 1), Rouge { precision: 0.0, recall: 0.0, f1: 0.0 });
        assert_eq!(rouge_l(&empty, &empty).f1, 0.0);
        assert_eq!(rouge_n(&t("x y"), &t("z w"), 2).f1, 0.0);
        // A single token has no bigram.
        assert_eq!(rouge_n(&t("a"), &t("a"), 2).f1, 0.0);
    }
}
