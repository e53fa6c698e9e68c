//! The Question Rewriter's training-data decisions (arXiv 2408.10573,
//! section 3): which sampled rewrites to keep, which rewrites count as
//! better or worse than the original question, and which DPO pairs to build
//! from them. No host calls, so it is unit-tested natively.
//!
//! * A rewrite is **better** when its answer is at least as good as the
//!   original's on every criterion and strictly better on at least one;
//!   **worse** is the mirror (at most as good on every criterion, strictly
//!   worse on one). Other rewrites (mixed, or equal everywhere) are unused.
//! * Pairs: the top `better-pairs` (N+) better rewrites, ranked by their
//!   summed improvement over the original, each paired with `worse-pairs`
//!   (N−) worse rewrites drawn at random (seeded, so runs are reproducible).

use techne_plugin_sdk::rewriter_trainer::{CriterionScore, JudgedQuestion, PreferencePair};

/// How a rewrite's answer compares with the original's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comparison {
    /// At least as good on every criterion, strictly better on one.
    Better,
    /// At most as good on every criterion, strictly worse on one.
    Worse,
    /// Equal on every criterion.
    Same,
    /// Better on some criterion and worse on another.
    Mixed,
}

/// The score of `criterion` oriented so that higher is better.
fn oriented(score: &CriterionScore) -> f64 {
    if score.higher_is_better { score.value } else { -score.value }
}

/// Compares `rewrite`'s scores with `original`'s, criterion by criterion
/// (matched by name). Errors when a criterion is missing or not a number.
pub fn compare(original: &[CriterionScore], rewrite: &[CriterionScore]) -> Result<Comparison, String> {
    if original.is_empty() {
        return Err(
            "the original question has no criterion scores; the host must judge answers on at least one criterion"
                .into(),
        );
    }
    let (mut better, mut worse) = (false, false);
    for base in original {
        let Some(other) = rewrite.iter().find(|s| s.name == base.name) else {
            return Err(format!("a rewrite has no score on criterion `{}`", base.name));
        };
        if other.higher_is_better != base.higher_is_better {
            return Err(format!("criterion `{}` is given with two directions", base.name));
        }
        let (a, b) = (oriented(base), oriented(other));
        if !a.is_finite() || !b.is_finite() {
            return Err(format!("criterion `{}` has a score that is not a finite number", base.name));
        }
        better |= b > a;
        worse |= b < a;
    }
    Ok(match (better, worse) {
        (true, false) => Comparison::Better,
        (false, true) => Comparison::Worse,
        (false, false) => Comparison::Same,
        (true, true) => Comparison::Mixed,
    })
}

/// Summed oriented improvement of `rewrite` over `original` (ranks better
/// rewrites: the first N+ are paired).
pub fn improvement(original: &[CriterionScore], rewrite: &[CriterionScore]) -> f64 {
    original
        .iter()
        .filter_map(|base| {
            let other = rewrite.iter().find(|s| s.name == base.name)?;
            Some(oriented(other) - oriented(base))
        })
        .sum()
}

/// A small deterministic generator (SplitMix64) for the random choice of
/// worse rewrites.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `count` distinct indices below `len`, in random order (all of them
    /// when `count >= len`).
    fn choose(&mut self, len: usize, count: usize) -> Vec<usize> {
        let mut indices: Vec<usize> = (0..len).collect();
        let take = count.min(len);
        for i in 0..take {
            let j = i + (self.next() % (len - i) as u64) as usize;
            indices.swap(i, j);
        }
        indices.truncate(take);
        indices
    }
}

/// The DPO pairs of one question: the top `better_count` better rewrites
/// (by [`improvement`], ties in input order), each paired with
/// `worse_count` worse rewrites drawn with `seed`. `prompt` is the
/// rewriter's input for the original question.
pub fn build_pairs(
    prompt: &str,
    original: &JudgedQuestion,
    rewrites: &[JudgedQuestion],
    better_count: usize,
    worse_count: usize,
    seed: u64,
) -> Result<Vec<PreferencePair>, String> {
    let mut better: Vec<(f64, &JudgedQuestion)> = Vec::new();
    let mut worse: Vec<&JudgedQuestion> = Vec::new();
    for rewrite in rewrites {
        match compare(&original.scores, &rewrite.scores)? {
            Comparison::Better => better.push((improvement(&original.scores, &rewrite.scores), rewrite)),
            Comparison::Worse => worse.push(rewrite),
            Comparison::Same | Comparison::Mixed => {}
        }
    }
    // Stable sort: equal improvements keep their sampling order.
    better.sort_by(|a, b| b.0.total_cmp(&a.0));
    better.truncate(better_count);
    let mut rng = SplitMix64(seed);
    let mut pairs = Vec::new();
    for (_, chosen) in &better {
        for i in rng.choose(worse.len(), worse_count) {
            pairs.push(PreferencePair::new(prompt, chosen.question.clone(), worse[i].question.clone()));
        }
    }
    Ok(pairs)
}

/// The key two rewrites are duplicates under: lower-case, white space
/// collapsed, trailing punctuation ignored.
pub fn duplicate_key(text: &str) -> String {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
    collapsed.trim_end_matches(['?', '.', '!', ' ']).to_owned()
}

