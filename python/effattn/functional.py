"""The user-facing functions: `na1d`, `na2d`, `na3d`."""
import math

import torch

from ._validation import (check_device, check_extra_kv, check_na_tensors, check_na_window,
                          kernel_devices, per_axis)
from .ops import na_forward_op, na_op

__all__ = ["na1d", "na2d", "na3d", "neighborhood_attention"]


_KERNEL_DEVICES = kernel_devices("na1d_forward")


def _extra_attention(q, extra_k, extra_v, scale):
    """Softmax attention of every query to the extra tokens; returns (out, lse) in fp32+."""
    batch, heads, dim = q.shape[0], q.shape[-2], q.shape[-1]
    kv_heads = extra_k.shape[2]
    compute = torch.float64 if q.dtype == torch.float64 else torch.float32
    qf = q.reshape(batch, -1, kv_heads, heads // kv_heads, dim).to(compute)
    scores = torch.einsum("bnhgd,bmhd->bhgnm", qf, extra_k.to(compute)) * scale
    lse = torch.logsumexp(scores, dim=-1)
    out = torch.einsum("bhgnm,bmhd->bnhgd", torch.softmax(scores, dim=-1), extra_v.to(compute))
    return out.reshape(q.shape), lse.permute(0, 3, 1, 2).reshape(q.shape[:-1])


def neighborhood_attention(q, k, v, kernel_size, dilation=1, stride=1, is_causal=False,
                           scale=None, additional_keys=None, additional_values=None,
                           return_lse=False):
    """Neighborhood attention of rank 1, 2 or 3 (taken from q's rank: q is [B, *grid, H, D]).

    Each query attends to the window of keys around it on the token grid (NATTEN
    semantics, DESIGN.md §4), plus `additional_keys/values` [B, N_extra, H_kv, D] when given,
    all in one softmax. k/v are [B, *grid, H_kv, D] with H % H_kv == 0 (GQA/MQA).
    Returns out [B, *grid, H, D] (and the fp32 LSE [B, *grid, H] with return_lse=True).
    """
    rank = q.dim() - 3
    if rank not in (1, 2, 3):
        raise ValueError(f"q must have rank 4, 5 or 6 ([B, 1-3 token axes, H, D]), got shape {tuple(q.shape)}")
    check_na_tensors(rank, q, k, v)
    kernel_size = per_axis(kernel_size, rank, "kernel_size")
    dilation = per_axis(dilation, rank, "dilation")
    stride = per_axis(stride, rank, "stride")
    is_causal = per_axis(is_causal, rank, "is_causal", bool)
    check_na_window(tuple(q.shape[1:-2]), kernel_size, dilation, stride, is_causal)
    check_extra_kv(q, k, additional_keys, additional_values)
    check_device(q, _KERNEL_DEVICES, f"na{rank}d")
    if scale is not None:
        scale = float(scale)
        if not math.isfinite(scale):
            raise ValueError(f"scale must be finite, got {scale}")
    window = (list(kernel_size), list(dilation), list(stride), list(is_causal), scale)

    if additional_keys is None and not return_lse:
        return na_op(rank)(q, k, v, *window)
    out, lse = na_forward_op(rank)(q, k, v, *window)
    if additional_keys is not None:
        # Exact merge of two softmaxes over disjoint key sets through their LSEs.
        extra_out, extra_lse = _extra_attention(
            q, additional_keys, additional_values, q.shape[-1] ** -0.5 if scale is None else scale)
        merged = torch.logaddexp(lse.to(extra_lse.dtype), extra_lse)
        out = (out.to(extra_out.dtype) * torch.exp(lse - merged).unsqueeze(-1)
               + extra_out * torch.exp(extra_lse - merged).unsqueeze(-1)).to(q.dtype)
        lse = merged
    return (out, lse) if return_lse else out


def _rank_specific(rank):
    def na(q, k, v, kernel_size, dilation=1, stride=1, is_causal=False, scale=None,
           additional_keys=None, additional_values=None, return_lse=False):
        if q.dim() != rank + 3:
            raise ValueError(f"q must have rank {rank + 3} ([B, {rank} token axes, H, D]) for "
                             f"na{rank}d, got shape {tuple(q.shape)}")
        return neighborhood_attention(q, k, v, kernel_size, dilation, stride, is_causal, scale,
                                      additional_keys, additional_values, return_lse)

    na.__name__ = na.__qualname__ = f"na{rank}d"
    na.__doc__ = (f"{rank}-D neighborhood attention: q [B, {', '.join('XYZ'[:rank])}, H, D]. "
                  "See `neighborhood_attention` for the arguments.")
    return na


na1d = _rank_specific(1)
na2d = _rank_specific(2)
na3d = _rank_specific(3)
