//! Prompt-OIRL's learned reward model (Sun et al., *Query-Dependent Prompt
//! Evaluation and Optimization with Offline Inverse RL*, arXiv 2309.06553):
//! r(query, prompt) ≈ P(the target model answers the query correctly when
//! sent with the prompt), learned offline from logged outcomes of known
//! prompts, then used at inference to pick, per query, the known prompt
//! with the highest predicted reward.
//!
//! - **Features** ([`features`]): from the L2-normalised sentence
//!   embeddings q of the query and p of the prompt, the concatenation
//!   `[q, p, q⊙p, |q−p|]` (4·d values; layout [`FEATURE_LAYOUT`]). The
//!   product and distance blocks let a linear model express which prompt
//!   suits which kind of query. Each feature is standardised with the
//!   training set's mean and standard deviation, stored in the model.
//! - **Model**: L2-regularised logistic regression (the paper uses gradient
//!   boosting; a linear model on these features is small enough to fit
//!   inside the plugin in seconds and to ship as JSON). [`fit`] minimises
//!   the mean log-loss plus `l2/2·‖w‖²` by full-batch gradient descent with
//!   a backtracking (Armijo) line search from zero weights, so the loss
//!   never increases and the same data give bit-identical weights. The
//!   penalty is chosen by k-fold cross-validation grouped by query
//!   ([`choose_l2`]: lowest held-out log-loss over a grid), since with 4·d
//!   features and a few hundred outcomes an unregularised fit memorises
//!   the log.
//! - **Artifact** ([`RewardModel`]): versioned JSON with the embedding
//!   model's name and dimension, the feature layout, the standardisation,
//!   the weights and a training summary. Loading it for embeddings of
//!   another dimension fails with a message saying how to fix it.
//!
//! Pure functions; no host calls, so unit-tested natively.

use serde::{Deserialize, Serialize};

/// The `format` tag of the model JSON.
pub const FORMAT: &str = "techne-prompt-oirl-reward-model";
/// The version of the model JSON this plugin writes and reads.
pub const VERSION: u32 = 1;
/// How the feature vector is laid out, recorded in the model.
pub const FEATURE_LAYOUT: &str = "q,p,q*p,|q-p|";

/// The feature vector of a query embedding `q` and a prompt embedding `p`
/// (same dimension d): `[q, p, q⊙p, |q−p|]`, 4·d values.
pub fn features(q: &[f32], p: &[f32]) -> Vec<f64> {
    let mut out = Vec::with_capacity(4 * q.len());
    out.extend(q.iter().map(|&x| f64::from(x)));
    out.extend(p.iter().map(|&x| f64::from(x)));
    out.extend(q.iter().zip(p).map(|(&a, &b)| f64::from(a) * f64::from(b)));
    out.extend(q.iter().zip(p).map(|(&a, &b)| (f64::from(a) - f64::from(b)).abs()));
    out
}

/// Settings of [`fit`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FitSettings {
    /// L2 penalty on the weights (not the bias), on standardised features.
    pub l2: f64,
    /// Upper bound on gradient-descent iterations.
    pub max_iterations: u32,
    /// Stop when the gradient's norm falls below this.
    pub tolerance: f64,
}

impl Default for FitSettings {
    fn default() -> Self {
        FitSettings { l2: 0.01, max_iterations: 500, tolerance: 1e-6 }
    }
}

/// A fitted logistic regression on standardised features.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Logistic {
    /// Per-feature mean of the training set.
    pub mean: Vec<f64>,
    /// Per-feature standard deviation of the training set (1 where it is 0).
    pub scale: Vec<f64>,
    /// One weight per standardised feature.
    pub weights: Vec<f64>,
    /// The bias.
    pub bias: f64,
}

