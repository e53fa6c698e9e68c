#!/usr/bin/env bash
# The main job: installs what is missing, builds techne and the plugins, and
# runs the question-rewriter pipeline of examples/rewriter.toml.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
"$root/scripts/setup.sh"
cargo build --quiet --release -p techne
techne="$root/target/release/techne"
"$techne" plugin inspect plugins/target/wasm32-wasip2/release/question_rewriter.wasm
"$techne" config check examples/rewriter.toml
"$techne" run examples/rewriter.toml "$@"
