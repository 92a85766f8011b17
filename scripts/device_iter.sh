#!/usr/bin/env bash
# One device iteration of this session's work (script stage after scripts/device_run.sh built):
# fused128 correctness + 1D / block-sparse timings, then the int8 wgmma estimation kernel.
export EFFATTN_SM90_BWD=fused128
echo "== selftest (fused128)"; timeout 60 build/cuda/na_cuda_selftest 2>&1 | grep -E "FAIL|passed" | tail -6
echo "== pytest NA + BS (fused128)"; timeout 200 python3 -m pytest tests/cuda/test_na_cuda.py tests/cuda/test_block_sparse_cuda.py -q -x -rf -p no:cacheprovider 2>&1 | tail -4
echo "== selfbench (fused128)"; timeout 100 build/cuda/na_cuda_selftest --bench 2>&1 | tail -7
echo "== bench bs density 0.5 (fused128)"; timeout 120 python3 -m effattn bench --only bs --filter 0.5 2>&1 | tail -4
unset EFFATTN_SM90_BWD
echo "== estimate pytest (wgmma)"; EFFATTN_ESTIMATE_IMPL=wgmma timeout 120 python3 -m pytest tests/cuda/test_estimate_cuda.py -q -x -rf -p no:cacheprovider 2>&1 | tail -4
echo "== prefill profile (wgmma)"; EFFATTN_ESTIMATE_IMPL=wgmma timeout 150 python3 scripts/profile_prefill.py --n 65536 --tau 1e-2 1e-3 2>&1 | grep -v Warn
