//! Training runs on the tiny model: loss values, DPO, reproducibility,
//! checkpoint/resume determinism, gradient accumulation, merge + export +
//! registration with lineage.

mod common;

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use techne_inference::gguf::GgufFile;
use techne_inference::quant::GgmlType;
use techne_inference::{LocalModel, Registry};
use techne_training::data::{self, TemplateMode, TextCodec};
use techne_training::lora::ADAPTER_FILE;
use techne_training::model::{ForwardOptions, Llama, log_softmax_last};
use techne_training::trainer::dpo_loss;
use techne_training::{
    Control, LoraAdapters, LoraConfig, OptimConfig, Proj, TrainConfig, TrainError, TrainEvent, TrainReport,
    WeightFormat, train_dpo, train_sft,
};

struct Fixture {
    dir: tempfile::TempDir,
    model: PathBuf,
    sft: PathBuf,
    dpo: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = common::write_tiny(dir.path(), 21);
    let sft = dir.path().join("sft.jsonl");
    std::fs::write(&sft, common::sft_jsonl()).expect("write");
    let dpo = dir.path().join("dpo.jsonl");
    std::fs::write(&dpo, common::dpo_jsonl()).expect("write");
    Fixture { dir, model, sft, dpo }
}

fn config(f: &Fixture, data: &Path, out: &str) -> TrainConfig {
    TrainConfig {
        model: f.model.clone(),
        data: data.to_path_buf(),
        output_dir: f.dir.path().join(out),
        lora: LoraConfig { rank: 4, alpha: 8.0, dropout: 0.1, targets: vec![Proj::QProj, Proj::VProj, Proj::DownProj] },
        optim: OptimConfig { learning_rate: 1e-2, warmup_steps: 2, ..OptimConfig::default() },
        batch_size: 2,
        grad_accum: 2,
        max_steps: Some(7),
        max_seq_len: 96,
        seed: 7,
        checkpoint_every: 3,
        ..TrainConfig::default()
    }
}

fn quiet(_: &TrainEvent<'_>) -> Control {
    Control::Continue
}

fn adapter_bytes(r: &TrainReport) -> Vec<u8> {
    std::fs::read(r.output_dir.join(ADAPTER_FILE)).expect("adapter")
}

fn losses(r: &TrainReport) -> Vec<f64> {
    r.steps.iter().map(|s| s.loss).collect()
}

#[test]
fn dpo_loss_matches_hand_computation() {
    let d = Device::Cpu;
    let t = |v: &[f32]| Tensor::from_slice(v, v.len(), &d).expect("tensor");
    // z = β((πc − πr) − (rc − rr)); loss = log(1 + e^{−z}).
    let pc = t(&[-1.0, -3.0, -10.0, 0.0]);
    let pr = t(&[-2.0, -1.0, -10.0, -2000.0]);
    let rc = t(&[-1.5, -2.0, -5.0, 0.0]);
    let rr = t(&[-1.5, -2.0, -5.0, 0.0]);
    let l = dpo_loss(&pc, &pr, &rc, &rr, 0.1).expect("loss").to_vec1::<f32>().expect("vec");
    let expect = [
        (1.0 + (-0.1f64).exp()).ln(),   // z = 0.1
        (1.0 + (0.2f64).exp()).ln(),    // z = −0.2
        std::f64::consts::LN_2,         // z = 0
        (1.0 + (-200.0f64).exp()).ln(), // z = 200: no overflow
    ];
    for (a, e) in l.iter().zip(expect) {
        assert!((f64::from(*a) - e).abs() < 1e-6, "{a} vs {e}");
    }
    // A hugely negative margin gives a finite loss of −z.
    let l =
        dpo_loss(&t(&[-2000.0]), &t(&[0.0]), &t(&[0.0]), &t(&[0.0]), 0.1).expect("loss").to_vec1::<f32>().expect("vec");
    assert!((l[0] - 200.0).abs() < 1e-3, "{}", l[0]);
}

