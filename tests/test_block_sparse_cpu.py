"""CPU block-sparse attention (DESIGN.md §5): the ops against the explicit-mask fp64 reference
(values, LSE, every gradient, also through the LSE), the low-precision rule, gradcheck, the
custom-op contract (opcheck, torch.compile), ragged tails, empty rows, GQA/MQA, broadcast maps,
variable-length batches, the map/pattern helpers and bad inputs."""
import pytest
import torch
import torch.nn.functional as F

import effattn
from effattn.block_sparse import (block_mask_to_indices, indices_to_block_mask,
                                  sink_local_block_mask, sliding_window_block_mask,
                                  strided_block_mask)
from effattn.reference import block_sparse_reference

OPS = torch.ops.effattn

# (B, Nq, Nk, H, H_kv, D, block_q, block_k, is_causal, map batch, map heads): ragged tails
# everywhere, Nq < Nk and Nq > Nk (bottom-right causal), GQA and MQA, broadcast maps.
CASES = [
    (2, 200, 200, 4, 2, 16, 64, 64, True, 2, 4),
    (1, 150, 300, 2, 1, 8, 128, 64, True, 1, 2),
    (2, 300, 130, 2, 2, 8, 64, 128, True, 2, 1),
    (2, 129, 129, 3, 1, 8, 128, 128, False, 1, 1),
    (1, 97, 250, 4, 4, 8, 64, 128, False, 1, 4),
]


def case_id(c):
    b, nq, nk, h, hk, d, bq, bk, causal, mb, mh = c
    return f"B{b}-Nq{nq}-Nk{nk}-H{h}kv{hk}-D{d}-blk{bq}x{bk}-{'causal' if causal else 'full'}-map{mb}x{mh}"


