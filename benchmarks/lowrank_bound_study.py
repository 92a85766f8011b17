"""How much of pass 3 an exact low-rank bound could skip (CPU study; benchmarks/ESTIMATE_NOTES.md).

Pass 3 computes the int8 product of every visible (query, key) pair outside the always-kept
regions. A 64 x 64 tile (query rows x key block) whose entries all stay below their rows'
thresholds adds nothing to the map. With P the top-r right singular vectors of a head's
dequantized keys, q·k = (Pᵀq)·(Pᵀk) + q⊥·k⊥ <= (Pᵀq)·(Pᵀk) + |q⊥| |k⊥|: a bound that costs r / D
of the product and, where it stays below every row's threshold, proves the tile can be skipped
without changing the map. Prints, per rank, the share of pass-3 tiles the bound skips beside the
share no entry of which passes (what an oracle could skip), and the resulting relative cost
r / D + (1 - skipped).

    python benchmarks/lowrank_bound_study.py [--n 4096] [--tau 1e-2] [--ranks 8 16 32 64]
"""
import argparse
import math

import torch

from effattn.bench.synthetic import llm_like_qkv
from effattn.reference import estimation_regions, smooth_quantize_reference

TILE = 64


def head_terms(q, k, h, quantized_q, quantized_k, scale):
    """Dequantized q, k of head h and the estimate's exact bias terms (estimate_block_mask_reference)."""
    (q8, q_scale, q_mean), (k8, k_scale, k_mean) = quantized_q, quantized_k
    deq_q = q8[0, :, h].float() * q_scale[0, :, h, None]
    deq_k = k8[0, :, h].float() * k_scale[0, :, h, None]
    key_bias = (k[0, :, h].float() - k_mean[0, h]) @ q_mean[0, h]
    query_bias = q[0, :, h].float() @ k_mean[0, h]
    return deq_q, deq_k, scale * key_bias, scale * query_bias


def tile_max(x, visible):
    """Max over each 64 x 64 tile of x [N, N] where visible (else -inf): [N/64, N/64]."""
    n = x.shape[0]
    t = x.masked_fill(~visible, float("-inf")).view(n // TILE, TILE, n // TILE, TILE)
    return t.amax(dim=(1, 3))


def study(n, tau, ranks, heads, seed):
    q, k, _, _ = llm_like_qkv(1, n, heads, heads, 128, num_needles=4, seed=seed)
    scale = 128 ** -0.5
    qq, kq = smooth_quantize_reference(q), smooth_quantize_reference(k)
    visible, region = estimation_regions(n, TILE, 64, 256, True)
    work = visible & ~region  # the pairs pass 3 estimates
    tiles = tile_max(work.float(), torch.ones_like(work)) > 0  # tiles holding estimated pairs
    rows = {r: [0, 0] for r in ranks}
    needed_total = tiles_total = 0
    for h in range(heads):
        deq_q, deq_k, kb, qb = head_terms(q, k, h, qq, kq, scale)
        exact = scale * (q[0, :, h].double() @ k[0, :, h].double().T)
        lse = torch.logsumexp(exact.masked_fill(~region, float("-inf")), dim=-1).float()
        thr = lse + math.log(tau)
        est = scale * (deq_q @ deq_k.T) + kb[None, :] + qb[:, None]
        needed = tile_max(est - thr[:, None], work) >= 0
        needed_total += int((needed & tiles).sum())
        tiles_total += int(tiles.sum())
        _, _, vh = torch.linalg.svd(deq_k, full_matrices=False)
        for r in ranks:
            p = vh[:r].T  # [D, r]
            qp, kp = deq_q @ p, deq_k @ p
            q_perp = (deq_q - qp @ p.T).norm(dim=-1)
            k_perp = (deq_k - kp @ p.T).norm(dim=-1)
            bound = scale * (qp @ kp.T + q_perp[:, None] * k_perp[None, :]) + kb[None, :] + qb[:, None]
            proven_below = tile_max(bound - thr[:, None], work) < 0
            assert not (proven_below & needed).any(), "the bound must never skip a needed tile"
            rows[r][0] += int((proven_below & tiles).sum())
            rows[r][1] += int(tiles.sum())
    print(f"N {n}, H {heads}, D 128, tau {tau:g}: {tiles_total} pass-3 tiles, "
          f"{1 - needed_total / tiles_total:.3f} of them hold no kept entry (oracle skip)")
    print("| rank r | skipped by the bound | relative pass-3 cost r/D + (1 - skipped) |")
    print("|---|---|---|")
    for r in ranks:
        skipped = rows[r][0] / rows[r][1]
        print(f"| {r} | {skipped:.3f} | {r / 128 + 1 - skipped:.3f} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--tau", type=float, default=1e-2)
    ap.add_argument("--ranks", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    study(args.n, args.tau, args.ranks, args.heads, args.seed)


if __name__ == "__main__":
    main()
