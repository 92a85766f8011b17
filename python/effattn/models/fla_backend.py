"""Lightning attention computed by fla (flash-linear-attention) inside effattn's
`LightningAttention` layer, for comparing effattn's kernels with fla's in the same model
(`effattn.models.lightning_lm.lightning_backend("fla")`).

fla's `chunk_lightning_attn(q, k, v, layer_idx, num_layers, scale)` fixes its decays from the
layer position: log-decay g_h = -(8 / H)(1 - layer_idx / num_layers)·h, i.e. slope −g_h =
`effattn.fla_lightning_slopes(H, layer_idx, num_layers)` (DESIGN.md §7). It is a thin wrapper
of `chunk_simple_gla(q, k, v, g_gamma=g, scale)`. So a layer whose slopes are fla's runs
`chunk_lightning_attn` itself, and any other layer (effattn's default ALiBi slopes) runs the
same kernel through `chunk_simple_gla` with g_gamma = −slope: either way the output is the
layer's own function, with the layer's scale. fla is imported on first use (CUDA only).
"""
import torch

from ..lightning import fla_lightning_slopes

__all__ = ["fla_available", "fla_lightning_forward"]


def _fla_ops():
    from fla.ops.lightning_attn import chunk_lightning_attn
    from fla.ops.simple_gla import chunk_simple_gla

    return chunk_lightning_attn, chunk_simple_gla


def fla_available():
    """(True, version) when fla's lightning ops import, else (False, the reason)."""
    try:
        _fla_ops()
    except Exception as e:  # ImportError, or a Triton/CUDA problem raised at import
        return False, f"{type(e).__name__}: {e}"
    import fla

    return True, getattr(fla, "__version__", "unknown")


def _has_fla_decays(attn):
    """Whether the layer's slopes are chunk_lightning_attn's. Comparing reads the device
    tensor, so the answer is kept on the layer until the slope buffer changes (pointer or
    in-place version)."""
    slope = attn.slope
    key = (slope.data_ptr(), slope._version, slope.device)
    cached = getattr(attn, "_fla_decay_check", None)
    if cached is None or cached[0] != key:
        want = fla_lightning_slopes(attn.num_heads, attn.layer_idx, attn.num_layers)
        cached = (key, torch.equal(slope.detach().float().cpu(), want))
        attn._fla_decay_check = cached
    return cached[1]


def fla_lightning_forward(attn, x, state=None):
    """`LightningAttention.forward(x, state)` of the layer `attn` with fla's kernels:
    returns (y [B, N, C], final state [B, H, D, D] fp32)."""
    chunk_lightning_attn, chunk_simple_gla = _fla_ops()
    q, k, v = attn._project(x)
    if _has_fla_decays(attn):
        o, final = chunk_lightning_attn(q, k, v, attn.layer_idx, attn.num_layers, scale=attn.scale,
                                        initial_state=state, output_final_state=True)
    else:
        o, final = chunk_simple_gla(q, k, v, g_gamma=-attn._slope(), scale=attn.scale,
                                    initial_state=state, output_final_state=True)
    return attn._output(x, o), final
