#!/usr/bin/env bash
# Sets up a fresh machine and installs effattn into the current Python:
# system packages (GoogleTest, CMake), torch (the CPU wheel 2.13.0 unless a torch is
# already installed), build tools, then `pip install --no-build-isolation .`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if ! { [ -f /usr/include/gtest/gtest.h ] && command -v cmake >/dev/null; }; then
  if command -v apt-get >/dev/null; then
    SUDO=$([ "$(id -u)" = 0 ] && echo "" || echo sudo)
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq libgtest-dev cmake >/dev/null
  else
    echo "warning: install GoogleTest and CMake to build the C++ tests" >&2
  fi
fi

if ! $PY -c "import torch" 2>/dev/null; then
  $PY -m pip install -q torch==2.13.0
fi
$PY -m pip install -q ninja pytest numpy matplotlib wheel "setuptools>=64"
# Build the CUDA kernels only where a GPU can run them (override: EFFATTN_CUDA=1); a CPU
# machine that happens to have nvcc and a CUDA torch would otherwise compile them for nothing.
if [ -z "${EFFATTN_CUDA:-}" ] && ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  export EFFATTN_CUDA=0
fi
MAX_JOBS=${MAX_JOBS:-$(nproc)} $PY -m pip install -q --no-build-isolation .
