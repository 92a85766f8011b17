"""Moving models built with NATTEN's neighborhood-attention modules onto effattn.

NATTEN's `NeighborhoodAttention{1,2,3}D` and effattn's share the constructor arguments
(embed_dim — `dim` in NATTEN < 0.20 —, num_heads, kernel_size, dilation, stride, is_causal,
qkv_bias, qk_scale) and the parameter names (`qkv`, `proj`), so:

- `convert_natten_model(model)` returns a copy of `model` (or converts in place with
  `inplace=True`) in which every NATTEN-style NA module is replaced by the effattn module of
  the same rank with the same window, scale and weights;
- `load_natten_state_dict(effattn_model, state_dict)` loads a NATTEN checkpoint into a model
  built with effattn modules (for example `effattn.models.create_model("nat_tiny")`, whose
  parameter names follow NATTEN's NAT).

Not supported, reported with a ValueError instead of being dropped silently: NATTEN's
relative position bias (`rpb`, `rel_pos_bias=True`), which effattn's kernels do not add to
the attention logits. Attention dropout (`attn_drop`) does not exist in effattn: a module
with attn_drop > 0 converts with a warning (it only changes training, not inference).
"""
import copy
import re
import warnings

from torch import nn

from ..modules import NeighborhoodAttention1D, NeighborhoodAttention2D, NeighborhoodAttention3D

__all__ = ["convert_natten_model", "load_natten_state_dict", "is_natten_na_module"]

_EFFATTN = {1: NeighborhoodAttention1D, 2: NeighborhoodAttention2D, 3: NeighborhoodAttention3D}
_RANK_IN_NAME = re.compile(r"NeighborhoodAttention([123])D$")


def _rank(module):
    match = _RANK_IN_NAME.search(type(module).__name__)
    if match:
        return int(match.group(1))
    kernel = getattr(module, "kernel_size", None)
    if isinstance(kernel, (tuple, list)) and len(kernel) in (1, 2, 3):
        return len(kernel)
    return None


def is_natten_na_module(module):
    """True for a non-effattn module that looks like NATTEN's NA: a NeighborhoodAttention{1,2,3}D
    (by class name) with `qkv` and `proj` linear layers, `num_heads` and `kernel_size`."""
    if isinstance(module, tuple(_EFFATTN.values())):
        return False
    return (_RANK_IN_NAME.search(type(module).__name__) is not None
            and isinstance(getattr(module, "qkv", None), nn.Linear)
            and isinstance(getattr(module, "proj", None), nn.Linear)
            and hasattr(module, "num_heads") and hasattr(module, "kernel_size"))


def _rpb_error(where):
    return ValueError(
        f"{where}: NATTEN relative position bias (rpb) is not supported by effattn (its kernels "
        "add no positional bias to the attention logits); converting would change the outputs. "
        "Use a model built without rel_pos_bias, or fine-tune without it.")


def _convert_module(module, where):
    if getattr(module, "rpb", None) is not None:
        raise _rpb_error(where)
    rank = _rank(module)
    qkv, proj = module.qkv, module.proj
    embed_dim = getattr(module, "embed_dim", getattr(module, "dim", qkv.in_features))
    num_heads = module.num_heads
    if qkv.out_features != 3 * embed_dim or proj.in_features != embed_dim:
        raise ValueError(f"{where}: expected qkv [3·{embed_dim}, {embed_dim}] and proj "
                         f"[{embed_dim}, {embed_dim}], got qkv {tuple(qkv.weight.shape)} and "
                         f"proj {tuple(proj.weight.shape)}")
    attn_drop = getattr(module, "attn_drop", None)
    p = attn_drop.p if isinstance(attn_drop, nn.Dropout) else (attn_drop or 0.0)
    if isinstance(p, (int, float)) and p > 0:
        warnings.warn(f"{where}: attention dropout (p={p}) is not supported by effattn and is "
                      "dropped (inference is unchanged)", stacklevel=3)
    proj_drop = getattr(module, "proj_drop", None)
    proj_p = proj_drop.p if isinstance(proj_drop, nn.Dropout) else float(proj_drop or 0.0)
    head_dim = embed_dim // num_heads
    scale = getattr(module, "scale", None)
    new = _EFFATTN[rank](
        embed_dim, num_heads, module.kernel_size,
        dilation=getattr(module, "dilation", 1) or 1,
        stride=getattr(module, "stride", 1) or 1,
        is_causal=getattr(module, "is_causal", False) or False,
        qkv_bias=qkv.bias is not None,
        qk_scale=None if scale is None or scale == head_dim ** -0.5 else float(scale),
        proj_drop=proj_p)
    new.load_state_dict({k: v for k, v in module.state_dict().items() if not k.endswith("rpb")})
    new.to(device=qkv.weight.device, dtype=qkv.weight.dtype)
    new.train(module.training)
    return new


def convert_natten_model(model, inplace=False):
    """Replace every NATTEN-style NA module of `model` by the equivalent effattn module.

    Returns the converted model (a deep copy unless `inplace=True`; when `model` itself is an
    NA module, the new module). Raises ValueError naming the module when one uses relative
    position bias.
    """
    if not inplace:
        model = copy.deepcopy(model)
    if is_natten_na_module(model):
        return _convert_module(model, type(model).__name__)
    targets = [(name, m) for name, m in model.named_modules() if name and is_natten_na_module(m)]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, _convert_module(module, name))
    return model


def load_natten_state_dict(effattn_model, natten_state_dict, strict=True):
    """Load a state dict saved from a NATTEN-based model into `effattn_model` (same parameter
    names). Raises ValueError listing the relative-position-bias entries (`*.rpb`) if any,
    instead of dropping them. Returns `load_state_dict`'s result."""
    rpb = [k for k in natten_state_dict if k == "rpb" or k.endswith(".rpb")]
    if rpb:
        shown = ", ".join(rpb[:4]) + (f", ... ({len(rpb)} in all)" if len(rpb) > 4 else "")
        raise _rpb_error(f"state dict entries {shown}")
    return effattn_model.load_state_dict(natten_state_dict, strict=strict)
