"""Block-sparse attention (DESIGN.md §5): softmax attention over a given set of
(query block, key block) pairs.

This module holds the Python side of the C++ ops `torch.ops.effattn.block_sparse_attn`,
`block_sparse_attn_forward` and `block_sparse_attn_backward` (schemas in
csrc/registration.cpp): their fake kernels and the autograd formula, the user API
`block_sparse_attention`, the map converters and helpers for common block patterns.

Conventions
- q `[B, Nq, H, D]`, k/v `[B, Nk, H_kv, D]` with H % H_kv == 0 (GQA/MQA; K/V are never
  copied per head). Output `[B, Nq, H, D]` in q's dtype; LSE `[B, Nq, H]` float32 (float64
  for float64 inputs). scale defaults to 1/sqrt(D).
- Blocks: query block m holds rows [m·block_q, (m+1)·block_q), key block n holds keys
  [n·block_k, (n+1)·block_k); block_q, block_k ∈ {64, 128}; Mq = ceil(Nq / block_q),
  Mk = ceil(Nk / block_k). The last block of each axis may be partial (ragged tail): the
  positions past N are masked, never read.
- Maps (FlexAttention's BlockMask convention): `kv_num_blocks` int32 `[B|1, H|1, Mq]`,
  `kv_indices` int32 `[B|1, H|1, Mq, max_blocks]`; query block m of (b, h) attends to the key
  blocks `kv_indices[b, h, m, :kv_num_blocks[b, h, m]]` (entries past kv_num_blocks are
  ignored; listed blocks must be in [0, Mk) and not repeated). A size-1 batch or head axis
  broadcasts. A dense bool `block_mask` `[B|1, H|1, Mq, Mk]` is the same information
  (`block_mask_to_indices` / `indices_to_block_mask` convert, on the tensors' device).
- `is_causal` adds the element mask key j <= query i + (Nk - Nq): bottom-right aligned as in
  FlashAttention (the last query sees the last key — the layout of prefill with a KV cache).
  For Nq == Nk this is the usual top-left causal mask of SDPA / FlexAttention; for Nq != Nk it
  differs from SDPA's `is_causal` (top-left). With Nq > Nk the first Nq - Nk queries see no key.
- A query with no live key (empty row, or every listed key masked) gets output 0, LSE -inf
  and contributes zero gradients; nothing is NaN.
- Variable-length packed batches: `cu_seqlens_q` / `cu_seqlens_k` (int32/int64
  `[num_seqs + 1]`, both given, start at 0, non-decreasing, end at Nq / Nk) with B == 1.
  Sequence s owns query rows [cu_seqlens_q[s], cu_seqlens_q[s+1]) and key rows
  [cu_seqlens_k[s], cu_seqlens_k[s+1]). The maps' batch axis then indexes sequences
  (`[num_seqs|1, H|1, Mq, max_blocks]`, Mq >= the largest per-sequence block count), block
  indices are local to each sequence (block 0 starts at the sequence's first token, listed
  blocks must be < that sequence's Mk) and `is_causal` is aligned per sequence. It equals
  separate calls per sequence. (Chosen over separate `*_varlen` ops: one schema, one kernel.)
"""
import math

import torch

from . import _C  # noqa: F401  (loads the library; its initialisers register the schemas)
from ._validation import can_read_values, check_device, kernel_devices

__all__ = ["block_sparse_attention", "block_mask_to_indices", "indices_to_block_mask",
           "sliding_window_block_mask", "sink_local_block_mask", "strided_block_mask",
           "BLOCK_SIZES"]

