"""effattn: efficient attention kernels for PyTorch.

Ops are registered under `torch.ops.effattn`; this package adds the Python API
(`na1d/na2d/na3d`), modules, and pure-PyTorch references (`effattn.reference`).
"""
import torch  # noqa: F401  (must be imported before the extension)

from . import ops, reference  # noqa: F401
from .functional import na1d, na2d, na3d, neighborhood_attention
from .modules import NeighborhoodAttention1D, NeighborhoodAttention2D, NeighborhoodAttention3D
from .lightning import LightningAttention, lightning_attn, lightning_decode, lightning_slopes

__version__ = "0.1.0"

__all__ = [
    "na1d", "na2d", "na3d", "neighborhood_attention",
    "NeighborhoodAttention1D", "NeighborhoodAttention2D", "NeighborhoodAttention3D",
    "reference", "ops",
    "lightning_attn", "lightning_decode", "lightning_slopes", "LightningAttention",
]
