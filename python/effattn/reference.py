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


# ---- Block-sparse attention (DESIGN.md §5) ------------------------------------------------

def block_sparse_element_mask(block_mask, seq_len_q, seq_len_k, block_size, is_causal=False):
    """Expands a bool block mask `[..., Mq, Mk]` to the element mask `[..., Nq, Nk]`.

    Query i attends to key j iff block_mask[..., i // block_q, j // block_k], and with
    `is_causal` also j <= i + (Nk - Nq) (bottom-right aligned; top-left when Nq == Nk).
    Blocks past the sequence (ragged tails) are cut off.
    """
    block_q, block_k = block_size
    mask = block_mask.repeat_interleave(block_q, dim=-2).repeat_interleave(block_k, dim=-1)
    mask = mask[..., :seq_len_q, :seq_len_k]
    if mask.shape[-2] != seq_len_q or mask.shape[-1] != seq_len_k:
        raise ValueError(f"block_mask {tuple(block_mask.shape)} with blocks {block_size} does not "
                         f"cover Nq = {seq_len_q}, Nk = {seq_len_k}")
    if is_causal:
        i = torch.arange(seq_len_q, device=mask.device)[:, None]
        j = torch.arange(seq_len_k, device=mask.device)[None, :]
        mask = mask & (j <= i + (seq_len_k - seq_len_q))
    return mask


def _block_sparse_dense(q, k, v, block_mask, block_size, is_causal, scale):
    """One dense batch; block_mask is bool [B|1, H|1, Mq, Mk]. Returns (out, lse)."""
    batch, seq_len_q, heads, _ = q.shape
    seq_len_k, kv_heads = k.shape[1], k.shape[2]
    group = heads // kv_heads
    mask = block_sparse_element_mask(block_mask.to(q.device), seq_len_q, seq_len_k, block_size,
                                     is_causal)
    outs, lses = [], []
    for b in range(batch):
        out_b, lse_b = [], []
        for h in range(heads):
            m = mask[b if mask.shape[0] > 1 else 0, h if mask.shape[1] > 1 else 0]   # [Nq, Nk]
            # Rows with no live key: run them unmasked, then replace by out 0 / lse -inf with
            # torch.where, so neither values nor gradients pick up NaN.
            empty = ~m.any(dim=-1)                                                     # [Nq]
            safe = m | empty[:, None]
            kh = h // group
            o, l = attention_reference(q[b:b + 1, :, h:h + 1], k[b:b + 1, :, kh:kh + 1],
                                       v[b:b + 1, :, kh:kh + 1], safe, scale)
            o = torch.where(empty[None, :, None, None], torch.zeros((), dtype=o.dtype, device=o.device), o)
            l = torch.where(empty[None, :, None], torch.full((), float("-inf"), dtype=l.dtype, device=l.device), l)
            out_b.append(o)
            lse_b.append(l)
        outs.append(torch.cat(out_b, dim=2))
        lses.append(torch.cat(lse_b, dim=2))
    return torch.cat(outs, dim=0), torch.cat(lses, dim=0)


