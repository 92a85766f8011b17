#!/usr/bin/env bash
# One device iteration of this session's work (script stage after scripts/device_run.sh built):
# default backward (128-key CTAs on 1D / block-sparse) correctness, the 4-wide dQ atomics A/B,
# then the int8 wgmma estimation kernel.
echo "== selftest (default)"; timeout 60 build/cuda/na_cuda_selftest 2>&1 | grep -E "FAIL|passed|path" | tail -6
echo "== pytest NA + BS (default)"; timeout 200 python3 -m pytest tests/cuda/test_na_cuda.py tests/cuda/test_block_sparse_cuda.py -q -x -rf -p no:cacheprovider 2>&1 | tail -3
echo "== selftest (4-wide dQ atomics)"; EFFATTN_BWD_PROBE=32 timeout 60 build/cuda/na_cuda_selftest 2>&1 | grep -E "FAIL|passed" | tail -4
for probe in 0 32; do
  echo "== selfbench 1D, probe $probe"; EFFATTN_BWD_PROBE=$probe timeout 60 build/cuda/na_cuda_selftest --bench --filter 1D 2>&1 | tail -1
done
for probe in 0 32; do
  echo "== bench bs density 0.5, probe $probe"; EFFATTN_BWD_PROBE=$probe timeout 100 python3 -m effattn bench --only bs --filter 0.5 2>&1 | grep "| effattn\|| flex"
done
echo "== estimate pytest (default mma, then wgmma)"
timeout 100 python3 -m pytest tests/cuda/test_estimate_cuda.py -q -x -rf -p no:cacheprovider 2>&1 | tail -3
EFFATTN_ESTIMATE_IMPL=wgmma timeout 60 python3 -m pytest tests/cuda/test_estimate_cuda.py -q -x -rf -p no:cacheprovider -k "wgmma or map_matches" 2>&1 | tail -3
echo "== prefill profile (wgmma)"; EFFATTN_ESTIMATE_IMPL=wgmma timeout 100 python3 scripts/profile_prefill.py --n 65536 --tau 1e-2 2>&1 | grep -v Warn
