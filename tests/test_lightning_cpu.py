"""CPU lightning attention (DESIGN.md §7): the op against the explicit-mask and the recurrence
references (values, final state, every gradient), chaining, variable length, decode, the
module, the custom-op contract (opcheck, torch.compile) and bad inputs."""
import math

import pytest
import torch

import effattn
from effattn.lightning import fla_lightning_slopes
from effattn.reference import lightning_recurrence_reference, lightning_reference

OPS = torch.ops.effattn
REFERENCES = {"masked": lightning_reference, "recurrence": lightning_recurrence_reference}

# (B, N, H, D, E): N not a multiple of any block size, D != E, a single token, a single head.
SHAPES = [(2, 37, 3, 8, 5), (1, 1, 2, 4, 4), (2, 70, 2, 16, 12), (3, 19, 1, 6, 9)]


def shape_id(shape):
    return "B{}N{}H{}D{}E{}".format(*shape)


def make_inputs(shape, dtype, with_state=True, num_states=None, requires_grad=True):
    b, n, h, d, e = shape
    state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    q = torch.randn(b, n, h, d, dtype=dtype)
    k = torch.randn(b, n, h, d, dtype=dtype)
    v = torch.randn(b, n, h, e, dtype=dtype)
    # A zero slope (no decay), a long memory, a fast decay.
    slope = torch.tensor([0.0, 0.03, 0.9, 0.25][:h], dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    s0 = torch.randn(num_states or b, h, d, e, dtype=state_dtype) if with_state else None
    tensors = [q, k, v, slope] + ([s0] if with_state else [])
    for t in tensors:
        t.requires_grad_(requires_grad)
    return q, k, v, slope, s0


def rel_err(a, b):
    return (a.double() - b.double()).abs().max().item() / max(b.abs().max().item(), 1.0)


def run(fn, q, k, v, slope, scale, s0, grad_out, grad_state):
    o, final = fn(q, k, v, slope, scale, s0)
    inputs = [q, k, v, slope] + ([s0] if s0 is not None else [])
    grads = torch.autograd.grad([o, final], inputs, [grad_out, grad_state])
    return [o, final, *grads]


def ours(q, k, v, slope, scale, s0):
    return effattn.lightning_attn(q, k, v, slope, scale, s0, output_final_state=True)


NAMES = ["out", "final_state", "dq", "dk", "dv", "dslope", "dinitial_state"]


@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("with_state", [True, False], ids=["state", "nostate"])
def test_matches_both_references(shape, dtype, with_state):
    q, k, v, slope, s0 = make_inputs(shape, dtype, with_state)
    scale = 0.37
    o, _ = effattn.lightning_attn(q, k, v, slope, scale, s0)
    grad_out = torch.randn_like(o)
    grad_state = torch.randn(shape[0], shape[2], shape[3], shape[4], dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    got = run(ours, q, k, v, slope, scale, s0, grad_out, grad_state)
    assert got[0].dtype == dtype and got[1].dtype == grad_state.dtype
    assert got[3 + 2].dtype == dtype and got[5].dtype == slope.dtype
    q64, k64, v64, slope64 = (t.detach().double().requires_grad_() for t in (q, k, v, slope))
    s064 = s0.detach().double().requires_grad_() if with_state else None
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for ref_name, ref_fn in REFERENCES.items():
        ref = run(ref_fn, q64, k64, v64, slope64, scale, s064, grad_out.double(), grad_state.double())
        for name, a, b in zip(NAMES, got, ref):
            err = rel_err(a, b)
            assert err <= tol, f"{ref_name} {name}: relative error {err:.3e} > {tol}"


def test_fp32_long_sequence_slope_gradient_is_stable():
    # The slope gradient sums (t - u)-weighted terms over all pairs; it must stay accurate.
    q, k, v, slope, s0 = make_inputs((1, 300, 3, 8, 8), torch.float32)
    with torch.no_grad():
        slope.copy_(torch.tensor([0.002, 0.02, 0.2]))
    grad_out = torch.randn(1, 300, 3, 8)
    grad_state = torch.randn(1, 3, 8, 8)
    got = run(ours, q, k, v, slope, 1.0, s0, grad_out, grad_state)
    q64, k64, v64, slope64, s064 = (t.detach().double().requires_grad_() for t in (q, k, v, slope, s0))
    ref = run(lightning_reference, q64, k64, v64, slope64, 1.0, s064, grad_out.double(), grad_state.double())
    for name, a, b in zip(NAMES, got, ref):
        assert rel_err(a, b) <= 1e-5, name


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_follows_the_flash_attention_rule(dtype):
    # max|ours - ref64| <= 2 * max|reference in the same dtype - ref64| + atol
    shape = (2, 29, 2, 8, 8)
    q, k, v, slope, s0 = make_inputs(shape, dtype)
    q.data.mul_(0.5), k.data.mul_(0.5)
    grad_out = torch.randn(2, 29, 2, 8, dtype=dtype)
    grad_state = torch.randn(2, 2, 8, 8)
    got = run(ours, q, k, v, slope, 1.0, s0, grad_out, grad_state)
    same = run(lightning_reference, q, k, v, slope, 1.0, s0, grad_out, grad_state.to(dtype))
    q64, k64, v64, slope64, s064 = (t.detach().double().requires_grad_() for t in (q, k, v, slope, s0))
    ref = run(lightning_reference, q64, k64, v64, slope64, 1.0, s064, grad_out.double(), grad_state.double())
    for name, a, s, r in zip(NAMES, got, same, ref):
        err = (a.double() - r).abs().max().item()
        bound = 2 * (s.double() - r).abs().max().item() + 1e-3 * max(r.abs().max().item(), 1.0)
        assert err <= bound, f"{name}: {err:.3e} > {bound:.3e}"
    assert got[0].dtype == dtype and got[1].dtype == torch.float32


@pytest.mark.parametrize("varlen", [False, True], ids=["batch", "varlen"])
def test_gradcheck_fp64(varlen):
    if varlen:
        q, k, v, slope, s0 = make_inputs((1, 9, 2, 3, 4), torch.float64, num_states=3)
        cu = torch.tensor([0, 4, 4, 9])
    else:
        q, k, v, slope, s0 = make_inputs((2, 7, 2, 3, 4), torch.float64)
        cu = None
    with torch.no_grad():
        slope += 0.1  # finite differences must not step below slope = 0
    fn = lambda q, k, v, slope, s0: effattn.lightning_attn(q, k, v, slope, 0.8, s0, True, cu)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (q, k, v, slope, s0))
    fn_nostate = lambda q, k, v, slope: effattn.lightning_attn(q, k, v, slope, 0.8, cu_seqlens=cu)[0]  # noqa: E731
    assert torch.autograd.gradcheck(fn_nostate, (q, k, v, slope))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_chunked_calls_chained_through_initial_state_equal_one_call(dtype):
    q, k, v, slope, s0 = make_inputs((2, 41, 2, 6, 5), dtype)
    grad_out = torch.randn(2, 41, 2, 5, dtype=dtype)
    grad_state = torch.randn_like(s0)
    full = run(ours, q, k, v, slope, 0.5, s0, grad_out, grad_state)

    def chained(q, k, v, slope, scale, state):
        outs = []
        for a, b in ((0, 5), (5, 6), (6, 23), (23, 41)):
            o, state = effattn.lightning_attn(q[:, a:b], k[:, a:b], v[:, a:b], slope, scale, state, True)
            outs.append(o)
        return torch.cat(outs, dim=1), state

    pieces = run(chained, q, k, v, slope, 0.5, s0, grad_out, grad_state)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for name, a, b in zip(NAMES, pieces, full):
        assert rel_err(a, b) <= tol, name


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("with_state", [True, False], ids=["state", "nostate"])
def test_cu_seqlens_equals_separate_calls(index_dtype, with_state):
    lengths = [5, 0, 12, 1, 9]
    bounds = [0] + torch.tensor(lengths).cumsum(0).tolist()
    n = bounds[-1]
    q, k, v, slope, s0 = make_inputs((1, n, 3, 4, 6), torch.float64, with_state, num_states=len(lengths))
    cu = torch.tensor(bounds, dtype=index_dtype)
    grad_out = torch.randn(1, n, 3, 6, dtype=torch.float64)
    grad_state = torch.randn(len(lengths), 3, 4, 6, dtype=torch.float64)

    def packed(q, k, v, slope, scale, s0):
        return effattn.lightning_attn(q, k, v, slope, scale, s0, True, cu)

    def separate(q, k, v, slope, scale, s0):
        outs, finals = [], []
        for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            o, f = effattn.lightning_attn(q[:, a:b], k[:, a:b], v[:, a:b], slope, scale,
                                          None if s0 is None else s0[i:i + 1], True)
            outs.append(o)
            finals.append(f)
        return torch.cat(outs, dim=1), torch.cat(finals, dim=0)

    got = run(packed, q, k, v, slope, 0.9, s0, grad_out, grad_state)
    want = run(separate, q, k, v, slope, 0.9, s0, grad_out, grad_state)
    for name, a, b in zip(NAMES, got, want):
        assert rel_err(a, b) <= 1e-12, name
    # An empty sequence passes its state through unchanged.
    if with_state:
        assert torch.equal(got[1][1], s0[1].detach())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("form", ["BHD", "B1HD"])
def test_decode_steps_equal_parallel_forward(dtype, form):
    q, k, v, slope, s0 = make_inputs((2, 11, 3, 8, 6), dtype, requires_grad=False)
    o_ref, final_ref = effattn.lightning_attn(q, k, v, slope, 0.6, s0, True)
    state = s0.clone()
    outs = []
    for t in range(q.shape[1]):
        sl = slice(t, t + 1) if form == "B1HD" else t
        o = effattn.lightning_decode(q[:, sl], k[:, sl], v[:, sl], slope, state, 0.6)
        assert o.shape == v[:, sl].shape and o.dtype == dtype
        outs.append(o if form == "B1HD" else o[:, None])
    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.bfloat16: 1e-2}[dtype]
    assert rel_err(torch.cat(outs, dim=1), o_ref) <= tol
    assert rel_err(state, final_ref) <= (1e-12 if dtype == torch.float64 else 1e-5)


