"""GPU benchmark of neighborhood attention: effattn beside FlexAttention (NA as a mask_mod
over flattened tokens, torch.compile'd) and SDPA cuDNN dense, on the NA problems of
ANCHORS.md, forward and backward, in one run. TF/s counts only the work done
(DESIGN.md §9): 4·B·H·N·window·D forward, ×2.5 backward.

    python benchmarks/bench_na_cuda.py [--only 1d,2d,3d] [--out DIR] [--no-flex]
"""
import argparse
import json
import math
import os

import torch
import torch.nn.functional as F

import effattn

# (name, batch, heads, grid, kernel, head_dim)
PROBLEMS = [
    ("1D L32768 K2049 B2 H16 D128", 2, 16, (32768,), (2049,), 128),
    ("2D 128x128 K13 B1 H16 D128", 1, 16, (128, 128), (13, 13), 128),
    ("2D 128x128 K31 B1 H16 D128", 1, 16, (128, 128), (31, 31), 128),
    ("2D 56x56 K7 B64 H4 D32", 64, 4, (56, 56), (7, 7), 32),
    ("3D 16x32x32 K7 B2 H16 D64", 2, 16, (16, 32, 32), (7, 7, 7), 64),
    ("3D 30x48x80 K18x24x24 B1 H24 D128", 1, 24, (30, 48, 80), (18, 24, 24), 128),
]


def bench_ms(fn):
    from triton.testing import do_bench
    return do_bench(fn, warmup=25, rep=100, return_mode="median")


def na_mask_mod(grid, kernel):
    """NATTEN windows (dilation 1, stride 1, non-causal) on row-major flattened tokens."""
    strides = [math.prod(grid[a + 1:]) for a in range(len(grid))]

    def mask_mod(b, h, q_idx, kv_idx):
        keep = None
        for a, (length, k) in enumerate(zip(grid, kernel)):
            qc = (q_idx // strides[a]) % length
            kc = (kv_idx // strides[a]) % length
            start = torch.clamp(qc - k // 2, min=0, max=length - k)
            inside = (kc >= start) & (kc < start + k)
            keep = inside if keep is None else keep & inside
        return keep

    return mask_mod


def fwd_bwd_times(fwd, inputs):
    t_fwd = bench_ms(fwd)
    out = fwd()
    grad = torch.randn_like(out)
    t_bwd = bench_ms(lambda: torch.autograd.grad(out, inputs, grad, retain_graph=True))
    return t_fwd, t_bwd


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default="1d,2d,3d")
    parser.add_argument("--out", default=None)
    parser.add_argument("--no-flex", action="store_true")
    parser.add_argument("--dtype", default="bfloat16")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    wanted = set(args.only.split(","))
    if not args.no_flex:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
        flex = torch.compile(flex_attention, dynamic=False)
    rows = []
    for name, batch, heads, grid, kernel, dim in PROBLEMS:
        if f"{len(grid)}d" not in wanted:
            continue
        n = math.prod(grid)
        flops = 4 * batch * heads * n * math.prod(kernel) * dim
        row = {"problem": name, "flops_fwd": flops}
        q, k, v = (torch.randn(batch, *grid, heads, dim, device="cuda", dtype=dtype, requires_grad=True)
                   for _ in range(3))
        try:
            row["effattn"] = fwd_bwd_times(lambda: effattn.neighborhood_attention(q, k, v, kernel), (q, k, v))
        except Exception as e:  # record, keep going
            row["effattn_error"] = repr(e)[:200]
        qh, kh, vh = (t.detach().reshape(batch, n, heads, dim).transpose(1, 2).contiguous().requires_grad_()
                      for t in (q, k, v))
        if not args.no_flex:
            try:
                block_mask = create_block_mask(na_mask_mod(grid, kernel), None, None, n, n, device="cuda")
                row["flex"] = fwd_bwd_times(lambda: flex(qh, kh, vh, block_mask=block_mask), (qh, kh, vh))
            except Exception as e:
                row["flex_error"] = repr(e)[:200]
        if n <= 65536:
            from torch.nn.attention import SDPBackend, sdpa_kernel
            try:
                with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                    row["cudnn_dense"] = fwd_bwd_times(lambda: F.scaled_dot_product_attention(qh, kh, vh),
                                                       (qh, kh, vh))
            except Exception as e:
                row["cudnn_error"] = repr(e)[:200]
        rows.append(row)
        print(json.dumps(row), flush=True)
        del q, k, v, qh, kh, vh
        torch.cuda.empty_cache()

    tf = lambda flops, ms: flops / (ms * 1e-3) / 1e12  # noqa: E731
    lines = [
        "| problem | effattn fwd ms (TF/s) | flex fwd ms (TF/s) | fwd speed-up | effattn bwd ms (TF/s) | flex bwd ms (TF/s) | bwd speed-up | cuDNN dense fwd / bwd ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        f = r["flops_fwd"]
        cell = lambda key, i, mult: (f"{r[key][i]:.3f} ({tf(f * mult, r[key][i]):.0f})" if key in r else "–")  # noqa: E731
        ratio = lambda i: (f"{r['flex'][i] / r['effattn'][i]:.2f}x" if "flex" in r and "effattn" in r else "–")  # noqa: E731
        dense = f"{r['cudnn_dense'][0]:.3f} / {r['cudnn_dense'][1]:.3f}" if "cudnn_dense" in r else "–"
        lines.append(f"| {r['problem']} | {cell('effattn', 0, 1)} | {cell('flex', 0, 1)} | {ratio(0)} | "
                     f"{cell('effattn', 1, 2.5)} | {cell('flex', 1, 2.5)} | {ratio(1)} | {dense} |")
    table = "\n".join(lines)
    print(table)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "bench_na_cuda.json"), "w") as fh:
            json.dump(rows, fh, indent=1)
        with open(os.path.join(args.out, "bench_na_cuda.md"), "w") as fh:
            fh.write(table + "\n")


if __name__ == "__main__":
    main()
