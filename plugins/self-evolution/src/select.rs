//! Choosing a generation's fine-tuning set: the current generation's pairs
//! by IFD, plus earlier generations' pairs re-used according to a mode.
//! Pure functions (randomness comes in as a seed), unit-tested natively.

/// How pairs of earlier generations are re-used (parameter `mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reuse {
    /// The `reuse-k` earlier pairs with the highest IFD.
    Top,
    /// `reuse-k` earlier pairs drawn uniformly at random (seeded by the work
    /// item, so reproducible).
    Random,
    /// Every earlier pair.
    All,
    /// No earlier pair: only the current generation's.
    None,
}

impl Reuse {
    /// Parses the parameter's value: `top`, `random`, `all` or `none`.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "top" => Ok(Reuse::Top),
            "random" => Ok(Reuse::Random),
            "all" => Ok(Reuse::All),
            "none" => Ok(Reuse::None),
            other => Err(format!("parameter `mode` must be `top`, `random`, `all` or `none`, got `{other}`")),
        }
    }
}

/// The selection rule of one call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rule {
    /// Pairs kept from the current generation, highest IFD first.
    pub top_k: usize,
    /// How earlier generations are re-used.
    pub reuse: Reuse,
    /// Earlier pairs re-used by `Top` and `Random`.
    pub reuse_k: usize,
    /// Pairs whose IFD is above this are never selected (their question does
    /// not help the answer); pairs with a non-finite IFD neither.
    pub max_ifd: f64,
}

/// A candidate as the rule sees it: its generation and its IFD.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Candidate {
    /// The generation that wrote the pair.
    pub generation: u32,
    /// Its IFD.
    pub ifd: f64,
}

/// The indices into `candidates` of the fine-tuning set of `generation`,
/// ascending, without repeats. Fails when a candidate comes from a later
/// generation than `generation`.
pub fn select(candidates: &[Candidate], generation: u32, rule: &Rule, seed: u64) -> Result<Vec<u32>, String> {
    if let Some((i, c)) = candidates.iter().enumerate().find(|(_, c)| c.generation > generation) {
        return Err(format!(
            "candidate {i} comes from generation {} but the selection is for generation {generation}",
            c.generation
        ));
    }
    let eligible = |c: &Candidate| c.ifd.is_finite() && c.ifd <= rule.max_ifd;
    let current: Vec<usize> =
        (0..candidates.len()).filter(|&i| candidates[i].generation == generation && eligible(&candidates[i])).collect();
    let earlier: Vec<usize> =
        (0..candidates.len()).filter(|&i| candidates[i].generation < generation && eligible(&candidates[i])).collect();

    let mut chosen = top_by_ifd(candidates, current, rule.top_k);
    chosen.extend(match rule.reuse {
        Reuse::Top => top_by_ifd(candidates, earlier, rule.reuse_k),
        Reuse::Random => sample(&earlier, rule.reuse_k, seed),
        Reuse::All => earlier,
        Reuse::None => Vec::new(),
    });
    chosen.sort_unstable();
    chosen.dedup();
    chosen
        .into_iter()
        .map(|i| u32::try_from(i).map_err(|_| format!("candidate index {i} does not fit in 32 bits")))
        .collect()
}

/// The `k` indices with the highest IFD; ties keep index order.
fn top_by_ifd(candidates: &[Candidate], mut indices: Vec<usize>, k: usize) -> Vec<usize> {
    indices.sort_by(|&a, &b| candidates[b].ifd.total_cmp(&candidates[a].ifd).then(a.cmp(&b)));
    indices.truncate(k);
    indices
}

/// `k` items of `items` drawn without replacement (all of them when `k` is
/// at least their number), reproducibly from `seed` (partial Fisher-Yates
/// on a SplitMix64 stream).
pub fn sample(items: &[usize], k: usize, seed: u64) -> Vec<usize> {
    let mut pool = items.to_vec();
    let k = k.min(pool.len());
    let mut rng = SplitMix64(seed);
    for i in 0..k {
        let j = i + rng.below((pool.len() - i) as u64) as usize;
        pool.swap(i, j);
    }
    pool.truncate(k);
    pool
}

