"""Timing of a case's implementations: CUDA events via triton's do_bench (median) on the
GPU, median wall time on the CPU."""
import math

import torch

from ..timing import median_ms


def time_ms(fn, device, quick):
    if device == "cuda":
        try:
            from triton.testing import do_bench
        except ImportError:
            return median_ms(fn, device, warmup=3, repeats=10 if quick else 30)
        return do_bench(fn, warmup=10 if quick else 25, rep=40 if quick else 100, return_mode="median")
    return median_ms(fn, device, warmup=1, repeats=2 if quick else 3)


def time_impl(impl, device, quick):
    """Returns {"fwd": ms, "bwd": ms or None} (or {"error": text})."""
    try:
        fwd = impl.setup()
        with torch.no_grad():
            t_fwd = time_ms(fwd, device, quick)
        t_bwd = None
        if impl.backward:
            out = fwd()
            inputs = [t for t in getattr(fwd, "inputs", ()) if t.requires_grad]
            grad = torch.randn_like(out)
            t_bwd = time_ms(lambda: torch.autograd.grad(out, inputs, grad, retain_graph=True), device, quick)
        return {"fwd": t_fwd, "bwd": t_bwd}
    except Exception as e:  # a peer that fails is reported, the run goes on
        return {"error": f"{type(e).__name__}: {e}"[:160]}
    finally:
        if device == "cuda":
            torch.cuda.empty_cache()


def tflops(flops, ms):
    return flops / (ms * 1e-3) / 1e12 if ms and not math.isnan(ms) else float("nan")
