"""Quantized QK estimation and sparse prefill on the CPU (DESIGN.md §6)."""
import math

import pytest
import torch

import effattn
from effattn.bench.synthetic import llm_like_qkv
from effattn.reference import estimate_block_mask_reference, estimation_regions, smooth_quantize_reference
from effattn.sparse_prefill import block_density, calibrate_thresholds

N = 700  # not a multiple of any block


@pytest.fixture(scope="module")
def llm():
    return llm_like_qkv(batch=2, n=N, heads=4, kv_heads=2, dim=64, num_needles=3, seed=3)


@pytest.mark.parametrize("quant_block", [1, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_quantization_matches_reference_and_bounds_the_error(quant_block, dtype):
    x = torch.randn(2, 77, 3, 32).to(dtype) + 1.0
    ours = effattn.quantize_qk(x, quant_block)
    ref = smooth_quantize_reference(x, quant_block)
    for a, b in zip(ours, ref):
        assert a.dtype == b.dtype and torch.equal(a, b)
    x8, scale, mean = ours
    assert x8.dtype == torch.int8 and scale.shape == (2, math.ceil(77 / quant_block), 3)
    recon = x8.float() * scale.repeat_interleave(quant_block, 1)[:, :77, :, None] + mean[:, None]
    err = (recon - x.float()).abs()
    assert (err <= 0.5 * scale.repeat_interleave(quant_block, 1)[:, :77, :, None] + 1e-6).all()


@pytest.mark.parametrize("block_size", [(64, 64), (128, 64), (64, 128)])
@pytest.mark.parametrize("quant_block", [1, 128])
def test_map_equals_reference_from_the_same_quantized_values(llm, block_size, quant_block):
    q, k, _, _ = llm
    tau = torch.tensor([0.5, 1e-1, 1e-2, 1e-3])
    nb, idx = effattn.estimate_block_mask(q, k, tau, block_size, sink_tokens=64, local_tokens=96,
                                          quant_block=quant_block)
    ref, margin = estimate_block_mask_reference(
        q, k, smooth_quantize_reference(q, quant_block), smooth_quantize_reference(k, quant_block),
        torch.log(tau), block_size, quant_block, 64, 96, True)
    ours = effattn.indices_to_block_mask(nb, idx, ref.shape[-1])
    differ = ours != ref
    if differ.any():
        # Only ties: every differing block's best entry sits at the threshold.
        b, h, i, j = differ.nonzero(as_tuple=True)
        bq, bk = block_size
        for bb, hh, ii, jj in zip(b.tolist(), h.tolist(), i.tolist(), j.tolist()):
            block = margin[bb, hh, ii * bq:(ii + 1) * bq, jj * bk:(jj + 1) * bk]
            assert block.nan_to_num(float("-inf")).max().abs() < 1e-3
    assert differ.float().mean() < 1e-3
    # Sanity: the thresholds give genuinely sparse, different maps.
    density = block_density(nb, N, block_size)
    assert density.min() < 0.9 and len(set(density.tolist())) > 1


def test_always_kept_regions_are_in_the_map(llm):
    q, k, _, _ = llm
    # τ = 1e30: no estimated entry can qualify, the map is exactly the always-kept regions.
    nb, idx = effattn.estimate_block_mask(q, k, 1e30, (64, 64), sink_tokens=64, local_tokens=128)
    ours = effattn.indices_to_block_mask(nb, idx, math.ceil(N / 64))
    _, region = estimation_regions(N, 64, 64, 128, True)
    pad = math.ceil(N / 64) * 64 - N
    need = torch.nn.functional.pad(region, (0, pad, 0, pad)).view(11, 64, 11, 64).any(3).any(1)
    assert (ours == need).all()


def test_needles_are_found(llm):
    q, k, _, needles = llm
    nb, idx = effattn.estimate_block_mask(q, k, 1e-2, (64, 64), sink_tokens=64, local_tokens=64)
    ours = effattn.indices_to_block_mask(nb, idx, math.ceil(N / 64))
    for needle in needles:
        assert ours[:, :, needle.query // 64, needle.key // 64].all(), needle


def test_zero_threshold_keeps_every_visible_block_and_equals_dense(llm):
    q, k, v, _ = llm
    out, stats = effattn.sparse_prefill_attention(q, k, v, 0.0, return_stats=True)
    assert torch.allclose(stats["density"], torch.ones(4))
    dense = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2).repeat_interleave(2, 1),
        v.transpose(1, 2).repeat_interleave(2, 1), is_causal=True).transpose(1, 2)
    assert (out - dense).abs().max() < 5e-5  # fp32, logits up to ~25


def test_sparse_prefill_is_close_to_dense_and_calibration_meets_the_target(llm):
    q, k, v, _ = llm
    tau, errors = calibrate_thresholds(q, k, v, target_rel_error=0.02, sink_tokens=64, local_tokens=64)
    assert tau.shape == (4,) and (errors <= 0.02).all()
    out, stats = effattn.sparse_prefill_attention(q, k, v, tau, sink_tokens=64, local_tokens=64,
                                                  return_stats=True)
    assert stats["density"].mean() < 1.0


def test_defaults_fit_both_causal_and_non_causal_and_int_block_size():
    q, k = torch.randn(1, 150, 2, 32), torch.randn(1, 150, 2, 32)
    a = effattn.estimate_block_mask(q, k, 0.1, block_size=64, is_causal=False)  # sink_tokens → 0
    b = effattn.estimate_block_mask(q, k, 0.1, block_size=(64, 64), sink_tokens=0, is_causal=False)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    with pytest.raises(RuntimeError, match="sink_tokens must be 0 when is_causal=False"):
        torch.ops.effattn.estimate_block_mask(q, k, *effattn.quantize_qk(q), *effattn.quantize_qk(k),
                                              torch.zeros(2), 64, 64, 1, 64, 0, False, None)


def test_non_causal_symmetric_window():
    q, k, _, _ = llm_like_qkv(batch=1, n=200, heads=2, kv_heads=2, dim=32, num_needles=0)
    nb, idx = effattn.estimate_block_mask(q, k, 0.5, (64, 64), sink_tokens=0, local_tokens=70, is_causal=False)
    ref, _ = estimate_block_mask_reference(q, k, smooth_quantize_reference(q), smooth_quantize_reference(k),
                                           torch.log(torch.full((2,), 0.5)), (64, 64), 1, 0, 70, False)
    assert (effattn.indices_to_block_mask(nb, idx, 4) == ref).float().mean() > 0.99


def test_opcheck_and_compile(llm):
    q, k, _, _ = llm
    q, k = q[:1, :300], k[:1, :300]
    torch.library.opcheck(torch.ops.effattn.smooth_quantize, (q, 64, 8))
    qq, kq = effattn.quantize_qk(q), effattn.quantize_qk(k)
    log_tau = torch.log(torch.full((4,), 1e-2))
    torch.library.opcheck(torch.ops.effattn.estimate_block_mask,
                          (q, k, *qq, *kq, log_tau, 64, 64, 1, 64, 64, True, None))
    permuted = q.transpose(1, 2).contiguous().transpose(1, 2)  # heads-last view of a heads-first tensor
    torch.library.opcheck(torch.ops.effattn.smooth_quantize, (permuted, 1, 8))
    torch._dynamo.reset()
    compiled = torch.compile(lambda q, k: effattn.estimate_block_mask(q, k, 1e-2), fullgraph=True)
    for a, b in zip(compiled(q, k), effattn.estimate_block_mask(q, k, 1e-2)):
        assert torch.equal(a, b)


BAD = [
    (dict(threshold=-1e-3), ValueError, "threshold must be finite and >= 0"),
    (dict(threshold=torch.ones(3)), ValueError, r"threshold must be a float or a float32 tensor of shape \[H\]"),
    (dict(block_size=(32, 64)), ValueError, "block_size must be a pair of 64 or 128"),
    (dict(is_causal=False, sink_tokens=64), ValueError, "sink_tokens must be 0 when is_causal=False"),
    (dict(local_tokens=-1), ValueError, "sink_tokens and local_tokens must be >= 0"),
    (dict(bits=4), NotImplementedError, "only int8"),
    (dict(quant_block=0), ValueError, "quant_block must be >= 1"),
]


@pytest.mark.parametrize("kwargs,error,message", BAD, ids=[m for *_, m in BAD])
def test_bad_inputs(kwargs, error, message):
    q, k = torch.randn(1, 100, 4, 32), torch.randn(1, 100, 2, 32)
    args = dict(threshold=1e-2)
    args.update(kwargs)
    with pytest.raises(error, match=message):
        effattn.estimate_block_mask(q, k, **args)


def test_bad_shapes():
    with pytest.raises(ValueError, match="prefill: N_q == N_k"):
        effattn.estimate_block_mask(torch.randn(1, 100, 4, 32), torch.randn(1, 90, 2, 32), 1e-2)
    with pytest.raises(ValueError, match="multiple of the number of key/value heads"):
        effattn.estimate_block_mask(torch.randn(1, 100, 3, 32), torch.randn(1, 100, 2, 32), 1e-2)
    q = torch.randn(1, 100, 2, 32)
    with pytest.raises(RuntimeError, match="block_q must be 64 or 128"):
        torch.ops.effattn.estimate_block_mask(q, q, *effattn.quantize_qk(q), *effattn.quantize_qk(q),
                                              torch.zeros(2), 32, 64, 1, 0, 0, True, None)


def test_accuracy_harness_reports_both_estimators_at_equal_density():
    from effattn.bench.estimation import accuracy_table, format_accuracy

    q, k, v, needles = llm_like_qkv(batch=1, n=1024, heads=4, kv_heads=2, dim=64, num_needles=4, seed=5)
    rows = accuracy_table(q, k, v, needles, [0.01], sink_tokens=64, local_tokens=128)
    ours, pooled = rows
    assert ours["estimator"] == "effattn int8" and pooled["estimator"] == "mean-pooled"
    assert abs(ours["density"] - pooled["density"]) < 1e-6
    assert ours["needle_retrieval"] == 1.0 and ours["mass_recall"] > 0.9
    assert ours["rel_l1_error"] < pooled["rel_l1_error"]
    assert "| 0.01 | effattn int8 |" in format_accuracy(rows)


def test_attention_on_a_coarsened_map_keeps_every_estimated_block(llm):
    from effattn.sparse_prefill import coarsen_block_map

    q, k, v, _ = llm
    nb, idx = effattn.estimate_block_mask(q, k, 1e-2)
    fine = effattn.indices_to_block_mask(nb, idx, math.ceil(N / 64))
    nb2, idx2 = coarsen_block_map(nb, idx, math.ceil(N / 64), 2)
    coarse = effattn.indices_to_block_mask(nb2, idx2, math.ceil(N / 128))
    covered = coarse.repeat_interleave(2, 2).repeat_interleave(2, 3)[..., :fine.shape[2], :fine.shape[3]]
    assert not (fine & ~covered).any()
    # The unchecked path (sparse_prefill_attention's) gives the same coarse map, the same live
    # lists and zeros past them; odd block counts and broadcast heads included.
    for fac, rows in ((2, None), (3, 7)):
        n_f, i_f = (nb, idx) if rows is None else (nb[:, :1, :rows], idx[:, :1, :rows])
        nk = math.ceil(N / 64)
        nb_c, idx_c = coarsen_block_map(n_f, i_f, nk, fac)
        nb_u, idx_u = coarsen_block_map(n_f, i_f, nk, fac, checked=False)
        assert torch.equal(nb_u, nb_c)
        w = idx_u.shape[-1]
        assert int(nb_c.max()) <= w <= idx_c.shape[-1]
        live = torch.arange(w) < nb_c[..., None]
        assert torch.equal(torch.where(live, idx_c[..., :w], 0), idx_u)
    out = effattn.sparse_prefill_attention(q, k, v, 1e-2, attention_block_size=(128, 128))
    expected = effattn.block_sparse_attention(q, k, v, kv_num_blocks=nb2, kv_indices=idx2, block_size=(128, 128),
                                              is_causal=True)
    assert torch.equal(out, expected)
    with pytest.raises(ValueError, match="attention_block_size"):
        effattn.sparse_prefill_attention(q, k, v, 1e-2, attention_block_size=(96, 128))
