"""Lightning attention (DESIGN.md §7): causal linear attention with a per-head exponential
decay, o_t = scale · Σ_{u ≤ t} λ^{t-u} (q_t · k_u) v_u with λ = exp(-slope_h), i.e. the
recurrence S_t = λ S_{t-1} + k_tᵀ v_t, o_t = scale · q_t S_t.

This module holds the Python side of the C++ ops `torch.ops.effattn.lightning_attn`,
`lightning_attn_backward` and `lightning_decode` (schemas in csrc/registration.cpp): their
fake kernels and the autograd formula, the user API (`lightning_attn`, `lightning_decode`,
`lightning_slopes`) and the `LightningAttention` layer.

Conventions
- q, k `[B, N, H, D]`, v `[B, N, H, E]` (heads-last, D may differ from E), slope `[H]`
  float32 (float64 accepted) with slope >= 0, scale defaults to 1.0 (TransNormerLLM,
  MiniMax-01: no 1/sqrt(D)).
- States are `[num_seqs, H, D, E]`, float32 (float64 for float64 inputs); without
  `cu_seqlens` num_seqs = B; with `cu_seqlens` (int32/int64 `[num_seqs + 1]`, starting at 0,
  non-decreasing, ending at N) B must be 1 and every packed sequence starts from its own
  initial state (zero when none is given). Empty sequences are allowed (state passes through).
- Gradients flow to q, k, v, initial_state and slope (exact; the slope gradient costs extra
  work in the backward only when slope requires grad). Decode has no autograd formula (it
  mutates the state); `LightningAttention.step` uses a differentiable path when grad is on.
- Heads must match between q, k and v (no GQA for lightning attention).

fla's `chunk_lightning_attn(q, k, v, layer_idx, num_layers)` uses another convention: it
calls simple GLA with the per-head log-decay g_h = -(8 / H) · (1 - layer_idx / num_layers) · h
(h = 0..H-1, so head 0 does not decay) and scale 1/sqrt(D) by default. The same result here:
`lightning_attn(q, k, v, slope=-g, scale=D ** -0.5)` where `-g` is
`fla_lightning_slopes(H, layer_idx, num_layers)`.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from . import _C  # noqa: F401  (loads the library; its initialisers register the schemas)
from ._validation import can_read_values, check_device, kernel_devices, values_checked

__all__ = ["lightning_attn", "lightning_decode", "lightning_slopes", "fla_lightning_slopes",
           "LightningAttention", "lightning_state_dtype"]

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_SLOPE_DTYPES = (torch.float32, torch.float64)


def lightning_state_dtype(dtype):
    """States are float32, or float64 for float64 inputs (so fp64 gradients stay exact)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


# ---- checks (ValueError; the C++ ops repeat them as RuntimeError) ----------------------------

def _check_qkv(q, k, v, layout_q, layout_v):
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k and v must have the same dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"q must be float16, bfloat16, float32 or float64, got {q.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k and v must be on the same device, got {q.device}, {k.device}, {v.device}")
    if q.shape != k.shape:
        raise ValueError(f"q and k must have the same shape {layout_q} (same head dim D), got "
                         f"{tuple(q.shape)} and {tuple(k.shape)}")
    if v.shape[:-1] != q.shape[:-1]:
        raise ValueError(f"v must have shape {layout_v} matching q {tuple(q.shape)} on every axis "
                         f"but the last, got {tuple(v.shape)}")
    if q.shape[-1] < 1 or v.shape[-1] < 1:
        raise ValueError(f"head dims must be at least 1, got D = {q.shape[-1]} and E = {v.shape[-1]}")


def _check_slope(slope, q, values):
    heads = q.shape[-2]
    if not isinstance(slope, torch.Tensor):
        raise ValueError(f"slope must be a tensor of shape [H] = [{heads}], got {type(slope).__name__}")
    if slope.dim() != 1 or slope.shape[0] != heads:
        raise ValueError(f"slope must have shape [H] = [{heads}], got {tuple(slope.shape)}")
    if slope.dtype not in _SLOPE_DTYPES:
        raise ValueError(f"slope must be float32 (or float64), got {slope.dtype}")
    if slope.device != q.device:
        raise ValueError(f"slope must be on the device of q ({q.device}), got {slope.device}")
    if (values and heads > 0 and can_read_values(slope)
            and not values_checked("slope >= 0", slope, lambda s: bool((s >= 0).all()))):
        raise ValueError(f"slope must be >= 0 (decay exp(-slope) in [0, 1]), got a minimum of "
                         f"{slope.min().item()}")


