#!/usr/bin/env bash
# Where the 128-key fused backward spends its time (diagnosis): the 1D bench under each timing
# probe of EFFATTN_BWD_PROBE (attn_bwd_sm90_fused.cuh; results are wrong under a probe), then
# ncu of one launch. Run after scripts/device_run.sh has built (script stage).
export EFFATTN_SM90_BWD=fused128
for probe in 0 1 2 8 16 9 11; do
  echo "== probe $probe"
  EFFATTN_BWD_PROBE=$probe timeout 60 build/cuda/na_cuda_selftest --bench --filter "${PROBE_FILTER:-1D}" 2>&1 | tail -1
done
echo "== ncu fused128"
timeout 200 ncu --clock-control none --kernel-name regex:fused128 --launch-count 1 --print-details all \
  --section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
  --section WarpStateStats --section SchedulerStats --section InstructionStats \
  build/cuda/na_cuda_selftest --bench --filter "${PROBE_FILTER:-1D}" > "$OUT/ncu_fused128.txt" 2>&1
grep -v "^==PROF==" "$OUT/ncu_fused128.txt" | grep -v "^\s*$" | tail -200
