"""Neighborhood attention computed by PyTorch's FlexAttention, for comparing effattn's kernels
with FlexAttention inside the same model (`effattn.models.layers.na_backend("flex")`).

The window rule of DESIGN.md §4 (NATTEN's, as in `effattn.reference`) is written as a
FlexAttention `mask_mod` over row-major flattened tokens: per axis, a query at coordinate i
is in dilation group g = i mod d at group-local i' = i div d on a group of length
L_g = ⌈(L − g) / d⌉; non-causal, its keys are the group-local range
[start, start + K) with start = clamp(leader − ⌊K/2⌋, 0, L_g − K) (the border shift of §4 in
closed form, valid because K ≤ L_g), leader = min(⌊i'/s⌋·s + ⌊s/2⌋, L_g − 1); causal, they are
[max(leader − K + 1, 0), i' + 1) with leader = min(⌊i'/s⌋·s + s − 1, L_g − 1). The per-axis
conditions (and "same dilation group") are ANDed.

The block mask is built once per (grid, window, device) and cached; `flex_attention` is
compiled once (`torch.compile(..., dynamic=False)`), so each new token-grid shape costs one
compilation. Dynamo's recompile limit (`torch._dynamo.config.recompile_limit`, 8 by default)
applies to all of them together: past it dynamo silently runs the eager FlexAttention, which
materialises the N×N scores. Benchmarks with many shapes should raise the limit.

FlexAttention is imported on first use, so this module imports on torch builds without it.
FlexAttention has no backward on the CPU (torch 2.13); the forward runs there.
"""
import math

import torch

__all__ = ["flex_neighborhood_attention", "na_mask_mod", "na_block_mask", "clear_cache"]

_compiled = None
_block_masks = {}


def _flex_attention():
    global _compiled
    if _compiled is None:
        from torch.nn.attention.flex_attention import flex_attention

        _compiled = torch.compile(flex_attention, dynamic=False)
    return _compiled


def _axis_keep(qc, kc, length, kernel, dilation, stride, causal):
    """Bool tensor: key coordinate kc is in the window of query coordinate qc on one axis."""
    same_group = None
    group_len = length
    if dilation > 1:
        group = qc % dilation
        same_group = (kc % dilation) == group
        qc, kc = qc // dilation, kc // dilation
        group_len = (length - group + dilation - 1) // dilation  # a tensor: depends on the group
    leader = qc if stride == 1 else (qc // stride) * stride + (stride - 1 if causal else stride // 2)
    leader = torch.clamp(leader, max=group_len - 1)
    if causal:
        start, end = torch.clamp(leader - kernel + 1, min=0), qc + 1
    else:
        start = torch.clamp(torch.clamp(leader - kernel // 2, min=0), max=group_len - kernel)
        end = start + kernel
    keep = (kc >= start) & (kc < end)
    return keep if same_group is None else keep & same_group


def na_mask_mod(grid, kernel_size, dilation, stride, is_causal):
    """FlexAttention mask_mod of NA on row-major flattened tokens of `grid` (per-axis tuples)."""
    grid = tuple(int(n) for n in grid)
    steps = [math.prod(grid[a + 1:]) for a in range(len(grid))]  # row-major strides
    axes = list(zip(grid, steps, kernel_size, dilation, stride, is_causal))

    def mask_mod(b, h, q_idx, kv_idx):
        keep = None
        for length, step, kernel, dil, st, causal in axes:
            qc, kc = (q_idx // step) % length, (kv_idx // step) % length
            axis = _axis_keep(qc, kc, length, int(kernel), int(dil), int(st), bool(causal))
            keep = axis if keep is None else keep & axis
        return keep

    return mask_mod


def na_block_mask(grid, kernel_size, dilation, stride, is_causal, device):
    """The cached BlockMask of NA on `grid` (shared by every batch and head)."""
    key = (tuple(grid), tuple(kernel_size), tuple(dilation), tuple(stride), tuple(is_causal),
           torch.device(device))
    mask = _block_masks.get(key)
    if mask is None:
        from torch.nn.attention.flex_attention import create_block_mask

        n = math.prod(grid)
        mask = create_block_mask(na_mask_mod(grid, kernel_size, dilation, stride, is_causal),
                                 None, None, n, n, device=device)
        _block_masks[key] = mask
    return mask


def clear_cache():
    """Drop the cached block masks (the compiled function stays)."""
    _block_masks.clear()


def flex_neighborhood_attention(q, k, v, kernel_size, dilation, stride, is_causal, scale=None):
    """NA of rank len(kernel_size) on q [B, *grid, H, D], k/v [B, *grid, H_kv, D] with
    per-axis tuples kernel_size, dilation, stride, is_causal (window checked by the caller,
    K·d ≤ L); returns [B, *grid, H, D] like `effattn.neighborhood_attention`."""
    grid = tuple(q.shape[1:-2])
    batch, heads, dim = q.shape[0], q.shape[-2], q.shape[-1]
    block_mask = na_block_mask(grid, kernel_size, dilation, stride, is_causal, q.device)
    heads_first = lambda t: t.reshape(batch, -1, t.shape[-2], dim).transpose(1, 2)  # noqa: E731
    # FlexAttention takes one dtype; run it outside autocast (its lowering has had autocast bugs).
    with torch.autocast(q.device.type, enabled=False):
        out = _flex_attention()(heads_first(q), heads_first(k), heads_first(v), block_mask=block_mask,
                                scale=scale, enable_gqa=k.shape[-2] != heads)
    return out.transpose(1, 2).reshape(batch, *grid, heads, dim)