def _check_state(name, state, q, shape):
    want = lightning_state_dtype(q.dtype)
    if not isinstance(state, torch.Tensor):
        raise ValueError(f"{name} must be a tensor of shape {list(shape)}, got {type(state).__name__}")
    if tuple(state.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape [num_states, H, D, E] = {list(shape)}, "
                         f"got {tuple(state.shape)}")
    if state.dtype != want:
        raise ValueError(f"{name} must be {want} (states are float32, float64 for float64 inputs), "
                         f"got {state.dtype}")
    if state.device != q.device:
        raise ValueError(f"{name} must be on the device of q ({q.device}), got {state.device}")


def _check_cu_seqlens(cu_seqlens, q, values):
    """Returns the number of sequences."""
    if cu_seqlens.dim() != 1 or cu_seqlens.shape[0] < 2:
        raise ValueError(f"cu_seqlens must have shape [num_seqs + 1] with num_seqs >= 1, "
                         f"got {tuple(cu_seqlens.shape)}")
    if cu_seqlens.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"cu_seqlens must be int32 or int64, got {cu_seqlens.dtype}")
    if cu_seqlens.device != q.device:
        raise ValueError(f"cu_seqlens must be on the device of q ({q.device}), got {cu_seqlens.device}")
    if q.shape[0] != 1:
        raise ValueError(f"with cu_seqlens the batch size B must be 1 (sequences packed along N), "
                         f"got B = {q.shape[0]}")
    if values and can_read_values(cu_seqlens):
        c = cu_seqlens.tolist()
        if c[0] != 0:
            raise ValueError(f"cu_seqlens must start at 0, got {c[0]}")
        for i in range(1, len(c)):
            if c[i] < c[i - 1]:
                raise ValueError(f"cu_seqlens must be non-decreasing, got cu_seqlens[{i - 1}] = "
                                 f"{c[i - 1]} > cu_seqlens[{i}] = {c[i]}")
        if c[-1] != q.shape[1]:
            raise ValueError(f"cu_seqlens must end at N = {q.shape[1]}, got {c[-1]}")
    return cu_seqlens.shape[0] - 1


def _check_attn_args(q, k, v, slope, scale, initial_state, cu_seqlens, values):
    """All checks of `lightning_attn`; returns the number of states (sequences)."""
    for name, t, layout in (("q", q, "[B, N, H, D]"), ("k", k, "[B, N, H, D]"), ("v", v, "[B, N, H, E]")):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} must have rank 4 ({layout}), got shape {shape}")
    _check_qkv(q, k, v, "[B, N, H, D]", "[B, N, H, E]")
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    _check_slope(slope, q, values)
    num_states = q.shape[0]
    if cu_seqlens is not None:
        num_states = _check_cu_seqlens(cu_seqlens, q, values)
    if initial_state is not None:
        _check_state("initial_state", initial_state, q,
                     (num_states, q.shape[2], q.shape[3], v.shape[3]))
    return num_states


def _check_decode_args(q, k, v, slope, state, scale):
    if not isinstance(q, torch.Tensor) or not (q.dim() == 3 or (q.dim() == 4 and q.shape[1] == 1)):
        shape = tuple(q.shape) if isinstance(q, torch.Tensor) else type(q).__name__
        raise ValueError(f"q must have shape [B, H, D] or [B, 1, H, D] (one token per sequence), got {shape}")
    for name, t in (("k", k), ("v", v)):
        if t.dim() != q.dim():
            raise ValueError(f"{name} must have the rank of q ({q.dim()}), got shape {tuple(t.shape)}")
    layout = "[B, H, D]" if q.dim() == 3 else "[B, 1, H, D]"
    _check_qkv(q, k, v, layout, layout.replace("D", "E"))
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    _check_slope(slope, q, values=True)
    _check_state("state", state, q, (q.shape[0], q.shape[-2], q.shape[-1], v.shape[-1]))


# Devices this build has kernels for (read once: dynamo cannot trace the query itself).
_KERNEL_DEVICES = kernel_devices("lightning_attn")


