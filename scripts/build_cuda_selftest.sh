#!/usr/bin/env bash
# Builds a family's torch-free CUDA kernels and its standalone self-test binary:
#   bash scripts/build_cuda_selftest.sh [na|lightning]     (default: na)
#   build/cuda/na_cuda_selftest, build/lightning/lightning_cuda_selftest   (`--bench` for timings)
#   <build dir>/ptxas.log, ptxas_summary.txt   (-Xptxas -v resource usage per kernel)
# Env: EFFATTN_CUDA_ARCHS  e.g. "90a" (default) or "80;90a"
#      CUTLASS_INCLUDE     CUTLASS/CuTe include dir (default: from the nvidia-cutlass wheel)
#      NVCC                nvcc to use (default: nvcc on PATH, else /usr/local/cuda/bin/nvcc)
#      JOBS                parallel compile jobs (default: nproc)
#      EXTRA_NVCC_FLAGS    extra nvcc flags, e.g. "-DEFFATTN_FWD_WARPS=4" (tuning variants)
#      BUILD_DIR           output folder (default: build/cuda for na, build/lightning for lightning)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${1:-na}"
case "${TARGET}" in
  na) DEFAULT_DIR="${ROOT}/build/cuda" ;;
  lightning) DEFAULT_DIR="${ROOT}/build/lightning" ;;
  *) echo "unknown target '${TARGET}' (na or lightning)" >&2; exit 2 ;;
esac
OUT="${BUILD_DIR:-${DEFAULT_DIR}}"
mkdir -p "${OUT}/obj"

NVCC="${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}"
ARCHS="${EFFATTN_CUDA_ARCHS:-90a}"
JOBS="${JOBS:-$(nproc)}"
if [[ -z "${CUTLASS_INCLUDE:-}" ]]; then
  CUTLASS_INCLUDE="$(python3 -c "import cutlass_library, os; print(os.path.join(os.path.dirname(cutlass_library.__file__), 'source', 'include'))" 2>/dev/null || true)"
fi

GENCODE=()
IFS=';, ' read -r -a ARCH_LIST <<< "${ARCHS}"
for a in "${ARCH_LIST[@]}"; do
  [[ -z "$a" ]] && continue
  GENCODE+=("-gencode=arch=compute_${a},code=sm_${a}")
done

FLAGS=(-O3 -std=c++17 --expt-relaxed-constexpr -lineinfo -Xptxas -v
       -Xcompiler=-Wall,-Wextra -Werror=all-warnings
       -I"${ROOT}/include")
if [[ -n "${EXTRA_NVCC_FLAGS:-}" ]]; then
  read -r -a EXTRA <<< "${EXTRA_NVCC_FLAGS}"
  FLAGS+=("${EXTRA[@]}")
fi
if [[ -n "${CUTLASS_INCLUDE}" && -d "${CUTLASS_INCLUDE}" ]]; then
  FLAGS+=(-I"${CUTLASS_INCLUDE}")
fi

SOURCES=("${ROOT}"/csrc/kernels/"${TARGET}"_*.cu "${ROOT}/tests/cuda/${TARGET}_cuda_selftest.cu")

echo "nvcc: ${NVCC}"
echo "archs: ${ARCHS}  jobs: ${JOBS}"
echo "cutlass include: ${CUTLASS_INCLUDE:-<none>}"

export NVCC OUT
printf '%s\n' "${SOURCES[@]}" | xargs -P "${JOBS}" -I{} bash -c '
  src="{}"; name="$(basename "${src}" .cu)"
  start=$(date +%s)
  if "${NVCC}" "$@" -c "${src}" -o "${OUT}/obj/${name}.o" > "${OUT}/obj/${name}.log" 2>&1; then
    echo "  compiled ${name} ($(( $(date +%s) - start )) s)"
  else
    cat "${OUT}/obj/${name}.log"; echo "FAILED: ${name}"; exit 255
  fi' _ "${FLAGS[@]}" "${GENCODE[@]}"

cat "${OUT}"/obj/*.log > "${OUT}/ptxas.log"
"${NVCC}" "${GENCODE[@]}" -o "${OUT}/${TARGET}_cuda_selftest" "${OUT}"/obj/*.o
echo "built ${OUT}/${TARGET}_cuda_selftest"

# Resource summary: one line per kernel (registers, spills, shared memory).
python3 - "${OUT}/ptxas.log" <<'PY' | tee "${OUT}/ptxas_summary.txt"
import re, sys
cur = None; arch = None
for line in open(sys.argv[1]):
    m = re.search(r"Compiling entry function '(\w+)' for '(\w+)'", line)
    if m:
        cur, arch = m.group(1), m.group(2); spill = ""; continue
    m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
    if m and cur:
        spill = f"stack {m.group(1)} spill st {m.group(2)} ld {m.group(3)}"; continue
    m = re.search(r"Used (\d+) registers", line)
    if m and cur:
        name = cur
        for k in ("attn_fwd_kernel", "attn_bwd_kv_kernel", "attn_bwd_delta_kernel", "attn_bwd_dq_kernel",
                  "chunk_kernel", "scan_kernel", "decode_kernel", "pass_v2_kernel", "pass_v3_kernel",
                  "decode_v2_kernel"):
            if k in cur: name = k
        dt = "bf16" if "nv_bfloat16" in cur else ("f16" if "__half" in cur else "")
        dm = re.findall(r"Li(\d+)E", cur)
        print(f"{arch} {name:28s} {dt:4s} D={dm[0] if dm else '?':>3s} regs={m.group(1):>3s} {spill}")
        cur = None
PY
