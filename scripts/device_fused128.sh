#!/usr/bin/env bash
# Device check of the 128-key fused backward (EFFATTN_SM90_BWD=fused128): self-test, the NA and
# block-sparse CUDA pytest files, the NA self-test bench beside the 64-key fused kernel, and the
# block-sparse bench at density 0.5. Run after scripts/device_run.sh has built (script stage).
export EFFATTN_SM90_BWD=fused128
echo "== selftest (fused128)"; timeout 60 build/cuda/na_cuda_selftest 2>&1 | grep -E "FAIL|path|passed" | tail -8
echo "== pytest NA + BS (fused128)"; timeout 200 python3 -m pytest tests/cuda/test_na_cuda.py tests/cuda/test_block_sparse_cuda.py -q -rf -p no:cacheprovider 2>&1 | tail -8
echo "== selfbench (fused128)"; timeout 100 build/cuda/na_cuda_selftest --bench 2>&1 | tail -9
echo "== selfbench (fused, 64 keys)"; EFFATTN_SM90_BWD=fused timeout 100 build/cuda/na_cuda_selftest --bench 2>&1 | tail -9
echo "== bench bs density 0.5 (fused128)"; timeout ${BS_TIMEOUT:-120} python3 -m effattn bench --only bs ${BS_ARGS:---filter 0.5} 2>&1 | tail -8
