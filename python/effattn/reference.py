"""Pure-PyTorch references, written for clarity rather than speed: they build the explicit
N×N boolean mask of which keys each query attends to and run ordinary masked softmax
attention. They are the ground truth of the test suite (run them in float64).

The window rule (DESIGN.md §4), per axis of length L with kernel K, dilation d, stride s:
a query at i belongs to dilation group g = i mod d and sits at group-local coordinate
i // d on a group of length L_g = ceil((L - g) / d); its keys are the group-local range
[start, end) computed by `_axis_window` below, mapped back to global coordinates g + j·d.
"""
import math

import torch

__all__ = ["na_mask", "na_reference", "attention_reference"]


def _axis_window(i, length, kernel, dilation, stride, causal):
    """Global coordinates of the keys of query i on one axis."""
    g, local = i % dilation, i // dilation
    group_len = math.ceil((length - g) / dilation)
    if causal:
        leader = min((local // stride) * stride + stride - 1, group_len - 1)
        start, end = max(leader - kernel + 1, 0), min(local + 1, group_len)
    else:
        left, right = kernel // 2, kernel // 2 + kernel % 2 - 1
        leader = min((local // stride) * stride + stride // 2, group_len - 1)
        start = max(leader - left, 0)
        if leader + right >= group_len:
            start += group_len - right - leader - 1
        end = start + kernel
    return [g + j * dilation for j in range(start, end)]


def _axis_mask(length, kernel, dilation, stride, causal):
    """[L, L] bool: mask[i, j] is True when query i attends to key j on this axis."""
    mask = torch.zeros(length, length, dtype=torch.bool)
    for i in range(length):
        mask[i, _axis_window(i, length, kernel, dilation, stride, causal)] = True
    return mask


def na_mask(shape, kernel_size, dilation, stride, is_causal):
    """[N, N] bool mask over row-major flattened tokens of a grid of the given shape."""
    mask = torch.ones(1, 1, dtype=torch.bool)
    for args in zip(shape, kernel_size, dilation, stride, is_causal):
        axis = _axis_mask(*args)
        # Kronecker product of the per-axis masks: attend iff every axis attends.
        mask = (mask[:, None, :, None] & axis[None, :, None, :]).reshape(
            mask.shape[0] * axis.shape[0], mask.shape[1] * axis.shape[1]
        )
    return mask


def attention_reference(q, k, v, mask=None, scale=None, extra_k=None, extra_v=None):
    """Masked softmax attention on heads-last tensors q [B, N, H, D], k/v [B, M, H_kv, D].

    `mask` is [N, M] bool (None: all pairs). `extra_k/extra_v` [B, E, H_kv, D] are keys
    every query also attends to, in the same softmax. Returns (out [B, N, H, D], lse [B, N, H]).
    """
    heads, kv_heads = q.shape[2], k.shape[2]
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if mask is None:
        mask = torch.ones(q.shape[1], k.shape[1], dtype=torch.bool)
    mask = mask.to(q.device)
    if extra_k is not None:
        k = torch.cat([k, extra_k], dim=1)
        v = torch.cat([v, extra_v], dim=1)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], extra_k.shape[1])], dim=1)
    k = k.repeat_interleave(heads // kv_heads, dim=2)
    v = v.repeat_interleave(heads // kv_heads, dim=2)
    scores = torch.einsum("bnhd,bmhd->bhnm", q, k) * scale
    scores = scores.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)
    out = torch.einsum("bhnm,bmhd->bnhd", torch.softmax(scores, dim=-1), v)
    return out, lse.permute(0, 2, 1)


def na_reference(q, k, v, kernel_size, dilation=None, stride=None, is_causal=None, scale=None,
                 additional_keys=None, additional_values=None):
    """Neighborhood attention of any rank on q [B, *grid, H, D]; returns (out, lse)."""
    grid = tuple(q.shape[1:-2])
    rank = len(grid)
    dilation = dilation or (1,) * rank
    stride = stride or (1,) * rank
    is_causal = is_causal or (False,) * rank
    mask = na_mask(grid, kernel_size, dilation, stride, is_causal)
    flat = lambda t: t.reshape(t.shape[0], -1, *t.shape[-2:])  # noqa: E731
    out, lse = attention_reference(flat(q), flat(k), flat(v), mask, scale,
                                   additional_keys, additional_values)
    return out.reshape(q.shape), lse.reshape(q.shape[:-1])


# ---- Lightning attention (DESIGN.md §7) ---------------------------------------------------

def _lightning_decay(slope, dtype):
    """λ_h = exp(-slope_h) as a [H] tensor of `dtype`."""
    return torch.exp(-slope.to(dtype))


def lightning_reference(q, k, v, slope, scale=1.0, initial_state=None):
    """Lightning attention in the O(N²) explicit-mask form, for q, k [B, N, H, D], v [B, N, H, E].

    o_t = scale · Σ_{s ≤ t} M_ts (q_t · k_s) v_s + scale · λ^{t+1} q_t S0 with the decay mask
    M_ts = λ^{t-s} for s ≤ t (else 0), λ = exp(-slope_h). The final state is
    S_N = λ^N S0 + Σ_s λ^{N-1-s} k_sᵀ v_s. Returns (o [B, N, H, E], final_state [B, H, D, E]),
    both in the dtype of q (run it in float64). Differentiable in every argument, slope included.
    """
    n = q.shape[1]
    lam = _lightning_decay(slope, q.dtype)                                      # [H]
    t = torch.arange(n, device=q.device, dtype=q.dtype)
    distance = t[:, None] - t[None, :]                                          # t - s
    causal = distance >= 0
    # λ^{t-s} on and below the diagonal, 0 above (clamped exponent keeps the masked part finite).
    mask = torch.where(causal, lam[:, None, None] ** distance.clamp(min=0), torch.zeros((), dtype=q.dtype))
    scores = torch.einsum("bthd,bshd->bhts", q, k) * mask                      # [B, H, N, N]
    o = scale * torch.einsum("bhts,bshe->bthe", scores, v)
    tail = lam[:, None] ** (n - 1 - t)                                          # λ^{N-1-s}, [H, N]
    final = torch.einsum("hs,bshd,bshe->bhde", tail, k, v)
    if initial_state is not None:
        s0 = initial_state.to(q.dtype)
        head_decay = lam[:, None] ** (t + 1)                                    # λ^{t+1}, [H, N]
        o = o + scale * torch.einsum("ht,bthd,bhde->bthe", head_decay, q, s0)
        final = final + (lam ** n)[None, :, None, None] * s0
    return o, final


def lightning_recurrence_reference(q, k, v, slope, scale=1.0, initial_state=None):
    """Lightning attention as the token-by-token recurrence S_t = λ S_{t-1} + k_tᵀ v_t,
    o_t = scale · q_t S_t (S_{-1} = initial_state or 0). Same arguments and results as
    `lightning_reference`."""
    batch, n, heads, dim_k = q.shape
    dim_v = v.shape[-1]
    lam = _lightning_decay(slope, q.dtype)[None, :, None, None]                 # [1, H, 1, 1]
    if initial_state is None:
        state = q.new_zeros(batch, heads, dim_k, dim_v)
    else:
        state = initial_state.to(q.dtype)
    outputs = []
    for t in range(n):
        state = lam * state + torch.einsum("bhd,bhe->bhde", k[:, t], v[:, t])
        outputs.append(scale * torch.einsum("bhd,bhde->bhe", q[:, t], state))
    o = torch.stack(outputs, dim=1) if outputs else q.new_zeros(batch, 0, heads, dim_v)
    return o, state


__all__ += ["lightning_reference", "lightning_recurrence_reference"]
