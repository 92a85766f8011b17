"""CPU benchmark: effattn's C++ kernel against the explicit-mask reference for na2d on a
96x96 grid, kernel 7x7, 4 heads, head dim 32, fp32, batch 1, forward + backward.

    python benchmarks/bench_na_cpu.py [--threads 2] [--repeats 3]

The reference's mask is built once outside the timed region (it times only attention).
"""
import argparse

import torch

import effattn
from effattn.reference import attention_reference, na_mask
from effattn.timing import median_ms


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    grid, kernel, heads, dim = (96, 96), (7, 7), 4, 32
    q, k, v = (torch.randn(1, *grid, heads, dim, requires_grad=True) for _ in range(3))
    grad = torch.randn_like(q)
    mask = na_mask(grid, kernel, (1, 1), (1, 1), (False, False))
    flat = lambda t: t.reshape(1, -1, heads, dim)  # noqa: E731

    def ours_fwd():
        return effattn.na2d(q, k, v, kernel)

    def ref_fwd():
        return attention_reference(flat(q), flat(k), flat(v), mask)[0].reshape(q.shape)

    # Same answer first, then time.
    err = (ours_fwd() - ref_fwd()).abs().max().item()
    rows = []
    for name, fwd in (("effattn C++", ours_fwd), ("explicit-mask reference", ref_fwd)):
        with torch.no_grad():
            t_fwd = median_ms(fwd, repeats=args.repeats)
        t_all = median_ms(lambda: torch.autograd.grad(fwd(), (q, k, v), grad), repeats=args.repeats)
        rows.append((name, t_fwd, t_all))
    print(f"na2d 96x96 K7x7 H4 D32 fp32 B1, {args.threads} threads, median of {args.repeats} "
          f"(max |diff| {err:.1e})")
    print(f"| implementation | forward ms | forward + backward ms |")
    print(f"|---|---|---|")
    for name, t_fwd, t_all in rows:
        print(f"| {name} | {t_fwd:.1f} | {t_all:.1f} |")
    print(f"speed-up of effattn: forward {rows[1][1] / rows[0][1]:.1f}x, "
          f"forward + backward {rows[1][2] / rows[0][2]:.1f}x")


if __name__ == "__main__":
    main()