#[test]
fn first_sft_loss_is_the_mean_nll_of_the_answer_tokens() {
    let f = fixture();
    let cfg = TrainConfig {
        batch_size: 8,
        grad_accum: 1,
        max_steps: Some(1),
        checkpoint_every: 0,
        ..config(&f, &f.sft, "one")
    };
    let report = train_sft(&cfg, quiet).expect("train");
    // By hand: the base model (B = 0, so dropout does not matter), one
    // sequence at a time, log-softmax over the full logits.
    let g = GgufFile::open(&f.model).expect("open");
    let model = Llama::from_gguf(&g).expect("model");
    let codec = TextCodec::from_gguf(&g).expect("codec");
    let ds = data::load_sft(&f.sft, &codec, TemplateMode::Chat, 96).expect("data");
    let (mut nll, mut n) = (0f64, 0usize);
    for ex in &ds.examples {
        let logits = model.logits(&ex.ids, 1, ex.ids.len(), &mut ForwardOptions::base()).expect("fwd");
        let lp = log_softmax_last(&logits).expect("lsm").to_vec2::<f32>().expect("vec");
        for i in 1..ex.ids.len() {
            if ex.targets[i] {
                nll -= f64::from(lp[i - 1][ex.ids[i] as usize]);
                n += 1;
            }
        }
    }
    assert_eq!(report.steps[0].target_tokens, n);
    let expect = nll / n as f64;
    assert!((report.steps[0].loss - expect).abs() < 1e-4, "{} vs {expect}", report.steps[0].loss);
}

#[test]
fn same_seed_gives_bit_identical_weights() {
    let f = fixture();
    let a = train_sft(&config(&f, &f.sft, "a"), quiet).expect("a");
    let b = train_sft(&config(&f, &f.sft, "b"), quiet).expect("b");
    assert_eq!(losses(&a), losses(&b));
    assert_eq!(adapter_bytes(&a), adapter_bytes(&b));
    let c = train_sft(&TrainConfig { seed: 8, ..config(&f, &f.sft, "c") }, quiet).expect("c");
    assert_ne!(adapter_bytes(&a), adapter_bytes(&c));
    // The loss goes down on this tiny set.
    let l = losses(&a);
    assert!(l[6] < l[0], "{l:?}");
}

fn crash_and_resume(f: &Fixture, kind: &str) {
    let data = if kind == "sft" { &f.sft } else { &f.dpo };
    let train = |cfg: &TrainConfig, cb: &mut dyn FnMut(&TrainEvent<'_>) -> Control| {
        if kind == "sft" { train_sft(cfg, cb) } else { train_dpo(cfg, cb) }
    };
    let full = train(&config(f, data, &format!("{kind}-full")), &mut quiet).expect("uninterrupted");
    // Crash (abort without saving) at step 5: the last checkpoint is step 3.
    let cfg = config(f, data, &format!("{kind}-crash"));
    let err = train(&cfg, &mut |e| match e {
        TrainEvent::Step(r) if r.step == 5 => Control::Abort,
        _ => Control::Continue,
    });
    assert!(matches!(err, Err(TrainError::Aborted { step: 5 })), "{err:?}");
    let ck = cfg.output_dir.join("checkpoints");
    assert_eq!(std::fs::read_to_string(ck.join("latest")).expect("latest").trim(), "step-00000003");
    // Without resume the directory is refused.
    assert!(matches!(train(&cfg, &mut quiet), Err(TrainError::Config(_))));
    let mut resumed_at = None;
    let resumed = train(&TrainConfig { resume: true, ..cfg.clone() }, &mut |e| {
        if let TrainEvent::Prepared { resumed_from, .. } = e {
            resumed_at = *resumed_from;
        }
        Control::Continue
    })
    .expect("resume");
    assert_eq!(resumed_at, Some(3));
    assert_eq!(resumed.resumed_from, Some(3));
    assert_eq!(losses(&resumed), losses(&full));
    assert_eq!(
        adapter_bytes(&resumed),
        adapter_bytes(&full),
        "{kind}: resumed weights differ from the uninterrupted run"
    );
    // A graceful stop writes a checkpoint at that step; resuming still ends identical.
    let cfg = config(f, data, &format!("{kind}-stop"));
    let stopped = train(&cfg, &mut |e| match e {
        TrainEvent::Step(r) if r.step == 2 => Control::Stop,
        _ => Control::Continue,
    })
    .expect("stop");
    assert!(stopped.stopped_early);
    assert_eq!(stopped.steps.len(), 2);
    let resumed = train(&TrainConfig { resume: true, ..cfg }, &mut quiet).expect("resume after stop");
    assert_eq!(adapter_bytes(&resumed), adapter_bytes(&full));
}