def ceil_div(a, b):
    return -(-a // b)


def make_qkv(b, nq, nk, h, hk, d, dtype, requires_grad=True):
    q = torch.randn(b, nq, h, d, dtype=dtype)
    k = torch.randn(b, nk, hk, d, dtype=dtype)
    v = torch.randn(b, nk, hk, d, dtype=dtype)
    return [t.requires_grad_(requires_grad) for t in (q, k, v)]


def random_block_mask(mb, mh, mq, mk, density=0.5, empty_row=True):
    mask = torch.rand(mb, mh, mq, mk) < density
    if empty_row and mq > 1:
        mask[0, 0, 1] = False  # a query block without any key block
    return mask


def max_err(a, b):
    """Max |a - b|, with -inf required at the same places (empty rows)."""
    a, b = a.double(), b.double()
    assert torch.equal(torch.isneginf(a), torch.isneginf(b)), "-inf (empty rows) differ"
    finite = torch.isfinite(b)
    assert torch.isfinite(a[finite]).all()
    return (a[finite] - b[finite]).abs().max().item() if finite.any() else 0.0


def rel_err(a, b):
    finite = torch.isfinite(b)
    return max_err(a, b) / max(b[finite].abs().max().item() if finite.any() else 0.0, 1.0)


def forward_backward(fn, q, k, v, grad_out, grad_lse):
    out, lse = fn(q, k, v)
    grads = torch.autograd.grad([out, lse], [q, k, v], [grad_out, grad_lse])
    return (out, lse, *grads)


def ours(mask, block_size, causal, scale=None):
    return lambda q, k, v: effattn.block_sparse_attention(
        q, k, v, block_mask=mask, block_size=block_size, is_causal=causal, scale=scale,
        return_lse=True)


def ref(mask, block_size, causal, scale=None):
    return lambda q, k, v: block_sparse_reference(q, k, v, block_mask=mask, block_size=block_size,
                                                  is_causal=causal, scale=scale)


NAMES = ("out", "lse", "dq", "dk", "dv")


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_values_and_gradients_match_reference(case, dtype):
    b, nq, nk, h, hk, d, bq, bk, causal, mb, mh = case
    q, k, v = make_qkv(b, nq, nk, h, hk, d, dtype)
    mask = random_block_mask(mb, mh, ceil_div(nq, bq), ceil_div(nk, bk))
    g_out = torch.randn_like(q)
    g_lse = torch.randn(q.shape[:-1], dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    got = forward_backward(ours(mask, (bq, bk), causal), q, k, v, g_out, g_lse)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    want = forward_backward(ref(mask, (bq, bk), causal), q64, k64, v64, g_out.double(), g_lse.double())
    assert got[0].dtype == dtype and got[1].dtype == g_lse.dtype
    assert got[1].shape == (b, nq, h)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for name, a, r in zip(NAMES, got, want):
        err = rel_err(a, r)
        assert err <= tol, f"{name}: relative error {err:.3e} > {tol}"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", [CASES[0], CASES[2]], ids=case_id)
def test_low_precision_follows_the_flash_attention_rule(case, dtype):
    # max|ours - ref64| <= 2 * max|reference computed in the same dtype - ref64| + atol
    b, nq, nk, h, hk, d, bq, bk, causal, mb, mh = case
    q, k, v = make_qkv(b, nq, nk, h, hk, d, dtype)
    mask = random_block_mask(mb, mh, ceil_div(nq, bq), ceil_div(nk, bk))
    g_out = torch.randn_like(q)
    g_lse = torch.randn(q.shape[:-1])
    got = forward_backward(ours(mask, (bq, bk), causal), q, k, v, g_out, g_lse)
    same = forward_backward(ref(mask, (bq, bk), causal), q, k, v, g_out, g_lse.to(dtype))
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    want = forward_backward(ref(mask, (bq, bk), causal), q64, k64, v64, g_out.double(), g_lse.double())
    for name, a, s, r in zip(NAMES, got, same, want):
        assert a.dtype == (torch.float32 if name == "lse" else dtype)
        assert max_err(a, r) <= 2 * max_err(s, r) + 1e-3, name


@pytest.mark.parametrize("varlen", [False, True], ids=["dense", "varlen"])
def test_gradcheck_fp64(varlen):
    if varlen:
        q, k, v = make_qkv(1, 100, 90, 2, 1, 4, torch.float64)
        cu_q = torch.tensor([0, 70, 100], dtype=torch.int32)
        cu_k = torch.tensor([0, 20, 90], dtype=torch.int32)
        # Sequence 0: 70 queries (2 blocks), 20 keys (1 block); sequence 1: 30 queries
        # (1 block, map row 1 unused), 70 keys (2 blocks).
        mask = torch.tensor([[[[True, False], [True, False]]], [[[False, True], [True, True]]]])
    else:
        q, k, v = make_qkv(1, 70, 80, 2, 1, 4, torch.float64)
        cu_q = cu_k = None
        mask = torch.tensor([[[True, False], [True, True]], [[False, True], [True, True]]])[None]
    num, idx = block_mask_to_indices(mask)

    def fn(q, k, v):
        out, lse = effattn.block_sparse_attention(
            q, k, v, kv_num_blocks=num, kv_indices=idx, block_size=64, is_causal=True,
            return_lse=True, cu_seqlens_q=cu_q, cu_seqlens_k=cu_k)
        return out, lse.masked_fill(torch.isinf(lse), 0.0)  # gradcheck cannot difference -inf

    assert torch.autograd.gradcheck(fn, (q, k, v))


# ---- the custom-op contract --------------------------------------------------------------------

def op_args(dtype=torch.float64, requires_grad=False, varlen=False):
    if varlen:
        q, k, v = make_qkv(1, 190, 170, 4, 2, 8, dtype, requires_grad)
        cu_q = torch.tensor([0, 130, 190], dtype=torch.int32)
        cu_k = torch.tensor([0, 60, 170], dtype=torch.int32)
        mask = random_block_mask(2, 4, 3, 2)
        mask[0, :, :, 1] = False  # sequence 0 has 60 keys: a single key block
    else:
        q, k, v = make_qkv(2, 140, 100, 4, 2, 8, dtype, requires_grad)
        cu_q = cu_k = None
        mask = random_block_mask(2, 1, 3, 2)
    num, idx = block_mask_to_indices(mask)
    return (q, k, v, num, idx, 64, 64, True, None, cu_q, cu_k)


@pytest.mark.parametrize("varlen", [False, True], ids=["dense", "varlen"])
def test_opcheck_forward_ops(varlen):
    args = op_args(requires_grad=True, varlen=varlen)
    torch.library.opcheck(OPS.block_sparse_attn_forward, args)
    torch.library.opcheck(OPS.block_sparse_attn, args)


@pytest.mark.parametrize("with_grad_lse", [False, True])
def test_opcheck_backward_op(with_grad_lse):
    args = op_args()
    out, lse = OPS.block_sparse_attn_forward(*args)
    grad_lse = torch.randn_like(lse) if with_grad_lse else None
    q, k, v, *rest = args
    torch.library.opcheck(OPS.block_sparse_attn_backward,
                          (torch.randn_like(out), grad_lse, q, k, v, out, lse, *rest))


def test_composite_op_equals_forward_op_and_short_schema():
    q, k, v, num, idx, bq, bk, causal, scale, _, _ = op_args()
    out = OPS.block_sparse_attn(q, k, v, num, idx, bq, bk, causal, scale)  # cu_seqlens default None
    ref_out, _ = OPS.block_sparse_attn_forward(q, k, v, num, idx, bq, bk, causal, scale)
    assert torch.equal(out, ref_out)


def test_compile_fullgraph_forward_and_backward():
    torch._dynamo.reset()
    q, k, v = make_qkv(2, 150, 150, 4, 2, 16, torch.float32)
    mask = sliding_window_block_mask(150, block_size=64, window_blocks=2)

    def fn(q, k, v, mask):
        out, lse = effattn.block_sparse_attention(q, k, v, block_mask=mask, block_size=64,
                                                  is_causal=True, return_lse=True)
        plain = effattn.block_sparse_attention(q, k, v, block_mask=mask, block_size=64)
        return (out * out).sum() + lse.sum() + plain.sum()

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    eager_loss = fn(q, k, v, mask)
    eager_grads = torch.autograd.grad(eager_loss, (q, k, v))
    loss = compiled(q, k, v, mask)
    grads = torch.autograd.grad(loss, (q, k, v))
    assert abs(loss.item() - eager_loss.item()) <= 1e-4 * max(1.0, abs(eager_loss.item()))
    for a, b in zip(grads, eager_grads):
        assert (a - b).abs().max().item() < 1e-5


# ---- semantics -----------------------------------------------------------------------------

@pytest.mark.parametrize("causal", [False, True])
def test_no_map_is_dense_attention_and_matches_sdpa(causal):
    q, k, v = make_qkv(2, 190, 190, 4, 4, 16, torch.float64, requires_grad=False)
    out = effattn.block_sparse_attention(q, k, v, block_size=(64, 128), is_causal=causal)
    sdpa = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                          is_causal=causal).transpose(1, 2)
    assert (out - sdpa).abs().max().item() < 1e-12


def test_causal_is_bottom_right_aligned_for_nq_below_nk():
    # Prefill with a cache: the Nq new queries are the last Nq positions of the Nk keys.
    q, k, v = make_qkv(1, 70, 200, 2, 2, 8, torch.float64, requires_grad=False)
    out = effattn.block_sparse_attention(q, k, v, block_size=64, is_causal=True)
    i = torch.arange(70)[:, None] + 130
    mask = torch.arange(200)[None, :] <= i
    sdpa = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                          attn_mask=mask).transpose(1, 2)
    assert (out - sdpa).abs().max().item() < 1e-12


