#!/usr/bin/env bash
# Device check of pass 3 (run as the script stage of scripts/device_run.sh, after its build):
# the protocol simulation, the estimation tests (maps of mma / wgmma / wgmma2u equal bit for
# bit, profiler names), then the A/B of v2 (EFFATTN_ESTIMATE_IMPL=wgmma), v2 unrolled by 2
# (=wgmma2u, the default) and mma.sync in one process at N 65536 and 131072. (v1, =wgmma1, was
# removed after the fifth session's run 2.)
# A hang shows up as a smoke step's timeout (naming the kernel), else as the pytest timeout;
# benchmarks/ESTIMATE_NOTES.md "Pass 3 v2" lists what to look at next (ncu:
# NCU_KERNEL=estimate_sm90_v2).
echo "== protocol simulation"; python3 scripts/sim_estimate_sm90.py --runs 300 | tail -1
# Each kernel alone first, in its own process with a short timeout (-k: SIGKILL if SIGTERM does
# not end a process stuck on a hung kernel), so that a hang names its kernel; mma.sync (known
# good) first. The checksums must be equal across kernels, geometry by geometry.
echo "== smoke: one process per kernel"
for impl in mma wgmma wgmma2u; do
  EFFATTN_ESTIMATE_IMPL=$impl timeout -k 10 ${EST_SMOKE_TIMEOUT:-90} python3 scripts/est_pass3_smoke.py 2>&1 | grep -v -i warn
  rc=${PIPESTATUS[0]}; [ "$rc" = 0 ] || echo "   $impl: rc=$rc (124 / 137: timed out, a hang?)"
done
echo "== estimate pytest"
timeout -k 10 ${EST_PYTEST_TIMEOUT:-240} python3 -m pytest tests/cuda/test_estimate_cuda.py -q -x -rf -p no:cacheprovider 2>&1 | tail -4
echo "== A/B wgmma2u (v2, 2 chunks per trip; default) vs wgmma (v2) vs mma"
timeout -k 10 ${EST_AB_TIMEOUT:-300} python3 benchmarks/estimate_ab.py --n 65536 131072 --impl wgmma2u wgmma mma 2>&1 | grep -v -i warn
