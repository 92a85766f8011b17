"""nn.Module layers: multi-head neighborhood attention on channels-last inputs
[B, *grid, C], with the parameter names NATTEN uses (`qkv`, `proj`)."""
import torch
from torch import nn

from ._validation import per_axis
from .functional import neighborhood_attention

__all__ = ["NeighborhoodAttention1D", "NeighborhoodAttention2D", "NeighborhoodAttention3D"]


class _NeighborhoodAttention(nn.Module):
    rank = 0

    def __init__(self, embed_dim, num_heads, kernel_size, dilation=1, stride=1, is_causal=False,
                 qkv_bias=True, qk_scale=None, proj_drop=0.0):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.kernel_size = per_axis(kernel_size, self.rank, "kernel_size")
        self.dilation = per_axis(dilation, self.rank, "dilation")
        self.stride = per_axis(stride, self.rank, "stride")
        self.is_causal = per_axis(is_causal, self.rank, "is_causal", bool)
        self.scale = qk_scale if qk_scale is not None else self.head_dim ** -0.5
        self.qkv = nn.Linear(embed_dim, 3 * embed_dim, bias=qkv_bias)
        self.proj = nn.Linear(embed_dim, embed_dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x):
        if x.dim() != self.rank + 2 or x.shape[-1] != self.embed_dim:
            raise ValueError(f"{type(self).__name__} expects input [B, {self.rank} token axes, "
                             f"C={self.embed_dim}], got shape {tuple(x.shape)}")
        qkv = self.qkv(x).unflatten(-1, (3, self.num_heads, self.head_dim))
        q, k, v = qkv.unbind(dim=-3)
        out = neighborhood_attention(q, k, v, self.kernel_size, self.dilation, self.stride,
                                     self.is_causal, self.scale)
        return self.proj_drop(self.proj(out.flatten(-2)))

    def extra_repr(self):
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
                f"kernel_size={self.kernel_size}, dilation={self.dilation}, "
                f"stride={self.stride}, is_causal={self.is_causal}")


class NeighborhoodAttention1D(_NeighborhoodAttention):
    """1-D neighborhood attention on [B, L, C]."""
    rank = 1


class NeighborhoodAttention2D(_NeighborhoodAttention):
    """2-D neighborhood attention on [B, H, W, C]."""
    rank = 2


class NeighborhoodAttention3D(_NeighborhoodAttention):
    """3-D neighborhood attention on [B, T, H, W, C]."""
    rank = 3