BLOCK_SIZES = (64, 128)
_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _lse_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _ceil_div(a, b):
    return -(-a // b)


def _block_size(block_size):
    """(block_q, block_k) from an int or a pair, each in BLOCK_SIZES."""
    if isinstance(block_size, int) and not isinstance(block_size, bool):
        block_size = (block_size, block_size)
    try:
        block_q, block_k = block_size
    except (TypeError, ValueError):
        raise ValueError(f"block_size must be an int or a pair (block_q, block_k), got {block_size!r}")
    for name, value in (("block_q", block_q), ("block_k", block_k)):
        if not isinstance(value, int) or isinstance(value, bool) or value not in BLOCK_SIZES:
            raise ValueError(f"{name} must be 64 or 128, got {value!r}")
    return int(block_q), int(block_k)


# ---- checks (ValueError; the C++ ops repeat them, with the map values, as RuntimeError) -------

def _check_qkv(q, k, v):
    for name, t, layout in (("q", q, "[B, Nq, H, D]"), ("k", k, "[B, Nk, H_kv, D]"),
                            ("v", v, "[B, Nk, H_kv, D]")):
        if not isinstance(t, torch.Tensor) or t.dim() != 4:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} must have rank 4 ({layout}), got shape {shape}")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k and v must have the same dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"q must be float16, bfloat16, float32 or float64, got {q.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k and v must be on the same device, got {q.device}, {k.device}, {v.device}")
    if q.shape[0] != k.shape[0]:
        raise ValueError(f"q and k must have the same batch size, got {q.shape[0]} and {k.shape[0]}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must have the same head dim, got {q.shape[-1]} and {k.shape[-1]}")
    if q.shape[-1] < 1:
        raise ValueError(f"head dim must be at least 1, got {q.shape[-1]}")
    if k.shape[2] < 1 or q.shape[2] % k.shape[2] != 0:
        raise ValueError(f"the number of query heads ({q.shape[2]}) must be a multiple of the "
                         f"number of key/value heads ({k.shape[2]})")


def _check_cu_seqlens(q, k, cu_seqlens_q, cu_seqlens_k, values):
    """Returns the number of sequences (B without cu_seqlens)."""
    if (cu_seqlens_q is None) != (cu_seqlens_k is None):
        raise ValueError("cu_seqlens_q and cu_seqlens_k must be given together (packed "
                         "variable-length batch) or both left out")
    if cu_seqlens_q is None:
        return q.shape[0]
    if q.shape[0] != 1:
        raise ValueError(f"with cu_seqlens_q/cu_seqlens_k the batch size B must be 1 (sequences "
                         f"packed along N), got B = {q.shape[0]}")
    for name, cu, tokens, tokens_name in (("cu_seqlens_q", cu_seqlens_q, q.shape[1], "Nq"),
                                          ("cu_seqlens_k", cu_seqlens_k, k.shape[1], "Nk")):
        if not isinstance(cu, torch.Tensor) or cu.dim() != 1 or cu.shape[0] < 2:
            shape = tuple(cu.shape) if isinstance(cu, torch.Tensor) else type(cu).__name__
            raise ValueError(f"{name} must have shape [num_seqs + 1] with num_seqs >= 1, got {shape}")
        if cu.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"{name} must be int32 or int64, got {cu.dtype}")
        if cu.device != q.device:
            raise ValueError(f"{name} must be on the device of q ({q.device}), got {cu.device}")
        if values and can_read_values(cu):
            c = cu.tolist()
            if c[0] != 0:
                raise ValueError(f"{name} must start at 0, got {c[0]}")
            for i in range(1, len(c)):
                if c[i] < c[i - 1]:
                    raise ValueError(f"{name} must be non-decreasing, got {name}[{i - 1}] = "
                                     f"{c[i - 1]} > {name}[{i}] = {c[i]}")
            if c[-1] != tokens:
                raise ValueError(f"{name} must end at {tokens_name} = {tokens}, got {c[-1]}")
    if cu_seqlens_q.shape != cu_seqlens_k.shape:
        raise ValueError(f"cu_seqlens_q and cu_seqlens_k must both have shape [num_seqs + 1], got "
                         f"{tuple(cu_seqlens_q.shape)} and {tuple(cu_seqlens_k.shape)}")
    return cu_seqlens_q.shape[0] - 1


def _check_maps(q, kv_num_blocks, kv_indices, block_q, num_seqs, varlen):
    """Shapes, dtypes and devices of the maps (values are checked by the C++ op)."""
    for name, t, rank, layout in (("kv_num_blocks", kv_num_blocks, 3, "[B|1, H|1, Mq]"),
                                  ("kv_indices", kv_indices, 4, "[B|1, H|1, Mq, max_blocks]")):
        if not isinstance(t, torch.Tensor) or t.dim() != rank:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name} must have rank {rank} ({layout}), got shape {shape}")
        if t.dtype != torch.int32:
            raise ValueError(f"{name} must be int32, got {t.dtype}")
        if t.device != q.device:
            raise ValueError(f"{name} must be on the device of q ({q.device}), got {t.device}")
    if kv_indices.shape[:3] != kv_num_blocks.shape:
        raise ValueError(f"kv_indices must have shape [*kv_num_blocks.shape, max_blocks] = "
                         f"[{', '.join(map(str, kv_num_blocks.shape))}, max_blocks], got "
                         f"{tuple(kv_indices.shape)}")
    batch_name = "num_seqs" if varlen else "B"
    if kv_num_blocks.shape[0] not in (1, num_seqs):
        raise ValueError(f"kv_num_blocks.size(0) must be 1 or {batch_name} = {num_seqs}, got "
                         f"{kv_num_blocks.shape[0]}")
    if kv_num_blocks.shape[1] not in (1, q.shape[2]):
        raise ValueError(f"kv_num_blocks.size(1) must be 1 or H = {q.shape[2]}, got {kv_num_blocks.shape[1]}")
    if not varlen and kv_num_blocks.shape[2] != _ceil_div(q.shape[1], block_q):
        raise ValueError(f"kv_num_blocks.size(2) must be Mq = ceil(Nq / block_q) = ceil({q.shape[1]} "
                         f"/ {block_q}) = {_ceil_div(q.shape[1], block_q)}, got {kv_num_blocks.shape[2]}")


