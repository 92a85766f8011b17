#!/usr/bin/env bash
# Fifth session's last device check, after scripts/device_run.sh has built (and run the NA bench):
#   BENCH_GROUPS=na SCRIPT_CMD="bash scripts/device_final_s5.sh" bash scripts/device_run.sh bench script
# memcheck of the default backward paths (fused128 with tile-contiguous dQ on 1D, 64-key fused on
# 2D / 3D) on reduced 2D / 3D suites, the estimator's CUDA tests with pass 3 v2 unrolled as the
# default, and the sparse prefill profile at 64K / 128K (with the whole call timed).
st=build/cuda/na_cuda_selftest
for f in 2d 3d; do
  echo "== memcheck (default paths, $f)"
  timeout 100 compute-sanitizer --tool memcheck $st --filter "$f" 2>&1 | grep -E "passed|SUMMARY|Invalid" | head -4
done
echo "== pytest estimate (CUDA)"
timeout 90 python3 -m pytest tests/cuda/test_estimate_cuda.py -q -rf -p no:cacheprovider 2>&1 | tail -2
echo "== sparse prefill profile"
timeout 200 python3 scripts/profile_prefill.py --n 65536 131072 --tau 1e-2