#[test]
fn sft_resume_after_a_crash_is_bit_identical() {
    crash_and_resume(&fixture(), "sft");
}

#[test]
fn dpo_resume_after_a_crash_is_bit_identical() {
    crash_and_resume(&fixture(), "dpo");
}

#[test]
fn resume_refuses_other_settings_and_survives_torn_checkpoints() {
    let f = fixture();
    let cfg = TrainConfig { checkpoint_every: 2, ..config(&f, &f.sft, "r") };
    let _ = train_sft(&cfg, |e| match e {
        TrainEvent::Step(r) if r.step == 5 => Control::Abort,
        _ => Control::Continue,
    });
    let other = TrainConfig { resume: true, seed: 99, ..cfg.clone() };
    match train_sft(&other, quiet) {
        Err(TrainError::Checkpoint { message, .. }) => assert!(message.contains("other settings"), "{message}"),
        r => panic!("expected a checkpoint error, got {r:?}"),
    }
    // A torn save (temporary directory), a `latest` naming a missing
    // directory and a damaged newest checkpoint (step 4) are all survived:
    // the run resumes from step 2.
    let ck = cfg.output_dir.join("checkpoints");
    std::fs::create_dir_all(ck.join(".tmp-step-00000006-1-2")).expect("mkdir");
    std::fs::write(ck.join(".tmp-step-00000006-1-2/state.json"), b"{garbage").expect("write");
    std::fs::write(ck.join("latest"), b"step-00000006\n").expect("write");
    let adapter = ck.join("step-00000004").join(ADAPTER_FILE);
    let bytes = std::fs::read(&adapter).expect("read");
    std::fs::write(&adapter, &bytes[..bytes.len() / 2]).expect("truncate");
    let r = train_sft(&TrainConfig { resume: true, ..cfg.clone() }, quiet).expect("resume");
    assert_eq!(r.resumed_from, Some(2));
    assert!(!ck.join(".tmp-step-00000006-1-2").exists(), "temporary directories are cleaned up");
    let full = train_sft(&config(&f, &f.sft, "r-full"), quiet).expect("full");
    assert_eq!(adapter_bytes(&r), adapter_bytes(&full));
    // Only `keep_checkpoints` (2) remain.
    let dirs: Vec<String> = std::fs::read_dir(&ck)
        .expect("read")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("step-"))
        .collect();
    assert_eq!(dirs.len(), 2, "{dirs:?}");
}

#[test]
fn gradient_accumulation_matches_a_large_batch() {
    let f = fixture();
    let base = TrainConfig {
        lora: LoraConfig { dropout: 0.0, ..config(&f, &f.sft, "x").lora },
        max_steps: Some(3),
        checkpoint_every: 0,
        ..config(&f, &f.sft, "x")
    };
    let big = train_sft(
        &TrainConfig { batch_size: 4, grad_accum: 1, output_dir: f.dir.path().join("big"), ..base.clone() },
        quiet,
    )
    .expect("big");
    let acc =
        train_sft(&TrainConfig { batch_size: 1, grad_accum: 4, output_dir: f.dir.path().join("acc"), ..base }, quiet)
            .expect("acc");
    for (a, b) in losses(&big).iter().zip(losses(&acc)) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
    let load =
        |r: &TrainReport| candle_core::safetensors::load(r.output_dir.join(ADAPTER_FILE), &Device::Cpu).expect("load");
    let (x, y) = (load(&big), load(&acc));
    for (k, t) in &x {
        let d = (t - &y[k]).expect("sub").abs().expect("abs").max_all().expect("max").to_scalar::<f32>().expect("s");
        assert!(d < 1e-4, "{k}: {d}");
    }
}