def _check_op_args(q, k, v, kv_num_blocks, kv_indices, block_q, block_k, scale, cu_seqlens_q,
                   cu_seqlens_k, values):
    _check_qkv(q, k, v)
    for name, value in (("block_q", block_q), ("block_k", block_k)):
        if value not in BLOCK_SIZES:
            raise ValueError(f"{name} must be 64 or 128, got {value}")
    if scale is not None and not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    num_seqs = _check_cu_seqlens(q, k, cu_seqlens_q, cu_seqlens_k, values)
    _check_maps(q, kv_num_blocks, kv_indices, block_q, num_seqs, cu_seqlens_q is not None)


_KERNEL_DEVICES = kernel_devices("block_sparse_attn_forward")


# ---- fake kernels and autograd -----------------------------------------------------------------

@torch.library.register_fake("effattn::block_sparse_attn_forward")
def _forward_fake(q, k, v, kv_num_blocks, kv_indices, block_q, block_k, is_causal, scale,
                  cu_seqlens_q=None, cu_seqlens_k=None):
    _check_op_args(q, k, v, kv_num_blocks, kv_indices, block_q, block_k, scale, cu_seqlens_q,
                   cu_seqlens_k, values=False)
    return q.new_empty(q.shape), q.new_empty(q.shape[:-1], dtype=_lse_dtype(q.dtype))


@torch.library.register_fake("effattn::block_sparse_attn_backward")
def _backward_fake(grad_out, grad_lse, q, k, v, out, lse, kv_num_blocks, kv_indices, block_q,
                   block_k, is_causal, scale, cu_seqlens_q=None, cu_seqlens_k=None):
    _check_op_args(q, k, v, kv_num_blocks, kv_indices, block_q, block_k, scale, cu_seqlens_q,
                   cu_seqlens_k, values=False)
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output):
    (q, k, v, kv_num_blocks, kv_indices, block_q, block_k, is_causal, scale, cu_seqlens_q,
     cu_seqlens_k) = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, kv_num_blocks, kv_indices, cu_seqlens_q, cu_seqlens_k)
    ctx.args = (block_q, block_k, is_causal, scale)


def _backward(ctx, grad_out, grad_lse):
    q, k, v, out, lse, kv_num_blocks, kv_indices, cu_seqlens_q, cu_seqlens_k = ctx.saved_tensors
    if grad_out is None:
        grad_out = torch.zeros_like(out)
    dq, dk, dv = torch.ops.effattn.block_sparse_attn_backward(
        grad_out, grad_lse, q, k, v, out, lse, kv_num_blocks, kv_indices, *ctx.args,
        cu_seqlens_q, cu_seqlens_k)
    return dq, dk, dv, None, None, None, None, None, None, None, None


torch.library.register_autograd("effattn::block_sparse_attn_forward", _backward,
                                setup_context=_setup_context)


# ---- map converters ------------------------------------------------------------------------

def block_mask_to_indices(block_mask):
    """Dense bool block mask `[B|1, H|1, Mq, Mk]` → (kv_num_blocks int32 `[B|1, H|1, Mq]`,
    kv_indices int32 `[B|1, H|1, Mq, Mk]`).

    Each row of kv_indices lists its live key blocks in increasing order first, then the
    remaining blocks (ignored: they lie past kv_num_blocks). Runs on block_mask's device with
    torch ops (traceable by torch.compile)."""
    if not isinstance(block_mask, torch.Tensor) or block_mask.dim() != 4:
        shape = tuple(block_mask.shape) if isinstance(block_mask, torch.Tensor) else type(block_mask).__name__
        raise ValueError(f"block_mask must have rank 4 ([B|1, H|1, Mq, Mk]), got shape {shape}")
    if block_mask.dtype != torch.bool:
        raise ValueError(f"block_mask must be bool, got {block_mask.dtype}")
    kv_num_blocks = block_mask.sum(dim=-1, dtype=torch.int32)
    # Stable sort of "not live" puts live blocks first, each group in increasing block order.
    kv_indices = torch.argsort((~block_mask).to(torch.uint8), dim=-1, stable=True).to(torch.int32)
    return kv_num_blocks, kv_indices