/// How a fit went.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FitReport {
    /// Gradient-descent iterations run.
    pub iterations: u32,
    /// The objective (mean log-loss + L2 term) at the start (zero weights
    /// and bias).
    pub initial_loss: f64,
    /// The objective at the end.
    pub final_loss: f64,
    /// The objective after each iteration, for checking convergence.
    #[serde(skip)]
    pub losses: Vec<f64>,
    /// Share of training examples classified correctly at threshold 0.5.
    pub train_accuracy: f64,
}

/// Why a fit is impossible.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FitError {
    /// No examples, or rows of different lengths.
    BadInput(String),
    /// Every label is the same: nothing to learn.
    OneClass {
        /// The label every example has.
        correct: bool,
    },
}

impl std::fmt::Display for FitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FitError::BadInput(m) => f.write_str(m),
            FitError::OneClass { correct } => write!(
                f,
                "every logged outcome is {}: the reward model needs both correct and incorrect outcomes; collect \
                 more queries or more candidate prompts (or lower the reward threshold that labels them)",
                if *correct { "correct" } else { "incorrect" }
            ),
        }
    }
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// log(1 + e^z), computed stably.
fn softplus(z: f64) -> f64 {
    if z > 0.0 { z + (-z).exp().ln_1p() } else { z.exp().ln_1p() }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Objective and gradient (weights, bias) at `(w, b)` on standardised rows.
fn objective(rows: &[Vec<f64>], labels: &[bool], w: &[f64], b: f64, l2: f64) -> (f64, Vec<f64>, f64) {
    let n = rows.len() as f64;
    let mut loss = 0.0;
    let mut grad = vec![0.0; w.len()];
    let mut grad_b = 0.0;
    for (row, &label) in rows.iter().zip(labels) {
        let z = dot(row, w) + b;
        // -log σ(z) for a positive, -log(1 - σ(z)) for a negative.
        loss += if label { softplus(-z) } else { softplus(z) };
        let residual = sigmoid(z) - if label { 1.0 } else { 0.0 };
        for (g, x) in grad.iter_mut().zip(row) {
            *g += residual * x;
        }
        grad_b += residual;
    }
    loss /= n;
    grad_b /= n;
    for (g, wi) in grad.iter_mut().zip(w) {
        *g = *g / n + l2 * wi;
    }
    loss += 0.5 * l2 * dot(w, w);
    (loss, grad, grad_b)
}

/// Fits an L2-regularised logistic regression of `labels` on `rows` (raw
/// features, all of one length): standardises the features, then runs
/// gradient descent with a backtracking line search from zero weights.
/// Deterministic.
pub fn fit(rows: &[Vec<f64>], labels: &[bool], settings: &FitSettings) -> Result<(Logistic, FitReport), FitError> {
    let Some(first) = rows.first() else {
        return Err(FitError::BadInput("no examples to fit the reward model on".into()));
    };
    let dim = first.len();
    if rows.len() != labels.len() || rows.iter().any(|r| r.len() != dim) || dim == 0 {
        return Err(FitError::BadInput("the examples' feature vectors differ in length".into()));
    }
    if labels.iter().all(|&l| l == labels[0]) {
        return Err(FitError::OneClass { correct: labels[0] });
    }
    if !(settings.l2 >= 0.0 && settings.l2.is_finite()) {
        return Err(FitError::BadInput("the L2 penalty must be a finite number, 0 or more".into()));
    }
    let n = rows.len() as f64;
    let mut mean = vec![0.0; dim];
    for row in rows {
        for (m, x) in mean.iter_mut().zip(row) {
            *m += x / n;
        }
    }
    let mut scale = vec![0.0; dim];
    for row in rows {
        for ((s, x), m) in scale.iter_mut().zip(row).zip(&mean) {
            *s += (x - m) * (x - m) / n;
        }
    }
    for s in &mut scale {
        *s = if *s > 1e-24 { s.sqrt() } else { 1.0 };
    }
    let standardised: Vec<Vec<f64>> =
        rows.iter().map(|row| row.iter().zip(&mean).zip(&scale).map(|((x, m), s)| (x - m) / s).collect()).collect();

    let mut w = vec![0.0; dim];
    let mut b = 0.0;
    let (mut loss, mut grad, mut grad_b) = objective(&standardised, labels, &w, b, settings.l2);
    let initial_loss = loss;
    let mut losses = Vec::new();
    let mut step = 1.0;
    let mut iterations = 0;
    while iterations < settings.max_iterations {
        let grad_norm2 = dot(&grad, &grad) + grad_b * grad_b;
        if grad_norm2.sqrt() < settings.tolerance {
            break;
        }
        iterations += 1;
        // Backtracking: halve the step until the Armijo condition holds.
        step *= 2.0;
        let accepted = loop {
            let candidate_w: Vec<f64> = w.iter().zip(&grad).map(|(wi, g)| wi - step * g).collect();
            let candidate_b = b - step * grad_b;
            let (l, g, gb) = objective(&standardised, labels, &candidate_w, candidate_b, settings.l2);
            if l <= loss - 0.5 * step * grad_norm2 {
                break Some((candidate_w, candidate_b, l, g, gb));
            }
            step *= 0.5;
            if step < 1e-12 {
                break None;
            }
        };
        let Some((new_w, new_b, l, g, gb)) = accepted else {
            break;
        };
        (w, b, loss, grad, grad_b) = (new_w, new_b, l, g, gb);
        losses.push(loss);
    }
    let model = Logistic { mean, scale, weights: w, bias: b };
    let hits = rows.iter().zip(labels).filter(|&(row, &label)| (model.probability(row) >= 0.5) == label).count();
    let report = FitReport { iterations, initial_loss, final_loss: loss, losses, train_accuracy: hits as f64 / n };
    Ok((model, report))
}

impl Logistic {
    /// P(correct) for one raw feature vector (of the training length).
    pub fn probability(&self, row: &[f64]) -> f64 {
        let z: f64 = row
            .iter()
            .zip(&self.mean)
            .zip(&self.scale)
            .zip(&self.weights)
            .map(|(((x, m), s), w)| (x - m) / s * w)
            .sum::<f64>()
            + self.bias;
        sigmoid(z)
    }
}

/// Mean log-loss of `model` on `rows`, with probabilities clamped away
/// from 0 and 1 so that one confident mistake stays finite.
pub fn log_loss(model: &Logistic, rows: &[Vec<f64>], labels: &[bool]) -> f64 {
    let total: f64 = rows
        .iter()
        .zip(labels)
        .map(|(row, &label)| {
            let p = model.probability(row).clamp(1e-12, 1.0 - 1e-12);
            -(if label { p } else { 1.0 - p }).ln()
        })
        .sum();
    total / rows.len().max(1) as f64
}

/// The held-out log-loss of one L2 penalty in [`choose_l2`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct L2Score {
    /// The penalty.
    pub l2: f64,
    /// Mean log-loss over every held-out example.
    pub cv_log_loss: f64,
}