def test_decode_updates_a_non_contiguous_state_in_place():
    q, k, v, slope, _ = make_inputs((2, 1, 2, 4, 4), torch.float32, with_state=False, requires_grad=False)
    base = torch.randn(2, 2, 4, 4)
    state = base.transpose(-1, -2)  # a non-contiguous view
    expected_o, expected_state = lightning_recurrence_reference(q, k, v, slope, 1.0, state.clone())
    o = effattn.lightning_decode(q[:, 0], k[:, 0], v[:, 0], slope, state)
    assert rel_err(o, expected_o[:, 0]) <= 1e-6
    assert rel_err(base.transpose(-1, -2), expected_state) <= 1e-6


def test_module_step_equals_forward():
    layer = effattn.LightningAttention(24, 3, layer_idx=1, num_layers=4).double()
    x = torch.randn(2, 9, 24, dtype=torch.float64)
    y, final = layer(x)
    assert y.shape == x.shape and final.shape == (2, 3, 8, 8)
    # Prefill the first 4 tokens with forward, then decode the rest in place (no grad).
    y_pre, state = layer(x[:, :4])
    steps = [y_pre]
    with torch.no_grad():
        state = state.detach().clone()
        for t in range(4, 9):
            form = x[:, t] if t % 2 else x[:, t:t + 1]
            y_t, state2 = layer.step(form, state)
            assert state2 is state and y_t.shape == form.shape
            steps.append(y_t if t % 2 == 0 else y_t[:, None])
    assert rel_err(torch.cat(steps, dim=1), y) <= 1e-12
    assert rel_err(state, final) <= 1e-12
    # With grad on, step is differentiable and leaves the given state alone.
    state = layer.new_state(2, dtype=torch.float64)
    outs = []
    for t in range(9):
        y_t, state = layer.step(x[:, t], state)
        outs.append(y_t)
    stepped = torch.stack(outs, dim=1)
    assert rel_err(stepped, y) <= 1e-12
    g_step = torch.autograd.grad(stepped.sum(), layer.qkv_proj.weight)[0]
    g_full = torch.autograd.grad(layer(x)[0].sum(), layer.qkv_proj.weight)[0]
    assert rel_err(g_step, g_full) <= 1e-10