def block_sparse_reference(q, k, v, block_mask=None, kv_num_blocks=None, kv_indices=None,
                           block_size=(128, 128), is_causal=False, scale=None,
                           cu_seqlens_q=None, cu_seqlens_k=None):
    """Block-sparse attention with an explicit element mask; returns (out [B, Nq, H, D],
    lse [B, Nq, H]) in q's dtype (run it in float64).

    The allowed (query block, key block) pairs come from `block_mask` (bool
    [B|1, H|1, Mq, Mk]) or from the FlexAttention-style maps `kv_num_blocks` [B|1, H|1, Mq]
    and `kv_indices` [B|1, H|1, Mq, max_blocks]. Query i attends key j iff its pair is
    allowed, j < Nk, and with `is_causal` j <= i + (Nk - Nq). Queries with no key get out 0
    and lse -inf. With `cu_seqlens_q/k` (B == 1) each packed sequence s is computed alone
    with block mask row s (or row 0 when the mask broadcasts), blocks local to the sequence.
    """
    block_size = (block_size, block_size) if isinstance(block_size, int) else tuple(block_size)
    if block_mask is None:
        if cu_seqlens_k is None:
            num_k_blocks = -(-k.shape[1] // block_size[1])
        else:
            lengths = (cu_seqlens_k[1:] - cu_seqlens_k[:-1]).tolist()
            num_k_blocks = -(-max(lengths + [0]) // block_size[1])
        live = torch.arange(kv_indices.shape[-1], device=kv_indices.device) < kv_num_blocks[..., None].long()
        block_mask = torch.zeros(*kv_num_blocks.shape, num_k_blocks + 1, dtype=torch.bool,
                                 device=kv_indices.device)
        target = torch.where(live, kv_indices.long(), torch.full_like(kv_indices, num_k_blocks).long())
        block_mask.scatter_(-1, target, True)
        block_mask = block_mask[..., :num_k_blocks]
    if cu_seqlens_q is None:
        return _block_sparse_dense(q, k, v, block_mask, block_size, is_causal, scale)
    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    outs, lses = [], []
    for s in range(len(cq) - 1):
        bm = block_mask[s:s + 1] if block_mask.shape[0] > 1 else block_mask
        mq = -(-(cq[s + 1] - cq[s]) // block_size[0])
        mk = -(-(ck[s + 1] - ck[s]) // block_size[1])
        o, l = _block_sparse_dense(q[:, cq[s]:cq[s + 1]], k[:, ck[s]:ck[s + 1]], v[:, ck[s]:ck[s + 1]],
                                   bm[..., :mq, :mk], block_size, is_causal, scale)
        outs.append(o)
        lses.append(l)
    return torch.cat(outs, dim=1), torch.cat(lses, dim=1)


__all__ += ["block_sparse_reference", "block_sparse_element_mask"]


# ---- Quantized QK estimation (DESIGN.md §6) ------------------------------------------------

def smooth_quantize_reference(x, quant_block=1, bits=8):
    """x [B, N, H, D] → (int8 (x − mean), fp32 scale [B, ceil(N / quant_block), H], fp32 mean
    [B, H, D]): per-head mean over the sequence removed, then symmetric quantization with
    scale = amax / (2^(bits−1) − 1) over each block of `quant_block` tokens."""
    qmax = 2 ** (bits - 1) - 1
    batch, n, heads, dim = x.shape
    blocks = math.ceil(n / quant_block)
    mean = x.float().mean(1)
    centered = x.float() - mean.unsqueeze(1)
    padded = torch.nn.functional.pad(centered.abs(), (0, 0, 0, 0, 0, blocks * quant_block - n))
    scale = (padded.view(batch, blocks, quant_block, heads, dim).amax((2, 4)) / qmax).clamp_min(1e-12)
    per_token = scale.repeat_interleave(quant_block, 1)[:, :n, :, None]
    return torch.round(centered / per_token).clamp(-qmax, qmax).to(torch.int8), scale, mean


def estimation_regions(n, block_k, sink_tokens, local_tokens, is_causal):
    """([N, N] visible, [N, N] always-kept): causal visibility and the always-kept region
    (sink keys, local window, the query's diagonal key block) of a prefill of N tokens."""
    i = torch.arange(n)[:, None]
    c = torch.arange(n)[None, :]
    visible = c <= i if is_causal else torch.ones(n, n, dtype=torch.bool)
    distance = i - c if is_causal else (i - c).abs()
    always = (c < sink_tokens) | (distance < local_tokens) | (c // block_k == i // block_k)
    return visible, visible & always


def estimate_block_mask_reference(q, k, quantized_q, quantized_k, log_threshold, block_size,
                                  quant_block=1, sink_tokens=0, local_tokens=0, is_causal=True,
                                  scale=None):
    """Dense bool block map [B, H, Mq, Mk] from the given quantized values (the outputs of
    `smooth_quantize_reference` for q and k), plus the margin [B, H, N, N] of every estimated
    entry over its threshold (ties are entries with margin ≈ 0).

    Estimated score: S̃ = scale · (deq(q̃)·deq(k̃) + μq·(k − μk) + q·μk), the exact score up
    to quantization; kept when S̃ ≥ lse_i + log τ_h, lse over the always-kept keys."""
    batch, n, heads, dim = q.shape
    group = heads // k.shape[2]
    block_q, block_k = block_size
    scale = dim ** -0.5 if scale is None else scale
    (q8, q_scale, q_mean), (k8, k_scale, k_mean) = quantized_q, quantized_k
    expand = lambda t: t.repeat_interleave(group, dim=2)  # noqa: E731  kv heads → q heads
    per_token = lambda s: s.repeat_interleave(quant_block, 1)[:, :n]  # noqa: E731
    deq_q = q8.float() * per_token(q_scale)[..., None]
    deq_k = expand(k8.float() * per_token(k_scale)[..., None])
    key_bias = torch.einsum("bnhd,bhd->bhn", expand(k.float() - k_mean[:, None]), q_mean)
    query_bias = torch.einsum("bnhd,bhd->bhn", q.float(), expand(k_mean[:, None])[:, 0])
    estimate = scale * (torch.einsum("bnhd,bmhd->bhnm", deq_q, deq_k)
                        + key_bias[:, :, None, :] + query_bias[..., None])
    exact = scale * torch.einsum("bnhd,bmhd->bhnm", q.double(), expand(k.double()))
    visible, region = estimation_regions(n, block_k, sink_tokens, local_tokens, is_causal)
    lse = torch.logsumexp(exact.masked_fill(~region, float("-inf")), dim=-1)
    margin = estimate - (lse.float() + log_threshold.float()[None, :, None])[..., None]
    keep = visible & (region | (margin >= 0))
    mq, mk = math.ceil(n / block_q), math.ceil(n / block_k)
    padded = torch.nn.functional.pad(keep, (0, mk * block_k - n, 0, mq * block_q - n))
    block_mask = padded.view(batch, heads, mq, block_q, mk, block_k).any(5).any(3)
    return block_mask, margin.masked_fill(~visible | region, float("nan"))


__all__ += ["smooth_quantize_reference", "estimation_regions", "estimate_block_mask_reference"]
