"""Quantized QK estimation and sparse long-context prefill (DESIGN.md §6, after SALE).

    kv_num_blocks, kv_indices = effattn.estimate_block_mask(q, k, threshold=1e-3)
    out = effattn.sparse_prefill_attention(q, k, v, threshold=1e-3)

How a block map is estimated, per head: Q and K are smoothed by subtracting their mean over
the sequence and quantized symmetrically to int8 (one fp32 scale per token, or per
`quant_block` tokens). The exact softmax statistics (row max m, row sum l) of every query are
computed over its always-kept keys — the first `sink_tokens` keys, the last `local_tokens`
keys up to the query (causal), and the query's diagonal key block — and every other entry is
estimated from the int8 product plus two exact bias terms (μq·(k − μk) and q·μk, so the
estimate is the true score up to quantization). A key block is kept when one of its
entries' relative score exp(S̃ − m)/l reaches the head's threshold τ; τ = 0 keeps everything.
Always-kept regions are always in the map.

Bit width: `bits` is a parameter, but only 8 is implemented. On Hopper the measured
`mma.sync` rates are int8 ≈ 1230 TOPS, bf16 ≈ 600 and int4 ≈ 54 (int4 is emulated), so
int4 would be slower than bf16 there.

Conventions: prefill (N_q == N_k), q [B, N, H, D], k/v [B, N, H_kv, D]. With
is_causal=False the local window is symmetric (|i − c| < local_tokens) and sink tokens are
rejected (sinks are the first keys every causal query sees; bidirectional attention has no
such asymmetry).
"""
import math

import torch

from . import _C  # noqa: F401  (loads the library; its initialisers register the schemas)
from ._validation import check_device, kernel_devices

__all__ = ["quantize_qk", "estimate_block_mask", "sparse_prefill_attention", "calibrate_thresholds",
           "block_density"]

_BLOCK_SIZES = (64, 128)
_KERNEL_DEVICES = kernel_devices("estimate_block_mask")


@torch.library.register_fake("effattn::smooth_quantize")
def _smooth_quantize_fake(x, quant_block, bits):
    batch, n, heads, dim = x.shape
    blocks = (n + quant_block - 1) // quant_block
    return (x.new_empty(x.shape, dtype=torch.int8), x.new_empty(batch, blocks, heads, dtype=torch.float32),
            x.new_empty(batch, heads, dim, dtype=torch.float32))


@torch.library.register_fake("effattn::estimate_block_mask")
def _estimate_fake(q, k, q_quant, q_scale, q_mean, k_quant, k_scale, k_mean, log_threshold, block_q,
                   block_k, quant_block, sink_tokens, local_tokens, is_causal, scale):
    batch, n, heads, _ = q.shape
    mq, mk = (n + block_q - 1) // block_q, (n + block_k - 1) // block_k
    return (q.new_empty(batch, heads, mq, dtype=torch.int32),
            q.new_empty(batch, heads, mq, mk, dtype=torch.int32))


def _check_options(q, k, block_size, sink_tokens, local_tokens, is_causal, bits, quant_block):
    if q.dim() != 4 or k.dim() != 4:
        raise ValueError(f"q and k must have shape [B, N, H, D], got {tuple(q.shape)} and {tuple(k.shape)}")
    if q.shape[:2] != k.shape[:2] or q.shape[3] != k.shape[3]:
        raise ValueError("q and k must agree on batch, sequence length (prefill: N_q == N_k) and "
                         f"head dim, got {tuple(q.shape)} and {tuple(k.shape)}")
    if q.shape[2] % k.shape[2] != 0:
        raise ValueError(f"the number of query heads ({q.shape[2]}) must be a multiple of the number "
                         f"of key/value heads ({k.shape[2]})")
    if len(block_size) != 2 or any(b not in _BLOCK_SIZES for b in block_size):
        raise ValueError(f"block_size must be a pair of 64 or 128, got {block_size!r}")
    if sink_tokens < 0 or local_tokens < 0:
        raise ValueError(f"sink_tokens and local_tokens must be >= 0, got {sink_tokens} and {local_tokens}")
    if not is_causal and sink_tokens > 0:
        raise ValueError("sink_tokens must be 0 when is_causal=False: attention sinks are the first keys "
                         "every causal query sees; use local_tokens (a symmetric window) instead")
    if bits != 8:
        raise NotImplementedError(f"bits={bits}: only int8 estimation is implemented (int4 tensor-core MMA "
                                  "is emulated on Hopper, ~54 TOPS vs ~1230 for int8)")
    if quant_block < 1:
        raise ValueError(f"quant_block must be >= 1 (1: one scale per token), got {quant_block}")
    check_device(q, _KERNEL_DEVICES, "estimate_block_mask")


