"""CUDA block-sparse attention (the attention core with the block-list policy) against the
fp64 reference, under DESIGN.md §8's rule: max|ours - ref64| <= 2 * max|same-dtype reference
- ref64| + atol, for out, lse and every gradient (also through the LSE). Block sizes 64/128
on each side, causal (bottom-right) and not, ragged N, Nq != Nk, empty rows, GQA/MQA,
broadcast maps, random maps with the diagonal kept, garbage past kv_num_blocks, packed
variable-length batches. Outputs are poisoned (free memory filled with NaN) before each run.

EFFATTN_BS_TEST_DEVICE=cpu runs the same checks on the CPU kernels (a dry run of the test
logic on a machine without a GPU)."""
import os

import pytest
import torch

import effattn
from effattn.block_sparse import _KERNEL_DEVICES, block_mask_to_indices
from effattn.reference import block_sparse_reference

DEVICE = os.environ.get("EFFATTN_BS_TEST_DEVICE", "cuda")

pytestmark = pytest.mark.skipif(
    DEVICE not in _KERNEL_DEVICES or (DEVICE == "cuda" and not torch.cuda.is_available()),
    reason="needs a CUDA device and effattn built with CUDA")

NAMES = ("out", "lse", "dq", "dk", "dv")

# (B, Nq, Nk, H, H_kv, block_q, block_k, is_causal, map batch, map heads)
CASES = [
    (2, 1000, 1000, 4, 2, 64, 64, True, 2, 4),      # GQA, per-head maps, causal, ragged
    (2, 1000, 1000, 4, 2, 128, 128, True, 1, 1),    # broadcast maps
    (1, 777, 777, 2, 2, 128, 64, False, 1, 2),
    (1, 777, 1000, 4, 1, 64, 128, True, 1, 4),      # MQA, per-head maps, Nq < Nk
    (2, 1000, 300, 2, 1, 128, 128, True, 2, 1),     # Nq > Nk: leading rows see no key
    (1, 300, 1000, 2, 2, 64, 128, False, 1, 1),
    (2, 130, 200, 8, 2, 128, 64, True, 2, 8),       # tiny, ragged, GQA group 4
    (1, 512, 512, 2, 2, 128, 128, True, 1, 1),      # exact multiples
    (1, 64, 64, 1, 1, 64, 64, False, 1, 1),
]


def case_id(c):
    b, nq, nk, h, hk, bq, bk, causal, mb, mh = c
    return f"B{b}-Nq{nq}-Nk{nk}-H{h}kv{hk}-blk{bq}x{bk}-{'causal' if causal else 'full'}-map{mb}x{mh}"


