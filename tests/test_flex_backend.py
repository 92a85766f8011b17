"""The models' attention backends (effattn.models.layers.na_backend, lightning_lm.lightning_backend):
FlexAttention's NA mask_mod against the reference window rule, the compiled FlexAttention NA
(forward; torch has no FlexAttention backward on the CPU) against effattn's NA and the fp64
reference, a model under the flex backend against its default output, the switches restoring
the default, and the fla backend's wiring through a stand-in fla built on effattn's ops."""
import shutil
import sys
import types

import pytest
import torch

from effattn.functional import neighborhood_attention
from effattn.lightning import fla_lightning_slopes, lightning_attn
from effattn.models import create_model, lightning_backend, na_backend
from effattn.models import fla_backend, layers, lightning_lm
from effattn.models.flex_backend import flex_neighborhood_attention, na_mask_mod
from effattn.reference import na_mask, na_reference

try:
    from torch.nn.attention.flex_attention import create_mask
except ImportError:  # torch builds without FlexAttention
    create_mask = None

needs_flex = pytest.mark.skipif(create_mask is None,
                                reason="torch.nn.attention.flex_attention is not available")
# torch.compile of flex_attention on the CPU generates C++ (inductor): it needs a compiler.
needs_compiled_flex = pytest.mark.skipif(
    create_mask is None or not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
    reason="compiled FlexAttention on the CPU needs torch.nn.attention.flex_attention and a C++ compiler")

# (grid, kernel, dilation, stride, causal): even/odd kernels, dilation, stride, causal axes, rank 1-3.
MASK_CASES = [
    ((13,), (4,), (3,), (1,), (False,)),
    ((13,), (5,), (2,), (3,), (True,)),
    ((9, 11), (5, 4), (1, 2), (1, 1), (False, False)),
    ((9, 11), (3, 4), (3, 1), (2, 3), (True, False)),
    ((10, 7), (7, 7), (1, 1), (1, 1), (False, False)),  # K = L: full attention on that axis
    ((5, 6, 7), (3, 2, 5), (1, 3, 1), (2, 1, 5), (False, True, False)),
]


@needs_flex
@pytest.mark.parametrize("grid,kernel,dilation,stride,causal", MASK_CASES)
def test_mask_mod_equals_reference_window(grid, kernel, dilation, stride, causal):
    n = torch.Size(grid).numel()
    mask = create_mask(na_mask_mod(grid, kernel, dilation, stride, causal), None, None, n, n, device="cpu")
    assert torch.equal(mask[0, 0], na_mask(grid, kernel, dilation, stride, causal))


@needs_compiled_flex
def test_flex_na_equals_effattn_and_reference():
    grid, kernel, dilation, stride, causal = (11, 9), (5, 4), (2, 1), (1, 2), (False, True)
    q, k, v = (torch.randn(2, *grid, 2, 32) for _ in range(3))
    out = flex_neighborhood_attention(q, k, v, kernel, dilation, stride, causal, scale=0.3)
    ours = neighborhood_attention(q, k, v, kernel, dilation, stride, causal, scale=0.3)
    ref, _ = na_reference(q.double(), k.double(), v.double(), kernel, dilation, stride, causal, scale=0.3)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert (out.double() - ref).abs().max().item() < 1e-5
    assert (out - ours).abs().max().item() < 1e-5


@needs_compiled_flex
def test_model_under_flex_backend_equals_default():
    # 16×16 images: 4×4 (kernel 5 clamped to 4), 2×2 (3 -> 2) and 1×1 (no attention) stages.
    model = create_model("nat_mini").eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        default = model(x)
        with na_backend("flex"):
            flex = model(x)
    assert (flex - default).abs().max().item() < 1e-5