def test_empty_rows_give_zero_output_minus_inf_lse_and_zero_gradients():
    # Nq > Nk causal: the first 100 queries see no key; block row 1 lists nothing; block row
    # 2 lists only a block that the causal mask hides entirely for some of its queries.
    q, k, v = make_qkv(1, 230, 130, 2, 1, 8, torch.float64)
    num = torch.tensor([[[2, 0, 1, 2]]], dtype=torch.int32)
    idx = torch.tensor([[[[0, 1], [0, 0], [1, 0], [1, 0]]]], dtype=torch.int32)
    out, lse = effattn.block_sparse_attention(q, k, v, kv_num_blocks=num, kv_indices=idx,
                                              block_size=64, is_causal=True, return_lse=True)
    ref_out, ref_lse = block_sparse_reference(q, k, v, kv_num_blocks=num, kv_indices=idx,
                                              block_size=64, is_causal=True)
    empty = torch.isneginf(ref_lse)
    assert empty[0, :100].all() and empty[0, 64:128].all() and empty.sum() < empty.numel()
    assert torch.equal(torch.isneginf(lse), empty)
    assert (out[empty[..., None].expand_as(out)] == 0).all()
    assert max_err(out, ref_out) < 1e-12
    (out.sum() + lse.masked_fill(empty, 0).sum()).backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()
    assert (q.grad[empty[..., None].expand_as(q)] == 0).all()
    # A map with no block at all: everything is zero, nothing is NaN.
    q2, k2, v2 = make_qkv(2, 70, 70, 2, 2, 8, torch.float32)
    none = torch.zeros(1, 1, 2, 2, dtype=torch.bool)
    out2, lse2 = effattn.block_sparse_attention(q2, k2, v2, block_mask=none, block_size=64,
                                                return_lse=True)
    assert (out2 == 0).all() and torch.isneginf(lse2).all()
    (out2.sum() + lse2.masked_fill(torch.isinf(lse2), 0).sum()).backward()
    assert all((t.grad == 0).all() for t in (q2, k2, v2))


