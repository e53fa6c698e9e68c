//! The candle forward pass against techne-inference's ONNX engine, LoRA
//! merge equivalence, and gradients against finite differences (tiny model).

mod common;

use candle_core::{DType, Device, Tensor, Var};
use techne_inference::gguf::GgufFile;
use techne_inference::{LocalModel, Registry};
use techne_training::lora::{LoraAdapters, LoraConfig};
use techne_training::model::{ForwardOptions, FrozenLinear, Llama, Proj, log_softmax_last};
use techne_training::rng::Rng;

fn tiny(seed: u64) -> (tempfile::TempDir, std::path::PathBuf, Llama) {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = common::write_tiny(dir.path(), seed);
    let g = GgufFile::open(&p).expect("open");
    let m = Llama::from_gguf(&g).expect("load");
    (dir, p, m)
}

fn random_adapters(model: &Llama, targets: Vec<Proj>, seed: u64) -> LoraAdapters {
    let cfg = LoraConfig { rank: 4, alpha: 8.0, dropout: 0.0, targets };
    let ad = LoraAdapters::new(&cfg, model.config(), &mut Rng::new(seed)).expect("adapters");
    let mut r = Rng::new(seed + 100);
    let vals: Vec<Vec<f32>> =
        ad.to_flat().expect("flat").iter().map(|v| v.iter().map(|_| r.uniform(0.2)).collect()).collect();
    ad.set_flat(&vals).expect("set");
    ad
}

fn logprobs(model: &Llama, ids: &[u32], lora: Option<&LoraAdapters>) -> Vec<Vec<f32>> {
    let mut opts = ForwardOptions { lora, dropout_rng: None };
    let logits = model.logits(ids, 1, ids.len(), &mut opts).expect("forward");
    log_softmax_last(&logits).expect("lsm").to_vec2::<f32>().expect("vec")
}

const SEQS: [&[u32]; 3] = [&[1, 40, 41, 42, 43, 44, 45, 46], &[5, 9, 200, 17, 3, 3, 3, 100, 258, 7, 12], &[77, 78]];

#[test]
fn forward_matches_onnx_engine() {
    let Some(rt) = common::runtime() else { return };
    let (dir, path, model) = tiny(3);
    let reg = Registry::open(dir.path().join("reg")).expect("registry");
    let entry = reg.import_as(&path, "tiny", &Default::default()).expect("import");
    let engine = LocalModel::load(&rt, &entry, 1).expect("load engine");
    let mut worst = 0f32;
    for ids in SEQS {
        let mine = logprobs(&model, ids, None);
        let score = engine.score_ids(&ids[..1], &ids[1..]).expect("score");
        for (i, t) in score.tokens.iter().enumerate() {
            let d = (mine[i][t.token_id as usize] - t.logprob).abs();
            worst = worst.max(d);
        }
        // My greedy next token after the whole sequence is also the engine's.
        let last = &mine[ids.len() - 1];
        let argmax = (0..last.len()).max_by(|&a, &b| last[a].total_cmp(&last[b])).unwrap_or(0) as u32;
        let next = engine.score_ids(ids, &[argmax]).expect("score next");
        assert!(next.is_greedy, "greedy token {argmax} after {ids:?} is not the engine's");
        worst = worst.max((next.tokens[0].logprob - last[argmax as usize]).abs());
    }
    println!("max |Δ logprob| vs ONNX Runtime: {worst:e}");
    assert!(worst < 1e-3, "max logprob difference {worst}");
}

#[test]
fn merged_weights_give_the_same_logits_as_base_plus_adapter() {
    let (_dir, _p, model) = tiny(5);
    let ad = random_adapters(&model, Proj::ALL.to_vec(), 9);
    let mut merged =
        model.with_replaced_weight(0, Proj::QProj, model.weight(0, Proj::QProj).cloned().expect("w")).expect("copy");
    for &(l, p) in ad.adapted() {
        let w = ad.merged_weight(model.weight(l, p).expect("w"), l, p).expect("merge");
        merged = merged.with_replaced_weight(l, p, w).expect("replace");
    }
    for ids in SEQS {
        let a = logprobs(&model, ids, Some(&ad));
        let b = logprobs(&merged, ids, None);
        let base = logprobs(&model, ids, None);
        let mut worst = 0f32;
        let mut moved = 0f32;
        for ((ra, rb), rc) in a.iter().zip(&b).zip(&base) {
            for ((x, y), z) in ra.iter().zip(rb).zip(rc) {
                worst = worst.max((x - y).abs());
                moved = moved.max((x - z).abs());
            }
        }
        assert!(worst < 1e-4, "merged vs adapter logprobs differ by {worst}");
        assert!(moved > 1e-2, "the adapters should change the model (moved {moved})");
    }
}

