#!/usr/bin/env bash
# One call on the GPU machine: build (the torch extension for sm_90a and the standalone CUDA
# self-tests, in parallel), run the self-tests, the CUDA pytest files (one process each, so
# one crash cannot hide the others' results) and `python -m effattn bench`, and print a
# short summary last. Everything that comes back lands in $OUT (default build/device_out):
# logs.txt, and per bench group its bench.json and PNG plot.
#   bash scripts/device_run.sh [stages...]   stages: selftest selfbench pytest bench models examples crashtrace sanitize
#   BENCH_GROUPS="na bs lightning"           one bench process per group (each with its timeout)
#   PYTEST_FILES="tests/cuda/test_x.py ..."  a subset of the CUDA pytest files
#   PYTEST_FUSED64=0                         skip the block-sparse pytest with EFFATTN_SM90_BWD=fused (64-key CTAs)
#   BENCH_ARGS="--quick"                     extra `python -m effattn bench` arguments
#   MODEL_GROUPS="nat lm"                    benchmarks/bench_models.py runs of the models stage
#   stage ncu:    NCU_KERNEL (regex), NCU_CMD (the program), NCU_SECTIONS; report text in $OUT/ncu.txt
#   stage script: SCRIPT_CMD, any command (e.g. python3 scripts/profile_prefill.py), SCRIPT_TIMEOUT
# Wheels in .whl/ (e.g. fla-core for the lightning peer) are installed to /tmp/site first.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-build/device_out}
mkdir -p "$OUT"
LOG="$OUT/logs.txt"
STAGES=${*:-selftest pytest bench}
export PYTHONUNBUFFERED=1 EFFATTN_CUDA=1 EFFATTN_CUDA_ARCHS=${EFFATTN_CUDA_ARCHS:-90a}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
summary=()
note() { summary+=("$1"); echo "== $1" | tee -a "$LOG"; }
section() { echo "===== $1" >> "$LOG"; }

if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl >> "$LOG" 2>&1
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi

t0=$(date +%s)
if [ "${SKIP_BUILD:-0}" != 1 ]; then  # SKIP_BUILD=1: a second call in the same tree
(python3 setup.py build_ext --inplace > build_ext.log 2>&1; echo $? > build_ext.rc) &
(bash scripts/build_cuda_selftest.sh na > build_na.log 2>&1; echo $? > build_na.rc) &
(bash scripts/build_cuda_selftest.sh lightning > build_lightning.log 2>&1; echo $? > build_lightning.rc) &
wait
for b in ext na lightning; do
  section "build $b"; tail -40 "build_$b.log" >> "$LOG"
done
note "build: extension rc=$(cat build_ext.rc), na selftest rc=$(cat build_na.rc), lightning selftest rc=$(cat build_lightning.rc) ($(( $(date +%s) - t0 )) s)"
fi
export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1 | sed 's/^/gpu: /' | tee -a "$LOG"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$LOG"
# The machine's copy of the tree has no usable .git: pass EFFATTN_COMMIT=$(git rev-parse --short HEAD).
echo "commit: ${EFFATTN_COMMIT:-unknown}" | tee -a "$LOG"