@pytest.mark.parametrize("kv_heads", [1, 2], ids=["mqa", "gqa"])
def test_gqa_equals_repeated_kv_heads(kv_heads):
    q, k, v = make_qkv(2, 140, 140, 4, kv_heads, 8, torch.float64, requires_grad=False)
    mask = random_block_mask(2, 4, 3, 3)
    out = effattn.block_sparse_attention(q, k, v, block_mask=mask, block_size=64, is_causal=True)
    rep = 4 // kv_heads
    full = effattn.block_sparse_attention(q, k.repeat_interleave(rep, 2), v.repeat_interleave(rep, 2),
                                          block_mask=mask, block_size=64, is_causal=True)
    assert (out - full).abs().max().item() < 1e-13


@pytest.mark.parametrize("shape", [(1, 1), (2, 1), (1, 3)], ids=["b1h1", "bBh1", "b1hH"])
def test_broadcast_maps_equal_expanded_maps(shape):
    q, k, v = make_qkv(2, 200, 160, 3, 1, 8, torch.float64)
    mask = random_block_mask(*shape, 4, 2)
    num, idx = block_mask_to_indices(mask)
    out, lse = effattn.block_sparse_attention(q, k, v, kv_num_blocks=num, kv_indices=idx,
                                              block_size=(64, 128), is_causal=True, return_lse=True)
    num_e, idx_e = num.expand(2, 3, 4).contiguous(), idx.expand(2, 3, 4, 2).contiguous()
    out_e, lse_e = effattn.block_sparse_attention(q, k, v, kv_num_blocks=num_e, kv_indices=idx_e,
                                                  block_size=(64, 128), is_causal=True, return_lse=True)
    assert torch.equal(out, out_e) and torch.equal(lse, lse_e)


def test_index_order_and_unused_entries_do_not_matter():
    q, k, v = make_qkv(1, 130, 300, 2, 2, 8, torch.float64, requires_grad=False)
    num = torch.tensor([[[3, 1, 2]]], dtype=torch.int32)
    a = torch.tensor([[[[0, 2, 4, 1, 3], [3, 0, 0, 0, 0], [1, 4, 0, 0, 0]]]], dtype=torch.int32)
    b = torch.tensor([[[[4, 0, 2, 7, -5], [3, 99, 3, 3, 3], [4, 1, -1, 2, 0]]]], dtype=torch.int32)
    kw = dict(block_size=64, is_causal=False, return_lse=True)
    out_a, lse_a = effattn.block_sparse_attention(q, k, v, kv_num_blocks=num, kv_indices=a, **kw)
    out_b, lse_b = effattn.block_sparse_attention(q, k, v, kv_num_blocks=num, kv_indices=b, **kw)
    assert (out_a - out_b).abs().max().item() < 1e-13 and (lse_a - lse_b).abs().max().item() < 1e-13


def test_non_contiguous_inputs_and_scale():
    base = torch.randn(2, 3, 150, 16, dtype=torch.float64)  # [B, H, N, D]
    q, k, v = (base.transpose(1, 2) + i for i in range(3))
    assert not q.is_contiguous()
    mask = random_block_mask(1, 3, 3, 3)
    out = effattn.block_sparse_attention(q, k, v, block_mask=mask, block_size=64, scale=0.3)
    want, _ = block_sparse_reference(q.contiguous(), k.contiguous(), v.contiguous(), block_mask=mask,
                                     block_size=64, scale=0.3)
    assert max_err(out, want) < 1e-12
    assert (out - effattn.block_sparse_attention(q, k, v, block_mask=mask, block_size=64)).abs().max() > 1e-3


