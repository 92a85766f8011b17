"""nn.Module layers: forward/backward, equality with the reference, state_dict round trip."""
import pytest
import torch

import effattn
from effattn.reference import na_reference

MODULES = [
    (effattn.NeighborhoodAttention1D, (19,), dict(kernel_size=5, dilation=2, is_causal=True)),
    (effattn.NeighborhoodAttention2D, (9, 12), dict(kernel_size=(3, 4), stride=(1, 2))),
    (effattn.NeighborhoodAttention3D, (4, 6, 5), dict(kernel_size=3, dilation=(1, 2, 1))),
]


@pytest.mark.parametrize("cls,grid,kwargs", MODULES, ids=[m[0].__name__ for m in MODULES])
def test_module_matches_reference_and_backpropagates(cls, grid, kwargs):
    layer = cls(32, 4, **kwargs).double()
    x = torch.randn(2, *grid, 32, dtype=torch.float64, requires_grad=True)
    out = layer(x)
    assert out.shape == x.shape
    q, k, v = layer.qkv(x).unflatten(-1, (3, 4, 8)).unbind(-3)
    ref, _ = na_reference(q, k, v, layer.kernel_size, layer.dilation, layer.stride, layer.is_causal)
    assert (out - layer.proj(ref.flatten(-2))).abs().max() < 1e-12
    out.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in layer.parameters())


@pytest.mark.parametrize("cls,grid,kwargs", MODULES, ids=[m[0].__name__ for m in MODULES])
def test_state_dict_round_trip(cls, grid, kwargs):
    a, b = cls(16, 2, **kwargs), cls(16, 2, **kwargs)
    b.load_state_dict(a.state_dict())
    x = torch.randn(1, *grid, 16)
    assert torch.equal(a(x), b(x))
    assert set(a.state_dict()) == {"qkv.weight", "qkv.bias", "proj.weight", "proj.bias"}


def test_qkv_bias_and_scale_options():
    layer = effattn.NeighborhoodAttention1D(16, 2, 3, qkv_bias=False, qk_scale=0.5)
    assert layer.qkv.bias is None and layer.scale == 0.5
    assert "kernel_size=(3,)" in repr(layer)
