"""A/B of pass 3's CUDA kernels in one process (EFFATTN_ESTIMATE_IMPL, read per call): the
whole estimate_block_mask time per implementation, pass 3's kernel time (profiler) and its int8
rate on the estimated entries, and whether the maps are equal bit for bit to the first
implementation's.
    python benchmarks/estimate_ab.py [--n 65536 131072] [--impl wgmma2u wgmma mma] [--tau 1e-2]
Inputs: llm_like_qkv (B 1, H = H_kv 32, D 128, bf16), causal, 64x64 blocks, sink 64, local 256
(estimate_block_mask's defaults)."""
import argparse
import os

import torch

from effattn.bench.synthetic import llm_like_qkv
from effattn.sparse_prefill import block_density, estimate_block_mask
from effattn.timing import median_ms


def estimated_macs(n, heads, d=128, block=64, sink=64, local=256):
    """int8 MACs of the entries pass 3 estimates (causal): per query block, the key blocks after
    the sink's and before the local window's, 64 x 64 x D each."""
    total = 0
    for qb in range((n + block - 1) // block):
        r0 = qb * block
        sink_end = (min(sink, min(r0 + block, n)) - 1) // block + 1 if sink > 0 else 0
        lo = max(r0 - local + 1, 0) // block if local > 0 else r0 // block
        total += max(0, lo - sink_end)
    return total * block * block * d * heads


def timed(fn, reps=5):
    return median_ms(fn, "cuda", warmup=1, repeats=reps)


def pass3_ms(fn):
    """Device time of pass 3's kernel (the profiler's estimate_kernel / estimate_sm90* events)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return sum(e.device_time_total for e in prof.key_averages()
               if "estimate_kernel" in e.key or "estimate_sm90" in e.key) / 1e3


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, nargs="+", default=[65536, 131072])
    ap.add_argument("--impl", nargs="+", default=["wgmma2u", "wgmma"])
    ap.add_argument("--tau", type=float, default=1e-2)
    ap.add_argument("--heads", type=int, default=32)
    args = ap.parse_args()
    for n in args.n:
        q, k, _, _ = llm_like_qkv(1, n, args.heads, args.heads, 128, num_needles=4, dtype=torch.bfloat16, device="cuda")
        macs = estimated_macs(n, args.heads)
        ref = None
        for impl in args.impl:
            os.environ["EFFATTN_ESTIMATE_IMPL"] = impl
            ms = timed(lambda: estimate_block_mask(q, k, args.tau))
            p3 = pass3_ms(lambda: estimate_block_mask(q, k, args.tau))
            num, idx = estimate_block_mask(q, k, args.tau)
            same = ""
            if ref is None:
                ref = (impl, num, idx)
            else:
                live = torch.arange(idx.shape[-1], device=idx.device) < ref[1][..., None].long()
                equal = torch.equal(num, ref[1]) and torch.equal(idx[live], ref[2][live])
                same = f", map {'==' if equal else '!='} {ref[0]}'s"
            dens = block_density(num, n, (64, 64)).mean().item()
            print(f"N {n} H {args.heads} {impl:7s}: {ms:8.2f} ms all passes, pass 3 {p3:8.2f} ms "
                  f"({macs:.3g} MACs: {2 * macs / p3 / 1e9:.0f} int8 TOPS); density {dens:.4f}{same}", flush=True)
        del q, k, ref
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
