"""effattn: efficient attention kernels for PyTorch.

Ops are registered under `torch.ops.effattn`; this package adds the Python API
(`na1d/na2d/na3d`), modules, and pure-PyTorch references (`effattn.reference`).
"""
import torch  # noqa: F401  (must be imported before the extension)

from . import ops, reference  # noqa: F401
from .functional import na1d, na2d, na3d, neighborhood_attention
from .modules import NeighborhoodAttention1D, NeighborhoodAttention2D, NeighborhoodAttention3D
from .lightning import LightningAttention, lightning_attn, lightning_decode, lightning_slopes
from .block_sparse import (block_mask_to_indices, block_sparse_attention, indices_to_block_mask,
                           sink_local_block_mask, sliding_window_block_mask, strided_block_mask)
from .sparse_prefill import (calibrate_thresholds, estimate_block_mask, quantize_qk,
                             sparse_prefill_attention)
from . import models  # noqa: F401,E402  (model definitions only; nothing is built at import)

__version__ = "0.1.0"

__all__ = [
    "na1d", "na2d", "na3d", "neighborhood_attention",
    "NeighborhoodAttention1D", "NeighborhoodAttention2D", "NeighborhoodAttention3D",
    "reference", "ops",
    "lightning_attn", "lightning_decode", "lightning_slopes", "LightningAttention",
    "block_sparse_attention", "block_mask_to_indices", "indices_to_block_mask",
    "sliding_window_block_mask", "sink_local_block_mask", "strided_block_mask",
    "models",
    "quantize_qk", "estimate_block_mask", "sparse_prefill_attention", "calibrate_thresholds",
]