def _check_device(q, name, v=None):
    check_device(q, _KERNEL_DEVICES, name)
    if q.device.type == "cuda":
        # What the CUDA kernels cover (the C++ binding checks the same before any launch).
        if q.dtype not in (torch.float16, torch.bfloat16):
            raise NotImplementedError(f"effattn.{name} on CUDA supports float16 and bfloat16, got "
                                      f"{q.dtype} (use the CPU op or cast)")
        d, e = q.shape[-1], (v if v is not None else q).shape[-1]
        if name == "lightning_attn" and not (d == e and d in (64, 128)):
            raise NotImplementedError(f"effattn.{name} on CUDA supports head dims D == E in {{64, 128}}, "
                                      f"got D = {d}, E = {e} (use the CPU op)")
        if name == "lightning_decode" and not (d in (64, 128) and e in (64, 128)):
            raise NotImplementedError(f"effattn.{name} on CUDA supports head dims D, E in {{64, 128}}, "
                                      f"got D = {d}, E = {e} (use the CPU op)")


# ---- fake kernels and autograd -----------------------------------------------------------------

@torch.library.register_fake("effattn::lightning_attn")
def _lightning_attn_fake(q, k, v, slope, scale, initial_state, output_final_state, cu_seqlens):
    num_states = _check_attn_args(q, k, v, slope, scale, initial_state, cu_seqlens, values=False)
    out = q.new_empty(v.shape)
    final = None
    if output_final_state:
        final = q.new_empty((num_states, q.shape[2], q.shape[3], v.shape[3]),
                            dtype=lightning_state_dtype(q.dtype))
    return out, final


@torch.library.register_fake("effattn::lightning_attn_backward")
def _lightning_attn_backward_fake(grad_out, grad_final_state, q, k, v, slope, scale, initial_state,
                                  cu_seqlens, compute_slope_grad):
    _check_attn_args(q, k, v, slope, scale, initial_state, cu_seqlens, values=False)
    d_initial = None if initial_state is None else initial_state.new_empty(initial_state.shape)
    d_slope = slope.new_empty(slope.shape) if compute_slope_grad else None
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape), d_initial, d_slope


@torch.library.register_fake("effattn::lightning_decode")
def _lightning_decode_fake(q, k, v, slope, state, scale):
    _check_decode_args(q, k, v, slope, state, scale)
    return q.new_empty(v.shape)


def _setup_context(ctx, inputs, output):
    q, k, v, slope, scale, initial_state, _output_final_state, cu_seqlens = inputs
    ctx.save_for_backward(q, k, v, slope, initial_state, cu_seqlens)
    ctx.scale = scale


def _backward(ctx, grad_out, grad_final_state):
    q, k, v, slope, initial_state, cu_seqlens = ctx.saved_tensors
    if grad_out is None:
        grad_out = q.new_zeros(v.shape)
    dq, dk, dv, d_initial, d_slope = torch.ops.effattn.lightning_attn_backward(
        grad_out, grad_final_state, q, k, v, slope, ctx.scale, initial_state, cu_seqlens,
        ctx.needs_input_grad[3])
    return dq, dk, dv, d_slope, None, d_initial, None, None


torch.library.register_autograd("effattn::lightning_attn", _backward, setup_context=_setup_context)


# ---- user API ----------------------------------------------------------------------------------

def lightning_attn(q, k, v, slope, scale=1.0, initial_state=None, output_final_state=False,
                   cu_seqlens=None):
    """Lightning attention on q, k `[B, N, H, D]`, v `[B, N, H, E]` with decay exp(-slope[h]).

    o_t = scale · Σ_{u ≤ t} exp(-slope)^{t-u} (q_t · k_u) v_u (+ scale · λ^{t+1} q_t S0 with an
    initial state S0). `initial_state` is `[num_seqs, H, D, E]` (float32; float64 for float64
    inputs); `cu_seqlens` (int32/int64 `[num_seqs + 1]`, B = 1) packs variable-length
    sequences along N. Returns `(o [B, N, H, E] in q's dtype, final_state or None)`; the final
    state is returned when `output_final_state` is True. Differentiable in q, k, v, slope and
    initial_state (the slope gradient on the CPU only). See the module docstring for fla's
    convention.
    """
    scale = float(scale)
    _check_attn_args(q, k, v, slope, scale, initial_state, cu_seqlens, values=True)
    _check_device(q, "lightning_attn", v)
    if q.is_cuda and slope.requires_grad and torch.is_grad_enabled():
        raise NotImplementedError("effattn.lightning_attn: the gradient for slope on CUDA is not implemented; "
                                  "pass slope.detach() (or run on the CPU)")
    return torch.ops.effattn.lightning_attn(q, k, v, slope, scale, initial_state,
                                            bool(output_final_state), cu_seqlens)