#[test]
fn dpo_starts_at_ln2_and_learns_the_preferences() {
    let f = fixture();
    let cfg = TrainConfig {
        optim: OptimConfig { learning_rate: 2e-2, ..OptimConfig::default() },
        lora: LoraConfig { dropout: 0.0, ..config(&f, &f.dpo, "d").lora },
        batch_size: 3,
        grad_accum: 2,
        max_steps: Some(8),
        dpo_beta: 0.5,
        ..config(&f, &f.dpo, "d")
    };
    let mut reference_done = 0;
    let r = train_dpo(&cfg, |e| {
        if let TrainEvent::Reference { done, .. } = e {
            reference_done = *done;
        }
        Control::Continue
    })
    .expect("dpo");
    assert_eq!(reference_done, 6);
    let first = &r.steps[0];
    assert!((first.loss - std::f64::consts::LN_2).abs() < 1e-5, "first loss {}", first.loss);
    let stats = first.dpo.as_ref().expect("stats");
    assert!(stats.reward_chosen.abs() < 1e-5 && stats.reward_rejected.abs() < 1e-5);
    let last = r.steps.last().expect("last");
    let s = last.dpo.as_ref().expect("stats");
    assert!(last.loss < 0.5, "DPO loss did not fall: {:?}", losses(&r));
    assert!(s.margin > 0.0 && s.accuracy >= 0.5, "{s:?}");
}

fn engine_logprobs_agree(
    rt: &techne_inference::Runtime,
    entry: &techne_inference::ModelEntry,
    model: &Llama,
    ad: &LoraAdapters,
    tol: f32,
) {
    let engine = LocalModel::load(rt, entry, 1).expect("engine");
    let ids: Vec<u32> = vec![1, 80, 90, 100, 110, 120, 130, 140];
    let logits = model.logits(&ids, 1, ids.len(), &mut ForwardOptions::with_lora(ad)).expect("fwd");
    let lp = log_softmax_last(&logits).expect("lsm").to_vec2::<f32>().expect("vec");
    let score = engine.score_ids(&ids[..1], &ids[1..]).expect("score");
    let worst = score
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (lp[i][t.token_id as usize] - t.logprob).abs())
        .fold(0f32, f32::max);
    assert!(worst < tol, "exported model differs from base + adapters by {worst}");
}

