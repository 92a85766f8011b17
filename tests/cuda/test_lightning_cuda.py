"""CUDA lightning attention against the fp64 reference under DESIGN.md §8's rule:
max|ours - ref64| <= 2 * max|same-dtype reference - ref64| + atol, for the output, the final
state and every gradient (q, k, v, initial_state). Outputs are poisoned (free cached memory
filled with NaN) before each run, so an element the kernels never write fails the test.
Also: cu_seqlens vs separate sequences, decode steps vs the parallel forward, fla 0.6.0's
chunk_lightning_attn (when `fla` imports), and the NotImplementedError paths."""
import pytest
import torch

import effattn
from effattn.lightning import _KERNEL_DEVICES, fla_lightning_slopes
from effattn.reference import lightning_reference

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or "cuda" not in _KERNEL_DEVICES,
    reason="needs a CUDA device and effattn built with CUDA")

DTYPES = [torch.bfloat16, torch.float16]


def poison_cuda_memory():
    free, _ = torch.cuda.mem_get_info()
    n = min(free // 4, 2**28) // 2
    junk = torch.full((n,), float("nan"), device="cuda")
    del junk


def max_err(a, b):
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def make_inputs(batch, n, heads, dim, dtype, with_init, num_states=None):
    mk = lambda: (0.5 * torch.randn(batch, n, heads, dim, device="cuda")).to(dtype).requires_grad_()  # noqa: E731
    q, k, v = mk(), mk(), mk()
    slope = torch.rand(heads, device="cuda") * 0.5
    slope[0] = 0.0  # one head without decay
    s0 = None
    if with_init:
        s0 = (0.5 * torch.randn(num_states or batch, heads, dim, dim, device="cuda")).requires_grad_()
    return q, k, v, slope, s0


def run(fn, q, k, v, s0, g_out, g_fin):
    out, fin = fn(q, k, v, s0)
    inputs = [q, k, v] + ([s0] if s0 is not None else [])
    grads = torch.autograd.grad([out, fin], inputs, [g_out, g_fin.to(fin.dtype)])
    return (out, fin, *grads)


def check_against_reference(q, k, v, slope, s0, scale, cu_seqlens=None, names=None):
    g_out = torch.randn(v.shape, device="cuda", dtype=v.dtype)
    num_states = q.shape[0] if cu_seqlens is None else cu_seqlens.numel() - 1
    g_fin = 0.5 * torch.randn(num_states, q.shape[2], q.shape[3], v.shape[3], device="cuda")
    poison_cuda_memory()
    ours = run(lambda q, k, v, s0: effattn.lightning_attn(q, k, v, slope, scale, s0, True, cu_seqlens),
               q, k, v, s0, g_out, g_fin)
    torch.cuda.synchronize()

    def ref_fn(q, k, v, s0):
        if cu_seqlens is None:
            return lightning_reference(q, k, v, slope, scale, s0)
        outs, fins = [], []
        c = cu_seqlens.tolist()
        for i in range(len(c) - 1):
            o, f = lightning_reference(q[:, c[i]:c[i + 1]], k[:, c[i]:c[i + 1]], v[:, c[i]:c[i + 1]], slope,
                                       scale, None if s0 is None else s0[i:i + 1])
            outs.append(o)
            fins.append(f)
        return torch.cat(outs, 1), torch.cat(fins, 0)

    same = run(ref_fn, q, k, v, None if s0 is None else s0.detach().to(q.dtype).requires_grad_(),
               g_out, g_fin)
    x64 = [t.detach().double().requires_grad_() for t in (q, k, v)]
    s64 = None if s0 is None else s0.detach().double().requires_grad_()
    ref = run(ref_fn, *x64, s64, g_out.double(), g_fin.double())
    names = ["out", "final", "dq", "dk", "dv", "ds0"]
    for name, a, s, r in zip(names, ours, same, ref):
        assert torch.isfinite(a).all(), f"{name} has NaN/inf (unwritten or overflow)"
        bound = 2 * max_err(s, r) + 1e-3 * max(r.abs().max().item(), 1.0)
        assert max_err(a, r) <= bound, f"{name}: {max_err(a, r):.3e} > {bound:.3e}"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("dim", [64, 128])
@pytest.mark.parametrize("n,with_init", [(1, True), (63, False), (200, True), (1000, True), (1000, False)])
def test_against_reference(dtype, dim, n, with_init):
    torch.manual_seed(n + dim)
    q, k, v, slope, s0 = make_inputs(2, n, 3, dim, dtype, with_init)
    check_against_reference(q, k, v, slope, s0, dim ** -0.5)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_long_sequence_split_into_segments(dtype):
    # Few (batch, head) pairs: the launcher splits the sequence into segments (local states + scan).
    torch.manual_seed(7)
    q, k, v, slope, s0 = make_inputs(1, 4099, 2, 128, dtype, True)
    check_against_reference(q, k, v, slope, s0, 128 ** -0.5)


@pytest.mark.parametrize("dim", [64, 128])
def test_cu_seqlens(dim):
    torch.manual_seed(dim)
    cu = torch.tensor([0, 0, 1, 64, 130, 700, 703], device="cuda", dtype=torch.int32)
    q, k, v, slope, s0 = make_inputs(1, 703, 2, dim, torch.bfloat16, True, num_states=cu.numel() - 1)
    check_against_reference(q, k, v, slope, s0, 1.0 / dim, cu_seqlens=cu)


def test_cu_seqlens_equals_separate_calls():
    torch.manual_seed(3)
    cu = [0, 100, 357, 1000]
    q, k, v, slope, s0 = make_inputs(1, 1000, 4, 64, torch.bfloat16, True, num_states=3)
    with torch.no_grad():
        o, fin = effattn.lightning_attn(q, k, v, slope, 0.125, s0, True,
                                        torch.tensor(cu, device="cuda", dtype=torch.int64))
        for i in range(3):
            oi, fi = effattn.lightning_attn(q[:, cu[i]:cu[i + 1]], k[:, cu[i]:cu[i + 1]], v[:, cu[i]:cu[i + 1]],
                                            slope, 0.125, s0[i:i + 1], True)
            torch.testing.assert_close(o[:, cu[i]:cu[i + 1]], oi, rtol=2e-2, atol=2e-2)
            torch.testing.assert_close(fin[i:i + 1], fi, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("dim", [64, 128])
def test_decode_matches_parallel_forward(dtype, dim):
    torch.manual_seed(11)
    batch, heads, steps = 3, 4, 5
    q, k, v, slope, s0 = make_inputs(batch, steps, heads, dim, dtype, True)
    with torch.no_grad():
        o_par, fin = effattn.lightning_attn(q, k, v, slope, 0.25, s0, True)
        state = s0.detach().clone()
        outs = [effattn.lightning_decode(q[:, t], k[:, t], v[:, t], slope, state, 0.25) for t in range(steps)]
        o_dec = torch.stack(outs, 1)
    torch.testing.assert_close(state, fin, rtol=1e-2, atol=1e-2)  # forward: bf16 mma
    torch.testing.assert_close(o_dec.float(), o_par.float(), rtol=2e-2, atol=2e-2)
    # [B, 1, H, D] form and against the fp64 recurrence.
    state64 = s0.detach().double().clone()
    lam = torch.exp(-slope.double())[None, :, None, None]
    state64 = lam * state64 + torch.einsum("bhd,bhe->bhde", k[:, 0].double(), v[:, 0].double())
    o64 = 0.25 * torch.einsum("bhd,bhde->bhe", q[:, 0].double(), state64)
    state = s0.detach().clone()
    o1 = effattn.lightning_decode(q[:, :1], k[:, :1], v[:, :1], slope, state, 0.25)
    assert o1.shape == (batch, 1, heads, dim)
    torch.testing.assert_close(state.double(), state64, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(o1[:, 0].double(), o64, rtol=1e-2, atol=1e-2)


def test_fla_equality():
    fla = pytest.importorskip("fla.ops.lightning_attn")
    torch.manual_seed(5)
    batch, n, heads, dim, layer, layers = 2, 1000, 8, 128, 3, 12
    q, k, v = [(0.3 * torch.randn(batch, n, heads, dim, device="cuda")).to(torch.bfloat16) for _ in range(3)]
    s0 = 0.3 * torch.randn(batch, heads, dim, dim, device="cuda")
    slope = fla_lightning_slopes(heads, layer, layers, device="cuda")
    o_fla, f_fla = fla.chunk_lightning_attn(q, k, v, layer_idx=layer, num_layers=layers, initial_state=s0,
                                            output_final_state=True)
    o, f = effattn.lightning_attn(q, k, v, slope, dim ** -0.5, s0, True)
    o_ref, f_ref = lightning_reference(q.double(), k.double(), v.double(), slope.double(), dim ** -0.5, s0.double())
    rel = lambda a, b: ((a.double() - b.double()).norm() / b.double().norm()).item()  # noqa: E731
    msg = (f"rel(o, fla) {rel(o, o_fla):.2e}, rel(final, fla) {rel(f, f_fla):.2e}, rel(o, ref64) "
           f"{rel(o, o_ref):.2e}, rel(fla, ref64) {rel(o_fla, o_ref):.2e}, rel(final, ref64) {rel(f, f_ref):.2e}, "
           f"rel(fla final, ref64) {rel(f_fla, f_ref):.2e}")
    assert rel(o, o_fla) < 1e-2, msg
    # and about as close to the fp64 reference as fla
    assert rel(o, o_ref) <= 2 * rel(o_fla, o_ref) + 2e-3, msg
    assert rel(f, f_ref) < 1e-3, msg
    # fla 0.6.0 returned a NaN final state for this input on the H200 (2026-11-28 run); compare
    # with it only where it is finite.
    if torch.isfinite(f_fla).all():
        assert rel(f, f_fla) < 1e-2 and rel(f, f_ref) <= 2 * rel(f_fla, f_ref) + 2e-3, msg


def test_slope_grad_not_implemented():
    q, k, v, slope, _ = make_inputs(1, 70, 2, 64, torch.bfloat16, False)
    slope.requires_grad_()
    with pytest.raises(NotImplementedError, match="gradient for slope on CUDA"):
        o, _ = effattn.lightning_attn(q, k, v, slope, 1.0)  # refused up front, before any kernel
        o.sum().backward()
    o, _ = effattn.lightning_attn(q, k, v, slope.detach(), 1.0)  # a detached slope works


def test_unsupported_head_dim_and_dtype():
    q, k, v, slope, _ = make_inputs(1, 70, 2, 32, torch.bfloat16, False)
    with pytest.raises(NotImplementedError, match="head dims"):
        effattn.lightning_attn(q, k, v, slope)
    q, k, v, slope, _ = make_inputs(1, 70, 2, 64, torch.float32, False)
    with pytest.raises(NotImplementedError, match="float16 and bfloat16"):
        effattn.lightning_attn(q, k, v, slope)


def test_noncontiguous_inputs():
    torch.manual_seed(9)
    base = (0.5 * torch.randn(2, 3, 300, 64, device="cuda")).to(torch.bfloat16)
    q = base.transpose(1, 2)  # [B, N, H, D] view with non-standard strides
    k, v = q.flip(1), q.roll(5, 1)
    slope = torch.rand(3, device="cuda")
    o, _ = effattn.lightning_attn(q, k, v, slope, 0.125)
    o_ref, _ = lightning_reference(q.double(), k.double(), v.double(), slope.double(), 0.125)
    assert ((o.double() - o_ref).norm() / o_ref.norm()).item() < 1e-2


def test_compile_fullgraph():
    q, k, v, slope, _ = make_inputs(1, 130, 2, 64, torch.bfloat16, False)
    fn = torch.compile(lambda q, k, v: effattn.lightning_attn(q, k, v, slope, 0.5)[0], fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(fn(q, k, v), effattn.lightning_attn(q, k, v, slope, 0.5)[0])
