//! A minimal front end over the library API, as `techne train` will use it:
//!
//! ```sh
//! cargo run --release -p techne-training --example train -- sft|dpo MODEL DATA.jsonl OUT_DIR [NAME] [KEY=VALUE…]
//! ```
//!
//! `MODEL` is `default`, a registry name or a `.gguf` file. With `NAME` the
//! merged model is registered in the default registry (or `registry=DIR`).
//! Keys: `steps`, `epochs`, `batch`, `accum`, `lr`, `rank`, `alpha`,
//! `dropout`, `targets`, `seq`, `seed`, `beta`, `format`, `every`, `resume`,
//! `registry`, `warmup`.

use techne_inference::Registry;
use techne_training::{
    Control, LoraConfig, TrainConfig, TrainEvent, WeightFormat, resolve_model, train_dpo, train_sft,
};

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [kind, model, data, out, rest @ ..] = args.as_slice() else {
        return Err("usage: train sft|dpo MODEL DATA.jsonl OUT_DIR [NAME] [KEY=VALUE…]".into());
    };
    let (name, kvs) = match rest.first() {
        Some(n) if !n.contains('=') => (Some(n.clone()), &rest[1..]),
        _ => (None, rest),
    };
    let mut registry_dir = None;
    let mut cfg = TrainConfig { data: data.into(), output_dir: out.into(), out_name: name, ..TrainConfig::default() };
    for kv in kvs {
        let (k, v) = kv.split_once('=').ok_or_else(|| format!("expected KEY=VALUE, got `{kv}`"))?;
        match k {
            "steps" => cfg.max_steps = Some(v.parse()?),
            "epochs" => cfg.epochs = v.parse()?,
            "batch" => cfg.batch_size = v.parse()?,
            "accum" => cfg.grad_accum = v.parse()?,
            "lr" => cfg.optim.learning_rate = v.parse()?,
            "warmup" => cfg.optim.warmup_steps = v.parse()?,
            "rank" => cfg.lora.rank = v.parse()?,
            "alpha" => cfg.lora.alpha = v.parse()?,
            "dropout" => cfg.lora.dropout = v.parse()?,
            "targets" => cfg.lora.targets = LoraConfig::parse_targets(v)?,
            "seq" => cfg.max_seq_len = v.parse()?,
            "seed" => cfg.seed = v.parse()?,
            "beta" => cfg.dpo_beta = v.parse()?,
            "format" => cfg.merged_format = WeightFormat::parse(v)?,
            "every" => cfg.checkpoint_every = v.parse()?,
            "resume" => cfg.resume = v.parse()?,
            "registry" => registry_dir = Some(std::path::PathBuf::from(v)),
            _ => return Err(format!("unknown key `{k}`").into()),
        }
    }
    let registry = match &registry_dir {
        Some(d) => Registry::open(d)?,
        None => Registry::open_default()?,
    };
    let base = resolve_model(&registry, model)?;
    cfg.model = base.gguf;
    cfg.model_name = base.name;
    cfg.registry_dir = registry_dir;
    let progress = |e: &TrainEvent<'_>| {
        match e {
            TrainEvent::Prepared { examples, skipped, total_steps, trainable_params, resumed_from } => println!(
                "{examples} examples ({skipped} skipped), {total_steps} steps, {trainable_params} trainable parameters{}",
                resumed_from.map(|s| format!(", resuming after step {s}")).unwrap_or_default()
            ),
            TrainEvent::Reference { done, total } => println!("reference log-probabilities {done}/{total}"),
            TrainEvent::Step(r) => {
                let dpo = r
                    .dpo
                    .as_ref()
                    .map(|d| format!(" acc {:.2} margin {:.3}", d.accuracy, d.margin))
                    .unwrap_or_default();
                println!(
                    "step {:>4} loss {:.4} lr {:.2e} |g| {:.3} {:.0} tok/s{dpo}",
                    r.step, r.loss, r.lr, r.grad_norm, r.tokens_per_second
                );
            }
            TrainEvent::Checkpoint { step, dir } => println!("checkpoint {step}: {}", dir.display()),
            TrainEvent::Exporting => println!("merging and exporting"),
        }
        Control::Continue
    };
    let report = match kind.as_str() {
        "sft" => train_sft(&cfg, progress)?,
        "dpo" => train_dpo(&cfg, progress)?,
        other => return Err(format!("unknown kind `{other}` (sft or dpo)").into()),
    };
    println!(
        "done: final loss {:.4}, {:.0} tokens/s, peak RSS {:.0} MiB",
        report.final_loss.unwrap_or(f64::NAN),
        report.tokens_per_second,
        report.peak_rss_bytes.unwrap_or(0) as f64 / 1048576.0
    );
    if let Some(m) = &report.model {
        println!("registered `{}` in {}", m.name, m.dir.display());
    }
    Ok(())
}