def test_na_backend_switch_dispatches_and_restores(monkeypatch):
    calls = []

    def spy(q, k, v, *window):
        calls.append(tuple(q.shape[1:-2]))
        return neighborhood_attention(q, k, v, *window)

    monkeypatch.setitem(layers._NA_BACKENDS, "flex", spy)
    block = layers.NATLayer(32, 2, kernel_size=3).eval()
    x = torch.randn(1, 5, 6, 32)
    assert layers.get_na_backend() == "effattn"
    default = block(x)
    assert calls == []
    with na_backend("flex"):
        assert layers.get_na_backend() == "flex"
        with na_backend("effattn"):  # nested blocks restore their own predecessor
            block(x)
            assert layers.get_na_backend() == "effattn"
        assert layers.get_na_backend() == "flex" and calls == []
        torch.testing.assert_close(block(x), default)
    assert calls == [(5, 6)] and layers.get_na_backend() == "effattn"
    with pytest.raises(RuntimeError, match="boom"), na_backend("flex"):
        raise RuntimeError("boom")
    assert layers.get_na_backend() == "effattn"
    with pytest.raises(ValueError, match="unknown NA backend 'natten'; available: effattn, flex"):
        with na_backend("natten"):
            pass


@pytest.fixture
def stand_in_fla(monkeypatch):
    """fla's two entry points rebuilt from their documented conventions on effattn's CPU op
    (chunk_lightning_attn: slopes fla_lightning_slopes(H, l, L), scale default D^-0.5;
    chunk_simple_gla: decay exp(g_gamma)); records which one ran."""
    calls = []

    def chunk_lightning_attn(q, k, v, layer_idx, num_layers, scale=None, initial_state=None,
                             output_final_state=False):
        calls.append("chunk_lightning_attn")
        slope = fla_lightning_slopes(q.shape[2], layer_idx, num_layers)
        return lightning_attn(q, k, v, slope, q.shape[-1] ** -0.5 if scale is None else scale,
                              initial_state, output_final_state)

    def chunk_simple_gla(q, k, v, g=None, g_gamma=None, scale=None, initial_state=None,
                         output_final_state=False):
        calls.append("chunk_simple_gla")
        return lightning_attn(q, k, v, -g_gamma, q.shape[-1] ** -0.5 if scale is None else scale,
                              initial_state, output_final_state)

    fla = types.ModuleType("fla")
    ops = types.ModuleType("fla.ops")
    la = types.ModuleType("fla.ops.lightning_attn")
    sg = types.ModuleType("fla.ops.simple_gla")
    la.chunk_lightning_attn, sg.chunk_simple_gla = chunk_lightning_attn, chunk_simple_gla
    fla.ops, ops.lightning_attn, ops.simple_gla = ops, la, sg
    for name, module in (("fla", fla), ("fla.ops", ops), ("fla.ops.lightning_attn", la),
                         ("fla.ops.simple_gla", sg)):
        monkeypatch.setitem(sys.modules, name, module)
    return calls


def test_lightning_backend_runs_the_same_model_through_fla(stand_in_fla):
    assert fla_backend.fla_available()[0]
    model = create_model("lightning_lm_mini", depth=3).double()
    ids = torch.randint(0, 256, (2, 41))
    default = model(ids)
    assert stand_in_fla == []
    with lightning_backend("fla"):
        assert lightning_lm.get_lightning_backend() == "fla"
        logits = model(ids)
    torch.testing.assert_close(logits, default)
    assert stand_in_fla == ["chunk_simple_gla"] * 3  # ALiBi slopes: not fla's own decays
    # With fla's decays the layer runs chunk_lightning_attn itself; the check follows the buffer.
    for block in model.blocks:
        attn = block.attn
        attn.slope.copy_(fla_lightning_slopes(attn.num_heads, attn.layer_idx, attn.num_layers))
    stand_in_fla.clear()
    default = model(ids)
    with lightning_backend("fla"):
        logits = model(ids)
    torch.testing.assert_close(logits, default)
    assert stand_in_fla == ["chunk_lightning_attn"] * 3
    assert lightning_lm.get_lightning_backend() == "effattn"
    with pytest.raises(ValueError, match="unknown lightning backend 'fast'; available: effattn, fla"):
        with lightning_backend("fast"):
            pass


def test_fla_available_reports_a_missing_fla(monkeypatch):
    monkeypatch.setitem(sys.modules, "fla", None)  # makes `import fla...` raise ImportError
    ok, reason = fla_backend.fla_available()
    assert not ok and reason.startswith(("ImportError", "ModuleNotFoundError")), reason
