"""Runs the suites' cases, prints the table and returns JSON-ready rows."""
import datetime
import os
import subprocess
import sys

import torch

from . import block_sparse, lightning, na, sparse
from .progress import Progress
from .timing import tflops, time_impl

SUITES = {"na": na, "bs": block_sparse, "sparse": sparse, "lightning": lightning}


def run_suites(names, device, dtype, quick, only_problems=None):
    """only_problems: keep the cases whose problem name contains this text."""
    cases = [case for name in names for case in SUITES[name].make_cases(device, dtype, quick)
             if only_problems is None or only_problems in case.problem]
    progress = Progress(sum(len(c.impls) for c in cases), label=f"bench ({device})")
    rows = []
    for case in cases:
        for impl in case.impls:
            result = time_impl(impl, device, quick)
            progress.step(f"{case.problem} {impl.name}")
            row = {"suite": case.suite, "problem": case.problem, "impl": impl.name, **case.x}
            if "error" in result:
                row["error"] = result["error"]
            else:
                row.update(fwd_ms=result["fwd"], bwd_ms=result["bwd"],
                           fwd_tflops=tflops(case.flops_fwd, result["fwd"]),
                           bwd_tflops=tflops(case.flops_fwd * case.bwd_factor, result["bwd"]))
                if case.bytes_fwd:
                    row["fwd_gbps"] = case.bytes_fwd / (result["fwd"] * 1e-3) / 1e9
            rows.append(row)
            if not sys.stdout.isatty():  # logs get one line per timing, as it happens
                times = " | ".join(f"{key[:3]} {row[key]:.3f} ms" for key in ("fwd_ms", "bwd_ms") if row.get(key))
                print(f"[{progress.done}/{progress.total}] {case.problem} | {impl.name} | "
                      f"{times or row.get('error', '')}", flush=True)
    return rows


def metadata(device, dtype):
    # EFFATTN_COMMIT names the code when the tree is a copy whose .git is missing or stale
    # (the GPU machine's working copy); otherwise ask git.
    commit = os.environ.get("EFFATTN_COMMIT")
    if not commit:
        try:
            commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                    text=True, timeout=5).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            commit = None
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "dtype": str(dtype).replace("torch.", ""),
        "threads": torch.get_num_threads(),
    }


def format_table(rows):
    """Markdown table: one line per (problem, implementation); effattn's speed-up over each
    peer (peer time / effattn time) in the last columns."""
    ours = {(r["suite"], r["problem"]): r for r in rows if r["impl"] == "effattn" and "error" not in r}
    lines = ["| problem | implementation | fwd ms | fwd TF/s | bwd ms | bwd TF/s | effattn speed-up fwd / bwd | note |",
             "|---|---|---|---|---|---|---|---|"]
    fmt = lambda v, spec: format(v, spec) if isinstance(v, (int, float)) and v == v else "–"  # noqa: E731
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['problem']} | {r['impl']} | error | | | | | {r['error'][:90]} |")
            continue
        mine = ours.get((r["suite"], r["problem"]))
        speedup = "–"
        if mine and r["impl"] != "effattn":
            parts = [fmt(r[key] / mine[key], ".2f") + "x" if r.get(key) and mine.get(key) else "–"
                     for key in ("fwd_ms", "bwd_ms")]
            speedup = " / ".join(parts)
        note = f"{r['fwd_gbps']:.0f} GB/s" if "fwd_gbps" in r else ""
        lines.append(f"| {r['problem']} | {r['impl']} | {fmt(r['fwd_ms'], '.3f')} | {fmt(r['fwd_tflops'], '.3g')} | "
                     f"{fmt(r['bwd_ms'], '.3f')} | {fmt(r['bwd_tflops'], '.3g')} | {speedup} | {note} |")
    return "\n".join(lines)
