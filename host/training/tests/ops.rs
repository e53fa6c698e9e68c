//! The fused ops against the composed candle expressions they replace:
//! forward values and gradients (through candle's autograd).

use candle_core::{D, Device, Tensor, Var};
use techne_training::model::{log_softmax_last, rms_norm, softmax_last};
use techne_training::ops::{CausalSoftmax, RmsNorm, Rope, TargetLogprob};
use techne_training::rng::Rng;

fn rand(n: usize, seed: u64, a: f32) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..n).map(|_| r.uniform(a)).collect()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .expect("sub")
        .abs()
        .expect("abs")
        .flatten_all()
        .expect("f")
        .max(0)
        .expect("max")
        .to_scalar::<f32>()
        .expect("s")
}

/// Forward and input-gradient of `f` and `g` (a random linear functional of the output).
fn compare(shape: &[usize], seed: u64, f: impl Fn(&Tensor) -> Tensor, g: impl Fn(&Tensor) -> Tensor, tol: f32) {
    let d = Device::Cpu;
    let n: usize = shape.iter().product();
    let x0 = rand(n, seed, 2.0);
    let xa = Var::from_vec(x0.clone(), shape, &d).expect("var");
    let xb = Var::from_vec(x0, shape, &d).expect("var");
    let ya = f(xa.as_tensor());
    let yb = g(xb.as_tensor());
    assert!(max_diff(&ya, &yb) < tol, "forward differs by {}", max_diff(&ya, &yb));
    let c = Tensor::from_vec(rand(ya.elem_count(), seed + 1, 1.0), ya.shape(), &d).expect("c");
    let ga = (ya * &c).expect("m").sum_all().expect("s").backward().expect("bwd");
    let gb = (yb * &c).expect("m").sum_all().expect("s").backward().expect("bwd");
    let (ga, gb) = (ga.get(xa.as_tensor()).expect("grad"), gb.get(xb.as_tensor()).expect("grad"));
    assert!(max_diff(ga, gb) < tol, "gradient differs by {}", max_diff(ga, gb));
}

#[test]
fn rms_norm_matches_composed() {
    let w = rand(24, 9, 1.0);
    let wt = Tensor::from_slice(&w, 24, &Device::Cpu).expect("w");
    let op = RmsNorm { weight: w, eps: 1e-5 };
    compare(
        &[3, 5, 24],
        1,
        |x| x.apply_op1(op.clone()).expect("op"),
        |x| rms_norm(x, &wt, 1e-5).expect("composed"),
        1e-5,
    );
}

#[test]
fn rope_matches_composed_and_its_backward_is_the_inverse_rotation() {
    let (b, s, h, dh, rd) = (2, 5, 3, 8, 6);
    let half = rd / 2;
    let mut cos = Vec::new();
    let mut sin = Vec::new();
    for p in 0..s {
        for i in 0..half {
            let a = p as f32 * 10f32.powf(-(i as f32) / half as f32);
            cos.push(a.cos());
            sin.push(a.sin());
        }
    }
    let d = Device::Cpu;
    let ct = Tensor::from_slice(&cos, (1, s, 1, half, 1), &d).expect("cos");
    let st = Tensor::from_slice(&sin, (1, s, 1, half, 1), &d).expect("sin");
    let composed = |x: &Tensor| -> Tensor {
        let rot = x.narrow(3, 0, rd).expect("n").contiguous().expect("c").reshape((b, s, h, half, 2)).expect("r");
        let x0 = rot.narrow(4, 0, 1).expect("n");
        let x1 = rot.narrow(4, 1, 1).expect("n");
        let o0 = (x0.broadcast_mul(&ct).expect("m") - x1.broadcast_mul(&st).expect("m")).expect("s");
        let o1 = (x0.broadcast_mul(&st).expect("m") + x1.broadcast_mul(&ct).expect("m")).expect("a");
        let out = Tensor::cat(&[o0, o1], 4).expect("cat").reshape((b, s, h, rd)).expect("r");
        Tensor::cat(&[out, x.narrow(3, rd, dh - rd).expect("n")], 3).expect("cat")
    };
    let op = Rope { cos, sin, rope_dim: rd };
    compare(&[b, s, h, dh], 2, |x| x.apply_op1(op.clone()).expect("op"), composed, 1e-5);
}

