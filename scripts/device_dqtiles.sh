#!/usr/bin/env bash
# Device check of the v8 prototype (written without a GPU): the 128-key fused backward's
# tile-contiguous dQ accumulator with one 16 KB bulk reduction per consumer warpgroup and query
# tile (attn_bwd_sm90_fused.cuh, dq_tile_layout.cuh). Run after scripts/device_run.sh has built:
#   SCRIPT_CMD="bash scripts/device_dqtiles.sh" SCRIPT_TIMEOUT=590 bash scripts/device_run.sh script
# In order: correctness (self-test default / fused128 everywhere / EFFATTN_SM90_DQ=atomics, NA +
# block-sparse pytest default and fused128), compute-sanitizer on small fused128 cases, then the
# 1D bench (v7: 11.46 ms) and block-sparse densities 0.5 / 0.1 (v7: 32.4 / 9.2 ms) beside the
# atomics, and probes 1 (no dQ accumulation) / 64 (staged, no bulk reduction) for the breakdown.
st=build/cuda/na_cuda_selftest
echo "== selftest (default)"; timeout 60 $st 2>&1 | grep -E "FAIL|path|passed" | tail -8
echo "== selftest (fused128 everywhere)"; EFFATTN_SM90_BWD=fused128 timeout 60 $st 2>&1 | grep -E "FAIL|path|passed" | tail -8
echo "== selftest (EFFATTN_SM90_DQ=atomics)"; EFFATTN_SM90_DQ=atomics timeout 60 $st 2>&1 | grep -E "FAIL|path|passed" | tail -4
echo "== pytest NA + BS (default)"
timeout 200 python3 -m pytest tests/cuda/test_na_cuda.py tests/cuda/test_block_sparse_cuda.py -q -rf -p no:cacheprovider 2>&1 | tail -6
echo "== pytest NA + BS (fused128)"
EFFATTN_SM90_BWD=fused128 timeout 200 python3 -m pytest tests/cuda/test_na_cuda.py tests/cuda/test_block_sparse_cuda.py -q -rf -p no:cacheprovider 2>&1 | tail -6
for tool in memcheck racecheck synccheck; do
  echo "== compute-sanitizer $tool (fused128, ${SAN_FILTER:-1d L330})"
  EFFATTN_SM90_BWD=fused128 timeout ${SAN_TIMEOUT:-150} compute-sanitizer --tool $tool $st --filter "${SAN_FILTER:-1d L330}" 2>&1 \
    | grep -E "SUMMARY|passed|FAIL|Invalid|Race|Barrier|error" | head -12
done
for dq in tiles atomics; do
  v=; [ $dq = atomics ] && v=atomics
  echo "== selfbench 1D ($dq)"; EFFATTN_SM90_DQ=$v timeout 60 $st --bench --filter 1D 2>&1 | tail -1
done
for probe in 1 64; do
  echo "== selfbench 1D, tiles, probe $probe"; EFFATTN_BWD_PROBE=$probe timeout 60 $st --bench --filter 1D 2>&1 | tail -1
done
for d in 0.5 0.1; do
  for dq in tiles atomics; do
    v=; [ $dq = atomics ] && v=atomics
    echo "== bench bs density $d ($dq)"
    EFFATTN_SM90_DQ=$v timeout 100 python3 -m effattn bench --only bs --filter $d 2>&1 | grep "| effattn\|| flex"
  done
done
