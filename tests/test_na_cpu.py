"""CPU neighborhood attention against the explicit-mask fp64 reference."""
import pytest
import torch
import torch.nn.functional as F

import effattn
from effattn.reference import na_reference
from na_cases import CASES, case_id, make_qkv, max_err, window_args


def _forward_backward(fn, q, k, v, grad_out, grad_lse):
    out, lse = fn(q, k, v)
    grads = torch.autograd.grad([out, lse], [q, k, v], [grad_out, grad_lse])
    return (out, lse, *grads)


def _ours(case, scale=None):
    ks, dil, st, causal = window_args(case)
    return lambda q, k, v: effattn.neighborhood_attention(q, k, v, ks, dil, st, causal, scale,
                                                          return_lse=True)


def _ref(case, scale=None):
    ks, dil, st, causal = window_args(case)
    return lambda q, k, v: na_reference(q, k, v, ks, dil, st, causal, scale)


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_values_and_gradients_match_reference(case, dtype):
    q, k, v = make_qkv(case, dtype, requires_grad=True)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    g_out = torch.randn_like(q)
    g_lse = torch.randn(q.shape[:-1], dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    ours = _forward_backward(_ours(case), q, k, v, g_out, g_lse)
    ref = _forward_backward(_ref(case), q64, k64, v64, g_out.double(), g_lse.double())
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert ours[0].dtype == dtype and ours[1].dtype == g_lse.dtype
    for name, a, b in zip(("out", "lse", "dq", "dk", "dv"), ours, ref):
        rel = max_err(a, b) / max(b.abs().max().item(), 1.0)
        assert rel <= tol, f"{name}: relative error {rel:.3e} > {tol}"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", CASES[1::3], ids=case_id)
def test_low_precision_follows_the_flash_attention_rule(case, dtype):
    # max|ours - ref64| <= 2 * max|reference computed in the same dtype - ref64| + atol
    q, k, v = make_qkv(case, dtype, requires_grad=True)
    g_out = torch.randn_like(q)
    g_lse = torch.randn(q.shape[:-1])
    ours = _forward_backward(_ours(case), q, k, v, g_out, g_lse)
    same = _forward_backward(_ref(case), q, k, v, g_out, g_lse.to(dtype))
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = _forward_backward(_ref(case), q64, k64, v64, g_out.double(), g_lse.double())
    for name, a, s, r in zip(("out", "lse", "dq", "dk", "dv"), ours, same, ref):
        assert a.dtype == (torch.float32 if name == "lse" else dtype)
        assert max_err(a, r) <= 2 * max_err(s, r) + 1e-3, name


GRADCHECK_CASES = [
    ((9,), (4,), (2,), (2,), (False,), 2, 1),
    ((5, 7), (3, 2), (1, 3), (2, 1), (True, False), 2, 2),
    ((4, 5, 4), (2, 3, 2), (2, 1, 1), (1, 2, 2), (False, True, True), 2, 1),
]


@pytest.mark.parametrize("case", GRADCHECK_CASES, ids=case_id)
def test_gradcheck_fp64(case):
    q, k, v = make_qkv(case, torch.float64, batch=1, head_dim=4, requires_grad=True)
    ks, dil, st, causal = window_args(case)

    def fn(q, k, v):
        return effattn.neighborhood_attention(q, k, v, ks, dil, st, causal, return_lse=True)

    assert torch.autograd.gradcheck(fn, (q, k, v))


@pytest.mark.parametrize("grid", [(23,), (7, 9), (3, 4, 5)])
def test_kernel_equal_to_input_is_full_attention(grid):
    q = torch.randn(2, *grid, 4, 16, dtype=torch.float64)
    k, v = torch.randn_like(q), torch.randn_like(q)
    out = effattn.neighborhood_attention(q, k, v, grid)
    flat = lambda t: t.reshape(2, -1, 4, 16).transpose(1, 2)  # noqa: E731
    full = F.scaled_dot_product_attention(flat(q), flat(k), flat(v)).transpose(1, 2)
    assert max_err(out, full.reshape(out.shape)) < 1e-12


def test_scale_argument_is_used():
    case = CASES[4]
    q, k, v = make_qkv(case, torch.float64)
    ks, dil, st, causal = window_args(case)
    out = effattn.na2d(q, k, v, ks, dil, st, causal, scale=0.37)
    ref, _ = na_reference(q, k, v, ks, dil, st, causal, scale=0.37)
    assert max_err(out, ref) < 1e-12
    assert max_err(out, effattn.na2d(q, k, v, ks, dil, st, causal)) > 1e-3


@pytest.mark.parametrize("case", [CASES[2], CASES[6], CASES[10]], ids=case_id)
def test_additional_keys_share_the_softmax(case):
    q, k, v = make_qkv(case, torch.float64, requires_grad=True)
    extra_k = torch.randn(q.shape[0], 5, k.shape[-2], k.shape[-1], dtype=torch.float64, requires_grad=True)
    extra_v = torch.randn_like(extra_k, requires_grad=True)
    ks, dil, st, causal = window_args(case)
    out, lse = effattn.neighborhood_attention(q, k, v, ks, dil, st, causal, additional_keys=extra_k,
                                              additional_values=extra_v, return_lse=True)
    ref, ref_lse = na_reference(q, k, v, ks, dil, st, causal, additional_keys=extra_k,
                                additional_values=extra_v)
    assert max_err(out, ref) < 1e-12 and max_err(lse, ref_lse) < 1e-12
    g = torch.randn_like(out)
    ours = torch.autograd.grad((out * g).sum() + lse.sum(), (q, k, v, extra_k, extra_v))
    theirs = torch.autograd.grad((ref * g).sum() + ref_lse.sum(), (q, k, v, extra_k, extra_v))
    for a, b in zip(ours, theirs):
        assert max_err(a, b) < 1e-11


def test_non_contiguous_inputs_are_read_correctly():
    base = torch.randn(2, 4, 10, 12, 16, dtype=torch.float64)  # [B, H, X, Y, D]
    q, k, v = (base.permute(0, 2, 3, 1, 4) + i for i in range(3))
    assert not q.is_contiguous()
    out = effattn.na2d(q, k, v, (3, 5), dilation=(2, 1))
    ref, _ = na_reference(q.contiguous(), k.contiguous(), v.contiguous(), (3, 5), (2, 1))
    assert max_err(out, ref) < 1e-12


def test_per_axis_arguments_accept_ints_and_tuples():
    q, k, v = make_qkv(CASES[8], torch.float64)
    a = effattn.na3d(q, k, v, 3, dilation=1, stride=1, is_causal=False)
    b = effattn.na3d(q, k, v, (3, 3, 3), (1, 1, 1), (1, 1, 1), (False, False, False))
    assert torch.equal(a, b)


def test_lse_dtype_is_fp32_for_float_inputs():
    q, k, v = make_qkv(CASES[0], torch.float32)
    _, lse = effattn.na1d(q, k, v, 5, return_lse=True)
    assert lse.dtype == torch.float32 and lse.shape == q.shape[:-1]
