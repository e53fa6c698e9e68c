//! The optimizer: AdamW (PyTorch's `torch.optim.AdamW` update, decoupled
//! weight decay), learning-rate schedules with linear warmup (the formulas of
//! transformers' `get_cosine_schedule_with_warmup` and friends) and
//! global-norm gradient clipping (`torch.nn.utils.clip_grad_norm_`).
//!
//! Parameters, gradients and moments are flat `f32` vectors, one per trained
//! tensor: the trained LoRA adapters are small, the arithmetic is plain,
//! sequential and therefore bit-reproducible, and the state is trivially
//! written into checkpoints.

use serde::{Deserialize, Serialize};

/// The shape of the learning-rate curve after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Schedule {
    /// Half a cosine from the peak down to `min_lr_ratio × peak`.
    #[default]
    Cosine,
    /// A straight line from the peak down to `min_lr_ratio × peak`.
    Linear,
    /// The peak, constant.
    Constant,
}

/// Optimizer and schedule settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimConfig {
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Decoupled weight decay (AdamW); applied to every trained tensor.
    pub weight_decay: f64,
    /// Adam β₁.
    pub beta1: f64,
    /// Adam β₂.
    pub beta2: f64,
    /// Adam ε.
    pub eps: f64,
    /// Warmup steps; when 0, `warmup_ratio × total steps` (rounded up).
    pub warmup_steps: usize,
    /// Fraction of the steps used for warmup when `warmup_steps` is 0.
    pub warmup_ratio: f64,
    /// The curve after warmup.
    pub schedule: Schedule,
    /// The final learning rate as a fraction of the peak.
    pub min_lr_ratio: f64,
    /// Clip the global gradient norm to this value (`None`: no clipping).
    pub max_grad_norm: Option<f64>,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            learning_rate: 2e-4,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            warmup_steps: 0,
            warmup_ratio: 0.0,
            schedule: Schedule::Cosine,
            min_lr_ratio: 0.0,
            max_grad_norm: Some(1.0),
        }
    }
}

impl OptimConfig {
    /// Checks the values; the message says which one is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let finite_pos = |v: f64| v.is_finite() && v > 0.0;
        if !finite_pos(self.learning_rate) {
            return Err(format!("learning_rate must be a positive number, got {}", self.learning_rate));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(format!("weight_decay must be ≥ 0, got {}", self.weight_decay));
        }
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return Err(format!("{name} must be in [0, 1), got {b}"));
            }
        }
        if !finite_pos(self.eps) {
            return Err(format!("eps must be positive, got {}", self.eps));
        }
        if !(0.0..=1.0).contains(&self.warmup_ratio) {
            return Err(format!("warmup_ratio must be in [0, 1], got {}", self.warmup_ratio));
        }
        if !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return Err(format!("min_lr_ratio must be in [0, 1], got {}", self.min_lr_ratio));
        }
        if let Some(n) = self.max_grad_norm
            && !finite_pos(n)
        {
            return Err(format!("max_grad_norm must be positive (or absent for no clipping), got {n}"));
        }
        Ok(())
    }

    /// The number of warmup steps for a run of `total_steps`.
    pub fn warmup_for(&self, total_steps: usize) -> usize {
        if self.warmup_steps > 0 { self.warmup_steps } else { (self.warmup_ratio * total_steps as f64).ceil() as usize }
    }

    /// The learning rate of optimizer step `step` (0-based, as in
    /// transformers: the first step of a warmup runs at learning rate 0).
    pub fn lr_at(&self, step: usize, total_steps: usize) -> f64 {
        self.learning_rate
            * lr_factor(self.schedule, step, self.warmup_for(total_steps), total_steps, self.min_lr_ratio)
    }
}

/// The schedule's multiplier of the peak learning rate at `step` (0-based).
pub fn lr_factor(schedule: Schedule, step: usize, warmup: usize, total: usize, min_ratio: f64) -> f64 {
    if step < warmup {
        return step as f64 / warmup.max(1) as f64;
    }
    let progress = (step - warmup) as f64 / (total.saturating_sub(warmup)).max(1) as f64;
    let decay = match schedule {
        Schedule::Constant => return 1.0,
        Schedule::Cosine => (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0),
        Schedule::Linear => (1.0 - progress).max(0.0),
    };
    min_ratio + (1.0 - min_ratio) * decay
}

/// Scales `grads` so that their global L2 norm is at most `max_norm`
/// (`clip_coef = max_norm / (norm + 1e-6)`, clamped to 1, as PyTorch) and
/// returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [Vec<f32>], max_norm: Option<f64>) -> f64 {
    let norm = grads.iter().flatten().map(|&g| f64::from(g) * f64::from(g)).sum::<f64>().sqrt();
    if let Some(max) = max_norm {
        let coef = (max / (norm + 1e-6)).min(1.0);
        if coef < 1.0 {
            let c = coef as f32;
            for g in grads.iter_mut().flatten() {
                *g *= c;
            }
        }
    }
    norm
}

/// AdamW state: the step count and the first and second moments of every
/// trained tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamW {
    /// Completed updates.
    pub step: u64,
    /// First moments, one vector per tensor.
    pub m: Vec<Vec<f32>>,
    /// Second moments, one vector per tensor.
    pub v: Vec<Vec<f32>>,
}

impl AdamW {
    /// Fresh state for tensors of the given element counts.
    pub fn new(sizes: &[usize]) -> Self {
        Self {
            step: 0,
            m: sizes.iter().map(|&n| vec![0.0; n]).collect(),
            v: sizes.iter().map(|&n| vec![0.0; n]).collect(),
        }
    }

    /// One update of `params` with `grads` at learning rate `lr`, exactly the
    /// arithmetic of PyTorch's single-tensor AdamW:
    /// `p ← p·(1 − lr·wd)`, `m ← m + (g − m)(1 − β₁)`, `v ← β₂v + (1 − β₂)g²`,
    /// `p ← p − (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)`.
    pub fn update(&mut self, params: &mut [Vec<f32>], grads: &[Vec<f32>], lr: f64, cfg: &OptimConfig) {
        self.step += 1;
        let t = self.step as i32;
        let bc1 = 1.0 - cfg.beta1.powi(t);
        let bc2_sqrt = (1.0 - cfg.beta2.powi(t)).sqrt();
        let step_size = (lr / bc1) as f32;
        let decay = (1.0 - lr * cfg.weight_decay) as f32;
        // Like PyTorch, `1 − β` is formed in double precision before it meets f32.
        let (one_minus_b1, b2, one_minus_b2) = ((1.0 - cfg.beta1) as f32, cfg.beta2 as f32, (1.0 - cfg.beta2) as f32);
        let (bc2_sqrt, eps) = (bc2_sqrt as f32, cfg.eps as f32);
        for (((p, g), m), v) in params.iter_mut().zip(grads).zip(&mut self.m).zip(&mut self.v) {
            for i in 0..p.len() {
                let gi = g[i];
                p[i] *= decay;
                m[i] += (gi - m[i]) * one_minus_b1;
                v[i] = v[i] * b2 + one_minus_b2 * gi * gi;
                let denom = v[i].sqrt() / bc2_sqrt + eps;
                p[i] -= step_size * m[i] / denom;
            }
        }
    }
}