@pytest.mark.parametrize("broadcast", [False, True], ids=["per-seq-maps", "shared-map"])
def test_varlen_equals_separate_calls(broadcast):
    lens_q, lens_k = [130, 0, 70, 200], [130, 64, 190, 60]  # an empty query sequence; Nq != Nk
    bq, bk = 64, 128
    q, k, v = make_qkv(1, sum(lens_q), sum(lens_k), 4, 2, 8, torch.float64)
    cu_q = torch.tensor([0] + torch.tensor(lens_q).cumsum(0).tolist(), dtype=torch.int32)
    cu_k = torch.tensor([0] + torch.tensor(lens_k).cumsum(0).tolist(), dtype=torch.int64)
    mq = max(ceil_div(n, bq) for n in lens_q)
    if broadcast:
        # One map for all sequences (key block 0: every sequence has it).
        mask = torch.zeros(1, 4, mq, 1, dtype=torch.bool)
        mask[..., 0] = True
    else:
        mk = max(ceil_div(n, bk) for n in lens_k)
        mask = torch.zeros(len(lens_q), 4, mq, mk, dtype=torch.bool)
        for s, (nq, nk) in enumerate(zip(lens_q, lens_k)):
            mask[s, :, : ceil_div(nq, bq), : ceil_div(nk, bk)] = torch.rand(4, ceil_div(nq, bq), ceil_div(nk, bk)) < 0.6
    num, idx = block_mask_to_indices(mask)
    out, lse = effattn.block_sparse_attention(q, k, v, kv_num_blocks=num, kv_indices=idx,
                                              block_size=(bq, bk), is_causal=True, return_lse=True,
                                              cu_seqlens_q=cu_q, cu_seqlens_k=cu_k)
    g_out, g_lse = torch.randn_like(out), torch.randn_like(lse)
    grads = torch.autograd.grad([out, lse], [q, k, v], [g_out, g_lse])
    parts = []
    for s, (nq, nk) in enumerate(zip(lens_q, lens_k)):
        qs = q.detach()[:, cu_q[s]:cu_q[s + 1]].requires_grad_()
        ks = k.detach()[:, cu_k[s]:cu_k[s + 1]].requires_grad_()
        vs = v.detach()[:, cu_k[s]:cu_k[s + 1]].requires_grad_()
        m = torch.zeros(1, 4, ceil_div(nq, bq), ceil_div(nk, bk), dtype=torch.bool)
        m_src = mask[0 if broadcast else s][None, :, : ceil_div(nq, bq), : ceil_div(nk, bk)]
        m[..., : m_src.shape[-1]] = m_src
        o, l = effattn.block_sparse_attention(qs, ks, vs, block_mask=m, block_size=(bq, bk),
                                              is_causal=True, return_lse=True)
        sl_q = slice(int(cu_q[s]), int(cu_q[s + 1]))
        gq, gk, gv = torch.autograd.grad([o, l], [qs, ks, vs], [g_out[:, sl_q], g_lse[:, sl_q]],
                                         allow_unused=True)
        parts.append((o, l, gq, gk, gv))
    want = [torch.cat([p[i] for p in parts], dim=1) for i in range(5)]
    for name, a, b in zip(NAMES, (out, lse, *grads), want):
        assert max_err(a, b) < 1e-12, name
    ref_out, ref_lse = block_sparse_reference(q, k, v, kv_num_blocks=num, kv_indices=idx,
                                              block_size=(bq, bk), is_causal=True,
                                              cu_seqlens_q=cu_q, cu_seqlens_k=cu_k)
    assert max_err(out, ref_out) < 1e-12 and max_err(lse, ref_lse) < 1e-12


# ---- helpers -------------------------------------------------------------------------------

def test_block_mask_indices_round_trip():
    mask = torch.rand(2, 3, 5, 7) < 0.4
    mask[0, 0, 0] = False
    mask[1, 2, 4] = True
    num, idx = block_mask_to_indices(mask)
    assert num.dtype == idx.dtype == torch.int32 and idx.shape == (2, 3, 5, 7)
    assert torch.equal(num, mask.sum(-1).int())
    live = torch.arange(7) < num[..., None]
    listed = idx.masked_fill(~live, 100).sort(-1).values
    assert torch.equal(listed, idx.masked_fill(~live, 100))  # live entries ascending, first
    assert torch.equal(indices_to_block_mask(num, idx, 7), mask)
    # Indices with garbage past kv_num_blocks convert back the same way.
    garbage = idx.masked_fill(~live, -3)
    assert torch.equal(indices_to_block_mask(num, garbage, 7), mask)
    with pytest.raises(ValueError, match="num_k_blocks"):
        indices_to_block_mask(num, idx, 5)