def indices_to_block_mask(kv_num_blocks, kv_indices, num_k_blocks):
    """(kv_num_blocks `[B|1, H|1, Mq]`, kv_indices `[B|1, H|1, Mq, max_blocks]`) → dense bool
    block mask `[B|1, H|1, Mq, num_k_blocks]`, on the maps' device. Entries past kv_num_blocks
    are ignored; live entries must lie in [0, num_k_blocks)."""
    for name, t, rank in (("kv_num_blocks", kv_num_blocks, 3), ("kv_indices", kv_indices, 4)):
        if not isinstance(t, torch.Tensor) or t.dim() != rank or t.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"{name} must be an int32 tensor of rank {rank}, got "
                             f"{getattr(t, 'dtype', type(t).__name__)} {tuple(getattr(t, 'shape', ()))}")
    if kv_indices.shape[:3] != kv_num_blocks.shape:
        raise ValueError(f"kv_indices must have shape [*kv_num_blocks.shape, max_blocks], got "
                         f"{tuple(kv_indices.shape)} and {tuple(kv_num_blocks.shape)}")
    if isinstance(num_k_blocks, bool) or not isinstance(num_k_blocks, int) or num_k_blocks < 0:
        raise ValueError(f"num_k_blocks must be an int >= 0, got {num_k_blocks!r}")
    max_blocks = kv_indices.shape[-1]
    live = torch.arange(max_blocks, device=kv_indices.device) < kv_num_blocks[..., None].long()
    idx = kv_indices.long()
    if can_read_values(kv_num_blocks, kv_indices):
        if bool(((kv_num_blocks < 0) | (kv_num_blocks > max_blocks)).any()):
            raise ValueError(f"kv_num_blocks must be in [0, max_blocks] = [0, {max_blocks}]")
        if bool((live & ((idx < 0) | (idx >= num_k_blocks))).any()):
            raise ValueError(f"kv_indices must hold key-block indices in [0, num_k_blocks) = "
                             f"[0, {num_k_blocks}) in its first kv_num_blocks entries")
    target = torch.where(live, idx, torch.full_like(idx, num_k_blocks))
    mask = torch.zeros(*kv_num_blocks.shape, num_k_blocks + 1, dtype=torch.bool, device=kv_indices.device)
    mask.scatter_(-1, target, True)
    return mask[..., :num_k_blocks]


# ---- block patterns ----------------------------------------------------------------------------
#
# Every pattern helper takes the token lengths and block sizes and returns a bool block mask
# `[1, 1 or H, Mq, Mk]` (Mq = ceil(Nq / block_q), Mk = ceil(Nk / block_k)) on `device`.
# Positions are aligned like `is_causal`: query i sits at key position i + (Nk - Nq). The
# "diagonal" of query block m is the range of key blocks [lo(m), hi(m)] holding the aligned
# positions of its first and last query; with block_q == block_k and Nk - Nq a multiple of
# the block it is the single block m + (Nk - Nq) / block_k. With causal=True no block past
# hi(m) is kept (combine with is_causal=True for the element-level mask on the diagonal).

def _pattern_grid(seq_len_q, seq_len_k, block_size, device):
    if isinstance(seq_len_q, bool) or not isinstance(seq_len_q, int) or seq_len_q < 0:
        raise ValueError(f"seq_len_q must be an int >= 0, got {seq_len_q!r}")
    seq_len_k = seq_len_q if seq_len_k is None else seq_len_k
    if isinstance(seq_len_k, bool) or not isinstance(seq_len_k, int) or seq_len_k < 0:
        raise ValueError(f"seq_len_k must be an int >= 0, got {seq_len_k!r}")
    block_q, block_k = _block_size(block_size)
    mq, mk = _ceil_div(seq_len_q, block_q), _ceil_div(seq_len_k, block_k)
    offset = seq_len_k - seq_len_q
    m = torch.arange(mq, device=device)
    first = m * block_q + offset                                   # aligned key position
    last = torch.clamp(m * block_q + block_q, max=seq_len_q) - 1 + offset
    lo = torch.div(first, block_k, rounding_mode="floor")[:, None]  # [Mq, 1]
    hi = torch.div(last, block_k, rounding_mode="floor")[:, None]
    n = torch.arange(mk, device=device)[None, :]                   # [1, Mk]
    return lo, hi, n


