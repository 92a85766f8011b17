"""Building blocks shared by the NA vision and video models: neighborhood attention that
adapts its window to small inputs, the NAT transformer layer, MLP, stochastic depth.

Window clamping (`effective_window`): NA needs kernel·dilation ≤ L on every axis (DESIGN.md
§4). A backbone configured for 224×224 (NAT-Tiny: kernel 7; DiNAT-Tiny: dilations up to 8)
meets smaller feature maps when it runs on smaller images or deeper stages, so for each call
and each axis of length L the layers use
    kernel'   = min(kernel, L)
    dilation' = max(1, min(dilation, L // kernel'))
    stride'   = min(stride, kernel')
which satisfies kernel'·dilation' ≤ L. With kernel' = L and dilation' = 1 the axis is fully
attended (NA equals self-attention there). An axis of length 1 is dropped before the call
(its only key is the query's own position); when every axis has length 1 the output is v.
The configured kernel/dilation are kept on the module; only the call uses the clamped values.

Backends (`na_backend`): the adaptive layers compute NA with effattn's ops by default; inside
`with na_backend("flex"):` they call `flex_backend.flex_neighborhood_attention` instead (PyTorch
FlexAttention with the same window rule), so one model with one set of weights can be timed
on both. The setting is process-wide and restored when the block exits.
"""

import torch
from torch import nn

from ..functional import neighborhood_attention
from ..modules import NeighborhoodAttention2D, NeighborhoodAttention3D
from .backends import BackendSwitch
from .flex_backend import flex_neighborhood_attention

__all__ = ["effective_window", "na_backend", "get_na_backend", "AdaptiveNeighborhoodAttention2D",
           "AdaptiveNeighborhoodAttention3D", "Mlp", "DropPath", "NATLayer", "trunc_normal_init"]

# name -> fn(q, k, v, kernel, dilation, stride, is_causal, scale), all per-axis tuples.
_NA_BACKENDS = {"effattn": neighborhood_attention, "flex": flex_neighborhood_attention}
_NA = BackendSwitch("NA", _NA_BACKENDS, "effattn")


def get_na_backend():
    """The NA backend the adaptive layers use now: "effattn" (default) or "flex"."""
    return _NA.current


def na_backend(name):
    """Context manager: within the block, adaptive NA layers compute attention with backend
    `name` ("effattn" or "flex"); the previous backend is restored on exit (also on an exception)."""
    return _NA.use(name)


def effective_window(grid, kernel_size, dilation, stride):
    """Per-axis (kernel, dilation, stride) clamped so that kernel·dilation ≤ L (module docstring)."""
    kernels, dilations, strides = [], [], []
    for length, k, d, s in zip(grid, kernel_size, dilation, stride):
        k = max(1, min(k, length))
        d = max(1, min(d, length // k))
        kernels.append(k)
        dilations.append(d)
        strides.append(max(1, min(s, k)))
    return tuple(kernels), tuple(dilations), tuple(strides)


class _AdaptiveMixin:
    """forward of effattn's NA modules with the window clamped to the input (module docstring)."""

    def forward(self, x):
        if x.dim() != self.rank + 2 or x.shape[-1] != self.embed_dim:
            raise ValueError(f"{type(self).__name__} expects input [B, {self.rank} token axes, "
                             f"C={self.embed_dim}], got shape {tuple(x.shape)}")
        grid = tuple(x.shape[1:-1])
        kernel, dilation, stride = effective_window(grid, self.kernel_size, self.dilation, self.stride)
        qkv = self.qkv(x).unflatten(-1, (3, self.num_heads, self.head_dim))
        q, k, v = qkv.unbind(dim=-3)
        keep = [a for a, length in enumerate(grid) if length > 1]
        if not keep:
            out = v  # a single token: softmax over one key
        else:
            if len(keep) < len(grid):
                sub = (x.shape[0], *(grid[a] for a in keep), self.num_heads, self.head_dim)
                q, k, v = q.reshape(sub), k.reshape(sub), v.reshape(sub)
            pick = lambda values: tuple(values[a] for a in keep)  # noqa: E731
            out = _NA_BACKENDS[_NA.current](q, k, v, pick(kernel), pick(dilation), pick(stride),
                                            pick(self.is_causal), self.scale)
            out = out.reshape(*x.shape[:-1], self.num_heads, self.head_dim)
        return self.proj_drop(self.proj(out.flatten(-2)))


class AdaptiveNeighborhoodAttention2D(_AdaptiveMixin, NeighborhoodAttention2D):
    """`effattn.NeighborhoodAttention2D` whose window is clamped to small inputs."""


class AdaptiveNeighborhoodAttention3D(_AdaptiveMixin, NeighborhoodAttention3D):
    """`effattn.NeighborhoodAttention3D` whose window is clamped to small inputs."""


_ADAPTIVE = {2: AdaptiveNeighborhoodAttention2D, 3: AdaptiveNeighborhoodAttention3D}


class Mlp(nn.Module):
    def __init__(self, dim, hidden, drop=0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample while training."""

    def __init__(self, p=0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self):
        return f"p={self.p}"


class NATLayer(nn.Module):
    """Pre-norm transformer layer with neighborhood attention on channels-last [B, *grid, C]
    (NATTEN's NATLayer: norm1, attn, drop_path, norm2, mlp, optional layer scale)."""

    def __init__(self, dim, num_heads, kernel_size=7, dilation=1, mlp_ratio=4.0, qkv_bias=True,
                 qk_scale=None, drop=0.0, drop_path=0.0, layer_scale=None, rank=2):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _ADAPTIVE[rank](dim, num_heads, kernel_size, dilation=dilation, qkv_bias=qkv_bias,
                                    qk_scale=qk_scale, proj_drop=drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        self.layer_scale = layer_scale is not None
        if self.layer_scale:
            self.gamma1 = nn.Parameter(layer_scale * torch.ones(dim))
            self.gamma2 = nn.Parameter(layer_scale * torch.ones(dim))

    def forward(self, x):
        if self.layer_scale:
            x = x + self.drop_path(self.gamma1 * self.attn(self.norm1(x)))
            return x + self.drop_path(self.gamma2 * self.mlp(self.norm2(x)))
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def trunc_normal_init(module):
    """NATTEN/timm initialisation: truncated normal (std 0.02) linears, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