def test_sliding_window_and_sink_local_patterns():
    m = sliding_window_block_mask(512, block_size=128, window_blocks=2)[0, 0]
    i, j = torch.arange(4)[:, None], torch.arange(4)[None, :]
    assert torch.equal(m, (j <= i) & (j >= i - 1))
    m = sliding_window_block_mask(512, block_size=128, window_blocks=2, causal=False)[0, 0]
    assert torch.equal(m, (j - i).abs() <= 1)
    s = sink_local_block_mask(512, block_size=128, sink_blocks=1, local_blocks=1)[0, 0]
    assert torch.equal(s, (j == i) | ((j == 0) & (j <= i)))
    # Nq != Nk and mixed block sizes: diagonal follows the bottom-right alignment.
    m = sliding_window_block_mask(100, 300, block_size=(64, 128), window_blocks=1)[0, 0]
    # queries 0..63 sit at keys 200..263 (key blocks 1..2); 64..99 at 264..299 (block 2).
    assert torch.equal(m, torch.tensor([[False, True, True], [False, False, True]]))
    # Causal attention = a window over every block + is_causal.
    q, k, v = make_qkv(1, 300, 300, 2, 2, 8, torch.float64, requires_grad=False)
    mask = sliding_window_block_mask(300, block_size=64, window_blocks=5)
    a = effattn.block_sparse_attention(q, k, v, block_mask=mask, block_size=64, is_causal=True)
    b = effattn.block_sparse_attention(q, k, v, block_size=64, is_causal=True)
    assert (a - b).abs().max().item() < 1e-13


def test_strided_patterns():
    p = strided_block_mask(64 * 20, block_size=64, pattern="power", local_blocks=1)[0, 0]
    assert p[19].nonzero().flatten().tolist() == [3, 11, 15, 17, 18, 19]  # 19 - {16, 8, 4, 2, 1, 0}
    assert not p.triu(1).any()
    s = strided_block_mask(64 * 8, block_size=64, pattern="strided", stride=4, num_heads=4,
                           local_blocks=1, sink_blocks=1)
    assert s.shape == (1, 4, 8, 8)
    for h in range(4):
        row = s[0, h, 7].nonzero().flatten().tolist()
        assert row == sorted({0, 7} | {n for n in range(8) if n % 4 == h % 4})
    assert s[0].any(0).tril().equal(torch.ones(8, 8, dtype=torch.bool).tril())  # heads cover all
    with pytest.raises(ValueError, match="pattern"):
        strided_block_mask(128, pattern="dilated")
    # Patterns feed the op directly (head-dependent map).
    q, k, v = make_qkv(1, 8 * 64 - 5, 8 * 64 - 5, 4, 2, 8, torch.float64, requires_grad=False)
    out = effattn.block_sparse_attention(q, k, v, block_mask=s, block_size=64, is_causal=True)
    want, _ = block_sparse_reference(q, k, v, block_mask=s, block_size=64, is_causal=True)
    assert max_err(out, want) < 1e-12


# ---- bad inputs --------------------------------------------------------------------------------

def _maps(mask):
    return block_mask_to_indices(mask)


def test_bad_maps_are_rejected_before_any_kernel():
    q, k, v = make_qkv(2, 130, 200, 4, 2, 8, torch.float32, requires_grad=False)
    num, idx = _maps(torch.ones(2, 4, 3, 2, dtype=torch.bool))
    api = effattn.block_sparse_attention

    def call(n, i, **kw):
        return api(q, k, v, kv_num_blocks=n, kv_indices=i, block_size=(64, 128), **kw)

    def op(n, i, bq=64, bk=128, **kw):
        return OPS.block_sparse_attn(q, k, v, n, i, bq, bk, False, None, **kw)

    bad = idx.clone()
    bad[1, 2, 0, 1] = 2
    for fn in (call, op):
        with pytest.raises(RuntimeError, match=r"kv_indices must hold key-block indices in \[0, Mk\) = \[0, 2\).*kv_indices\[1, 2, 0, 1\] = 2"):
            fn(num, bad)
    bad[1, 2, 0, 1] = -1
    with pytest.raises(RuntimeError, match=r"kv_indices.*\[0, 2\).*= -1"):
        op(num, bad)
    # Rows need not be ordered (an unordered row takes the sort-based duplicate check).
    torch.testing.assert_close(op(num, idx.flip(-1)), op(num, idx))  # other summation order
    dup = idx.clone()
    dup[0, 1, 2] = torch.tensor([1, 1], dtype=torch.int32)
    with pytest.raises(RuntimeError, match="must not repeat a key block"):
        op(num, dup)
    too_many = num.clone()
    too_many[0, 0, 0] = 3
    with pytest.raises(RuntimeError, match=r"kv_num_blocks must be in \[0, max_blocks\] = \[0, 2\]"):
        op(too_many, idx)
    with pytest.raises(RuntimeError, match=r"kv_num_blocks must be in"):
        op(num - 1 - num, idx)
    for fn, err in ((call, ValueError), (op, RuntimeError)):
        with pytest.raises(err, match="kv_num_blocks must be int32"):
            fn(num.long(), idx)
        with pytest.raises(err, match="kv_indices must be int32"):
            fn(num, idx.long())
        with pytest.raises(err, match=r"kv_num_blocks must have rank 3"):
            fn(num[0], idx)
        with pytest.raises(err, match=r"kv_indices must have shape \[\*kv_num_blocks.shape, max_blocks\]"):
            fn(num, idx[:, :, :2])
        with pytest.raises(err, match=r"kv_num_blocks.size\(2\) must be Mq = ceil\(Nq / block_q\)"):
            fn(num[:, :, :2], idx[:, :, :2])
        with pytest.raises(err, match=r"kv_num_blocks.size\(0\) must be 1 or B = 2"):
            fn(num.repeat(2, 1, 1), idx.repeat(2, 1, 1, 1))
        with pytest.raises(err, match=r"kv_num_blocks.size\(1\) must be 1 or H = 4"):
            fn(num[:, :2], idx[:, :2])
    with pytest.raises(RuntimeError, match="block_q must be 64 or 128, got 32"):
        op(num, idx, bq=32)
    with pytest.raises(RuntimeError, match="block_k must be 64 or 128, got 256"):
        op(num, idx, bk=256)
    with pytest.raises(ValueError, match="block_k must be 64 or 128, got 96"):
        api(q, k, v, block_size=(64, 96))
    with pytest.raises(ValueError, match="block_mask must have shape"):
        api(q, k, v, block_mask=torch.ones(1, 1, 3, 3, dtype=torch.bool), block_size=(64, 128))
    with pytest.raises(ValueError, match="block_mask must be bool"):
        api(q, k, v, block_mask=torch.ones(1, 1, 3, 2), block_size=(64, 128))
    with pytest.raises(ValueError, match="together"):
        api(q, k, v, kv_num_blocks=num)


