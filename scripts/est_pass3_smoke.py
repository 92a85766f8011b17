"""estimate_block_mask calls with the pass-3 kernel of EFFATTN_ESTIMATE_IMPL, in their own
process, so that scripts/device_est_pass3.sh can run each kernel under its own short timeout:
a hang (the first wgmma kernel's failure mode) then names its kernel instead of eating the
whole pytest budget. Per geometry (64x64 causal, 128x128 not causal, 64x128 causal) one line
with a checksum of the map, which must be the same for every kernel.
    EFFATTN_ESTIMATE_IMPL=wgmma python3 scripts/est_pass3_smoke.py [--n 8192] [--device cuda]"""
import argparse
import os
import time

import torch

from effattn.bench.synthetic import llm_like_qkv
from effattn.sparse_prefill import estimate_block_mask

GEOMETRIES = [((64, 64), True), ((128, 128), False), ((64, 128), True)]


def checksum(num, idx):
    live = torch.arange(idx.shape[-1], device=idx.device) < num[..., None].long()
    kept = torch.where(live, idx.long() + 1, torch.zeros_like(idx, dtype=torch.long))
    weights = torch.arange(1, kept.numel() + 1, device=kept.device).view_as(kept) % 1000003
    return int((kept * weights).sum())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8192)
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    impl = os.environ.get("EFFATTN_ESTIMATE_IMPL", "(default)")
    q, k, _, _ = llm_like_qkv(1, args.n, 16, 4, 128, num_needles=4, dtype=torch.bfloat16, device=args.device)
    for block, causal in GEOMETRIES:
        t0 = time.time()
        num, idx = estimate_block_mask(q, k, 1e-2, block_size=block, is_causal=causal)
        if args.device == "cuda":
            torch.cuda.synchronize()
        print(f"{impl:8s} N {args.n} block {block} causal {int(causal)}: {time.time() - t0:6.2f} s, "
              f"blocks {int(num.sum())}, checksum {checksum(num, idx)}", flush=True)


if __name__ == "__main__":
    main()
