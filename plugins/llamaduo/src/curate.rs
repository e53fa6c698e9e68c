//! Curation of synthetic data: decontamination against the test prompts and
//! deduplication against each other and the existing data, as threshold
//! logic over similarities. Pure functions, unit-tested natively (the
//! embeddings are computed by the host and passed in).

use crate::similarity::{self, MinHasher};

/// How near-duplicates are found (parameter `dedupe-method`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DedupeMethod {
    /// MinHash estimate of the Jaccard similarity of word n-gram shingles.
    MinHash,
    /// Exact Jaccard similarity of word n-gram shingles.
    Ngram,
}

impl DedupeMethod {
    /// Parses the parameter's value: `minhash` or `ngram`.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "minhash" => Ok(DedupeMethod::MinHash),
            "ngram" => Ok(DedupeMethod::Ngram),
            other => Err(format!("parameter `dedupe-method` must be `minhash` or `ngram`, got `{other}`")),
        }
    }
}

/// Which text of an example is compared for deduplication (parameter
/// `dedupe-field`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DedupeField {
    /// The prompt only.
    Prompt,
    /// The prompt and the response together.
    Both,
}

impl DedupeField {
    /// Parses the parameter's value: `prompt` or `both`.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "prompt" => Ok(DedupeField::Prompt),
            "both" => Ok(DedupeField::Both),
            other => Err(format!("parameter `dedupe-field` must be `prompt` or `both`, got `{other}`")),
        }
    }

    /// The text of an example that is compared.
    pub fn text(self, prompt: &str, response: &str) -> String {
        match self {
            DedupeField::Prompt => prompt.to_owned(),
            DedupeField::Both => format!("{prompt}\n{response}"),
        }
    }
}

/// The deduplication rule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dedupe {
    /// How similarity is measured.
    pub method: DedupeMethod,
    /// Word n-gram size of the shingles.
    pub ngram_size: usize,
    /// MinHash permutations.
    pub permutations: usize,
    /// Similarity at or above which two texts are duplicates.
    pub threshold: f64,
}

/// Which `candidates` survive deduplication: a candidate is dropped when its
/// similarity to any `existing` text, or to any *earlier kept* candidate,
/// reaches the threshold (so of a group of duplicates the first is kept).
pub fn dedupe(candidates: &[String], existing: &[String], rule: &Dedupe) -> Vec<bool> {
    let shingle = |t: &String| similarity::shingles(t, rule.ngram_size);
    match rule.method {
        DedupeMethod::Ngram => {
            let existing: Vec<Vec<u64>> = existing.iter().map(shingle).collect();
            let candidates: Vec<Vec<u64>> = candidates.iter().map(shingle).collect();
            greedy(&candidates, &existing, rule.threshold, |a, b| similarity::jaccard(a, b))
        }
        DedupeMethod::MinHash => {
            let hasher = MinHasher::new(rule.permutations);
            let signature = |t: &String| hasher.signature(&shingle(t));
            let existing: Vec<Vec<u64>> = existing.iter().map(signature).collect();
            let candidates: Vec<Vec<u64>> = candidates.iter().map(signature).collect();
            greedy(&candidates, &existing, rule.threshold, |a, b| similarity::minhash_similarity(a, b))
        }
    }
}

/// Keeps each item unless it is `threshold`-similar to a reference or to an
/// earlier kept item.
fn greedy<T>(items: &[T], references: &[T], threshold: f64, similarity: impl Fn(&T, &T) -> f64) -> Vec<bool> {
    let mut kept: Vec<usize> = Vec::new();
    let mut keep = vec![false; items.len()];
    for (i, item) in items.iter().enumerate() {
        let duplicate =
            references.iter().chain(kept.iter().map(|&k| &items[k])).any(|other| similarity(item, other) >= threshold);
        if !duplicate {
            kept.push(i);
            keep[i] = true;
        }
    }
    keep
}

/// Which candidates are contaminated by the test set, from embeddings: the
/// highest cosine similarity to any test prompt reaches `threshold`.
pub fn contaminated_by_embeddings(candidates: &[Vec<f32>], tests: &[Vec<f32>], threshold: f64) -> Vec<bool> {
    candidates.iter().map(|c| tests.iter().any(|t| similarity::cosine(c, t) >= threshold)).collect()
}