def test_checked_maps_are_rechecked_after_in_place_changes(monkeypatch):
    """Maps that passed the value checks are remembered (block_map_cache.h) so repeated calls skip
    the checks' host syncs; an in-place change bumps the version counter and is checked again,
    a different geometry is checked again, and EFFATTN_BS_MAP_CACHE=0 checks every call."""
    q, k, v = make_qkv(1, 130, 200, 2, 2, 8, torch.float32, requires_grad=False)
    num, idx = _maps(torch.ones(1, 2, 3, 2, dtype=torch.bool))

    def op(n, i, kk=k, vv=v):
        return OPS.block_sparse_attn(q, kk, vv, n, i, 64, 128, False, None)

    want = op(num, idx)
    assert torch.equal(op(num, idx), want)  # a cache hit computes the same
    idx[0, 1, 2, 1] = 2  # in place: version bump
    with pytest.raises(RuntimeError, match=r"kv_indices.*\[0, 2\).*= 2"):
        op(num, idx)
    idx[0, 1, 2, 1] = 1
    assert torch.equal(op(num, idx), want)
    view = idx[0, 1]  # views share the version counter
    view[0, 0] = -1
    with pytest.raises(RuntimeError, match=r"kv_indices.*= -1"):
        op(num, idx)
    view[0, 0] = 0
    op(num, idx)
    num[0, 0, 0] = 3
    with pytest.raises(RuntimeError, match=r"kv_num_blocks must be in"):
        op(num, idx)
    num[0, 0, 0] = 2
    # Same tensors, fewer keys: index 1 is out of range for Mk = 1, so the maps are checked again.
    with pytest.raises(RuntimeError, match=r"kv_indices.*\[0, 1\)"):
        op(num, idx, k[:, :100], v[:, :100])
    # A write PyTorch cannot see (a numpy alias) is not re-checked, but the CPU kernels stay in
    # bounds.
    op(num, idx)
    alias = idx.numpy()
    alias[0, 0, 0, 0] = -50_000_000
    assert torch.isfinite(op(num, idx)).all()
    alias[0, 0, 0, 0] = 0
    # Inference tensors have no version counter: never cached, so every change is seen.
    with torch.inference_mode():
        num_i, idx_i = num.clone(), idx.clone()
        assert torch.equal(op(num_i, idx_i), want)
        assert torch.equal(op(num_i, idx_i), want)
        idx_i[0, 0, 0, 0] = 7
        with pytest.raises(RuntimeError, match=r"kv_indices.*= 7"):
            op(num_i, idx_i)
    monkeypatch.setenv("EFFATTN_BS_MAP_CACHE", "0")
    assert torch.equal(op(num, idx), want)
    with torch.no_grad():
        idx.data[0, 0, 0, 0] = 5  # bypasses the version counter: only seen with the cache off
    with pytest.raises(RuntimeError, match=r"kv_indices.*= 5"):
        op(num, idx)


