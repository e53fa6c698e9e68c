#!/usr/bin/env python3
"""The peer of `techne bench train`: LoRA SFT steps with PyTorch + PEFT on the
CPU, on the same GGUF weights, data, LoRA rank, sequence length, batch and
thread count as techne's trainer.

The model is loaded from the GGUF with transformers (through the `gguf`
package: the weights are dequantised to f32, as techne's trainer does), the
LoRA adapters are PEFT's (`r`, `lora_alpha`, dropout, target modules), the
optimizer is torch's AdamW; the loss is the mean NLL over every token of each
sequence (the `{"text": …}` records of the data file, cut to the sequence
length), as techne trains `text` records. The first step is a warm-up.

Prints one JSON object: per-step seconds and tokens, and the peak RSS of
this process (ru_maxrss). Run it with the interpreter of the environment
that benches/setup-peft-venv.sh creates.
"""

import argparse
import json
import os
import resource
import sys
import time


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gguf", required=True, help="the GGUF file (techne's default: SmolLM2-135M-Instruct Q4_1)")
    p.add_argument("--data", required=True, help="JSONL with {\"text\": ...} records")
    p.add_argument("--steps", type=int, default=5, help="timed optimizer steps (after one warm-up step)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--alpha", type=float, default=16.0)
    p.add_argument("--dropout", type=float, default=0.05)
    p.add_argument("--targets", default="q_proj,v_proj")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    gguf_dir, gguf_file = os.path.split(os.path.abspath(args.gguf))
    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, torch_dtype=torch.float32)
    model.config.use_cache = False
    targets = model_targets(args.targets)
    lora = LoraConfig(
        r=args.rank,
        lora_alpha=args.alpha,
        lora_dropout=args.dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    model.train()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    load_seconds = time.perf_counter() - t0

    with open(args.data, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f if line.strip()]
    need = args.batch_size * (args.steps + 1)
    if len(texts) < need:
        print(f"{args.data} has {len(texts)} records; {need} are needed", file=sys.stderr)
        return 2
    opt = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0
    )
    steps = []
    for s in range(args.steps + 1):
        batch = texts[s * args.batch_size : (s + 1) * args.batch_size]
        enc = tokenizer(batch, truncation=True, max_length=args.seq_len, padding=True, return_tensors="pt")
        ids = enc["input_ids"]
        mask = enc["attention_mask"]
        labels = ids.masked_fill(mask == 0, -100)
        tokens = int(mask.sum())
        start = time.perf_counter()
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - start
        steps.append({"step": s + 1, "seconds": seconds, "tokens": tokens, "loss": out.loss.detach().item()})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        json.dumps(
            {
                "peer": f"torch {torch.__version__} + peft",
                "threads": torch.get_num_threads(),
                "trainable_params": trainable,
                "load_seconds": load_seconds,
                "steps": steps,
                "peak_rss_bytes": peak,
            }
        )
    )
    return 0


def model_targets(spec: str):
    if spec == "all-linear":
        return ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    return [t.strip() for t in spec.split(",") if t.strip()]


if __name__ == "__main__":
    sys.exit(main())
