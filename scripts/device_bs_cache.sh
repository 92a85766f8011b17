#!/usr/bin/env bash
# Device check (fifth session): the validated-map cache (csrc/ops/block_map_cache.h) in the
# block-sparse bench, the racecheck of the fused backwards after mbar_arrive_warp, and the CUDA
# suites touched. Run after scripts/device_run.sh has built:
#   SCRIPT_CMD="bash scripts/device_bs_cache.sh" SCRIPT_TIMEOUT=480 bash scripts/device_run.sh script
st=build/cuda/na_cuda_selftest
echo "== pytest block-sparse + estimate (CUDA)"
timeout 120 python3 -m pytest tests/cuda/test_block_sparse_cuda.py tests/cuda/test_estimate_cuda.py -q -rf -p no:cacheprovider 2>&1 | tail -4
for f in "1d L330" "2d"; do
  echo "== racecheck (fused128 everywhere, $f)"
  EFFATTN_SM90_BWD=fused128 timeout 90 compute-sanitizer --tool racecheck $st --filter "$f" > rc.log 2>&1
  grep -E "passed|SUMMARY" rc.log | tail -2
  grep -A3 "Race reported" rc.log | head -12
done
echo "== bench bs, every density (map cache on)"
timeout 200 python3 -m effattn bench --only bs 2>&1 | grep "^| "
echo "== bench bs density 0.1 (EFFATTN_BS_MAP_CACHE=0: every call checks the maps)"
EFFATTN_BS_MAP_CACHE=0 timeout 100 python3 -m effattn bench --only bs --filter 0.1 2>&1 | grep "^| "
