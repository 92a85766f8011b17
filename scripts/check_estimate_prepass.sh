#!/usr/bin/env bash
# Host-side checks of the CUDA estimation pre-passes (no GPU): index math of the smooth_quantize
# and pass-2 kernels, and quantize_vec's division-free rounding (tests/cuda/estimate_prepass_check.cpp).
#   bash scripts/check_estimate_prepass.sh        (CUDA_HOME: for cuda_runtime.h, default /usr/local/cuda)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CUDA_INC="${CUDA_HOME:-/usr/local/cuda}/include"
OUT="${TMPDIR:-/tmp}/effattn_prepass_check"
"${CXX:-g++}" -std=c++17 -O2 -Wall -Wextra -Werror -ffp-contract=off -I"${ROOT}/include" -I"${ROOT}/csrc/kernels" \
  -I"${CUDA_INC}" "${ROOT}/tests/cuda/estimate_prepass_check.cpp" -o "${OUT}"
"${OUT}"