def _log_threshold(threshold, heads, device):
    if isinstance(threshold, (int, float)) and not isinstance(threshold, bool):
        # Checked on the host: a device check would cost a sync per call.
        if not (math.isfinite(threshold) and threshold >= 0):
            raise ValueError("threshold must be finite and >= 0 (0 keeps every block)")
        log_tau = torch.log(torch.tensor(threshold, dtype=torch.float32)).item()  # fp32 log, as below
        return torch.full((heads,), log_tau, dtype=torch.float32, device=device)
    tau = torch.as_tensor(threshold, dtype=torch.float32, device=device)
    if tau.dim() == 0:
        tau = tau.expand(heads)
    if tau.shape != (heads,):
        raise ValueError(f"threshold must be a float or a float32 tensor of shape [H] = [{heads}], "
                         f"got shape {tuple(tau.shape)}")
    if not torch.compiler.is_compiling() and bool((tau < 0).any() | ~torch.isfinite(tau).all()):
        raise ValueError("threshold must be finite and >= 0 (0 keeps every block)")
    return torch.log(tau).contiguous()


def quantize_qk(x, quant_block=1, bits=8):
    """Smoothed symmetric quantization of x [B, N, H, D]: (int8, fp32 scale
    [B, ceil(N / quant_block), H], fp32 mean [B, H, D])."""
    if bits != 8:
        raise NotImplementedError(f"bits={bits}: only int8 quantization is implemented")
    return torch.ops.effattn.smooth_quantize(x, quant_block, bits)


def _defaults(block_size, sink_tokens, is_causal):
    """(block_q, block_k) from an int or a pair; sink_tokens None → 64 causal, 0 otherwise."""
    block_size = (block_size, block_size) if isinstance(block_size, int) else tuple(block_size)
    return block_size, (64 if is_causal else 0) if sink_tokens is None else sink_tokens


def estimate_block_mask(q, k, threshold, block_size=(64, 64), sink_tokens=None, local_tokens=256,
                        is_causal=True, bits=8, quant_block=1, scale=None):
    """Key blocks each query block needs, as (kv_num_blocks int32 [B, H, Mq], kv_indices
    int32 [B, H, Mq, Mk]) in the block-sparse format (DESIGN.md §5). `threshold`: a float
    or an fp32 [H] tensor of per-head τ ≥ 0. `sink_tokens` defaults to 64 when causal, 0
    otherwise."""
    block_size, sink_tokens = _defaults(block_size, sink_tokens, is_causal)
    _check_options(q, k, block_size, sink_tokens, local_tokens, is_causal, bits, quant_block)
    log_threshold = _log_threshold(threshold, q.shape[2], q.device)
    q_quant = torch.ops.effattn.smooth_quantize(q, quant_block, bits)
    k_quant = torch.ops.effattn.smooth_quantize(k, quant_block, bits)
    return torch.ops.effattn.estimate_block_mask(q, k, *q_quant, *k_quant, log_threshold, block_size[0],
                                                 block_size[1], quant_block, sink_tokens, local_tokens,
                                                 is_causal, scale)


