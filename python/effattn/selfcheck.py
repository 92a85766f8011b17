"""`python -m effattn check`: every op against its fp64 reference on small problems."""
import torch

from .functional import neighborhood_attention
from .reference import na_reference

# (name, grid, kernel_size, dilation, stride, is_causal, heads, kv_heads)
NA_CHECKS = [
    ("na1d", (33,), (5,), (2,), (1,), (False,), 4, 2),
    ("na1d causal+stride", (40,), (8,), (1,), (4,), (True,), 2, 1),
    ("na2d", (11, 14), (3, 4), (1, 2), (1, 2), (False, False), 4, 2),
    ("na2d causal axis", (9, 10), (5, 3), (1, 3), (2, 1), (True, False), 2, 2),
    ("na3d", (5, 6, 7), (3, 2, 3), (1, 2, 2), (1, 1, 3), (False, True, False), 4, 1),
    ("na3d kernel=input", (4, 5, 3), (4, 5, 3), (1, 1, 1), (1, 1, 1), (False,) * 3, 2, 2),
]


def _tolerance(dtype):
    return {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 2e-2, torch.bfloat16: 5e-2}[dtype]


def run_checks(device="cpu", dtypes=None):
    """Returns rows (name, dtype, max relative error over out and grads, passed)."""
    if dtypes is None:
        dtypes = [torch.float32] if device == "cpu" else [torch.float16, torch.bfloat16]
    rows = []
    for dtype in dtypes:
        for name, grid, ks, dil, st, causal, heads, kv_heads in NA_CHECKS:
            q = torch.randn(2, *grid, heads, 16, device=device, dtype=dtype, requires_grad=True)
            k = torch.randn(2, *grid, kv_heads, 16, device=device, dtype=dtype, requires_grad=True)
            v = torch.randn_like(k, requires_grad=True)
            g = torch.randn_like(q)
            try:
                out = neighborhood_attention(q, k, v, ks, dil, st, causal)
                grads = torch.autograd.grad(out, (q, k, v), g)
                ref_in = [t.detach().double().cpu().requires_grad_() for t in (q, k, v)]
                ref, _ = na_reference(*ref_in, ks, dil, st, causal)
                ref_grads = torch.autograd.grad(ref, ref_in, g.double().cpu())
                err = max(((a.double().cpu() - b).abs().max() / b.abs().max().clamp_min(1)).item()
                          for a, b in zip((out, *grads), (ref, *ref_grads)))
                ok = err <= _tolerance(dtype)
            except Exception as e:  # a crash is a failed check, reported in the table
                err, ok = float("nan"), False
                name = f"{name} ({type(e).__name__}: {e})"[:80]
            rows.append((name, str(dtype).replace("torch.", ""), err, ok))
    return rows
