"""Command line: `python -m effattn [check|bench|info]` (no argument: check, then bench)."""
import argparse
import os
import platform
import sys

import torch

from . import __version__
from .functional import neighborhood_attention
from .reference import attention_reference, na_mask
from .selfcheck import run_checks
from .timing import forward_backward, median_ms


def _device(name):
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def cmd_check(args):
    device = _device(args.device)
    rows = run_checks(device)
    print(f"\nself-check on {device}: every op against the fp64 reference (forward + gradients)")
    print(f"{'op':<40} {'dtype':<9} {'max rel err':>12}  result")
    for name, dtype, err, ok in rows:
        print(f"{name:<40} {dtype:<9} {err:>12.2e}  {'PASS' if ok else 'FAIL'}")
    failed = sum(not ok for *_, ok in rows)
    print(f"{len(rows) - failed} passed, {failed} failed")
    return 1 if failed else 0


# (name, grid, kernel, heads, head_dim): small CPU problems; reference = explicit mask.
CPU_BENCH = [
    ("na1d L4096 K65", (4096,), (65,), 4, 32),
    ("na2d 48x48 K7", (48, 48), (7, 7), 4, 32),
    ("na3d 12x16x16 K5", (12, 16, 16), (5, 5, 5), 2, 32),
]


def cmd_bench(args):
    device = _device(args.device)
    if device != "cpu":
        print("GPU benchmarks arrive with the CUDA kernels; see benchmarks/ for the CPU benchmark.")
        return 0
    print(f"\nCPU timing (fp32, batch 1, forward + backward, {torch.get_num_threads()} threads, median ms)")
    print(f"{'problem':<22} {'effattn':>10} {'reference':>10} {'speed-up':>9}")
    for name, grid, kernel, heads, dim in CPU_BENCH[: 2 if args.quick else None]:
        q, k, v = (torch.randn(1, *grid, heads, dim, requires_grad=True) for _ in range(3))
        ours = forward_backward(lambda q, k, v: neighborhood_attention(q, k, v, kernel), q, k, v)
        mask = na_mask(grid, kernel, (1,) * len(grid), (1,) * len(grid), (False,) * len(grid))
        flat = lambda t: t.reshape(1, -1, heads, dim)  # noqa: E731
        ref = forward_backward(lambda q, k, v: attention_reference(flat(q), flat(k), flat(v), mask)[0],
                               q, k, v)
        t_ours, t_ref = median_ms(ours, repeats=3), median_ms(ref, repeats=3)
        print(f"{name:<22} {t_ours:>10.2f} {t_ref:>10.2f} {t_ref / t_ours:>8.1f}x")
    return 0


def cmd_info(args):
    from .functional import _KERNEL_DEVICES

    print(f"effattn {__version__} at {os.path.dirname(__file__)}")
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), Python {platform.python_version()}")
    print(f"kernels built for: {', '.join(sorted(_KERNEL_DEVICES))}")
    if torch.cuda.is_available():
        print(f"device: {torch.cuda.get_device_name()}")
    print(f"CPU threads: {torch.get_num_threads()}")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="effattn", description=__doc__)
    parser.add_argument("command", nargs="?", choices=["check", "bench", "info"],
                        help="default: check, then a quick bench")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    parser.add_argument("--quick", action="store_true", help="smaller benchmark set")
    args = parser.parse_args(argv)
    if args.command is None:
        args.quick = True
        status = cmd_info(args) or cmd_check(args)
        return status or cmd_bench(args)
    return {"check": cmd_check, "bench": cmd_bench, "info": cmd_info}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