/// The SplitMix64 generator (Steele, Lea and Flood 2014): small, fast and
/// well mixed; enough for reproducible sampling.
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0), by multiply-shift (bias below 2^-32
    /// for any realistic `n`).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(generation: u32, ifd: f64) -> Candidate {
        Candidate { generation, ifd }
    }

    fn rule(reuse: Reuse) -> Rule {
        Rule { top_k: 2, reuse, reuse_k: 1, max_ifd: 1.0 }
    }

    fn pool() -> Vec<Candidate> {
        vec![
            c(0, 0.9),      // 0: earlier, highest earlier IFD
            c(0, 0.3),      // 1: earlier
            c(1, 0.5),      // 2: current
            c(1, 0.95),     // 3: current, highest
            c(1, 1.2),      // 4: current, IFD > 1: never selected
            c(1, 0.7),      // 5: current, second highest
            c(0, f64::NAN), // 6: earlier, undefined IFD
        ]
    }

    #[test]
    fn modes_parse() {
        assert_eq!(Reuse::parse(" Random "), Ok(Reuse::Random));
        assert_eq!(Reuse::parse("none"), Ok(Reuse::None));
        assert!(Reuse::parse("best").unwrap_err().contains("`best`"));
    }

    #[test]
    fn current_generation_by_ifd_and_earlier_by_mode() {
        let pool = pool();
        assert_eq!(select(&pool, 1, &rule(Reuse::None), 0).unwrap(), [3, 5]);
        assert_eq!(select(&pool, 1, &rule(Reuse::Top), 0).unwrap(), [0, 3, 5]);
        assert_eq!(select(&pool, 1, &rule(Reuse::All), 0).unwrap(), [0, 1, 3, 5]);
        let random = select(&pool, 1, &rule(Reuse::Random), 7).unwrap();
        assert_eq!(random.len(), 3);
        assert!(random.contains(&3) && random.contains(&5));
        assert!(random.contains(&0) || random.contains(&1));
        assert_eq!(select(&pool, 1, &rule(Reuse::Random), 7).unwrap(), random, "same seed, same set");
    }

    #[test]
    fn limits_and_errors() {
        let pool = pool();
        let wide = Rule { top_k: 10, reuse: Reuse::Top, reuse_k: 10, max_ifd: 2.0 };
        assert_eq!(select(&pool, 1, &wide, 0).unwrap(), [0, 1, 2, 3, 4, 5]);
        let none = Rule { top_k: 0, reuse: Reuse::None, reuse_k: 0, max_ifd: 1.0 };
        assert!(select(&pool, 1, &none, 0).unwrap().is_empty());
        // Generation 0 has no earlier generation: mode does not matter.
        assert_eq!(select(&pool[..2], 0, &rule(Reuse::All), 0).unwrap(), [0, 1]);
        assert!(select(&pool, 0, &rule(Reuse::None), 0).unwrap_err().contains("candidate 2 comes from generation 1"));
        assert!(select(&[], 3, &rule(Reuse::All), 0).unwrap().is_empty());
    }

    #[test]
    fn ties_keep_index_order() {
        let pool = [c(0, 0.5), c(0, 0.5), c(0, 0.5)];
        assert_eq!(select(&pool, 0, &rule(Reuse::None), 0).unwrap(), [0, 1]);
    }

    #[test]
    fn splitmix_matches_the_reference_and_sampling_is_uniformish() {
        // Reference values of SplitMix64 seeded with 0.
        let mut rng = SplitMix64(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
        let items: Vec<usize> = (0..10).collect();
        let picked = sample(&items, 4, 42);
        assert_eq!(picked.len(), 4);
        let mut unique = picked.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 4);
        assert_eq!(sample(&items, 20, 1).len(), 10);
        assert!(sample(&[], 3, 1).is_empty());
        // Each of 10 items is drawn about 1/10 of the time over many seeds.
        let mut hits = [0u32; 10];
        for seed in 0..5000 {
            hits[sample(&items, 1, seed)[0]] += 1;
        }
        assert!(hits.iter().all(|&h| (400..600).contains(&h)), "{hits:?}");
    }
}