def ceil_div(a, b):
    return -(-a // b)


def poison_memory():
    """Fill free cached memory with NaN so unwritten outputs show up."""
    if DEVICE != "cuda":
        return
    free, _ = torch.cuda.mem_get_info()
    n = min(free // 4, 2**29) // 2
    junk = torch.full((n,), float("nan"), device="cuda")
    del junk


def random_block_mask(mb, mh, nq, nk, bq, bk, density=0.4, empty_row=True):
    """Random [mb, mh, Mq, Mk] block mask with the (causal) diagonal block of every query
    block kept, and one query block without any key block."""
    mq, mk = ceil_div(nq, bq), ceil_div(nk, bk)
    mask = torch.rand(mb, mh, mq, mk, device=DEVICE) < density
    for m in range(mq):
        last_row = min((m + 1) * bq, nq) - 1
        n = (last_row + nk - nq) // bk
        if 0 <= n < mk:
            mask[..., m, n] = True
    if empty_row and mq > 1:
        mask[0, 0, 1] = False
    return mask


def maps_from_mask(mask, shuffle=True):
    """(kv_num_blocks, kv_indices) with live entries in random order and garbage past
    kv_num_blocks (ignored by contract)."""
    num, idx = block_mask_to_indices(mask)
    if shuffle and idx.shape[-1] > 0:
        live = torch.arange(idx.shape[-1], device=idx.device) < num[..., None]
        keys = torch.where(live, torch.rand(idx.shape, device=idx.device), torch.full(idx.shape, 2.0, device=idx.device))
        order = keys.argsort(dim=-1)
        idx = torch.gather(idx, -1, order)
        garbage = torch.randint(-7, 10**6, idx.shape, device=idx.device, dtype=torch.int32)
        idx = torch.where(live, idx, garbage).contiguous()
    return num, idx


def max_err(a, b):
    """Max |a - b| where b is finite; -inf (empty rows) required at the same places."""
    a, b = a.detach().double(), b.detach().double()
    assert torch.equal(torch.isneginf(a), torch.isneginf(b)), "-inf (empty rows) differ"
    finite = torch.isfinite(b)
    assert torch.isfinite(a[finite]).all(), "non-finite values (unwritten or overflow)"
    return (a[finite] - b[finite]).abs().max().item() if finite.any() else 0.0


def forward_backward(fn, q, k, v, g_out, g_lse):
    out, lse = fn(q, k, v)
    grads = torch.autograd.grad([out, lse], [q, k, v], [g_out, g_lse])
    return (out, lse, *grads)


def check(b, nq, nk, h, hk, d, bq, bk, causal, num, idx, dtype, cu_q=None, cu_k=None, scale=None):
    make = lambda n, heads: torch.randn(b, n, heads, d, device=DEVICE, dtype=dtype)  # noqa: E731
    q, k, v = make(nq, h).requires_grad_(), make(nk, hk).requires_grad_(), make(nk, hk).requires_grad_()
    g_out = torch.randn_like(q)
    g_lse = torch.randn(q.shape[:-1], device=DEVICE)
    kw = dict(kv_num_blocks=num, kv_indices=idx, block_size=(bq, bk), is_causal=causal, scale=scale,
              cu_seqlens_q=cu_q, cu_seqlens_k=cu_k)
    poison_memory()
    ours = forward_backward(lambda q, k, v: effattn.block_sparse_attention(q, k, v, return_lse=True, **kw),
                            q, k, v, g_out, g_lse)
    if DEVICE == "cuda":
        torch.cuda.synchronize()
    ref_fn = lambda q, k, v: block_sparse_reference(q, k, v, **kw)  # noqa: E731
    same = forward_backward(ref_fn, q, k, v, g_out, g_lse.to(dtype))
    x64 = [t.detach().double().requires_grad_() for t in (q, k, v)]
    ref = forward_backward(ref_fn, *x64, g_out.double(), g_lse.double())
    assert ours[0].dtype == dtype and ours[1].dtype == torch.float32
    assert ours[0].shape == q.shape and ours[1].shape == q.shape[:-1]
    for name, a, s, r in zip(NAMES, ours, same, ref):
        assert a.shape == r.shape, name
        # Padding-free outputs: every element finite except the LSE of empty rows.
        if name != "lse":
            assert torch.isfinite(a).all(), f"{name} has NaN/inf (unwritten or overflow)"
        s = torch.where(torch.isfinite(s.detach()), s.detach(), r.detach().to(s.dtype))
        bound = 2 * max_err(s, r) + 2e-3 * max(r.detach()[torch.isfinite(r)].abs().max().item()
                                               if torch.isfinite(r).any() else 0.0, 1.0)
        err = max_err(a, r)
        assert err <= bound, f"{name}: {err:.3e} > {bound:.3e}"
    return ours, ref


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("head_dim", [32, 64, 128])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_matches_reference(case, head_dim, dtype):
    b, nq, nk, h, hk, bq, bk, causal, mb, mh = case
    mask = random_block_mask(mb, mh, nq, nk, bq, bk)
    num, idx = maps_from_mask(mask)
    ours, ref = check(b, nq, nk, h, hk, head_dim, bq, bk, causal, num, idx, dtype)
    if mask.shape[2] > 1:  # query block 1 of (b 0, h 0) has no key block: out 0, lse -inf
        rows = slice(bq, min(2 * bq, nq))
        assert torch.equal(ours[0][0, rows, 0], torch.zeros_like(ours[0][0, rows, 0]))
        assert torch.isneginf(ours[1][0, rows, 0]).all()
        assert torch.equal(ours[2][0, rows, 0], torch.zeros_like(ours[2][0, rows, 0]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("blocks", [(64, 64), (128, 128), (64, 128), (128, 64)], ids=str)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_dense_maps_equal_full_attention(causal, blocks, dtype):
    bq, bk = blocks
    b, nq, nk, h, hk, d = 1, 1000, 1000, 2, 1, 64
    mask = torch.ones(1, 1, ceil_div(nq, bq), ceil_div(nk, bk), dtype=torch.bool, device=DEVICE)
    num, idx = maps_from_mask(mask, shuffle=False)
    check(b, nq, nk, h, hk, d, bq, bk, causal, num, idx, dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
def test_all_rows_empty_and_custom_scale(dtype):
    b, nq, nk, h, hk, d, bq, bk = 1, 200, 300, 2, 2, 64, 64, 128
    num = torch.zeros(1, 1, ceil_div(nq, bq), dtype=torch.int32, device=DEVICE)
    idx = torch.zeros(1, 1, ceil_div(nq, bq), 0, dtype=torch.int32, device=DEVICE)
    ours, _ = check(b, nq, nk, h, hk, d, bq, bk, False, num, idx, dtype)
    assert torch.equal(ours[0], torch.zeros_like(ours[0])) and torch.isneginf(ours[1]).all()
    for g in ours[2:]:
        assert torch.equal(g, torch.zeros_like(g))
    mask = random_block_mask(1, 2, nq, nk, bq, bk)
    num, idx = maps_from_mask(mask)
    check(b, nq, nk, h, hk, d, bq, bk, True, num, idx, dtype, scale=0.37)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_varlen_packed_sequences(causal, head_dim, dtype):
    lens_q, lens_k = [300, 1, 0, 517, 128], [250, 64, 70, 600, 128]
    bq, bk, h, hk = 128, 64, 4, 2
    cu_q = torch.tensor([0] + torch.tensor(lens_q).cumsum(0).tolist(), dtype=torch.int32, device=DEVICE)
    cu_k = torch.tensor([0] + torch.tensor(lens_k).cumsum(0).tolist(), dtype=torch.int64, device=DEVICE)
    mq, mk = ceil_div(max(lens_q), bq), ceil_div(max(lens_k), bk)
    mask = torch.zeros(len(lens_q), h, mq, mk, dtype=torch.bool, device=DEVICE)
    for s, (lq, lk) in enumerate(zip(lens_q, lens_k)):
        sub = random_block_mask(1, h, max(lq, 1), max(lk, 1), bq, bk, empty_row=False)
        mask[s, :, :sub.shape[2], :sub.shape[3]] = sub[0]
        mask[s, :, ceil_div(lq, bq):] = False
        mask[s, :, :, ceil_div(lk, bk):] = False
    num, idx = maps_from_mask(mask)
    check(1, sum(lens_q), sum(lens_k), h, hk, head_dim, bq, bk, causal, num, idx, dtype,
          cu_q=cu_q, cu_k=cu_k)


def test_non_contiguous_inputs_and_repeatability():
    b, n, h, d = 2, 333, 4, 64
    base = torch.randn(b, h, n, 3 * d, device=DEVICE, dtype=torch.bfloat16)
    q, k, v = (base[..., i * d:(i + 1) * d].transpose(1, 2) for i in range(3))
    mask = random_block_mask(1, h, n, n, 64, 64)
    num, idx = maps_from_mask(mask)
    kw = dict(kv_num_blocks=num, kv_indices=idx, block_size=64, is_causal=True)
    out = effattn.block_sparse_attention(q, k, v, **kw)
    ref, _ = block_sparse_reference(q.double(), k.double(), v.double(), **kw)
    assert (out.double() - ref).abs().max().item() < 5e-2
    for _ in range(3):
        assert torch.equal(out, effattn.block_sparse_attention(q, k, v, **kw))


@pytest.mark.skipif(DEVICE != "cuda", reason="CUDA-only errors")
def test_unsupported_on_cuda_raise_clearly():
    q = torch.randn(1, 128, 2, 64, device="cuda", dtype=torch.float32)
    with pytest.raises(RuntimeError, match="float16 and bfloat16"):
        effattn.block_sparse_attention(q, q, q, block_size=64)
    q = torch.randn(1, 128, 2, 48, device="cuda", dtype=torch.float16)
    with pytest.raises(NotImplementedError, match="head_dim"):
        effattn.block_sparse_attention(q, q, q, block_size=64)