def lightning_decode(q, k, v, slope, state, scale=1.0):
    """One recurrent step: state ← exp(-slope) · state + kᵀv (in place), returns scale · q state.

    q, k `[B, H, D]` or `[B, 1, H, D]`, v `[B, H, E]` or `[B, 1, H, E]`, state `[B, H, D, E]`
    float32 (float64 for float64 inputs). The output has v's shape and q's dtype. Equal to
    `lightning_attn` on the same tokens one at a time. Not differentiable (it mutates state).
    """
    scale = float(scale)
    _check_decode_args(q, k, v, slope, state, scale)
    _check_device(q, "lightning_decode", v)
    return torch.ops.effattn.lightning_decode(q, k, v, slope, state, scale)


def _alibi_slopes(n):
    """ALiBi slopes: 2^(-8(h+1)/n) for a power of two n; otherwise those of the closest
    smaller power of two followed by every other slope of the next power of two."""
    def power_of_two(m):
        start = 2.0 ** (-8.0 / m)
        return [start ** (h + 1) for h in range(m)]

    if n & (n - 1) == 0:
        return power_of_two(n)
    closest = 2 ** int(math.floor(math.log2(n)))
    return power_of_two(closest) + _alibi_slopes(2 * closest)[0::2][: n - closest]


def lightning_slopes(num_heads, layer_idx=None, num_layers=None, device=None):
    """Per-head decay rates of TransNormerLLM / MiniMax-01 as a float32 tensor `[num_heads]`.

    ALiBi slopes 2^(-8(h+1)/H) (h = 0..H-1) for a power-of-two H, the standard ALiBi
    interpolation otherwise; with `layer_idx` l and `num_layers` L also multiplied by
    (1 - l / (L - 1) + 1e-5) (for L = 1 the factor is 1 + 1e-5). The decay is exp(-slope).
    For fla's `chunk_lightning_attn` convention use `fla_lightning_slopes` and scale D**-0.5.
    """
    if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
        raise ValueError(f"num_heads must be an int >= 1, got {num_heads!r}")
    if (layer_idx is None) != (num_layers is None):
        raise ValueError("layer_idx and num_layers must be given together")
    slopes = torch.tensor(_alibi_slopes(num_heads), dtype=torch.float64)
    if num_layers is not None:
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be an int >= 1, got {num_layers!r}")
        if not isinstance(layer_idx, int) or not 0 <= layer_idx < num_layers:
            raise ValueError(f"layer_idx must be an int in [0, num_layers) = [0, {num_layers}), "
                             f"got {layer_idx!r}")
        depth = layer_idx / (num_layers - 1) if num_layers > 1 else 0.0
        slopes = slopes * (1.0 - depth + 1e-5)
    return slopes.to(device=device, dtype=torch.float32)


def fla_lightning_slopes(num_heads, layer_idx, num_layers, device=None):
    """The slopes that reproduce fla's `chunk_lightning_attn(q, k, v, layer_idx, num_layers)`:
    minus its log-decay g_h = -(8 / H) · (1 - layer_idx / num_layers) · h, h = 0..H-1.
    Use them with scale = D ** -0.5 (fla's default)."""
    if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
        raise ValueError(f"num_heads must be an int >= 1, got {num_heads!r}")
    if not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"num_layers must be an int >= 1, got {num_layers!r}")
    if not isinstance(layer_idx, int) or not 0 <= layer_idx < num_layers:
        raise ValueError(f"layer_idx must be an int in [0, num_layers), got {layer_idx!r}")
    heads = torch.arange(num_heads, dtype=torch.float64)
    return ((8.0 / num_heads) * (1.0 - layer_idx / num_layers) * heads).to(device=device,
                                                                            dtype=torch.float32)


# ---- module ------------------------------------------------------------------------------------

