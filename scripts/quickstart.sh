#!/usr/bin/env bash
# The main job on a fresh machine: installs what is missing, builds techne
# and the plugins, lists the plugin components, and measures the sandbox.
# (Once native inference lands, this runs the question-rewriter pipeline on
# the embedded SmolLM2 model; see the README's status section.)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
"$root/scripts/setup.sh"
cargo build --quiet --release -p techne
techne="$root/target/release/techne"
components="$root/plugins/target/wasm32-wasip2/release"
echo
"$techne" plugin inspect "$components/question_rewriter.wasm"
echo
"$techne" plugin list "$components" || true
echo
"$techne" bench plugin-call --plugin "$components/techne_test_chaos.wasm" "$@"