def test_module_fp32_and_bad_input():
    layer = effattn.LightningAttention(32, 4, layer_idx=0, num_layers=2)
    x = torch.randn(2, 6, 32, requires_grad=True)
    y, state = layer(x)
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and state.dtype == torch.float32
    torch.testing.assert_close(layer.slope, effattn.lightning_slopes(4, 0, 2))
    with pytest.raises(ValueError, match="expects input"):
        layer(torch.randn(2, 32))
    with pytest.raises(ValueError, match="step expects input"):
        layer.step(torch.randn(2, 3, 32))
    with pytest.raises(ValueError, match="divisible by num_heads"):
        effattn.LightningAttention(30, 4)


def test_slopes():
    # Power of two: 2^(-8(h+1)/H).
    torch.testing.assert_close(effattn.lightning_slopes(8), torch.tensor([2.0 ** -(h + 1) for h in range(8)]))
    torch.testing.assert_close(effattn.lightning_slopes(4), torch.tensor([2.0 ** (-2 * (h + 1)) for h in range(4)]))
    # Not a power of two: the 4-head slopes, then every other slope of the 8-head set.
    s4, s8 = effattn.lightning_slopes(4), effattn.lightning_slopes(8)
    torch.testing.assert_close(effattn.lightning_slopes(6), torch.cat([s4, s8[0::2][:2]]))
    assert effattn.lightning_slopes(12).shape == (12,)
    # Per-layer scaling (1 - l / (L - 1) + 1e-5).
    torch.testing.assert_close(effattn.lightning_slopes(8, 2, 5), s8 * (1 - 2 / 4 + 1e-5))
    torch.testing.assert_close(effattn.lightning_slopes(8, 4, 5), s8 * 1e-5)
    assert effattn.lightning_slopes(8).dtype == torch.float32
    # fla's convention: slope = -g, g_h = -(8 / H)(1 - l / L) h.
    torch.testing.assert_close(fla_lightning_slopes(4, 1, 4), torch.tensor([0.0, 1.5, 3.0, 4.5]))
    for bad, message in (((0,), "num_heads"), ((8, 1), "given together"), ((8, 5, 5), "layer_idx"),
                         ((8, 0, 0), "num_layers")):
        with pytest.raises(ValueError, match=message):
            effattn.lightning_slopes(*bad)