#[test]
fn export_merges_registers_and_records_lineage() {
    let f = fixture();
    let reg_dir = f.dir.path().join("registry");
    let cfg = TrainConfig {
        out_name: Some("tiny-sft".into()),
        registry_dir: Some(reg_dir.clone()),
        model_name: Some("tiny".into()),
        merged_format: WeightFormat::F32,
        ..config(&f, &f.sft, "e")
    };
    let r = train_sft(&cfg, quiet).expect("train");
    let reg = Registry::open(&reg_dir).expect("registry");
    let entry = reg.get("tiny-sft").expect("registered");
    assert_eq!(r.model.as_ref().map(|m| m.name.as_str()), Some("tiny-sft"));
    assert!(reg.check("tiny-sft").expect("check").ok());
    let lineage = techne_training::export::read_lineage(&entry).expect("read").expect("lineage.json");
    assert_eq!(lineage.kind, "sft");
    assert_eq!(lineage.base_model.name.as_deref(), Some("tiny"));
    assert_eq!(lineage.base_model.sha256, techne_inference::registry::sha256_file(&f.model).expect("sha").0);
    assert_eq!(lineage.dataset.sha256, data::sha256_hex(&std::fs::read(&f.sft).expect("read")));
    assert_eq!(lineage.hyperparameters["lora"]["rank"], 4);
    assert_eq!(lineage.hyperparameters["seed"], 7);
    assert_eq!(lineage.steps, 7);
    assert_eq!(entry.manifest.source.sha256, lineage.merged.sha256);
    // The merged GGUF: adapted projections in the chosen format, everything else as it was.
    let merged = GgufFile::open(r.merged_gguf.as_ref().expect("merged")).expect("open");
    let base = GgufFile::open(&f.model).expect("open");
    assert_eq!(merged.get_str("general.name").expect("name"), "tiny-sft");
    for t in &base.tensors {
        let m = merged.tensor(&t.name).expect("tensor");
        let adapted = [".attn_q.", ".attn_v.", ".ffn_down."].iter().any(|s| t.name.contains(s));
        if adapted {
            assert_eq!(m.ty, GgmlType::F32, "{}", t.name);
        } else {
            assert_eq!(
                (m.ty, merged.tensor_data(m).expect("data")),
                (t.ty, base.tensor_data(t).expect("data")),
                "{}",
                t.name
            );
        }
    }
    // The merged weights equal W + (α/r)·B·A.
    let model = Llama::from_gguf(&base).expect("model");
    let mcfg = model.config().clone();
    let ad = LoraAdapters::load(&r.output_dir, &mcfg).expect("adapter");
    let w = ad
        .merged_weight(model.weight(1, Proj::VProj).expect("w"), 1, Proj::VProj)
        .expect("merge")
        .flatten_all()
        .expect("f")
        .to_vec1::<f32>()
        .expect("v");
    let got = merged.dequantize(merged.tensor("blk.1.attn_v.weight").expect("t")).expect("deq");
    assert_eq!(w, got);
    let merged_model = Llama::from_gguf(&merged).expect("merged model");
    let ids: Vec<u32> = vec![1, 10, 20, 30];
    let a = model.logits(&ids, 1, 4, &mut ForwardOptions::with_lora(&ad)).expect("a").to_vec2::<f32>().expect("v");
    let b = merged_model.logits(&ids, 1, 4, &mut ForwardOptions::base()).expect("b").to_vec2::<f32>().expect("v");
    let worst = a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(worst < 1e-4, "{worst}");
    if let Some(rt) = common::runtime() {
        engine_logprobs_agree(&rt, &entry, &model, &ad, 1e-3);
    }
    // Requantised exports import too (4-bit: only a loose agreement).
    for (fmt, tol) in
        [(WeightFormat::F16, 5e-3), (WeightFormat::Q8_0, 5e-2), (WeightFormat::Q4_0, 1.0), (WeightFormat::Q4_1, 1.0)]
    {
        let p = f.dir.path().join(format!("{fmt:?}.gguf"));
        techne_training::export::write_merged_gguf(&base, &model, &ad, fmt, &p, None).expect("write");
        let g = GgufFile::open(&p).expect("open");
        assert_eq!(g.tensor("blk.0.attn_q.weight").expect("t").ty, fmt.ggml_type());
        let lin = techne_training::Lineage { model: Some(format!("tiny-{fmt:?}").to_lowercase()), ..lineage.clone() };
        let e =
            techne_training::export::register_merged(&reg, &format!("tiny-{fmt:?}").to_lowercase(), &p, &lin, Some(64))
                .expect("register");
        assert_eq!(e.manifest.max_context, 64);
        if let Some(rt) = common::runtime() {
            engine_logprobs_agree(&rt, &e, &model, &ad, tol);
        }
    }
}