/// Adds the `sampled` rewrites to `kept` until it holds `want`: each one
/// only if it is neither the `original` question nor a duplicate of a kept
/// rewrite (see [`duplicate_key`]). Returns how many were added.
pub fn add_unique(
    kept: &mut Vec<String>,
    sampled: impl IntoIterator<Item = String>,
    original: &str,
    want: usize,
) -> usize {
    let original_key = duplicate_key(original);
    let mut added = 0;
    for rewrite in sampled {
        if kept.len() >= want {
            break;
        }
        let key = duplicate_key(&rewrite);
        if key.is_empty() || key == original_key || kept.iter().any(|k| duplicate_key(k) == key) {
            continue;
        }
        kept.push(rewrite);
        added += 1;
    }
    added
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(comprehensiveness: f64, contradiction: f64) -> Vec<CriterionScore> {
        vec![
            CriterionScore::new("comprehensiveness", comprehensiveness, true),
            CriterionScore::new("contradiction", contradiction, false),
        ]
    }

    fn judged(question: &str, comprehensiveness: f64, contradiction: f64) -> JudgedQuestion {
        JudgedQuestion::new(question, "answer", scores(comprehensiveness, contradiction))
    }

    #[test]
    fn dominance_follows_every_criterion_and_its_direction() {
        let base = scores(0.5, 1.0);
        assert_eq!(compare(&base, &scores(0.75, 1.0)), Ok(Comparison::Better));
        // Fewer contradictions is better.
        assert_eq!(compare(&base, &scores(0.5, 0.0)), Ok(Comparison::Better));
        assert_eq!(compare(&base, &scores(0.75, 0.0)), Ok(Comparison::Better));
        assert_eq!(compare(&base, &scores(0.25, 1.0)), Ok(Comparison::Worse));
        assert_eq!(compare(&base, &scores(0.5, 2.0)), Ok(Comparison::Worse));
        assert_eq!(compare(&base, &scores(0.5, 1.0)), Ok(Comparison::Same));
        // Better comprehensiveness but more contradictions: neither.
        assert_eq!(compare(&base, &scores(1.0, 2.0)), Ok(Comparison::Mixed));
    }

    #[test]
    fn comparison_errors_name_the_problem() {
        let base = scores(0.5, 1.0);
        let partial = vec![CriterionScore::new("comprehensiveness", 1.0, true)];
        assert!(compare(&base, &partial).unwrap_err().contains("`contradiction`"));
        assert!(compare(&[], &partial).unwrap_err().contains("no criterion"));
        assert!(compare(&base, &scores(f64::NAN, 0.0)).unwrap_err().contains("finite"));
        let flipped = vec![CriterionScore::new("comprehensiveness", 1.0, false), base[1].clone()];
        assert!(compare(&base, &flipped).unwrap_err().contains("two directions"));
    }

    #[test]
    fn pairs_take_the_top_better_and_random_worse() {
        let original = judged("orig?", 0.5, 1.0);
        let rewrites = vec![
            judged("b-small", 0.75, 1.0), // better by 0.25
            judged("w1", 0.25, 1.0),
            judged("b-big", 1.0, 0.0), // better by 1.5
            judged("mixed", 1.0, 3.0),
            judged("w2", 0.5, 2.0),
            judged("same", 0.5, 1.0),
            judged("w3", 0.0, 3.0),
        ];
        let pairs = build_pairs("P: orig?", &original, &rewrites, 1, 2, 7).unwrap();
        assert_eq!(pairs.len(), 2);
        for pair in &pairs {
            assert_eq!(pair.prompt, "P: orig?");
            assert_eq!(pair.chosen, "b-big");
            assert!(["w1", "w2", "w3"].contains(&pair.rejected.as_str()), "{pair:?}");
        }
        assert_ne!(pairs[0].rejected, pairs[1].rejected);
        // N+ = 2 brings in the second-best; N− above the number of worse takes them all.
        let pairs = build_pairs("P", &original, &rewrites, 5, 10, 7).unwrap();
        assert_eq!(pairs.len(), 2 * 3);
        assert_eq!(pairs.iter().filter(|p| p.chosen == "b-small").count(), 3);
        assert!(pairs.iter().all(|p| p.chosen != "mixed" && p.rejected != "mixed" && p.rejected != "same"));
        // Same seed, same pairs; the draw depends on the seed.
        assert_eq!(
            build_pairs("P", &original, &rewrites, 1, 1, 3).unwrap(),
            build_pairs("P", &original, &rewrites, 1, 1, 3).unwrap()
        );
        let draws: std::collections::BTreeSet<String> = (0..32)
            .map(|seed| build_pairs("P", &original, &rewrites, 1, 1, seed).unwrap()[0].rejected.clone())
            .collect();
        assert!(draws.len() > 1, "the worse rewrite should vary with the seed: {draws:?}");
    }

    #[test]
    fn no_pairs_without_both_sides() {
        let original = judged("orig?", 0.5, 1.0);
        assert!(build_pairs("P", &original, &[judged("b", 1.0, 0.0)], 10, 20, 0).unwrap().is_empty());
        assert!(build_pairs("P", &original, &[judged("w", 0.0, 2.0)], 10, 20, 0).unwrap().is_empty());
        assert!(build_pairs("P", &original, &[], 10, 20, 0).unwrap().is_empty());
    }

    #[test]
    fn unique_rewrites_skip_duplicates_and_the_original() {
        let mut kept = vec!["How tall is it?".to_owned()];
        let added = add_unique(
            &mut kept,
            [
                "how  tall is it".to_owned(),
                "What is X?".to_owned(),
                "what is x?".to_owned(),
                "Why?".to_owned(),
                "Z".to_owned(),
            ],
            "what is X",
            3,
        );
        assert_eq!(added, 2);
        assert_eq!(kept, ["How tall is it?", "Why?", "Z"]);
        assert_eq!(add_unique(&mut kept, ["New".to_owned()], "q", 3), 0);
    }
}