#[test]
fn fresh_adapters_are_the_base_model() {
    let (_dir, _p, model) = tiny(6);
    let ad = LoraAdapters::new(&LoraConfig::default(), model.config(), &mut Rng::new(1)).expect("adapters");
    for ids in SEQS {
        assert_eq!(logprobs(&model, ids, Some(&ad)), logprobs(&model, ids, None));
    }
}

#[test]
fn frozen_linear_backward_matches_matmul() {
    let dev = Device::Cpu;
    let mut r = Rng::new(2);
    let w = Tensor::from_vec((0..6 * 5).map(|_| r.uniform(1.0)).collect::<Vec<f32>>(), (6, 5), &dev).expect("w");
    let x0: Vec<f32> = (0..3 * 4 * 5).map(|_| r.uniform(1.0)).collect();
    let coef =
        Tensor::from_vec((0..3 * 4 * 6).map(|_| r.uniform(1.0)).collect::<Vec<f32>>(), (3, 4, 6), &dev).expect("c");
    let xa = Var::from_vec(x0.clone(), (3, 4, 5), &dev).expect("x");
    let xb = Var::from_vec(x0, (3, 4, 5), &dev).expect("x");
    let ya = FrozenLinear::new(w.clone()).expect("op").forward(xa.as_tensor()).expect("fwd");
    let yb = xb.as_tensor().broadcast_matmul(&w.t().expect("t")).expect("mm");
    let da =
        (ya.clone() - yb.clone()).expect("d").abs().expect("a").max_all().expect("m").to_scalar::<f32>().expect("s");
    assert!(da < 1e-5, "forward differs by {da}");
    let la = (ya * &coef).expect("m").sum_all().expect("s");
    let lb = (yb * &coef).expect("m").sum_all().expect("s");
    let ga = la.backward().expect("bwd");
    let gb = lb.backward().expect("bwd");
    let ga = ga.get(xa.as_tensor()).expect("grad").flatten_all().expect("f").to_vec1::<f32>().expect("v");
    let gb = gb.get(xb.as_tensor()).expect("grad").flatten_all().expect("f").to_vec1::<f32>().expect("v");
    for (a, b) in ga.iter().zip(&gb) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
    // The frozen weight gets no gradient at all.
    assert!(la.backward().expect("bwd").get(&w).is_none());
}

#[test]
fn lora_gradients_match_finite_differences() {
    let (_dir, _p, model) = tiny(8);
    let ad = random_adapters(&model, vec![Proj::QProj, Proj::KProj, Proj::DownProj], 4);
    let ids: Vec<u32> = vec![1, 50, 60, 70, 80, 90, 100, 110, 120];
    let targets: Vec<u32> = (4..ids.len() as u32).collect();
    let loss = |ad: &LoraAdapters| -> Tensor {
        let mut opts = ForwardOptions::with_lora(ad);
        let h = model.forward_hidden(&ids, 1, ids.len(), &mut opts).expect("fwd");
        model.target_logprobs(&h, &ids, &targets).expect("lp").sum_all().expect("sum").neg().expect("neg")
    };
    let grads = loss(&ad).backward().expect("backward");
    let vars = ad.named_vars();
    let base = ad.to_flat().expect("flat");
    let mut r = Rng::new(11);
    let mut checked = 0;
    for (vi, (name, var)) in vars.iter().enumerate() {
        let g = grads.get(var.as_tensor()).expect("gradient").flatten_all().expect("f").to_vec1::<f32>().expect("v");
        for _ in 0..3 {
            let j = r.below(g.len());
            let eps = 1e-2f32;
            let mut plus = base.clone();
            plus[vi][j] += eps;
            ad.set_flat(&plus).expect("set");
            let lp = f64::from(loss(&ad).to_scalar::<f32>().expect("s"));
            let mut minus = base.clone();
            minus[vi][j] -= eps;
            ad.set_flat(&minus).expect("set");
            let lm = f64::from(loss(&ad).to_scalar::<f32>().expect("s"));
            ad.set_flat(&base).expect("set");
            let fd = (lp - lm) / (2.0 * f64::from(eps));
            let an = f64::from(g[j]);
            assert!((fd - an).abs() <= 2e-3 + 2e-2 * an.abs(), "{name}[{j}]: finite difference {fd}, autograd {an}");
            checked += 1;
        }
    }
    assert_eq!(checked, vars.len() * 3);
    let _ = DType::F32;
}