def block_density(kv_num_blocks, seq_len, block_size, is_causal=True):
    """Fraction of the (causally) live blocks kept, per head: [H] (averaged over the batch)."""
    block_q, block_k = block_size
    mq, mk = kv_num_blocks.shape[-1], math.ceil(seq_len / block_k)
    if is_causal:
        last_row = torch.clamp(torch.arange(mq, device=kv_num_blocks.device) * block_q + block_q - 1,
                               max=seq_len - 1)
        live = (last_row // block_k + 1).sum().item()
    else:
        live = mq * mk
    return kv_num_blocks.float().sum(-1).mean(0) / live


def coarsen_block_map(kv_num_blocks, kv_indices, num_k_blocks, factor, checked=True):
    """The block map at `factor` times the block size: a coarse block is kept when any of its
    fine blocks is (a superset of the fine map's entries). Returns (kv_num_blocks, kv_indices).
    checked=False is for maps valid by construction (estimate_block_mask's): no value checks,
    and the coarse lists are merged from the fine ones (`factor` rows each, cut to the longest
    row: one host sync) instead of going through dense masks; kv_indices then holds zeros past
    each row's live blocks and is only as wide as the longest merged list can be."""
    from .block_sparse import block_mask_to_indices, indices_to_block_mask

    if checked:
        mask = indices_to_block_mask(kv_num_blocks, kv_indices, num_k_blocks)
        b, h, mq, mk = mask.shape
        pad = torch.nn.functional.pad(mask, (0, (-mk) % factor, 0, (-mq) % factor))
        coarse = pad.unflatten(2, (-1, factor)).unflatten(4, (-1, factor)).any(dim=5).any(dim=3)
        return block_mask_to_indices(coarse)
    mq = kv_indices.shape[-2]
    mq_c, mk_c = -(-mq // factor), -(-num_k_blocks // factor)
    width = max(int(kv_num_blocks.max()), 1) if kv_num_blocks.numel() else 1
    idx = kv_indices[..., :width].long()
    live = torch.arange(width, device=idx.device) < kv_num_blocks[..., None].long()
    # Candidates of each coarse row: its fine rows' blocks // factor; dead entries and padding
    # rows hold mk_c, which sorts last.
    cand = torch.where(live, idx // factor, mk_c)
    cand = torch.nn.functional.pad(cand, (0, 0, 0, mq_c * factor - mq), value=mk_c)
    cand = cand.unflatten(-2, (mq_c, factor)).flatten(-2).sort(dim=-1).values
    repeat = torch.nn.functional.pad(cand[..., 1:] == cand[..., :-1], (1, 0), value=False)
    cand = torch.where(repeat, mk_c, cand).sort(dim=-1).values[..., :min(cand.shape[-1], mk_c)]
    keep = cand < mk_c
    return keep.sum(dim=-1, dtype=torch.int32), torch.where(keep, cand, 0).to(torch.int32)


def sparse_prefill_attention(q, k, v, threshold, block_size=(64, 64), sink_tokens=None, local_tokens=256,
                             is_causal=True, scale=None, return_stats=False, attention_block_size=None):
    """Estimate the block map, then run block-sparse attention on it. With return_stats=True
    also returns {"density": [H], "estimate_ms", "attention_ms"} (times on CUDA only).
    `attention_block_size` (default: block_size) runs the attention on the map coarsened to
    that block size — e.g. (128, 128) from a 64x64 estimate, for Hopper's attention core,
    which needs 128-row query blocks (a superset of the estimated blocks, so never less
    accurate); "density" stays the estimated map's."""
    from .block_sparse import block_sparse_attention

    block_size, sink_tokens = _defaults(block_size, sink_tokens, is_causal)
    attn_size = block_size if attention_block_size is None else _defaults(attention_block_size, 0, False)[0]
    if any(a % b for a, b in zip(attn_size, block_size)) or attn_size[0] // block_size[0] != attn_size[1] // block_size[1]:
        raise ValueError(f"attention_block_size must be the same multiple of block_size on both axes, got "
                         f"{tuple(attn_size)} for block_size {tuple(block_size)}")
    timed = return_stats and q.is_cuda
    if timed:
        events = [torch.cuda.Event(enable_timing=True) for _ in range(3)]
        events[0].record()
    kv_num_blocks, kv_indices = estimate_block_mask(q, k, threshold, block_size, sink_tokens,
                                                    local_tokens, is_causal, scale=scale)
    if timed:
        events[1].record()
    attn_num, attn_idx = kv_num_blocks, kv_indices
    if tuple(attn_size) != tuple(block_size):
        attn_num, attn_idx = coarsen_block_map(kv_num_blocks, kv_indices, math.ceil(q.shape[1] / block_size[1]),
                                               attn_size[0] // block_size[0], checked=False)
    out = block_sparse_attention(q, k, v, kv_num_blocks=attn_num, kv_indices=attn_idx,
                                 block_size=tuple(attn_size), is_causal=is_causal, scale=scale)
    if not return_stats:
        return out
    stats = {"density": block_density(kv_num_blocks, q.shape[1], block_size, is_causal)}
    if timed:
        events[2].record()
        torch.cuda.synchronize()
        stats["estimate_ms"] = events[0].elapsed_time(events[1])
        stats["attention_ms"] = events[1].elapsed_time(events[2])
    return out, stats


def _dense_attention(q, k, v, is_causal, scale):
    group = q.shape[2] // k.shape[2]
    heads_first = lambda t: t.transpose(1, 2).repeat_interleave(group, dim=1)  # noqa: E731
    out = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), heads_first(k), heads_first(v), is_causal=is_causal, scale=scale)
    return out.transpose(1, 2)


def calibrate_thresholds(q, k, v, target_rel_error, block_size=(64, 64), sink_tokens=None,
                         local_tokens=256, is_causal=True, scale=None, initial_threshold=0.5,
                         max_halvings=24):
    """Per-head thresholds τ [H] (fp32) for a target output error: start every head at
    `initial_threshold` and halve τ of each head whose relative L1 error against dense
    attention is above `target_rel_error`; a head that never gets there falls back to τ = 0
    (dense). Returns (thresholds, per-head relative errors at those thresholds)."""
    if target_rel_error <= 0:
        raise ValueError(f"target_rel_error must be > 0, got {target_rel_error}")
    heads = q.shape[2]

    def head_errors(tau):
        out = sparse_prefill_attention(q, k, v, tau, block_size, sink_tokens, local_tokens, is_causal, scale)
        return (out.float() - dense).abs().sum(dim=(0, 1, 3)) / norm

    with torch.no_grad():
        dense = _dense_attention(q, k, v, is_causal, scale).float()
        norm = dense.abs().sum(dim=(0, 1, 3)).clamp_min(1e-30)
        tau = torch.full((heads,), float(initial_threshold), dtype=torch.float32, device=q.device)
        for _ in range(max_halvings):
            errors = head_errors(tau)
            above = errors > target_rel_error
            if not bool(above.any()):
                return tau, errors
            tau = torch.where(above, tau * 0.5, tau)
        errors = head_errors(tau)
        tau = torch.where(errors > target_rel_error, torch.zeros_like(tau), tau)  # dense fallback
        return tau, head_errors(tau)
