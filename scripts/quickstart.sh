#!/usr/bin/env bash
# The main job on a fresh machine: installs what is missing, builds techne
# and the plugins, then on the embedded SmolLM2-135M-Instruct model
#  1. runs the question-rewriter pipeline (examples/rewriter.toml) and prints
#     each question, its rewrite and the answer;
#  2. evaluates the inference-time parts of all five techniques (Question
#     Rewriter, QPO, SELF-TAUGHT with zero-shot CoT, Self-Evolution's QA-pair
#     writing, LlamaDuo's judge) against the baseline (examples/eval.toml)
#     and prints the comparison table.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
"$root/scripts/setup.sh"
cargo build --quiet --release -p techne
techne="$root/target/release/techne"
"$techne" run examples/rewriter.toml --overwrite
python3 - "$root/examples/runs/rewriter/results.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(f"[{r['id']}] {r['input']}")
    print(f"   rewritten: {r.get('rewritten', '-')}")
    print(f"   answer:    {r.get('answer', r.get('failure'))}")
PY
echo
"$techne" eval examples/eval.toml --overwrite