/// Which candidates are contaminated by the test set, without embeddings:
/// the Jaccard similarity of word `n`-gram shingles to any test prompt
/// reaches `threshold`.
pub fn contaminated_by_ngrams(candidates: &[String], tests: &[String], n: usize, threshold: f64) -> Vec<bool> {
    let tests: Vec<Vec<u64>> = tests.iter().map(|t| similarity::shingles(t, n)).collect();
    candidates
        .iter()
        .map(|c| {
            let c = similarity::shingles(c, n);
            tests.iter().any(|t| similarity::jaccard(&c, t) >= threshold)
        })
        .collect()
}

/// Indices (ascending) of the candidates that are neither contaminated nor
/// duplicates.
pub fn kept_indices(contaminated: &[bool], unique: &[bool]) -> Vec<u32> {
    contaminated
        .iter()
        .zip(unique)
        .enumerate()
        .filter(|(_, (c, u))| !**c && **u)
        .filter_map(|(i, _)| u32::try_from(i).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(texts: &[&str]) -> Vec<String> {
        texts.iter().map(|t| (*t).to_owned()).collect()
    }

    fn rule(method: DedupeMethod, threshold: f64) -> Dedupe {
        Dedupe { method, ngram_size: 2, permutations: 256, threshold }
    }

    #[test]
    fn parameters_parse() {
        assert_eq!(DedupeMethod::parse("MinHash"), Ok(DedupeMethod::MinHash));
        assert_eq!(DedupeMethod::parse("ngram"), Ok(DedupeMethod::Ngram));
        assert!(DedupeMethod::parse("simhash").is_err());
        assert_eq!(DedupeField::parse(" both "), Ok(DedupeField::Both));
        assert!(DedupeField::parse("response").is_err());
        assert_eq!(DedupeField::Both.text("p", "r"), "p\nr");
        assert_eq!(DedupeField::Prompt.text("p", "r"), "p");
    }

    #[test]
    fn ngram_dedupe_keeps_the_first_of_each_group() {
        let candidates = strings(&[
            "Summarize the article about climate change.",
            "summarize the article about climate change!", // duplicate of 0
            "Translate the sentence into French.",
            "Write a haiku about autumn leaves.",          // duplicate of existing
            "Summarize the article about climate policy.", // bigram Jaccard 4/6 with 0
        ]);
        let existing = strings(&["Write a haiku about autumn leaves"]);
        assert_eq!(dedupe(&candidates, &existing, &rule(DedupeMethod::Ngram, 0.7)), [true, false, true, false, true]);
        assert_eq!(dedupe(&candidates, &existing, &rule(DedupeMethod::Ngram, 0.6)), [true, false, true, false, false]);
    }

    #[test]
    fn minhash_dedupe_agrees_on_clear_cases() {
        let candidates = strings(&[
            "Explain how photosynthesis converts light into chemical energy in plants.",
            "Explain how photosynthesis converts light into chemical energy in plants",
            "List three causes of the French Revolution and explain each briefly.",
        ]);
        assert_eq!(dedupe(&candidates, &[], &rule(DedupeMethod::MinHash, 0.8)), [true, false, true]);
        assert_eq!(dedupe(&[], &candidates, &rule(DedupeMethod::MinHash, 0.8)), Vec::<bool>::new());
    }

    #[test]
    fn decontamination() {
        let candidates = vec![vec![1.0, 0.0], vec![0.6, 0.8], vec![0.0, 1.0]];
        let tests = vec![vec![0.0, 2.0]];
        // cosines with the test: 0, 0.8 (up to f32 rounding), 1.
        assert_eq!(contaminated_by_embeddings(&candidates, &tests, 0.9), [false, false, true]);
        assert_eq!(contaminated_by_embeddings(&candidates, &tests, 0.79), [false, true, true]);
        assert_eq!(contaminated_by_embeddings(&candidates, &[], 0.5), [false, false, false]);

        let texts = strings(&["What is the capital of France?", "Name a prime number."]);
        let tests = strings(&["what is the capital of france"]);
        assert_eq!(contaminated_by_ngrams(&texts, &tests, 3, 0.5), [true, false]);
    }

    #[test]
    fn kept_is_neither_contaminated_nor_duplicate() {
        assert_eq!(kept_indices(&[false, true, false, false], &[true, true, false, true]), [0, 3]);
        assert!(kept_indices(&[], &[]).is_empty());
    }
}
