#!/usr/bin/env bash
# Where the 128-key fused backward spends its time, per SASS instruction: the 1D selfbench under
# a few timing probes (EFFATTN_BWD_PROBE, attn_bwd_sm90_fused.cuh), then ncu's source counters
# (warp stall samples per instruction) of one launch, exported as CSV, and the kernel's SASS.
# Run after scripts/device_run.sh has built (script stage). Writes $OUT/ncu_source.csv.gz,
# $OUT/ncu_details.txt and $OUT/fused128.sass.gz.
OUT=${OUT:-build/device_out}
F=${PROBE_FILTER:-1D}
for probe in ${PROBES:-0 2 11}; do
  echo "== probe $probe"
  EFFATTN_BWD_PROBE=$probe timeout 60 build/cuda/na_cuda_selftest --bench --filter "$F" 2>&1 | tail -2
done
echo "== ncu source counters"
timeout 240 ncu --clock-control none --kernel-name regex:fused128 --launch-count 1 \
  --section SourceCounters --section WarpStateStats --section SpeedOfLight --section SchedulerStats \
  --section MemoryWorkloadAnalysis --import-source no -f -o /tmp/bwdprof \
  build/cuda/na_cuda_selftest --bench --filter "$F" > /tmp/ncu_run.log 2>&1
echo "ncu rc=$?"; tail -3 /tmp/ncu_run.log
ncu -i /tmp/bwdprof.ncu-rep --page details > "$OUT/ncu_details.txt" 2>&1
ncu -i /tmp/bwdprof.ncu-rep --page source --print-source sass --csv > /tmp/ncu_source.csv 2>&1
echo "source csv: $(wc -l < /tmp/ncu_source.csv) lines"; gzip -c /tmp/ncu_source.csv > "$OUT/ncu_source.csv.gz"
cuobjdump -sass build/cuda/na_cuda_selftest 2>/dev/null | awk '/Function :/{keep = /fused128/} keep' | gzip -c > "$OUT/fused128.sass.gz"
grep -v "^\s*$" "$OUT/ncu_details.txt" | head -120
