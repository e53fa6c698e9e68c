//! Text similarity for deduplication and decontamination: word n-gram
//! shingles, exact Jaccard similarity, its MinHash estimate, and cosine
//! similarity of embeddings. Pure functions, unit-tested natively.

/// Lowercase word tokens: runs of letters and digits.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase).collect()
}

/// The set of word `n`-gram shingles of `text`, hashed (64-bit FNV-1a),
/// sorted, without repeats. A text shorter than `n` words is one shingle of
/// all its words; a text without words has no shingle.
pub fn shingles(text: &str, n: usize) -> Vec<u64> {
    let words = words(text);
    if words.is_empty() {
        return Vec::new();
    }
    let n = n.clamp(1, words.len());
    let mut out: Vec<u64> = words.windows(n).map(fnv1a).collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// 64-bit FNV-1a of words joined by a unit separator.
fn fnv1a(words: &[String]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, word) in words.iter().enumerate() {
        if i > 0 {
            hash = (hash ^ 0x1f).wrapping_mul(0x0100_0000_01b3);
        }
        for byte in word.bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// Jaccard similarity `|A ∩ B| / |A ∪ B|` of two sorted, repeat-free sets.
/// Two empty sets are identical (1); one empty set shares nothing (0).
pub fn jaccard(a: &[u64], b: &[u64]) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let (mut i, mut j, mut common) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            core::cmp::Ordering::Less => i += 1,
            core::cmp::Ordering::Greater => j += 1,
            core::cmp::Ordering::Equal => {
                common += 1;
                i += 1;
                j += 1;
            }
        }
    }
    common as f64 / (a.len() + b.len() - common) as f64
}

/// The Mersenne prime 2^61 − 1, the modulus of the MinHash permutations.
const PRIME: u64 = (1 << 61) - 1;

/// MinHash with `k` hash functions `h(x) = (a·x + b) mod (2^61 − 1)`, whose
/// coefficients come from a fixed seed, so signatures are comparable across
/// calls and runs.
#[derive(Clone, Debug)]
pub struct MinHasher {
    coefficients: Vec<(u64, u64)>,
}

impl MinHasher {
    /// The seed of the coefficients.
    pub const SEED: u64 = 0x7EC4_E11A_D00D_5EED;

    /// A hasher with `k` permutations (at least 1).
    pub fn new(k: usize) -> Self {
        let mut state = Self::SEED;
        let mut next = move || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        let coefficients = (0..k.max(1)).map(|_| (1 + next() % (PRIME - 1), next() % PRIME)).collect();
        MinHasher { coefficients }
    }

    /// The signature of a shingle set: per permutation, the least hash. The
    /// empty set's signature is all `u64::MAX`.
    pub fn signature(&self, shingles: &[u64]) -> Vec<u64> {
        self.coefficients
            .iter()
            .map(|&(a, b)| {
                shingles
                    .iter()
                    .map(|&x| ((u128::from(a) * u128::from(x % PRIME) + u128::from(b)) % u128::from(PRIME)) as u64)
                    .min()
                    .unwrap_or(u64::MAX)
            })
            .collect()
    }
}

/// The MinHash estimate of the Jaccard similarity: the share of
/// permutations on which two signatures agree (two empty sets agree
/// everywhere: 1).
pub fn minhash_similarity(a: &[u64], b: &[u64]) -> f64 {
    let k = a.len().min(b.len());
    if k == 0 {
        return 0.0;
    }
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / k as f64
}

/// Cosine similarity `a·b / (|a| |b|)` (over the common length); 0 when a
/// vector is zero. Works whether or not the vectors are normalised.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 { 0.0 } else { dot / (na.sqrt() * nb.sqrt()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_shingles() {
        assert_eq!(words("Summarize: the TEXT, please!"), ["summarize", "the", "text", "please"]);
        assert_eq!(shingles("a b c d", 3).len(), 2);
        assert_eq!(shingles("A  b", 3), shingles("a b", 3), "short texts are one shingle; case and spacing ignored");
        assert_eq!(shingles("x y x y x y", 2).len(), 2, "repeats collapse");
        assert!(shingles(" ... ", 3).is_empty());
    }

    #[test]
    fn jaccard_of_hand_worked_sets() {
        assert_eq!(jaccard(&[1, 2, 3], &[2, 3, 4]), 0.5);
        assert_eq!(jaccard(&[1, 2], &[3]), 0.0);
        assert_eq!(jaccard(&[], &[]), 1.0);
        assert_eq!(jaccard(&[], &[1]), 0.0);
        // "the cat sat on the mat" vs "the cat sat on a mat", word bigrams:
        // {the cat, cat sat, sat on, on the, the mat} vs {the cat, cat sat, sat on, on a, a mat}: 3 / 7.
        let (a, b) = (shingles("the cat sat on the mat", 2), shingles("the cat sat on a mat", 2));
        assert!((jaccard(&a, &b) - 3.0 / 7.0).abs() < 1e-12);
    }

    #[test]
    fn minhash_estimates_jaccard() {
        let hasher = MinHasher::new(256);
        let a: Vec<u64> = (0..100).collect();
        let b: Vec<u64> = (50..150).collect(); // exact Jaccard 50 / 150 = 1/3
        let estimate = minhash_similarity(&hasher.signature(&a), &hasher.signature(&b));
        assert!((estimate - 1.0 / 3.0).abs() < 0.1, "{estimate}");
        assert_eq!(minhash_similarity(&hasher.signature(&a), &hasher.signature(&a)), 1.0);
        let c: Vec<u64> = (1000..1100).collect();
        assert!(minhash_similarity(&hasher.signature(&a), &hasher.signature(&c)) < 0.05);
        assert_eq!(minhash_similarity(&hasher.signature(&[]), &hasher.signature(&[])), 1.0);
        assert_eq!(minhash_similarity(&hasher.signature(&[]), &hasher.signature(&a)), 0.0);
        // Deterministic across instances.
        assert_eq!(MinHasher::new(8).signature(&a), MinHasher::new(8).signature(&a));
        assert_eq!(minhash_similarity(&[], &[]), 0.0);
    }

    #[test]
    fn cosine_similarity() {
        assert!((cosine(&[1.0, 0.0], &[1.0, 1.0]) - 0.5f64.sqrt()).abs() < 1e-7);
        assert!((cosine(&[0.6, 0.8], &[0.6, 0.8]) - 1.0).abs() < 1e-7);
        assert_eq!(cosine(&[1.0, 0.0], &[0.0, 2.0]), 0.0);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
        assert!((cosine(&[2.0, 0.0], &[-3.0, 0.0]) + 1.0).abs() < 1e-12);
    }
}