#[test]
fn quantisers_round_trip_within_their_step() {
    let mut r = techne_training::rng::Rng::new(5);
    let x: Vec<f32> = (0..256).map(|_| r.uniform(2.0)).collect();
    // Worst-case errors: half a step, except Q4_0's clamped code 15 on the
    // side opposite the extreme value (a full step).
    for (fmt, ty, bound) in [
        (WeightFormat::Q8_0, GgmlType::Q8_0, 0.5 * 2.0 / 127.0),
        (WeightFormat::Q4_0, GgmlType::Q4_0, 2.0 / 8.0),
        (WeightFormat::Q4_1, GgmlType::Q4_1, 0.5 * 4.0 / 15.0),
    ] {
        let bytes = fmt.encode(&x, 64).expect("encode");
        assert_eq!(bytes.len(), ty.bytes_for(256).expect("size"));
        let y = techne_inference::quant::dequantize(ty, &bytes, 256).expect("dequantize");
        let worst = x.iter().zip(&y).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst <= bound * 1.01 + 1e-3, "{fmt:?}: error {worst}");
    }
    assert!(WeightFormat::Q4_0.encode(&x[..48], 48).is_err());
    assert_eq!(WeightFormat::parse("Q4_1").expect("parse"), WeightFormat::Q4_1);
    assert!(WeightFormat::parse("q3").is_err());
}

#[test]
fn config_errors_say_what_to_change() {
    let f = fixture();
    let bad = [
        TrainConfig { batch_size: 0, ..config(&f, &f.sft, "v") },
        TrainConfig { max_steps: Some(0), ..config(&f, &f.sft, "v") },
        TrainConfig { max_seq_len: 100_000, ..config(&f, &f.sft, "v") },
        TrainConfig { lora: LoraConfig { rank: 0, ..LoraConfig::default() }, ..config(&f, &f.sft, "v") },
        TrainConfig { dpo_beta: 0.0, ..config(&f, &f.sft, "v") },
    ];
    for cfg in bad {
        assert!(matches!(train_sft(&cfg, quiet), Err(TrainError::Config(_))), "{cfg:?}");
    }
    assert_eq!(LoraConfig::parse_targets("all-linear").expect("all").len(), 7);
    assert_eq!(LoraConfig::parse_targets("v_proj, q_proj,attn_q").expect("list"), vec![Proj::QProj, Proj::VProj]);
    assert!(LoraConfig::parse_targets("qkv").is_err());
    // Preference data given to SFT: the line and the expected formats are named.
    match train_sft(&config(&f, &f.dpo, "w"), quiet) {
        Err(TrainError::Data { line: 1, message, .. }) => assert!(message.contains("`messages`"), "{message}"),
        r => panic!("{r:?}"),
    }
}

#[test]
fn held_out_loss_after_a_step_is_the_next_full_batch_loss_and_leaves_the_weights_alone() {
    let f = fixture();
    let codec = TextCodec::from_gguf(&GgufFile::open(&f.model).expect("gguf")).expect("codec");
    let examples = data::load_sft(&f.sft, &codec, TemplateMode::Chat, 96).expect("data").examples.len();
    // One batch = every example once, no dropout: the loss of step k + 1 is the loss of the weights after
    // step k on the whole set, which is what evaluating on the training file after step k measures.
    let plain = TrainConfig {
        batch_size: examples,
        grad_accum: 1,
        max_steps: Some(3),
        checkpoint_every: 0,
        lora: LoraConfig { dropout: 0.0, ..config(&f, &f.sft, "plain").lora },
        ..config(&f, &f.sft, "plain")
    };
    let without = train_sft(&plain, quiet).expect("plain");
    let evaluated = TrainConfig {
        eval_data: Some(f.sft.clone()),
        eval_every: 1,
        output_dir: f.dir.path().join("evaluated"),
        ..plain.clone()
    };
    let with = train_sft(&evaluated, quiet).expect("evaluated");
    assert_eq!(adapter_bytes(&without), adapter_bytes(&with), "evaluation changed the trajectory");
    assert!(without.steps.iter().all(|s| s.eval_loss.is_none()));
    for k in 0..2 {
        let (eval, next) = (with.steps[k].eval_loss.expect("evaluated"), with.steps[k + 1].loss);
        assert!(
            (eval - next).abs() < 1e-5 * next.abs().max(1.0),
            "step {}: held-out {eval} vs next loss {next}",
            k + 1
        );
    }
    assert!(with.steps[2].eval_loss.is_some(), "the last step is evaluated");

    // DPO: evaluated after the last step only (eval_every 0), with the reward accuracy.
    let dpo = TrainConfig {
        eval_data: Some(f.dpo.clone()),
        output_dir: f.dir.path().join("dpo-eval"),
        lora: LoraConfig { dropout: 0.0, ..config(&f, &f.dpo, "d").lora },
        max_steps: Some(2),
        ..config(&f, &f.dpo, "d")
    };
    let r = train_dpo(&dpo, quiet).expect("dpo");
    assert!(r.steps[0].eval_loss.is_none());
    let (loss, accuracy) = (r.steps[1].eval_loss.expect("loss"), r.steps[1].eval_accuracy.expect("accuracy"));
    assert!(loss.is_finite() && loss > 0.0 && (0.0..=1.0).contains(&accuracy), "{loss} {accuracy}");
}

