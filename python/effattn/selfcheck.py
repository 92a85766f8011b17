"""`python -m effattn check`: every op against its fp64 reference on small problems.

Each check computes an op's outputs and gradients on the given device and the same
quantities with the pure-PyTorch reference in fp64 on the CPU, and reports the largest
relative error."""
import torch

from .functional import neighborhood_attention
from .lightning import lightning_attn
from .reference import lightning_reference, na_reference

# (name, grid, kernel_size, dilation, stride, is_causal, heads, kv_heads)
NA_CHECKS = [
    ("na1d", (33,), (5,), (2,), (1,), (False,), 4, 2),
    ("na1d causal+stride", (40,), (8,), (1,), (4,), (True,), 2, 1),
    ("na2d", (11, 14), (3, 4), (1, 2), (1, 2), (False, False), 4, 2),
    ("na2d causal axis", (9, 10), (5, 3), (1, 3), (2, 1), (True, False), 2, 2),
    ("na3d", (5, 6, 7), (3, 2, 3), (1, 2, 2), (1, 1, 3), (False, True, False), 4, 1),
    ("na3d kernel=input", (4, 5, 3), (4, 5, 3), (1, 1, 1), (1, 1, 1), (False,) * 3, 2, 2),
]

TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 2e-2, torch.bfloat16: 5e-2}


def _max_rel_err(ours, refs):
    return max(((a.double().cpu() - b).abs().max() / b.abs().max().clamp_min(1)).item()
               for a, b in zip(ours, refs))


def _compare(fn, ref_fn, inputs):
    """Runs fn on `inputs` and ref_fn on fp64 CPU copies; both return a tuple of tensors
    whose sum with random weights is backpropagated to every input."""
    outs = fn(*inputs)
    weights = [torch.randn_like(o) for o in outs]
    grads = torch.autograd.grad(outs, inputs, weights)
    ref_in = [t.detach().double().cpu().requires_grad_() for t in inputs]
    ref_outs = ref_fn(*ref_in)
    ref_grads = torch.autograd.grad(ref_outs, ref_in, [w.double().cpu() for w in weights])
    return _max_rel_err((*outs, *grads), (*ref_outs, *ref_grads))


def _na_checks(device, dtype):
    for name, grid, ks, dil, st, causal, heads, kv_heads in NA_CHECKS:
        q = torch.randn(2, *grid, heads, 16, device=device, dtype=dtype, requires_grad=True)
        k = torch.randn(2, *grid, kv_heads, 16, device=device, dtype=dtype, requires_grad=True)
        v = torch.randn_like(k, requires_grad=True)
        yield name, lambda q=q, k=k, v=v, ks=ks, dil=dil, st=st, causal=causal: _compare(
            lambda q, k, v: (neighborhood_attention(q, k, v, ks, dil, st, causal),),
            lambda q, k, v: (na_reference(q, k, v, ks, dil, st, causal)[0],), [q, k, v])


def _lightning_checks(device, dtype):
    heads, n = 3, 37
    slope = torch.tensor([0.05, 0.3, 1.0], device=device)
    q, k = (0.5 * torch.randn(2, n, heads, 16, device=device, dtype=dtype) for _ in range(2))
    v = 0.5 * torch.randn(2, n, heads, 8, device=device, dtype=dtype)
    s0 = torch.randn(2, heads, 16, 8, device=device, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    inputs = [t.requires_grad_() for t in (q, k, v, s0)]

    def ours(q, k, v, s0):
        return lightning_attn(q, k, v, slope, 0.7, initial_state=s0, output_final_state=True)

    def ref(q, k, v, s0):
        return lightning_reference(q, k, v, slope.double().cpu(), 0.7, initial_state=s0)

    yield "lightning_attn (+state in/out)", lambda: _compare(ours, ref, inputs)


CHECKS = [_na_checks, _lightning_checks]


def run_checks(device="cpu", dtypes=None):
    """Returns rows (name, dtype, max relative error over outputs and grads, passed)."""
    if dtypes is None:
        dtypes = [torch.float32] if device == "cpu" else [torch.float16, torch.bfloat16]
    rows = []
    for dtype in dtypes:
        for family in CHECKS:
            for name, check in family(device, dtype):
                try:
                    err = check()
                    ok = err <= TOLERANCE[dtype]
                except NotImplementedError as e:  # no kernel for this device yet
                    err, ok, name = float("nan"), False, f"{name} (not implemented: {e})"[:60]
                except Exception as e:  # a crash is a failed check, reported in the table
                    err, ok, name = float("nan"), False, f"{name} ({type(e).__name__}: {e})"[:60]
                rows.append((name, str(dtype).replace("torch.", ""), err, ok))
    return rows
