#!/usr/bin/env bash
# One call on the GPU machine: build (torch extension for sm_90a + the standalone CUDA
# self-test, in parallel), run the self-test, the CUDA pytest suite and the NA benchmark,
# and print a short summary last. Logs go to $OUT (default build/device_out).
#   bash scripts/device_run.sh [stages...]   stages: selftest pytest sanitize bench (default all but sanitize)
#   BENCH_SUITES=na,lightning picks the `python -m effattn bench` suites.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-build/device_out}
mkdir -p "$OUT"
STAGES=${*:-selftest pytest bench}
export PYTHONUNBUFFERED=1 EFFATTN_CUDA=1 EFFATTN_CUDA_ARCHS=${EFFATTN_CUDA_ARCHS:-90a}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
summary=()
note() { summary+=("$1"); echo "== $1"; }

t0=$(date +%s)
(python3 setup.py build_ext --inplace > "$OUT/build_ext.log" 2>&1; echo $? > "$OUT/build_ext.rc") &
(bash scripts/build_cuda_selftest.sh > "$OUT/build_selftest.log" 2>&1; echo $? > "$OUT/build_selftest.rc") &
wait
note "build: extension rc=$(cat "$OUT/build_ext.rc"), selftest rc=$(cat "$OUT/build_selftest.rc") ($(( $(date +%s) - t0 )) s)"
[ "$(cat "$OUT/build_ext.rc")" = 0 ] || tail -30 "$OUT/build_ext.log"
[ "$(cat "$OUT/build_selftest.rc")" = 0 ] || tail -30 "$OUT/build_selftest.log"
export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv,noheader | head -1 | sed 's/^/gpu: /'
python3 -c "import torch; print('torch', torch.__version__)"

for stage in $STAGES; do
  case $stage in
    selftest)
      timeout 300 build/cuda/na_cuda_selftest > "$OUT/selftest.log" 2>&1; rc=$?
      grep -E "FAIL|mismatch" "$OUT/selftest.log" | head -20
      note "selftest rc=$rc: $(tail -1 "$OUT/selftest.log")" ;;
    pytest)
      timeout 400 python3 -m pytest tests/cuda -q -p no:cacheprovider > "$OUT/pytest_cuda.log" 2>&1; rc=$?
      grep -E "^FAILED|Error" "$OUT/pytest_cuda.log" | head -20
      note "pytest tests/cuda rc=$rc: $(tail -1 "$OUT/pytest_cuda.log")" ;;
    sanitize)
      timeout 300 compute-sanitizer --tool memcheck build/cuda/na_cuda_selftest --filter "${SANITIZE_FILTER:-2D}" > "$OUT/memcheck.log" 2>&1; rc=$?
      note "memcheck rc=$rc: $(grep -E 'ERROR SUMMARY' "$OUT/memcheck.log" | tail -1)" ;;
    bench)
      timeout 420 python3 -m effattn bench --only "${BENCH_SUITES:-na}" --out "$OUT" > "$OUT/bench.log" 2>&1; rc=$?
      note "bench rc=$rc"
      cat "$OUT/bench.md" 2>/dev/null || tail -20 "$OUT/bench.log" ;;
  esac
done
echo; echo "== summary"; printf '%s\n' "${summary[@]}"
