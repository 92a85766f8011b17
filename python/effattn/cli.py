"""Command line: `python -m effattn [check|bench|info]` (no command: info, check, then a
quick bench on whatever device exists)."""
import argparse
import json
import os
import platform
import sys

import torch

from . import __version__
from .bench.compare import compare, load_rows
from .bench.runner import SUITES, format_table, metadata, run_suites
from .selfcheck import run_checks


def _device(name):
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def cmd_check(args):
    device = _device(args.device)
    rows = run_checks(device)
    print(f"\nself-check on {device}: every op against its fp64 reference (forward + gradients)")
    print(f"{'op':<60} {'dtype':<9} {'max rel err':>12}  result")
    for name, dtype, err, status in rows:
        print(f"{name:<60} {dtype:<9} {err:>12.2e}  {status}")
    counts = {s: sum(row[3] == s for row in rows) for s in ("PASS", "FAIL", "SKIP")}
    print(f"{counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped")
    return 1 if counts["FAIL"] else 0


def cmd_bench(args):
    device = _device(args.device)
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device == "cuda" else torch.float32)
    suites = args.only.split(",") if args.only else list(SUITES)
    unknown = [s for s in suites if s not in SUITES]
    if unknown:
        print(f"unknown or not yet available suite(s) {unknown}; available: {', '.join(SUITES)}")
        return 2
    meta = metadata(device, dtype)
    rows = run_suites(suites, device, dtype, args.quick, args.filter)
    print(f"\nbenchmark on {meta['device']} ({meta['dtype']}, torch {meta['torch']}, "
          f"commit {meta['commit']}; median ms, effective TF/s per DESIGN.md §9)")
    print(format_table(rows))
    accuracy = None
    if "sparse" in suites:
        from .bench.estimation import estimator_accuracy, format_accuracy

        accuracy = estimator_accuracy(args.quick)
        print("\nblock-map estimators on LLM-like synthetic attention (CPU; equal density per row):")
        print(format_accuracy(accuracy))
    status = 0
    if args.compare:
        lines, regressions = compare(rows, load_rows(args.compare), args.fail_on_regression)
        print(f"\ncompared with {args.compare}:")
        print("\n".join(lines))
        if regressions:
            print(f"{len(regressions)} regression(s) over {args.fail_on_regression}%")
            status = 1
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        path = os.path.join(args.out, "bench.json")
        with open(path, "w") as fh:
            json.dump({"meta": meta, "rows": rows, "estimator_accuracy": accuracy}, fh, indent=1)
        with open(os.path.join(args.out, "bench.md"), "w") as fh:
            fh.write(format_table(rows) + "\n")
        from .bench.plots import write_plots

        written = [path] + write_plots(rows, args.out, meta, accuracy)
        print("wrote " + ", ".join(written))
    return status


def cmd_info(args):
    from .functional import _KERNEL_DEVICES

    try:
        from ._build_info import BUILD_INFO
    except ImportError:  # running from a source tree that setup.py has not built
        BUILD_INFO = {"build": "unknown (python/effattn/_build_info.py is written by setup.py)"}

    print(f"effattn {__version__} at {os.path.dirname(__file__)}")
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), Python {platform.python_version()}")
    print(f"kernels registered for: {', '.join(sorted(_KERNEL_DEVICES))}")
    for key, value in BUILD_INFO.items():
        print(f"  {key}: {value}")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    print(f"GPU: {device}; CPU threads: {torch.get_num_threads()}")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="effattn", description=__doc__)
    parser.add_argument("command", nargs="?", choices=["check", "bench", "info"],
                        help="default: info, check, then a quick bench")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    parser.add_argument("--quick", action="store_true", help="fewer, smaller problems")
    parser.add_argument("--only", default=None, help=f"comma-separated suites: {', '.join(SUITES)}")
    parser.add_argument("--filter", default=None, metavar="TEXT",
                        help="only the problems whose name contains TEXT")
    parser.add_argument("--dtype", default=None, choices=["float16", "bfloat16", "float32"],
                        help="default: bfloat16 on GPU, float32 on CPU")
    parser.add_argument("--out", default=None, help="directory for bench.json, bench.md and PNG plots")
    parser.add_argument("--compare", default=None, help="an earlier bench.json to compare with")
    parser.add_argument("--fail-on-regression", type=float, default=None, metavar="PCT",
                        help="with --compare: exit 1 when a time grew by more than PCT percent")
    args = parser.parse_args(argv)
    if args.command is None:
        args.quick = True
        return cmd_info(args) or cmd_check(args) or cmd_bench(args)
    return {"check": cmd_check, "bench": cmd_bench, "info": cmd_info}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