class LightningAttention(nn.Module):
    """A TransNormerLLM / MiniMax-01 style lightning-attention layer on x `[B, N, C]`.

    q, k, v = x W_qkv; q, k ← SiLU(q), SiLU(k); o = lightning_attn(q, k, v, slopes of this layer);
    o ← per-head RMSNorm(o) · weight; o ← sigmoid(x W_gate) ⊙ o; y = o W_out.
    The slopes are `lightning_slopes(num_heads, layer_idx, num_layers)` (a non-persistent
    buffer), the scale is 1.0 unless given. `forward(x, state)` returns (y, final_state) and
    `step(x, state)` decodes one token from a state with the same result as `forward`.
    """

    def __init__(self, embed_dim, num_heads, layer_idx=0, num_layers=1, head_dim=None,
                 bias=False, norm_eps=1e-6, scale=1.0, device=None, dtype=None):
        super().__init__()
        if head_dim is None:
            if embed_dim % num_heads != 0:
                raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
            head_dim = embed_dim // num_heads
        factory = dict(device=device, dtype=dtype)
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.layer_idx = layer_idx
        self.num_layers = num_layers
        self.norm_eps = norm_eps
        self.scale = float(scale)
        inner = num_heads * head_dim
        self.qkv_proj = nn.Linear(embed_dim, 3 * inner, bias=bias, **factory)
        self.gate_proj = nn.Linear(embed_dim, inner, bias=bias, **factory)
        self.norm_weight = nn.Parameter(torch.ones(inner, **factory))
        self.out_proj = nn.Linear(inner, embed_dim, bias=bias, **factory)
        self.register_buffer("slope", lightning_slopes(num_heads, layer_idx, num_layers, device=device),
                             persistent=False)

    def _slope(self):
        # module.half() casts buffers too; the ops take float32 (or float64) slopes.
        return self.slope if self.slope.dtype in _SLOPE_DTYPES else self.slope.float()

    def _project(self, x):
        q, k, v = self.qkv_proj(x).unflatten(-1, (3, self.num_heads, self.head_dim)).unbind(dim=-3)
        return F.silu(q), F.silu(k), v

    def _output(self, x, o):
        of = o.float() if o.dtype in (torch.float16, torch.bfloat16) else o
        of = of * torch.rsqrt(of.pow(2).mean(dim=-1, keepdim=True) + self.norm_eps)
        o = of.to(o.dtype).flatten(-2) * self.norm_weight
        return self.out_proj(torch.sigmoid(self.gate_proj(x)) * o)

    def new_state(self, batch_size, device=None, dtype=torch.float32):
        """A zero state `[B, H, head_dim, head_dim]` (dtype float32, float64 for float64 models)."""
        return torch.zeros(batch_size, self.num_heads, self.head_dim, self.head_dim,
                           device=device, dtype=lightning_state_dtype(dtype))

    def forward(self, x, state=None):
        """x `[B, N, C]`, optional state `[B, H, head_dim, head_dim]`; returns (y, final_state)."""
        if x.dim() != 3 or x.shape[-1] != self.embed_dim:
            raise ValueError(f"LightningAttention expects input [B, N, C={self.embed_dim}], "
                             f"got shape {tuple(x.shape)}")
        q, k, v = self._project(x)
        o, final_state = lightning_attn(q, k, v, self._slope(), self.scale, initial_state=state,
                                        output_final_state=True)
        return self._output(x, o), final_state

    def step(self, x, state=None):
        """One token per sequence: x `[B, C]` or `[B, 1, C]`; returns (y in x's form, state).

        Without grad the state is updated in place by `lightning_decode` (and returned); with
        grad enabled the step is computed differentiably and a new state is returned (the
        given one is left unchanged).
        """
        if not (x.dim() == 2 or (x.dim() == 3 and x.shape[1] == 1)) or x.shape[-1] != self.embed_dim:
            raise ValueError(f"LightningAttention.step expects input [B, C={self.embed_dim}] or "
                             f"[B, 1, C], got shape {tuple(x.shape)}")
        x3 = x if x.dim() == 3 else x[:, None]
        if state is None:
            state = self.new_state(x.shape[0], device=x.device, dtype=x.dtype)
        q, k, v = self._project(x3)
        if torch.is_grad_enabled():
            o, state = lightning_attn(q, k, v, self._slope(), self.scale, initial_state=state,
                                      output_final_state=True)
        else:
            o = lightning_decode(q, k, v, self._slope(), state, self.scale)
        y = self._output(x3, o)
        return (y if x.dim() == 3 else y[:, 0]), state

    def extra_repr(self):
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, head_dim={self.head_dim}, "
                f"layer_idx={self.layer_idx}, num_layers={self.num_layers}, scale={self.scale}")
