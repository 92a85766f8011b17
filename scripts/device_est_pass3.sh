#!/usr/bin/env bash
# Device check of pass 3 v2 (branch wip/est-pass3; run as the script stage of
# scripts/device_run.sh, after its build): the protocol simulation, the estimation tests
# (maps of mma / wgmma1 / wgmma / wgmma2u equal bit for bit, profiler names), then the A/B of
# v1 (EFFATTN_ESTIMATE_IMPL=wgmma1), v2 (=wgmma) and v2 unrolled by 2 (=wgmma2u) in one process
# at N 65536 and 131072.
# A hang shows up as the pytest timeout; benchmarks/ESTIMATE_NOTES.md "Pass 3 v2" lists what
# to look at next (ncu: NCU_KERNEL=estimate_sm90_v2).
echo "== protocol simulation"; python3 scripts/sim_estimate_sm90.py --runs 300 | tail -1
echo "== estimate pytest"
timeout ${EST_PYTEST_TIMEOUT:-240} python3 -m pytest tests/cuda/test_estimate_cuda.py -q -x -rf -p no:cacheprovider 2>&1 | tail -4
echo "== A/B wgmma1 (v1) vs wgmma (v2) vs wgmma2u (v2, 2 chunks per trip)"
timeout ${EST_AB_TIMEOUT:-300} python3 benchmarks/estimate_ab.py --n 65536 131072 --impl wgmma1 wgmma wgmma2u 2>&1 | grep -v -i warn
