//! AdamW, learning-rate schedules and gradient clipping against hand-computed
//! values (PyTorch's and transformers' formulas).

use techne_training::optim::{AdamW, OptimConfig, Schedule, clip_grad_norm, lr_factor};

fn close(a: f64, b: f64, tol: f64) {
    assert!((a - b).abs() <= tol, "{a} vs {b}");
}

#[test]
fn adamw_matches_hand_computation() {
    let cfg = OptimConfig {
        learning_rate: 0.1,
        weight_decay: 0.01,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        ..OptimConfig::default()
    };
    let mut opt = AdamW::new(&[2]);
    let mut p = vec![vec![1.0f32, -2.0]];
    // Step 1, g = (0.5, 0): decay 1 − 0.1·0.01; m = 0.05; v = 0.00025; the
    // bias-corrected step is lr·sign(g) = 0.1.
    opt.update(&mut p, &[vec![0.5, 0.0]], 0.1, &cfg);
    close(f64::from(p[0][0]), 0.999 - 0.1, 1e-6);
    close(f64::from(p[0][1]), -2.0 * 0.999, 1e-6);
    // Step 2, g = (−0.25, 0), computed in f64.
    opt.update(&mut p, &[vec![-0.25, 0.0]], 0.05, &cfg);
    let m: f64 = 0.9 * 0.05 + 0.1 * -0.25;
    let v: f64 = 0.999 * 0.00025 + 0.001 * 0.0625;
    let mhat = m / (1.0 - 0.9f64.powi(2));
    let denom = v.sqrt() / (1.0 - 0.999f64.powi(2)).sqrt() + 1e-8;
    let expect = 0.899 * (1.0 - 0.05 * 0.01) - 0.05 * mhat / denom;
    close(f64::from(p[0][0]), expect, 1e-6);
    close(f64::from(p[0][1]), -2.0 * 0.999 * 0.9995, 1e-6);
    assert_eq!(opt.step, 2);
    close(f64::from(opt.m[0][0]), m, 1e-7);
    close(f64::from(opt.v[0][0]), v, 1e-9);
}

#[test]
fn cosine_schedule_with_warmup_matches_transformers() {
    // transformers.get_cosine_schedule_with_warmup(num_warmup_steps=2, num_training_steps=10)
    let expect = [
        0.0,
        0.5,
        1.0,
        0.9619397662556434,
        0.8535533905932737,
        0.6913417161825449,
        0.5,
        0.3086582838174551,
        0.1464466094067262,
        0.038060233744356624,
    ];
    for (step, e) in expect.iter().enumerate() {
        close(lr_factor(Schedule::Cosine, step, 2, 10, 0.0), *e, 1e-12);
    }
    close(lr_factor(Schedule::Cosine, 10, 2, 10, 0.0), 0.0, 1e-12);
    // get_linear_schedule_with_warmup(2, 10) and a constant schedule with warmup.
    close(lr_factor(Schedule::Linear, 6, 2, 10, 0.0), 0.5, 1e-12);
    close(lr_factor(Schedule::Constant, 1, 2, 10, 0.0), 0.5, 1e-12);
    close(lr_factor(Schedule::Constant, 7, 2, 10, 0.0), 1.0, 1e-12);
    // A floor of 10 %.
    close(lr_factor(Schedule::Cosine, 6, 2, 10, 0.1), 0.1 + 0.9 * 0.5, 1e-12);
    let cfg = OptimConfig { learning_rate: 2e-4, warmup_ratio: 0.1, ..OptimConfig::default() };
    assert_eq!(cfg.warmup_for(100), 10);
    close(cfg.lr_at(5, 100), 1e-4, 1e-15);
    let cfg = OptimConfig { warmup_steps: 3, warmup_ratio: 0.5, ..OptimConfig::default() };
    assert_eq!(cfg.warmup_for(100), 3);
}

#[test]
fn gradient_clipping() {
    let mut g = vec![vec![3.0f32], vec![4.0]];
    let norm = clip_grad_norm(&mut g, Some(1.0));
    close(norm, 5.0, 1e-12);
    close(f64::from(g[0][0]), 0.6, 1e-6);
    close(f64::from(g[1][0]), 0.8, 1e-6);
    let mut small = vec![vec![0.3f32, 0.4]];
    close(clip_grad_norm(&mut small, Some(1.0)), 0.5, 1e-7);
    assert_eq!(small, vec![vec![0.3f32, 0.4]]);
    let mut none = vec![vec![30.0f32, 40.0]];
    clip_grad_norm(&mut none, None);
    assert_eq!(none, vec![vec![30.0f32, 40.0]]);
}

#[test]
fn invalid_settings_are_explained() {
    let bad = [
        OptimConfig { learning_rate: 0.0, ..OptimConfig::default() },
        OptimConfig { beta2: 1.0, ..OptimConfig::default() },
        OptimConfig { warmup_ratio: 1.5, ..OptimConfig::default() },
        OptimConfig { max_grad_norm: Some(-1.0), ..OptimConfig::default() },
    ];
    for b in bad {
        assert!(b.validate().is_err(), "{b:?}");
    }
    assert!(OptimConfig::default().validate().is_ok());
}
