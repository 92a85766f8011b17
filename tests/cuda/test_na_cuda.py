"""CUDA neighborhood attention against the fp64 reference, under DESIGN.md §8's rule:
max|ours - ref64| <= 2 * max|same-dtype reference - ref64| + atol, for the output, the LSE
and every gradient. Outputs are poisoned (the allocator's free memory is filled with NaN)
before each run, so an element the kernels never write fails the test."""
import pytest
import torch

import effattn
from effattn.functional import _KERNEL_DEVICES
from effattn.reference import na_reference
from na_cases import CASES, case_id, max_err, window_args

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or "cuda" not in _KERNEL_DEVICES,
    reason="needs a CUDA device and effattn built with CUDA")

# Larger, odd problems (not multiples of any tile) on top of the shared CASES.
BIG_CASES = [
    ((1000,), (65,), (1,), (1,), (False,), 4, 2),
    ((777,), (48,), (3,), (5,), (True,), 2, 1),
    ((40, 29), (7, 9), (1, 2), (1, 1), (False, False), 4, 4),
    ((33, 35), (8, 6), (2, 1), (3, 2), (True, False), 4, 1),
    ((7, 9, 11), (3, 4, 5), (1, 2, 1), (1, 2, 1), (False, False, True), 2, 2),
    ((9, 10, 12), (9, 10, 12), (1, 1, 1), (1, 1, 1), (False, False, False), 2, 1),
]


def poison_cuda_memory():
    """Fill free cached memory with NaN so unwritten outputs show up."""
    free, _ = torch.cuda.mem_get_info()
    n = min(free // 4, 2**29) // 2
    junk = torch.full((n,), float("nan"), device="cuda")
    del junk


def run(fn, q, k, v, g_out, g_lse):
    out, lse = fn(q, k, v)
    grads = torch.autograd.grad([out, lse], [q, k, v], [g_out, g_lse])
    return (out, lse, *grads)


def check_case(case, dtype, head_dim, batch=2):
    grid, _, _, _, _, heads, kv_heads = case
    ks, dil, st, causal = window_args(case)
    make = lambda h: torch.randn(batch, *grid, h, head_dim, device="cuda", dtype=dtype)  # noqa: E731
    q, k, v = make(heads).requires_grad_(), make(kv_heads).requires_grad_(), make(kv_heads).requires_grad_()
    g_out = torch.randn_like(q)
    g_lse = torch.randn(q.shape[:-1], device="cuda")
    poison_cuda_memory()
    ours = run(lambda q, k, v: effattn.neighborhood_attention(q, k, v, ks, dil, st, causal, return_lse=True),
               q, k, v, g_out, g_lse)
    torch.cuda.synchronize()
    ref_fn = lambda q, k, v: na_reference(q, k, v, ks, dil, st, causal)  # noqa: E731
    same = run(ref_fn, q, k, v, g_out, g_lse.to(dtype))
    x64 = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref = run(ref_fn, *x64, g_out.double(), g_lse.double())
    for name, a, s, r in zip(("out", "lse", "dq", "dk", "dv"), ours, same, ref):
        assert torch.isfinite(a).all(), f"{name} has NaN/inf (unwritten or overflow)"
        bound = 2 * max_err(s, r) + 1e-3 * max(r.abs().max().item(), 1.0)
        assert max_err(a, r) <= bound, f"{name}: {max_err(a, r):.3e} > {bound:.3e}"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("head_dim", [32, 64, 128])
@pytest.mark.parametrize("case", CASES + BIG_CASES, ids=case_id)
def test_matches_reference(case, head_dim, dtype):
    check_case(case, dtype, head_dim)


def test_results_do_not_move_between_runs():
    case = BIG_CASES[3]
    ks, dil, st, causal = window_args(case)
    q = torch.randn(2, *case[0], case[5], 64, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(2, *case[0], case[6], 64, device="cuda", dtype=torch.bfloat16)
    v = torch.randn_like(k)
    first = effattn.na2d(q, k, v, ks, dil, st, causal)
    for _ in range(3):
        assert torch.equal(first, effattn.na2d(q, k, v, ks, dil, st, causal))


def test_additional_keys_and_non_contiguous_inputs():
    base = torch.randn(2, 4, 20, 23, 64, device="cuda", dtype=torch.float16)
    q, k, v = (base.permute(0, 2, 3, 1, 4) * (i + 1) for i in range(3))
    ek = torch.randn(2, 6, 4, 64, device="cuda", dtype=torch.float16)
    ev = torch.randn_like(ek)
    out = effattn.na2d(q, k, v, (5, 7), additional_keys=ek, additional_values=ev)
    ref, _ = na_reference(*(t.double() for t in (q, k, v)), (5, 7),
                          additional_keys=ek.double(), additional_values=ev.double())
    assert max_err(out, ref) < 2e-2


def test_unsupported_combinations_raise_clearly():
    q = torch.randn(1, 16, 2, 48, device="cuda", dtype=torch.float16)
    with pytest.raises(NotImplementedError, match="head_dim|head dim|D "):
        effattn.na1d(q, q, q, 5)
    q = torch.randn(1, 16, 2, 64, device="cuda", dtype=torch.float32)
    with pytest.raises(RuntimeError, match="float16 and bfloat16"):
        effattn.na1d(q, q, q, 5)
