#!/usr/bin/env bash
# The Python environment of `techne bench train`'s peer: PyTorch + PEFT +
# transformers (which reads the same SmolLM2 GGUF through the `gguf`
# package), in its own virtual environment so that torch never touches the
# main test path. PyPI's Linux torch wheel depends on NVIDIA's CUDA wheels
# (about 3 GB on disk); the benchmark itself runs on the CPU.
#
# usage: benches/setup-peft-venv.sh [VENV_DIR]   (default: target/bench-venv)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-$root/target/bench-venv}"
avail_gb=$(df -Pk "$(dirname "$venv")" | awk 'NR==2 {print int($4 / 1048576)}')
if [ "$avail_gb" -lt 8 ]; then
  echo "setup-peft-venv: only ${avail_gb} GiB free next to $venv; torch with its CUDA wheels needs about 6 GiB" >&2
  exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --upgrade pip
"$venv/bin/pip" install --quiet torch "transformers>=4.46,<5" "peft>=0.13" "gguf>=0.10" sentencepiece protobuf
"$venv/bin/python" -c 'import torch, transformers, peft, gguf; print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__)'