/// Chooses the L2 penalty among `grid` by `folds`-fold cross-validation
/// grouped by query: example `i` is held out in fold `groups[i] % folds`, so
/// a query's outcomes are never split between training and validation. The
/// penalty with the lowest held-out log-loss wins (ties: the larger
/// penalty). Folds whose training part has one class only are skipped.
/// Deterministic. Returns the penalty and every score.
pub fn choose_l2(
    rows: &[Vec<f64>],
    labels: &[bool],
    groups: &[usize],
    folds: usize,
    grid: &[f64],
    settings: &FitSettings,
) -> Result<(f64, Vec<L2Score>), FitError> {
    if folds < 2 || grid.is_empty() || groups.len() != rows.len() {
        return Err(FitError::BadInput("cross-validation needs 2 or more folds, a grid and one group per row".into()));
    }
    let mut scores = Vec::with_capacity(grid.len());
    for &l2 in grid {
        let (mut loss, mut held_out) = (0.0, 0usize);
        for fold in 0..folds {
            let in_fold = |i: usize| groups[i] % folds == fold;
            let split = |held: bool| -> (Vec<Vec<f64>>, Vec<bool>) {
                (0..rows.len()).filter(|&i| in_fold(i) == held).map(|i| (rows[i].clone(), labels[i])).unzip()
            };
            let (train_rows, train_labels) = split(false);
            let (test_rows, test_labels) = split(true);
            if test_rows.is_empty() {
                continue;
            }
            match fit(&train_rows, &train_labels, &FitSettings { l2, ..*settings }) {
                Ok((model, _)) => {
                    loss += log_loss(&model, &test_rows, &test_labels) * test_rows.len() as f64;
                    held_out += test_rows.len();
                }
                Err(FitError::OneClass { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        if held_out > 0 {
            scores.push(L2Score { l2, cv_log_loss: loss / held_out as f64 });
        }
    }
    let best = scores
        .iter()
        .fold(None::<&L2Score>, |best, s| match best {
            Some(b) if b.cv_log_loss < s.cv_log_loss || (b.cv_log_loss == s.cv_log_loss && b.l2 > s.l2) => Some(b),
            _ => Some(s),
        })
        .ok_or_else(|| {
            FitError::BadInput(
                "no cross-validation fold had both correct and incorrect outcomes to train on: log more queries, or \
                 set oirl-cv-folds = 1 to use oirl-l2 as given"
                    .into(),
            )
        })?;
    Ok((best.l2, scores))
}

/// What the training data looked like, kept in the model for the record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingSummary {
    /// Logged outcomes fitted on.
    pub examples: usize,
    /// Of those, correct ones.
    pub correct: usize,
    /// The distinct prompts of the training data, in first-seen order.
    pub prompts: Vec<String>,
    /// L2 penalty used.
    pub l2: f64,
    /// How the penalty was chosen: the cross-validated log-loss of each
    /// penalty tried (empty when it was given).
    #[serde(default)]
    pub l2_selection: Vec<L2Score>,
    /// How the fit went.
    pub fit: FitReport,
}

/// Prompt-OIRL's reward model as stored on disk (JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RewardModel {
    /// Always [`FORMAT`].
    pub format: String,
    /// Always [`VERSION`] for models this plugin writes.
    pub version: u32,
    /// The embedding model (its configured name) the features were made with.
    pub embedding_model: String,
    /// Dimension of its embeddings.
    pub embedding_dim: usize,
    /// Always [`FEATURE_LAYOUT`].
    pub feature_layout: String,
    /// The classifier.
    pub classifier: Logistic,
    /// How it was trained.
    pub training: TrainingSummary,
}

impl RewardModel {
    /// Reads and checks a model; `embedding_dim` is the dimension of the
    /// embeddings it will be applied to, when already known.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let model: RewardModel = serde_json::from_str(text).map_err(|e| {
            format!(
                "parameter `reward-model` is not a Prompt-OIRL reward model ({e}): give the JSON file that `techne \
                 collect oirl-reward-model` wrote, e.g. `[plugins.NAME.param-files] reward-model = \"model.json\"`"
            )
        })?;
        if model.format != FORMAT || model.version != VERSION {
            return Err(format!(
                "parameter `reward-model`: format `{}` version {} is not `{FORMAT}` version {VERSION}: refit it with \
                 this plugin's `techne collect oirl-reward-model`",
                model.format, model.version
            ));
        }
        if model.feature_layout != FEATURE_LAYOUT {
            return Err(format!(
                "parameter `reward-model`: feature layout `{}` is not `{FEATURE_LAYOUT}`: refit it with this plugin",
                model.feature_layout
            ));
        }
        let dim = 4 * model.embedding_dim;
        let c = &model.classifier;
        if model.embedding_dim == 0 || c.mean.len() != dim || c.scale.len() != dim || c.weights.len() != dim {
            return Err(format!(
                "parameter `reward-model`: the classifier does not have 4 x {} features: the file is damaged; refit it",
                model.embedding_dim
            ));
        }
        if c.scale.iter().any(|s| *s <= 0.0) || !c.bias.is_finite() || c.weights.iter().any(|w| !w.is_finite()) {
            return Err("parameter `reward-model`: non-finite weights or non-positive scales: refit it".into());
        }
        Ok(model)
    }

    /// Checks that embeddings of dimension `dim` (from `model`) fit this
    /// reward model.
    pub fn check_embeddings(&self, model: &str, dim: usize) -> Result<(), String> {
        if dim == self.embedding_dim {
            return Ok(());
        }
        Err(format!(
            "the reward model was fitted on {}-dimensional embeddings from `{}`, but `{model}` returns {dim} \
             dimensions: set parameter `embedding-model` to the model it was fitted with, or refit it with `techne \
             collect oirl-reward-model` on `{model}`",
            self.embedding_dim, self.embedding_model
        ))
    }

    /// The predicted reward, P(correct), of prompt embedding `p` on query
    /// embedding `q`.
    pub fn reward(&self, q: &[f32], p: &[f32]) -> f64 {
        self.classifier.probability(&features(q, p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic pseudo-random sequence in [-1, 1).
    fn noise(seed: u64, n: usize) -> Vec<f64> {
        let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((x >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
            })
            .collect()
    }

    /// Rows whose label is `x0 + 0.5·x1 > 0`, a separable rule, plus noise dims.
    fn separable(n: usize, seed: u64) -> (Vec<Vec<f64>>, Vec<bool>) {
        let rows: Vec<Vec<f64>> = (0..n).map(|i| noise(seed + i as u64, 6)).collect();
        let labels = rows.iter().map(|r| r[0] + 0.5 * r[1] > 0.0).collect();
        (rows, labels)
    }

    #[test]
    fn recovers_a_separable_rule() {
        let (rows, labels) = separable(200, 1);
        let (model, report) = fit(&rows, &labels, &FitSettings { l2: 1e-4, ..FitSettings::default() }).unwrap();
        assert!(report.train_accuracy >= 0.97, "{report:?}");
        let (test_rows, test_labels) = separable(200, 10_000);
        let hits = test_rows.iter().zip(&test_labels).filter(|&(r, &l)| (model.probability(r) >= 0.5) == l).count();
        assert!(hits >= 185, "held-out accuracy {hits}/200");
        // The rule's dimensions carry the largest weights (in standardised units).
        let w = &model.weights;
        assert!(w[0] > w[1] && w[1] > 0.0, "{w:?}");
        assert!(w[2..].iter().all(|x| x.abs() < w[1]), "{w:?}");
    }

    #[test]
    fn loss_decreases_monotonically() {
        let (rows, labels) = separable(80, 7);
        let (_, report) = fit(&rows, &labels, &FitSettings::default()).unwrap();
        assert!(report.iterations > 5);
        assert!(report.final_loss < 0.5 * report.initial_loss, "{report:?}");
        assert!((report.initial_loss - std::f64::consts::LN_2).abs() < 1e-12, "zero weights give log 2");
        assert!(report.losses.windows(2).all(|w| w[1] <= w[0]), "{:?}", report.losses);
    }

    #[test]
    fn fitting_is_deterministic() {
        let (rows, labels) = separable(60, 3);
        let a = fit(&rows, &labels, &FitSettings::default()).unwrap();
        let b = fit(&rows, &labels, &FitSettings::default()).unwrap();
        assert_eq!(a.0, b.0);
        assert_eq!(a.1.final_loss.to_bits(), b.1.final_loss.to_bits());
    }

    #[test]
    fn cross_validation_regularises_noise_more_than_a_clean_rule() {
        let grid = [0.001, 0.1, 10.0];
        let settings = FitSettings { max_iterations: 200, ..FitSettings::default() };
        let (rows, labels) = separable(120, 21);
        let groups: Vec<usize> = (0..rows.len()).collect();
        let (clean, scores) = choose_l2(&rows, &labels, &groups, 4, &grid, &settings).unwrap();
        assert_eq!(scores.len(), 3);
        // Labels independent of the features: only a strong penalty avoids overfitting.
        let noise_labels: Vec<bool> = noise(99, rows.len()).iter().map(|x| *x > 0.0).collect();
        let (noisy, _) = choose_l2(&rows, &noise_labels, &groups, 4, &grid, &settings).unwrap();
        assert!(clean < noisy, "clean rule {clean}, noise {noisy}");
        assert_eq!(noisy, 10.0);
        // Deterministic.
        assert_eq!(choose_l2(&rows, &labels, &groups, 4, &grid, &settings).unwrap().1, scores);
        assert!(choose_l2(&rows, &labels, &groups, 1, &grid, &settings).is_err());
    }

    #[test]
    fn one_class_and_bad_input_are_rejected() {
        let rows = vec![vec![1.0, 2.0], vec![2.0, 1.0]];
        let err = fit(&rows, &[true, true], &FitSettings::default()).unwrap_err();
        assert_eq!(err, FitError::OneClass { correct: true });
        assert!(err.to_string().contains("both correct and incorrect"));
        assert!(matches!(fit(&[], &[], &FitSettings::default()), Err(FitError::BadInput(_))));
        let ragged = vec![vec![1.0], vec![2.0, 1.0]];
        assert!(matches!(fit(&ragged, &[true, false], &FitSettings::default()), Err(FitError::BadInput(_))));
    }

    #[test]
    fn features_follow_the_layout() {
        let f = features(&[0.6, 0.8], &[1.0, 0.0]);
        let expected = [0.6, 0.8, 1.0, 0.0, 0.6, 0.0, 0.4, 0.8];
        assert!(f.iter().zip(expected).all(|(a, b)| (a - b).abs() < 1e-6), "{f:?}");
    }

    fn tiny_model() -> RewardModel {
        let rows = vec![features(&[1.0, 0.0], &[1.0, 0.0]), features(&[0.0, 1.0], &[1.0, 0.0])];
        let (classifier, fit) = fit(&rows, &[true, false], &FitSettings::default()).unwrap();
        RewardModel {
            format: FORMAT.into(),
            version: VERSION,
            embedding_model: "minilm".into(),
            embedding_dim: 2,
            feature_layout: FEATURE_LAYOUT.into(),
            classifier,
            training: TrainingSummary {
                examples: 2,
                correct: 1,
                prompts: vec!["Think.".into()],
                l2: 0.01,
                l2_selection: Vec::new(),
                fit,
            },
        }
    }

    #[test]
    fn model_json_round_trips_and_is_checked() {
        let model = tiny_model();
        let json = serde_json::to_string(&model).unwrap();
        let back = RewardModel::from_json(&json).unwrap();
        assert_eq!(back.classifier, model.classifier);
        assert!(back.reward(&[1.0, 0.0], &[1.0, 0.0]) > back.reward(&[0.0, 1.0], &[1.0, 0.0]));

        let err = back.check_embeddings("big", 768).unwrap_err();
        assert!(err.contains("2-dimensional embeddings from `minilm`") && err.contains("768"), "{err}");
        assert!(back.check_embeddings("minilm", 2).is_ok());

        let mut other = model.clone();
        other.version = 2;
        let err = RewardModel::from_json(&serde_json::to_string(&other).unwrap()).unwrap_err();
        assert!(err.contains("refit"), "{err}");
        let mut damaged = model;
        damaged.classifier.weights.pop();
        let err = RewardModel::from_json(&serde_json::to_string(&damaged).unwrap()).unwrap_err();
        assert!(err.contains("4 x 2 features"), "{err}");
        assert!(RewardModel::from_json("{").unwrap_err().contains("techne collect oirl-reward-model"));
    }
}