for stage in $STAGES; do
  case $stage in
    selftest)
      for t in na lightning; do
        section "selftest $t"
        dir=build/cuda; [ "$t" = lightning ] && dir=build/lightning
        timeout 60 "$dir/${t}_cuda_selftest" > st.log 2>&1; rc=$?
        cat st.log >> "$LOG"
        note "selftest $t rc=$rc: $(tail -1 st.log)"
      done
      # The SM80-class core (A100-class GPUs; D = 32 and 64-row query blocks on Hopper) too.
      section "selftest na, EFFATTN_FORCE_SM80=1"
      EFFATTN_FORCE_SM80=1 timeout 60 build/cuda/na_cuda_selftest > st.log 2>&1; rc=$?
      cat st.log >> "$LOG"
      note "selftest na (SM80 core) rc=$rc: $(tail -1 st.log)"
      section "selftest na, EFFATTN_SM90_BWD=split"; EFFATTN_SM90_BWD=split timeout 60 build/cuda/na_cuda_selftest > st.log 2>&1; rc=$?; cat st.log >> "$LOG"; note "selftest na (split SM90 bwd) rc=$rc: $(tail -1 st.log)"
      for mode in fused128 fused; do  # 128-key CTAs everywhere / 64-key CTAs everywhere
        section "selftest na, EFFATTN_SM90_BWD=$mode"; EFFATTN_SM90_BWD=$mode timeout 60 build/cuda/na_cuda_selftest > st.log 2>&1; rc=$?; cat st.log >> "$LOG"; note "selftest na (EFFATTN_SM90_BWD=$mode) rc=$rc: $(tail -1 st.log)"
      done
      # fused128 with its v7 dQ path (red.global atomics) instead of the tile-contiguous bulk one.
      section "selftest na, EFFATTN_SM90_DQ=atomics"; EFFATTN_SM90_DQ=atomics timeout 60 build/cuda/na_cuda_selftest > st.log 2>&1; rc=$?; cat st.log >> "$LOG"; note "selftest na (EFFATTN_SM90_DQ=atomics) rc=$rc: $(tail -1 st.log)" ;;
    selfbench)
      for t in ${SELFBENCH:-na}; do
        section "selfbench $t"
        dir=build/cuda; [ "$t" = lightning ] && dir=build/lightning
        timeout 150 "$dir/${t}_cuda_selftest" --bench > sb.log 2>&1; rc=$?
        cat sb.log >> "$LOG"
        note "selfbench $t rc=$rc"
        cat sb.log
      done ;;
    pytest)
      for f in ${PYTEST_FILES:-tests/cuda/test_*.py}; do
        section "pytest $f"
        timeout 120 python3 -m pytest "$f" -q -rf -p no:cacheprovider > pt.log 2>&1; rc=$?
        cat pt.log >> "$LOG"
        note "pytest $(basename "$f") rc=$rc: $(tail -1 pt.log)"
      done
      # Block-sparse with the 64-key fused backward too (block_k = 128 defaults to 128-key
      # CTAs); PYTEST_FUSED64=0 skips it.
      if [ "${PYTEST_FUSED64:-1}" = 1 ] && [ -f tests/cuda/test_block_sparse_cuda.py ]; then
        section "pytest test_block_sparse_cuda.py, EFFATTN_SM90_BWD=fused"
        EFFATTN_SM90_BWD=fused timeout 120 python3 -m pytest tests/cuda/test_block_sparse_cuda.py -q -rf -p no:cacheprovider > pt.log 2>&1; rc=$?
        cat pt.log >> "$LOG"
        note "pytest test_block_sparse_cuda.py (64-key fused) rc=$rc: $(tail -1 pt.log)"
      fi ;;
    models)
      for m in ${MODEL_GROUPS:-nat lm}; do
        section "models $m"
        timeout ${MODELS_TIMEOUT:-300} python3 benchmarks/bench_models.py --only "$m" --out "$OUT/bench_models_$m" > bm.log 2>&1; rc=$?
        cat bm.log >> "$LOG"
        note "models $m rc=$rc"
        cat "$OUT/bench_models_$m/bench_models.md" 2>/dev/null || tail -5 bm.log
      done ;;
    examples)
      # The training examples on the GPU, through torch.compile and bf16 autocast.
      for ex in ${EXAMPLES:-train_nat_digits train_lightning_lm}; do
        section "example $ex"
        timeout ${EXAMPLES_TIMEOUT:-180} python3 "examples/$ex.py" --device cuda --compile --bf16 \
          --steps ${EXAMPLE_STEPS:-100} > ex.log 2>&1; rc=$?
        cat ex.log >> "$LOG"
        note "example $ex (cuda, compile, bf16) rc=$rc: $(tail -1 ex.log)"
      done ;;
    crashtrace)
      # Which C++ argument-check failures crash the process (scripts/cpp_error_probe.py), then
      # the native backtrace of the estimate_block_mask one (scripts/segv_backtrace.sh).
      section "crashtrace"
      so=$(ls python/effattn/_C*.so | head -1)
      note "libstdc++ internals defined in _C.so: $(nm -D --defined-only "$so" | grep -c 'codecvt\|_M_insert') symbols"
      ldd "$so" | grep -E "stdc|cudart" >> "$LOG"
      timeout 120 python3 scripts/cpp_error_probe.py > ct.log 2>&1; rc=$?
      cat ct.log >> "$LOG"; note "cpp error probe rc=$rc"; cat ct.log
      timeout 60 bash scripts/segv_backtrace.sh python3 -c "$(python3 -c 'import sys; sys.path.insert(0, "scripts"); import cpp_error_probe as p; print(p.SETUP.format(dev="cuda") + p.ESTIMATE.format(block_q=32))')" > ct.log 2>&1
      cat ct.log >> "$LOG"; tail -45 ct.log ;;
    ncu)
      # Hardware counters of one launch (clocks left alone, per the device notes).
      section "ncu $NCU_KERNEL"
      secs=""; for s in ${NCU_SECTIONS:-SpeedOfLight ComputeWorkloadAnalysis MemoryWorkloadAnalysis WarpStateStats Occupancy}; do secs="$secs --section $s"; done
      timeout ${NCU_TIMEOUT:-240} ncu --clock-control none --kernel-name "regex:$NCU_KERNEL" --launch-count 1 $secs \
        $NCU_CMD > "$OUT/ncu.txt" 2>&1; rc=$?
      grep -v "^==PROF==" "$OUT/ncu.txt" | tail -150 >> "$LOG"
      note "ncu $NCU_KERNEL rc=$rc (report: ncu.txt)" ;;
    script)
      section "script $SCRIPT_CMD"
      timeout ${SCRIPT_TIMEOUT:-240} bash -c "$SCRIPT_CMD" > sc.log 2>&1; rc=$?
      cat sc.log >> "$LOG"; cat sc.log
      note "script rc=$rc: $SCRIPT_CMD" ;;
    sanitize)
      section "memcheck"
      timeout ${SANITIZE_TIMEOUT:-240} compute-sanitizer --tool memcheck build/cuda/na_cuda_selftest --filter "${SANITIZE_FILTER:-2d}" > ms.log 2>&1; rc=$?
      cat ms.log >> "$LOG"
      note "memcheck rc=$rc: $(grep -E 'ERROR SUMMARY' ms.log | tail -1)" ;;
    bench)
      for group in ${BENCH_GROUPS:-na bs lightning}; do
        dir="/tmp/bench_${group//,/_}"
        section "bench $group"
        # fla's Triton autotuning alone took over 100 s in the 2026-11-29 run: lightning gets longer.
        limit=${BENCH_TIMEOUT:-150}; [ "$group" = lightning ] && limit=${BENCH_TIMEOUT:-300}
        timeout "$limit" python3 -m effattn bench --only "$group" ${BENCH_ARGS:-} --out "$dir" > bn.log 2>&1; rc=$?
        cat bn.log >> "$LOG"
        mkdir -p "$OUT/bench_${group//,/_}"
        cp "$dir"/bench.json "$dir"/*.png "$OUT/bench_${group//,/_}/" 2>/dev/null
        note "bench $group rc=$rc"
        cat "$dir/bench.md" 2>/dev/null || tail -5 bn.log
      done ;;
  esac
done
echo; echo "== summary"; printf '%s\n' "${summary[@]}"
