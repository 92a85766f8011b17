#!/usr/bin/env bash
# This session's closing device run (script stage after scripts/device_run.sh built): the
# block-sparse table at densities 1.0 / 0.5 / 0.1 beside FlexAttention and cuDNN in one process,
# then the sparse prefill profile at N 65536 and 131072 (default estimator: int8 wgmma).
timeout ${BS_TIMEOUT:-160} python3 -m effattn bench --only bs --out /tmp/bench_bs > /tmp/bs.log 2>&1
echo "bench bs rc=$?"; cat /tmp/bench_bs/bench.md 2>/dev/null || tail -5 /tmp/bs.log
mkdir -p "$OUT/bench_bs"; cp /tmp/bench_bs/* "$OUT/bench_bs/" 2>/dev/null
timeout ${PREFILL_TIMEOUT:-170} python3 scripts/profile_prefill.py --n 65536 131072 --tau 1e-2 2>&1 | grep -v -i warn | tee "$OUT/prefill.txt"