#[test]
fn keep_best_exports_the_adapter_of_the_best_held_out_evaluation() {
    let f = fixture();
    // Held-out pairs with chosen and rejected swapped: learning the training preferences makes them worse, so
    // the best evaluation comes before the last step.
    let swapped = f.dir.path().join("swapped.jsonl");
    let text = std::fs::read_to_string(&f.dpo).expect("dpo data");
    let mut lines = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut v: serde_json::Value = serde_json::from_str(line).expect("json");
        let (chosen, rejected) = (v["chosen"].clone(), v["rejected"].clone());
        v["chosen"] = rejected;
        v["rejected"] = chosen;
        lines.push(v.to_string());
    }
    std::fs::write(&swapped, lines.join("\n")).expect("write");
    let base = TrainConfig {
        lora: LoraConfig { dropout: 0.0, ..config(&f, &f.dpo, "kb").lora },
        max_steps: Some(5),
        eval_data: Some(swapped.clone()),
        eval_every: 1,
        ..config(&f, &f.dpo, "last")
    };
    let last = train_dpo(&base, quiet).expect("last");
    assert_eq!(last.selected_step, None);
    let kept = TrainConfig { keep_best: true, output_dir: f.dir.path().join("best-run"), ..base.clone() };
    let r = train_dpo(&kept, quiet).expect("keep best");
    // Same trajectory: keeping the best changes what is kept, not how it trains.
    assert_eq!(losses(&r), losses(&last));
    let key = |s: &techne_training::StepRecord| (s.eval_accuracy.unwrap_or(0.0), -s.eval_loss.unwrap_or(f64::INFINITY));
    let mut best = &r.steps[0];
    for s in &r.steps[1..] {
        if key(s) > key(best) {
            best = s;
        }
    }
    let expected = (best.step != r.steps.len()).then_some(best.step);
    assert_eq!(r.selected_step, expected, "{:?}", r.steps.iter().map(key).collect::<Vec<_>>());
    assert!(r.selected_step.is_some_and(|s| s < 5), "the swapped held-out set should peak early");
    let best_adapter = std::fs::read(r.output_dir.join("best").join(ADAPTER_FILE)).expect("best adapter");
    assert_eq!(adapter_bytes(&r), best_adapter);
    assert_ne!(adapter_bytes(&r), adapter_bytes(&last), "the kept adapter is not the last step's");
    // keep_best without held-out data is a configuration error that says what to add.
    let bad = TrainConfig { eval_data: None, output_dir: f.dir.path().join("bad"), ..kept };
    let err = train_dpo(&bad, quiet).expect_err("no eval data").to_string();
    assert!(err.contains("eval_data"), "{err}");
}
