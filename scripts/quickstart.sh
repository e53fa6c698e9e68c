#!/usr/bin/env bash
# The main job on a fresh machine: installs what is missing, builds techne
# and the plugins, then runs the question-rewriter pipeline on the embedded
# SmolLM2-135M-Instruct model (examples/rewriter.toml) and prints the results.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
"$root/scripts/setup.sh"
cargo build --quiet --release -p techne
techne="$root/target/release/techne"
"$techne" plugin inspect plugins/target/wasm32-wasip2/release/question_rewriter.wasm
echo
"$techne" run examples/rewriter.toml --overwrite "$@"
python3 - "$root/examples/runs/rewriter/results.jsonl" <<'PY'
import json, sys
print()
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(f"[{r['id']}] {r['input']}")
    print(f"   rewritten: {r.get('rewritten', '-')}")
    print(f"   answer:    {r.get('answer', r.get('failure'))}")
PY