def test_maps_used_by_the_op_can_still_be_swapped():
    """The checked-map cache holds no reference to the map tensors: a module's map buffers can
    be swapped (load_state_dict / .to under swap_module_params_on_conversion) after a call."""
    class Layer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("num", torch.tensor([[[1, 1]]], dtype=torch.int32))
            self.register_buffer("idx", torch.zeros(1, 1, 2, 2, dtype=torch.int32))

        def forward(self, q, k, v):
            return OPS.block_sparse_attn(q, k, v, self.num, self.idx, 64, 64, False, None)

    layer = Layer()
    q, k, v = make_qkv(1, 128, 128, 1, 1, 8, torch.float32, requires_grad=False)
    want = layer(q, k, v)
    state = {name: t.clone() for name, t in layer.state_dict().items()}
    swap = torch.__future__.get_swap_module_params_on_conversion()
    torch.__future__.set_swap_module_params_on_conversion(True)
    try:
        layer.load_state_dict(state)
    finally:
        torch.__future__.set_swap_module_params_on_conversion(swap)
    assert torch.equal(layer(q, k, v), want)


def test_bad_tensors_and_cu_seqlens_are_rejected():
    api = effattn.block_sparse_attention
    q, k, v = make_qkv(1, 130, 130, 3, 2, 8, torch.float32, requires_grad=False)
    with pytest.raises(ValueError, match=r"multiple of the number of key/value heads"):
        api(q, k, v, block_size=64)
    q, k, v = make_qkv(1, 130, 130, 4, 2, 8, torch.float32, requires_grad=False)
    with pytest.raises(ValueError, match="q must have rank 4"):
        api(q[0], k, v)
    with pytest.raises(ValueError, match="same dtype"):
        api(q, k.double(), v)
    cu = torch.tensor([0, 70, 130], dtype=torch.int32)
    decreasing = torch.tensor([0, 90, 60, 130], dtype=torch.int32)
    with pytest.raises(ValueError, match="cu_seqlens_q must be non-decreasing"):
        api(q, k, v, block_size=64, cu_seqlens_q=decreasing, cu_seqlens_k=decreasing)
    num, idx = _maps(torch.ones(1, 1, 2, 2, dtype=torch.bool))
    with pytest.raises(RuntimeError, match="cu_seqlens_q must be non-decreasing"):
        OPS.block_sparse_attn(q, k, v, num, idx, 64, 64, True, None, decreasing, decreasing)
    with pytest.raises(RuntimeError, match="cu_seqlens_k must end at Nk = 130"):
        OPS.block_sparse_attn(q, k, v, num, idx, 64, 64, True, None, cu,
                              torch.tensor([0, 70, 120], dtype=torch.int32))
    with pytest.raises(ValueError, match="given together"):
        api(q, k, v, block_size=64, cu_seqlens_q=cu)
    with pytest.raises(ValueError, match="must be int32 or int64"):
        api(q, k, v, block_size=64, cu_seqlens_q=cu.float(), cu_seqlens_k=cu.float())
    q2, k2, v2 = make_qkv(2, 130, 130, 4, 2, 8, torch.float32, requires_grad=False)
    with pytest.raises(ValueError, match="batch size B must be 1"):
        api(q2, k2, v2, block_size=64, cu_seqlens_q=cu, cu_seqlens_k=cu)
    # Varlen: indices are checked against each sequence's own key-block count.
    mask = torch.ones(2, 1, 2, 2, dtype=torch.bool)  # sequence 0 has 70 keys: 2 blocks of 64
    short = torch.tensor([0, 60, 130], dtype=torch.int32)  # sequence 0: 60 keys = 1 block
    num, idx = _maps(mask)
    with pytest.raises(RuntimeError, match=r"\[0, 1\).*for sequence 0"):
        api(q, k, v, kv_num_blocks=num, kv_indices=idx, block_size=64, cu_seqlens_q=cu,
            cu_seqlens_k=short)
    # Backward op: wrong gradient shapes.
    args = op_args()
    out, lse = OPS.block_sparse_attn_forward(*args)
    qq, kk, vv, *rest = args
    with pytest.raises(RuntimeError, match="grad_lse must have shape"):
        OPS.block_sparse_attn_backward(out, lse[:, :1], qq, kk, vv, out, lse, *rest)