def _count(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _window(lo, hi, n, window_blocks, causal):
    before = n >= lo - (window_blocks - 1)
    after = n <= hi if causal else n <= hi + (window_blocks - 1)
    return before & after


def sliding_window_block_mask(seq_len_q, seq_len_k=None, block_size=(128, 128), window_blocks=1,
                              causal=True, device=None):
    """Local attention in blocks: query block m keeps its diagonal key blocks [lo(m), hi(m)]
    and the `window_blocks - 1` key blocks before them (and, with causal=False, the
    `window_blocks - 1` after them too). Returns bool `[1, 1, Mq, Mk]`."""
    _count("window_blocks", window_blocks, 1)
    lo, hi, n = _pattern_grid(seq_len_q, seq_len_k, block_size, device)
    return _window(lo, hi, n, window_blocks, causal)[None, None]


def sink_local_block_mask(seq_len_q, seq_len_k=None, block_size=(128, 128), sink_blocks=1,
                          local_blocks=1, causal=True, device=None):
    """StreamingLLM-style "attention sink + local window": the first `sink_blocks` key blocks
    (for every query block; with causal=True only those not past hi(m)) plus the sliding
    window of `local_blocks` (see `sliding_window_block_mask`). Returns bool `[1, 1, Mq, Mk]`."""
    _count("sink_blocks", sink_blocks, 0)
    _count("local_blocks", local_blocks, 1)
    lo, hi, n = _pattern_grid(seq_len_q, seq_len_k, block_size, device)
    sink = n < sink_blocks
    if causal:
        sink = sink & (n <= hi)
    return (sink | _window(lo, hi, n, local_blocks, causal))[None, None]


def strided_block_mask(seq_len_q, seq_len_k=None, block_size=(128, 128), pattern="power",
                       stride=2, num_heads=None, local_blocks=1, sink_blocks=0, causal=True,
                       device=None):
    """Long-range sparse patterns, always united with a local window of `local_blocks` and
    the first `sink_blocks` key blocks (as in `sink_local_block_mask`):

    - pattern="power" (PowerAttention-style): query block m also keeps the key blocks at a
      power-of-two block distance 1, 2, 4, 8, ... before its diagonal, i.e. n = lo(m) - 2^i
      (and, with causal=False, n = hi(m) + 2^i), so that any earlier block is reachable in
      log2 hops across layers. Returns `[1, 1, Mq, Mk]`.
    - pattern="strided" (S2-Attention-style heterogeneous strided heads): head h also keeps
      the key blocks n with n % stride == h % stride (with causal=True only n <= hi(m)); the
      heads cover disjoint shards that together span every block when num_heads >= stride.
      Returns `[1, num_heads, Mq, Mk]` (num_heads=None: one head with offset 0, i.e. every
      stride-th block, `[1, 1, Mq, Mk]`).
    """
    _count("local_blocks", local_blocks, 1)
    _count("sink_blocks", sink_blocks, 0)
    lo, hi, n = _pattern_grid(seq_len_q, seq_len_k, block_size, device)
    base = _window(lo, hi, n, local_blocks, causal) | ((n < sink_blocks) & ((n <= hi) | (not causal)))
    if pattern == "power":
        def power_of_two(d):
            return (d > 0) & ((d & (d - 1)) == 0)
        far = power_of_two(lo - n)
        if not causal:
            far = far | power_of_two(n - hi)
        return (base | far)[None, None]
    if pattern == "strided":
        _count("stride", stride, 1)
        heads = 1 if num_heads is None else _count("num_heads", num_heads, 1)
        h = torch.arange(heads, device=base.device)[:, None, None]
        far = (n[None] % stride) == (h % stride)
        if causal:
            far = far & (n <= hi)[None]
        return (base[None] | far)[None]
    raise ValueError(f"pattern must be 'power' or 'strided', got {pattern!r}")


# ---- user API ----------------------------------------------------------------------------------

def _full_maps(q, k, block_q, block_k, cu_seqlens_k, device):
    """Maps that list every key block (per sequence when packed)."""
    mq, mk = _ceil_div(q.shape[1], block_q), _ceil_div(k.shape[1], block_k)
    kv_indices = torch.arange(mk, device=device, dtype=torch.int32).expand(1, 1, mq, mk)
    if cu_seqlens_k is None:
        kv_num_blocks = torch.full((1, 1, mq), mk, device=device, dtype=torch.int32)
        return kv_num_blocks, kv_indices
    lengths = (cu_seqlens_k[1:] - cu_seqlens_k[:-1]).to(torch.int64)
    per_seq = torch.div(lengths + block_k - 1, block_k, rounding_mode="floor").to(torch.int32)
    kv_num_blocks = per_seq[:, None, None].expand(-1, 1, mq).contiguous()
    return kv_num_blocks, kv_indices.expand(per_seq.shape[0], 1, mq, mk)


def block_sparse_attention(q, k, v, block_mask=None, kv_num_blocks=None, kv_indices=None,
                           block_size=(128, 128), is_causal=False, scale=None, return_lse=False,
                           cu_seqlens_q=None, cu_seqlens_k=None):
    """Block-sparse attention: q `[B, Nq, H, D]`, k/v `[B, Nk, H_kv, D]`.

    Give the allowed (query block, key block) pairs either as a dense bool `block_mask`
    `[B|1, H|1, Mq, Mk]` or as FlexAttention-style maps `kv_num_blocks` int32
    `[B|1, H|1, Mq]` and `kv_indices` int32 `[B|1, H|1, Mq, max_blocks]`; with neither, every
    key block is listed (dense attention; with `is_causal`, causal attention). `block_size`
    is an int or (block_q, block_k), each 64 or 128. `is_causal` adds key <= query + (Nk - Nq)
    (bottom-right aligned). `cu_seqlens_q/k` pack variable-length sequences (B == 1; maps per
    sequence, block indices local to each sequence). Returns out `[B, Nq, H, D]` (and the LSE
    `[B, Nq, H]`, fp32 or fp64, with return_lse=True); a query with no live key gets 0 and
    LSE -inf. Differentiable in q, k, v (and through the LSE). See the module docstring.
    """
    block_q, block_k = _block_size(block_size)
    _check_qkv(q, k, v)
    _check_cu_seqlens(q, k, cu_seqlens_q, cu_seqlens_k, values=True)  # values, outside tracing
    varlen = cu_seqlens_q is not None
    if block_mask is not None:
        if kv_num_blocks is not None or kv_indices is not None:
            raise ValueError("give either block_mask or kv_num_blocks and kv_indices, not both")
        if not isinstance(block_mask, torch.Tensor) or block_mask.dim() != 4:
            shape = tuple(block_mask.shape) if isinstance(block_mask, torch.Tensor) else type(block_mask).__name__
            raise ValueError(f"block_mask must have rank 4 ([B|1, H|1, Mq, Mk]), got shape {shape}")
        if block_mask.dtype != torch.bool:
            raise ValueError(f"block_mask must be bool, got {block_mask.dtype}")
        if block_mask.device != q.device:
            raise ValueError(f"block_mask must be on the device of q ({q.device}), got {block_mask.device}")
        mq, mk = _ceil_div(q.shape[1], block_q), _ceil_div(k.shape[1], block_k)
        if not varlen and tuple(block_mask.shape[2:]) != (mq, mk):
            raise ValueError(f"block_mask must have shape [B|1, H|1, Mq, Mk] = [B|1, H|1, {mq}, {mk}] "
                             f"(Mq = ceil(Nq / block_q), Mk = ceil(Nk / block_k)), got "
                             f"{tuple(block_mask.shape)}")
        kv_num_blocks, kv_indices = block_mask_to_indices(block_mask)
    elif kv_num_blocks is None and kv_indices is None:
        kv_num_blocks, kv_indices = _full_maps(q, k, block_q, block_k, cu_seqlens_k, q.device)
    elif kv_num_blocks is None or kv_indices is None:
        raise ValueError("kv_num_blocks and kv_indices must be given together")
    if scale is not None:
        scale = float(scale)
    _check_op_args(q, k, v, kv_num_blocks, kv_indices, block_q, block_k, scale, cu_seqlens_q,
                   cu_seqlens_k, values=False)
    check_device(q, _KERNEL_DEVICES, "block_sparse_attention")
    args = (q, k, v, kv_num_blocks, kv_indices, block_q, block_k, bool(is_causal), scale,
            cu_seqlens_q, cu_seqlens_k)
    if return_lse:
        return torch.ops.effattn.block_sparse_attn_forward(*args)
    return torch.ops.effattn.block_sparse_attn(*args)
