"""CPU model of pass 3's pre-filter on the synthetic LLM-like inputs (DESIGN.md §6, the
estimate_int8*.cu kernels): how often a warp's unit (16 query rows x one 64-key chunk of an
estimated key block) passes the integer pre-filter and runs the exact fp32 check, for the
kernels' bound (per row and 32-key group, each lane over its 8 products) and for looser,
cheaper variants of it. Every variant is a valid bound (it never rejects an entry the exact
check keeps); the question is how much exact-check work it adds.
    python benchmarks/prefilter_passrate.py [--n 8192] [--heads 4] [--tau 1e-2]"""
import argparse
import math

import torch

from effattn.bench.synthetic import llm_like_qkv
from effattn.reference import estimation_regions, smooth_quantize_reference

SLACK = 1e-5  # kBoundSlack


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8192)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--tau", type=float, default=1e-2)
    ap.add_argument("--sink", type=int, default=64)
    ap.add_argument("--local", type=int, default=256)
    args = ap.parse_args()
    n, d, blk = args.n, 128, 64
    q, k, _, _ = llm_like_qkv(1, n, args.heads, args.heads, d, dtype=torch.bfloat16)
    q8, qs, qm = smooth_quantize_reference(q)
    k8, ks, km = smooth_quantize_reference(k)
    scale = d ** -0.5
    log_tau = math.log(args.tau)
    chunks = n // 64
    tot = {"units": 0, "tight": 0, "rows_merged": 0, "groups_merged": 0, "both_merged": 0, "kept_units": 0}
    for h in range(args.heads):
        qf, kf = q[0, :, h].double(), k[0, :, h].double()
        # Row records (estimate_stats.cu): bound over the always-kept keys, pre-filter threshold.
        _, region = estimation_regions(n, blk, args.sink, args.local, True)
        lse = torch.logsumexp((scale * qf @ kf.T).masked_fill(~region, float("-inf")), -1).float()
        sq = qs[0, :, h].float()
        qbias = (q[0, :, h].float() @ km[0, h].float())
        bound = lse + log_tau
        lim = bound / scale
        thr = lim - qbias
        thr = thr - SLACK * (lim.abs() + qbias.abs())
        wq = sq * (1 + SLACK)
        # Key records (estimate_prep.cu): per 32-key group the max key scale and bias bound.
        sk = ks[0, :, h].float()
        kbias = (k[0, :, h].float() - km[0, h].float()) @ qm[0, h].float()
        skm = sk.view(-1, 32).amax(1)
        bm = kbias.view(-1, 32).amax(1)
        kbm = bm + SLACK * bm.abs()
        acc = q8[0, :, h].float() @ k8[0, :, h].float().T  # exact: |partial sums| < 2^24
        # Estimated (row block, chunk) pairs: causal, chunk before the local window's block and
        # after the sink's.
        for qb in range(n // 64):
            r0 = qb * 64
            lo_blk = max(r0 - args.local + 1, 0) // blk
            sink_end = (min(args.sink, r0 + 64) - 1) // blk + 1
            if lo_blk <= sink_end:
                continue
            a = acc[r0:r0 + 64, sink_end * 64:lo_blk * 64]              # [64 rows, keys]
            g = a.view(64, -1, 4, 4, 2)                                  # [row, group32, j, qid, e]
            lane_mx = g.amax((2, 4)).clamp_min(0)                        # [row, group, qid]
            grp_idx = torch.arange(sink_end * 2, lo_blk * 2)
            c = (wq[r0:r0 + 64, None] * skm[grp_idx][None, :])           # [row, group]
            t = thr[r0:r0 + 64, None]
            kb = kbm[grp_idx][None, :]
            tight = ~(lane_mx * c[..., None] + kb[..., None] < t[..., None])  # [row, group, qid]
            # Exact keep per chunk (for reference: units in kept blocks).
            est = (sq[r0:r0 + 64, None] * sk[sink_end * 64:lo_blk * 64][None, :] * a
                   + kbias[sink_end * 64:lo_blk * 64][None, :] + qbias[r0:r0 + 64, None]) * scale
            kept = (est >= bound[r0:r0 + 64, None]).view(64, -1, 64).any(2).any(0)  # [chunk]
            # Variants. rows merged: a lane's two rows (grp, grp + 8) share max(mx), max(wq), min(thr).
            rows = torch.arange(64).view(4, 2, 8)                        # warp, rr, grp
            lm = lane_mx[rows]                                           # [4, 2, 8, group, qid]
            mx_r = lm.amax(1)
            c_r = c[rows].amax(1)[..., None]
            t_r = t[rows].amin(1)[..., None]
            rows_merged = ~(mx_r * c_r + kb[None, None, :, :, None] * 1 < t_r)  # [4, 8, group, qid]
            # groups merged: one bound per 64 keys (max of the two groups' key stats).
            mx_g = lane_mx.view(64, -1, 2, 4).amax(2)                    # [row, chunk, qid]
            c_g = c.view(64, -1, 2).amax(2)[..., None]
            kb_g = kb.view(1, -1, 2).amax(2)[..., None]
            groups_merged = ~(mx_g * c_g + kb_g < t[..., None])          # [row, chunk, qid]
            both = ~(mx_g[rows].amax(1) * c_g[rows].amax(1) + kb_g[None] < t[rows].amin(1)[..., None])
            nchunk = lm.shape[3] // 2
            tot["units"] += 4 * nchunk
            tot["kept_units"] += 4 * int(kept.sum())
            tot["tight"] += int(tight.view(4, 16, nchunk, 2, 4).any(4).any(3).any(1).sum())
            tot["rows_merged"] += int(rows_merged.view(4, 8, nchunk, 2, 4).any(4).any(3).any(1).sum())
            tot["groups_merged"] += int(groups_merged.view(4, 16, nchunk, 4).any(3).any(1).sum())
            tot["both_merged"] += int(both.view(4, 8, nchunk, 4).any(3).any(1).sum())
    u = tot["units"]
    print(f"N {n} H {args.heads} D 128 tau {args.tau:g}: {u} warp units (16 rows x 64 keys) estimated; "
          f"{tot['kept_units'] / u:.4f} lie in kept chunks")
    for key in ("tight", "rows_merged", "groups_merged", "both_merged"):
        print(f"  pre-filter {key:14s}: exact check on {tot[key] / u:.4f} of the units")


if __name__ == "__main__":
    main()