# ---- custom-op contract -------------------------------------------------------------------------

@pytest.mark.parametrize("output_final_state", [True, False])
@pytest.mark.parametrize("with_state", [True, False], ids=["state", "nostate"])
def test_opcheck_lightning_attn(output_final_state, with_state):
    q, k, v, slope, s0 = make_inputs((2, 9, 2, 4, 3), torch.float64, with_state)
    torch.library.opcheck(OPS.lightning_attn, (q, k, v, slope, 0.5, s0, output_final_state, None))


def test_opcheck_lightning_attn_varlen_and_fp32():
    q, k, v, slope, s0 = make_inputs((1, 10, 2, 4, 3), torch.float64, num_states=3)
    cu = torch.tensor([0, 3, 3, 10], dtype=torch.int32)
    torch.library.opcheck(OPS.lightning_attn, (q, k, v, slope, 0.5, s0, True, cu))
    q, k, v, slope, s0 = make_inputs((2, 9, 2, 4, 3), torch.float32)
    torch.library.opcheck(OPS.lightning_attn, (q, k, v, slope, 0.5, s0, True, None),
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"))


@pytest.mark.parametrize("compute_slope_grad", [True, False])
@pytest.mark.parametrize("with_state", [True, False], ids=["state", "nostate"])
def test_opcheck_lightning_attn_backward(compute_slope_grad, with_state):
    q, k, v, slope, s0 = make_inputs((2, 9, 2, 4, 3), torch.float64, with_state, requires_grad=False)
    grad_state = torch.randn(2, 2, 4, 3, dtype=torch.float64) if with_state else None
    args = (torch.randn(2, 9, 2, 3, dtype=torch.float64), grad_state, q, k, v, slope, 0.5, s0, None,
            compute_slope_grad)
    torch.library.opcheck(OPS.lightning_attn_backward, args)


@pytest.mark.parametrize("form", ["BHD", "B1HD"])
def test_opcheck_lightning_decode(form):
    q, k, v, slope, s0 = make_inputs((2, 1, 3, 4, 5), torch.float64, requires_grad=False)
    if form == "BHD":
        q, k, v = q[:, 0], k[:, 0], v[:, 0]
    torch.library.opcheck(OPS.lightning_decode, (q, k, v, slope, s0, 0.5))


def _loss(q, k, v, slope, s0, cu=None):
    o, final = effattn.lightning_attn(q, k, v, slope, 0.7, s0, True, cu)
    return (o * o).sum() + (final * final).sum()


@pytest.mark.parametrize("varlen", [False, True], ids=["batch", "varlen"])
def test_compile_fullgraph_forward_and_backward(varlen):
    torch._dynamo.reset()
    if varlen:
        q, k, v, slope, s0 = make_inputs((1, 13, 2, 4, 6), torch.float32, num_states=2)
        cu = torch.tensor([0, 6, 13])
    else:
        q, k, v, slope, s0 = make_inputs((2, 13, 2, 4, 6), torch.float32)
        cu = None
    inputs = (q, k, v, slope, s0)
    compiled = torch.compile(_loss, fullgraph=True, backend="aot_eager")
    loss = compiled(*inputs, cu)
    grads = torch.autograd.grad(loss, inputs)
    eager_loss = _loss(*inputs, cu)
    eager_grads = torch.autograd.grad(eager_loss, inputs)
    assert rel_err(loss, eager_loss) <= 1e-6
    for a, b in zip(grads, eager_grads):
        assert rel_err(a, b) <= 1e-6


def test_compile_inductor_module_and_decode():
    torch._dynamo.reset()
    layer = effattn.LightningAttention(16, 2, layer_idx=0, num_layers=3)
    x = torch.randn(2, 7, 16, requires_grad=True)
    compiled = torch.compile(layer, fullgraph=True)
    y, state = compiled(x)
    y_eager, state_eager = layer(x)
    assert rel_err(y, y_eager) <= 1e-5 and rel_err(state, state_eager) <= 1e-5
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()

    def decode(q, k, v, slope, state):
        return effattn.lightning_decode(q, k, v, slope, state, 0.5) * 2

    q, k, v, slope, s0 = make_inputs((2, 1, 2, 4, 4), torch.float32, requires_grad=False)
    state_c, state_e = s0.clone(), s0.clone()
    out_c = torch.compile(decode, fullgraph=True, backend="aot_eager")(q[:, 0], k[:, 0], v[:, 0], slope, state_c)
    out_e = decode(q[:, 0], k[:, 0], v[:, 0], slope, state_e)
    assert rel_err(out_c, out_e) <= 1e-6 and rel_err(state_c, state_e) <= 1e-6


# ---- bad inputs ---------------------------------------------------------------------------------

def _good(n=8):
    q = torch.randn(2, n, 3, 4)
    k = torch.randn(2, n, 3, 4)
    v = torch.randn(2, n, 3, 5)
    return q, k, v, torch.full((3,), 0.5), torch.zeros(2, 3, 4, 5)


def _packed():
    q, k, v, slope, _ = _good()
    return q[:1], k[:1], v[:1], slope


BAD_PYTHON_CALLS = [
    ("negative slope", lambda q, k, v, s, st: effattn.lightning_attn(q, k, v, -s), "slope must be >= 0"),
    ("nan slope", lambda q, k, v, s, st: effattn.lightning_attn(q, k, v, s * math.nan), "slope must be >= 0"),
    ("slope shape", lambda q, k, v, s, st: effattn.lightning_attn(q, k, v, s[:2]), r"slope must have shape \[H\] = \[3\]"),
    ("slope dtype", lambda q, k, v, s, st: effattn.lightning_attn(q, k, v, s.half()), "slope must be float32"),
    ("state shape", lambda q, k, v, s, st: effattn.lightning_attn(q, k, v, s, initial_state=st[:1]), "initial_state must have shape"),
    ("state E", lambda q, k, v, s, st: effattn.lightning_attn(q, k, v, s, initial_state=st[..., :4]), "initial_state must have shape"),
    ("state dtype", lambda q, k, v, s, st: effattn.lightning_attn(q, k, v, s, initial_state=st.double()), "initial_state must be torch.float32"),
    ("q/k head dim", lambda q, k, v, s, st: effattn.lightning_attn(q, k[..., :3], v, s), "q and k must have the same shape"),
    ("v shape", lambda q, k, v, s, st: effattn.lightning_attn(q, k, v[:, :7], s), "v must have shape"),
    ("rank", lambda q, k, v, s, st: effattn.lightning_attn(q[0], k, v, s), "q must have rank 4"),
    ("dtypes", lambda q, k, v, s, st: effattn.lightning_attn(q.double(), k, v, s), "same dtype"),
    ("int dtype", lambda q, k, v, s, st: effattn.lightning_attn(q.int(), k.int(), v.int(), s), "float16, bfloat16, float32 or float64"),
    ("device", lambda q, k, v, s, st: effattn.lightning_attn(q, k.to("meta"), v, s), "same device"),
    ("slope device", lambda q, k, v, s, st: effattn.lightning_attn(q, k, v, s.to("meta")), "slope must be on the device of q"),
    ("scale", lambda q, k, v, s, st: effattn.lightning_attn(q, k, v, s, scale=math.inf), "scale must be finite"),
    ("cu B != 1", lambda q, k, v, s, st: effattn.lightning_attn(q, k, v, s, cu_seqlens=torch.tensor([0, 8])), "batch size B must be 1"),
    ("cu decreasing", lambda q, k, v, s, st: effattn.lightning_attn(*_packed(), cu_seqlens=torch.tensor([0, 5, 3, 8])), "non-decreasing"),
    ("cu end", lambda q, k, v, s, st: effattn.lightning_attn(*_packed(), cu_seqlens=torch.tensor([0, 5, 7])), "must end at N = 8"),
    ("cu start", lambda q, k, v, s, st: effattn.lightning_attn(*_packed(), cu_seqlens=torch.tensor([1, 5, 8])), "must start at 0"),
    ("cu dtype", lambda q, k, v, s, st: effattn.lightning_attn(*_packed(), cu_seqlens=torch.tensor([0.0, 8.0])), "int32 or int64"),
    ("cu state count", lambda q, k, v, s, st: effattn.lightning_attn(*_packed(), initial_state=st, cu_seqlens=torch.tensor([0, 2, 5, 8])), r"initial_state must have shape \[num_states, H, D, E\] = \[3, 3, 4, 5\]"),
    ("decode rank", lambda q, k, v, s, st: effattn.lightning_decode(q, k, v, s, st), "one token per sequence"),
    ("decode state", lambda q, k, v, s, st: effattn.lightning_decode(q[:, 0], k[:, 0], v[:, 0], s, st[:, :2]), "state must have shape"),
    ("decode state dtype", lambda q, k, v, s, st: effattn.lightning_decode(q[:, 0], k[:, 0], v[:, 0], s, st.half()), "state must be torch.float32"),
    ("decode slope", lambda q, k, v, s, st: effattn.lightning_decode(q[:, 0], k[:, 0], v[:, 0], -s, st), "slope must be >= 0"),
    ("decode head dim", lambda q, k, v, s, st: effattn.lightning_decode(q[:, 0], k[:, 0, :, :2], v[:, 0], s, st), "q and k must have the same shape"),
]


@pytest.mark.parametrize("name,call,message", BAD_PYTHON_CALLS, ids=[c[0] for c in BAD_PYTHON_CALLS])
def test_python_api_raises_value_error(name, call, message):
    with pytest.raises(ValueError, match=message):
        call(*_good())


BAD_OP_CALLS = [
    ("negative slope", lambda q, k, v, s, st: OPS.lightning_attn(q, k, v, -s, 1.0, None, False, None), "slope must be >= 0"),
    ("slope shape", lambda q, k, v, s, st: OPS.lightning_attn(q, k, v, s[:2], 1.0, None, False, None), r"slope must have shape \[H\] = \[3\]"),
    ("state shape", lambda q, k, v, s, st: OPS.lightning_attn(q, k, v, s, 1.0, st[:1], True, None), "initial_state must have shape"),
    ("state dtype", lambda q, k, v, s, st: OPS.lightning_attn(q, k, v, s, 1.0, st.double(), True, None), "initial_state must be Float"),
    ("q/k head dim", lambda q, k, v, s, st: OPS.lightning_attn(q, k[..., :3], v, s, 1.0, None, False, None), "q and k must have the same shape"),
    ("dtypes", lambda q, k, v, s, st: OPS.lightning_attn(q, k.double(), v, s, 1.0, None, False, None), "same dtype"),
    ("cu B != 1", lambda q, k, v, s, st: OPS.lightning_attn(q, k, v, s, 1.0, None, False, torch.tensor([0, 8])), "batch size B must be 1"),
    ("cu decreasing", lambda q, k, v, s, st: OPS.lightning_attn(*_packed(), 1.0, None, False, torch.tensor([0, 5, 3, 8])), "non-decreasing"),
    ("cu end", lambda q, k, v, s, st: OPS.lightning_attn(*_packed(), 1.0, None, False, torch.tensor([0, 5, 7])), "must end at N = 8"),
    ("backward grad_out", lambda q, k, v, s, st: OPS.lightning_attn_backward(q, None, q, k, v, s, 1.0, None, None, False), "grad_out must have the shape"),
    ("backward grad state", lambda q, k, v, s, st: OPS.lightning_attn_backward(v, st[:1], q, k, v, s, 1.0, None, None, False), "grad_final_state must have shape"),
    ("decode state", lambda q, k, v, s, st: OPS.lightning_decode(q[:, 0], k[:, 0], v[:, 0], s, st[:1], 1.0), "state must have shape"),
    ("decode slope", lambda q, k, v, s, st: OPS.lightning_decode(q[:, 0], k[:, 0], v[:, 0], -s, st, 1.0), "slope must be >= 0"),
    ("decode rank", lambda q, k, v, s, st: OPS.lightning_decode(q, k, v, s, st, 1.0), "one token per sequence"),
]


@pytest.mark.parametrize("name,call,message", BAD_OP_CALLS, ids=[c[0] for c in BAD_OP_CALLS])
def test_cpp_op_checks_before_running(name, call, message):
    q, k, v, s, st = _good()
    st_before = st.clone()
    with pytest.raises(RuntimeError, match=message):
        call(q, k, v, s, st)
    assert torch.equal(st, st_before)  # nothing ran


def test_slope_check_is_remembered_until_the_slope_changes():
    # A decode loop passes one slope tensor per step: its values are read once (a GPU sync on
    # CUDA), then again only after the tensor is written to.
    q, k, v, s, st = _good()
    effattn.lightning_decode(q[:, 0], k[:, 0], v[:, 0], s, st)
    s.neg_()  # in place: bumps the version counter
    with pytest.raises(ValueError, match="slope must be >= 0"):
        effattn.lightning_decode(q[:, 0], k[:, 0], v[:, 0], s, st)
    s.neg_()
    effattn.lightning_decode(q[:, 0], k[:, 0], v[:, 0], s, st)