#[test]
fn causal_softmax_matches_masked_softmax() {
    let (groups, s) = (3, 7);
    let scale = 0.3f32;
    let mut m = Vec::new();
    for _ in 0..groups {
        for i in 0..s {
            m.extend((0..s).map(|j| if j <= i { 0.0f32 } else { f32::NEG_INFINITY }));
        }
    }
    let mask = Tensor::from_vec(m, (groups * s, s), &Device::Cpu).expect("mask");
    let op = CausalSoftmax { seq: s, scale };
    compare(
        &[2, 2, groups * s, s],
        3,
        |x| x.apply_op1(op.clone()).expect("op"),
        |x| softmax_last(&(x * f64::from(scale)).expect("s").broadcast_add(&mask).expect("mask")).expect("softmax"),
        1e-6,
    );
}

#[test]
fn target_logprob_matches_gathered_log_softmax() {
    let targets = vec![3u32, 0, 9, 9, 4];
    let idx = Tensor::from_slice(&targets, (5, 1), &Device::Cpu).expect("idx");
    let op = TargetLogprob { targets: targets.clone() };
    compare(
        &[5, 10],
        4,
        |x| x.apply_op1(op.clone()).expect("op"),
        |x| log_softmax_last(x).expect("lsm").gather(&idx, D::Minus1).expect("gather").squeeze(1).expect("sq"),
        1e-5,
    );
    let bad = TargetLogprob { targets: vec![10, 0, 0, 0, 0] };
    let x = Tensor::zeros((5, 10), candle_core::DType::F32, &Device::Cpu).expect("x");
    assert!(x.apply_op1(bad).is_err());
}

#[test]
fn lora_linear_matches_composed_with_dropout() {
    use std::sync::Arc;
    use techne_training::model::FrozenLinear;
    use techne_training::ops::{DropMask, LoraLinear};
    let d = Device::Cpu;
    let (b, s, k, n, r) = (2, 3, 8, 5, 3);
    let w = Tensor::from_vec(rand(n * k, 1, 1.0), (n, k), &d).expect("w");
    let mask = DropMask::sample(&mut Rng::new(3), b * s * k, 0.3);
    let mvals = Tensor::from_vec(mask.apply(&vec![1.0; b * s * k]), (b, s, k), &d).expect("mask");
    assert!(mask.apply(&vec![1.0; b * s * k]).contains(&0.0), "some inputs are dropped");
    let vars = |seed: u64| {
        (
            Var::from_vec(rand(b * s * k, seed, 1.0), (b, s, k), &d).expect("x"),
            Var::from_vec(rand(r * k, seed + 1, 1.0), (r, k), &d).expect("a"),
            Var::from_vec(rand(n * r, seed + 2, 1.0), (n, r), &d).expect("b"),
        )
    };
    let (xa, aa, ba) = vars(10);
    let (xb, ab, bb) = vars(10);
    let op = LoraLinear { base: FrozenLinear::new(w.clone()).expect("base"), scale: 0.7, mask: Some(Arc::new(mask)) };
    let ya = xa.as_tensor().apply_op3(aa.as_tensor(), ba.as_tensor(), op).expect("op");
    let xin = (xb.as_tensor() * &mvals).expect("mask");
    let delta = xin
        .broadcast_matmul(&ab.as_tensor().t().expect("t"))
        .expect("mm")
        .broadcast_matmul(&bb.as_tensor().t().expect("t"))
        .expect("mm");
    let yb =
        (xb.as_tensor().broadcast_matmul(&w.t().expect("t")).expect("mm") + (delta * 0.7).expect("s")).expect("add");
    assert!(max_diff(&ya, &yb) < 1e-5, "forward differs by {}", max_diff(&ya, &yb));
    let c = Tensor::from_vec(rand(b * s * n, 20, 1.0), (b, s, n), &d).expect("c");
    let ga = (ya * &c).expect("m").sum_all().expect("s").backward().expect("bwd");
    let gb = (yb * &c).expect("m").sum_all().expect("s").backward().expect("bwd");
    for (va, vb, what) in [(&xa, &xb, "x"), (&aa, &ab, "A"), (&ba, &bb, "B")] {
        let (p, q) = (ga.get(va.as_tensor()).expect("grad"), gb.get(vb.as_tensor()).expect("grad"));
        assert!(max_diff(p, q) < 1e-5, "gradient of {what} differs by {}", max_diff(p, q));
    }
    assert!(ga.get(&w).is_none(), "the frozen weight gets no gradient");
}
