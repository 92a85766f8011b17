"""CUDA quantized QK estimation (DESIGN.md §6) against the CPU ops, through the same torch ops.

- smooth_quantize: the mean equals the CPU op's to fp32 rounding (it is summed in fp64 on
  CUDA); given that mean, scale and int8 values are bit-identical to the CPU formula.
- estimate_block_mask: fed the same quantized values as the CPU op, the map is the CPU op's,
  row layout included (kept blocks increasing, then zeros), except blocks decided by entries
  within rounding of the threshold (the CPU test's tie rule: the block's best margin in the
  reference is within 1e-3 of 0).
- pass 3's three kernels (EFFATTN_ESTIMATE_IMPL=mma / =wgmma / =wgmma2u, head_dim 128): the
  same map bit for bit, and the wgmma settings really run the Hopper kernels on sm_90
  (profiler: estimate_sm90_v2_kernel<1> for wgmma, <2> for wgmma2u and by default).
Odd N, GQA groups 1/2/3/4/8, block sizes 64/128 on each side, per-token / per-block / odd
quantization blocks, causal and not, per-head thresholds including 0 and 1e30. Freed memory
is poisoned with NaN before each run, so unwritten outputs show up.

EFFATTN_EST_TEST_DEVICE=cpu runs the same checks on the CPU kernels (a dry run of the test
logic on a machine without a GPU)."""
import math
import os

import pytest
import torch

import effattn
from effattn.bench.synthetic import llm_like_qkv
from effattn.reference import estimate_block_mask_reference
from effattn.sparse_prefill import _KERNEL_DEVICES

DEVICE = os.environ.get("EFFATTN_EST_TEST_DEVICE", "cuda")

pytestmark = pytest.mark.skipif(
    DEVICE not in _KERNEL_DEVICES or (DEVICE == "cuda" and not torch.cuda.is_available()),
    reason="needs a CUDA device and effattn built with CUDA")

ops = torch.ops.effattn


def poison_memory():
    """Fill free cached memory with NaN so unwritten outputs show up."""
    if DEVICE != "cuda":
        return
    free, _ = torch.cuda.mem_get_info()
    junk = torch.full((min(free // 4, 2**29) // 2,), float("nan"), device="cuda")
    del junk


def quantize_with_mean(x, mean, quant_block):
    """The CPU op's formula (csrc/cpu/estimate_cpu.cpp) with a given mean."""
    batch, n, heads, dim = x.shape
    blocks = math.ceil(n / quant_block)
    centered = x.float() - mean.unsqueeze(1)
    padded = torch.nn.functional.pad(centered.abs(), (0, 0, 0, 0, 0, blocks * quant_block - n))
    scale = (padded.view(batch, blocks, quant_block, heads, dim).amax((2, 4)) / 127.0).clamp_min(1e-12)
    per_token = scale.repeat_interleave(quant_block, 1)[:, :n, :, None]
    return torch.round(centered / per_token).clamp(-127, 127).to(torch.int8), scale


QUANT_CASES = [  # (B, N, H, D, quant_block, dtype)
    (2, 77, 3, 32, 1, torch.bfloat16),
    (2, 77, 3, 32, 64, torch.float32),
    (1, 1000, 4, 128, 1, torch.float16),
    (1, 1000, 4, 128, 128, torch.bfloat16),
    (2, 301, 2, 48, 5, torch.float64),  # D not a multiple of 32, odd quantization block
    (1, 1, 2, 64, 1, torch.float32),     # a single token: x - mean == 0
    # quantize_vec_kernel's other shapes (estimate_quant_tiling.h's plan_quantize): a row slot of
    # 24 threads (groups of 8 lanes straddle warps) and N past 8 CTAs per SM x R rows, so CTAs
    # sweep two rows each (the kOne loop's two-ahead prefetch across iterations); two column
    # tiles (H D / 16 = 320 vectors > 256); one 16-byte vector per head (kVecs 1); 16 lanes per
    # head (D 256). Then H D not a multiple of 8 elements: column sums of one element per thread
    # and quantize_rows_kernel.
    (1, 12000, 3, 128, 1, torch.bfloat16),
    (1, 300, 40, 128, 4, torch.float16),
    (1, 200, 2, 8, 1, torch.bfloat16),
    (1, 129, 3, 256, 2, torch.bfloat16),
    (2, 77, 3, 5, 1, torch.float16),
]


@pytest.mark.parametrize("case", QUANT_CASES, ids=lambda c: f"B{c[0]}-N{c[1]}-H{c[2]}-D{c[3]}-qb{c[4]}-{c[5]}")
def test_quantization_matches_cpu(case):
    batch, n, heads, dim, quant_block, dtype = case
    x = (torch.randn(batch, n, heads, dim) * 2 + torch.randn(heads, dim)).to(dtype)
    poison_memory()
    q8, scale, mean = (t.cpu() for t in ops.smooth_quantize(x.to(DEVICE), quant_block, 8))
    ref8, ref_scale, ref_mean = ops.smooth_quantize(x, quant_block, 8)
    assert q8.dtype == torch.int8 and scale.dtype == torch.float32 and mean.dtype == torch.float32
    assert q8.shape == x.shape and scale.shape == ref_scale.shape and mean.shape == ref_mean.shape
    tol = 2e-6 * x.float().abs().amax().item() + 1e-30
    assert (mean - ref_mean).abs().max().item() <= tol
    # Given the mean, everything else is the CPU formula bit for bit.
    exp8, exp_scale = quantize_with_mean(x, mean, quant_block)
    assert torch.equal(scale, exp_scale) and torch.equal(q8, exp8)
    # Against the CPU op itself: a mean one ulp apart moves few values by one step.
    assert (q8.int() - ref8.int()).abs().max().item() <= 1
    assert (q8 != ref8).float().mean().item() <= 1e-3
    assert torch.allclose(scale, ref_scale, rtol=1e-5, atol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_quantization_of_misaligned_input(dtype):
    """x contiguous but not 16-byte aligned (a view one element into its storage): the column
    sums load one element per thread and quantize_rows_kernel runs; same results as aligned."""
    batch, n, heads, dim = 1, 300, 4, 64
    flat = (torch.randn(batch * n * heads * dim + 1) * 2 + 0.5).to(dtype).to(DEVICE)
    x = flat[1:].view(batch, n, heads, dim)
    assert x.is_contiguous() and (DEVICE != "cuda" or x.data_ptr() % 16 != 0)
    for quant_block in (1, 7):
        a = ops.smooth_quantize(x, quant_block, 8)
        b = ops.smooth_quantize(x.clone(), quant_block, 8)  # a fresh, aligned copy
        assert torch.equal(a[1], b[1]) and torch.equal(a[2], b[2]), quant_block
        assert torch.equal(a[0], b[0]), quant_block


def test_quantization_of_non_contiguous_input():
    x = torch.randn(2, 4, 130, 64).to(DEVICE).transpose(1, 2)  # heads-last view of heads-first data
    a = ops.smooth_quantize(x, 16, 8)
    b = ops.smooth_quantize(x.contiguous(), 16, 8)
    assert all(torch.equal(s, t) for s, t in zip(a, b))
    assert a[0].is_contiguous()


# (B, N, H, H_kv, D, (block_q, block_k), quant_block, sink, local, causal, dtype, thresholds, scale)
MAP_CASES = [
    (2, 700, 4, 2, 64, (64, 64), 1, 64, 96, True, torch.bfloat16, [0.5, 1e-1, 1e-2, 1e-3], None),
    (1, 1000, 4, 1, 128, (128, 64), 128, 64, 256, True, torch.float16, [1e-2, 1e-3, 0.3, 1e30], None),
    (1, 777, 2, 2, 64, (64, 128), 64, 0, 100, False, torch.bfloat16, [1e-2, 0.0], None),
    (1, 513, 8, 2, 32, (128, 128), 1, 0, 0, True, torch.bfloat16, [1e-3] * 8, None),
    (1, 600, 8, 1, 64, (64, 64), 3, 32, 64, True, torch.float16, [1e-2] * 8, None),         # G = 8
    (1, 900, 6, 2, 128, (128, 128), 1, 0, 200, False, torch.bfloat16,
     [0.5, 1e-2, 1e-3, 1e-1, 1e-4, 1e-2], None),                                           # G = 3
    (1, 1536, 4, 4, 128, (64, 64), 1, 64, 256, True, torch.bfloat16, [1e-3, 1e-2, 1e-1, 1e-4], None),
    (2, 2100, 4, 2, 64, (128, 128), 16, 64, 128, True, torch.bfloat16, [1e-3] * 4, 0.05),
    (1, 65, 2, 1, 64, (64, 64), 1, 0, 0, False, torch.bfloat16, [1e-2, 1e-2], None),
    (1, 300, 2, 2, 64, (64, 64), 1, 0, 64, True, torch.bfloat16, [1e-2, 1e-1], -0.1),      # no pre-filter
]


def map_id(c):
    b, n, h, hk, d, (bq, bk), qb, sink, local, causal, dtype, _, scale = c
    return (f"B{b}-N{n}-H{h}kv{hk}-D{d}-blk{bq}x{bk}-qb{qb}-sink{sink}-local{local}-"
            f"{'causal' if causal else 'full'}-{str(dtype)[6:]}" + ("" if scale is None else f"-scale{scale}"))


def check_row_layout(nb, idx):
    """Each row: nb increasing block indices, then zeros."""
    mk = idx.shape[-1]
    pos = torch.arange(mk)
    live = pos < nb[..., None].long()
    assert (idx.masked_fill(live, 0) == 0).all()
    assert ((idx >= 0) & (idx < mk)).all()
    step = idx[..., 1:] - idx[..., :-1]
    assert (step.masked_fill(~live[..., 1:], 1) > 0).all()


def assert_maps_match(nb, idx, nb_ref, idx_ref, margin_fn, block_size):
    """Equal maps (row layout included), except blocks decided by ties at the threshold."""
    check_row_layout(nb, idx)
    mk = idx.shape[-1]
    ours = effattn.indices_to_block_mask(nb, idx, mk)
    ref = effattn.indices_to_block_mask(nb_ref, idx_ref, mk)
    differ = ours != ref
    if differ.any():
        margin = margin_fn()
        bq, bk = block_size
        for b, h, i, j in differ.nonzero().tolist():
            block = margin[b, h, i * bq:(i + 1) * bq, j * bk:(j + 1) * bk]
            assert block.nan_to_num(float("-inf")).max().abs().item() < 1e-3, (b, h, i, j)
        assert differ.float().mean().item() < 1e-2
    same_rows = ~differ.any(-1)
    assert torch.equal(nb[same_rows], nb_ref[same_rows])
    assert torch.equal(idx[same_rows], idx_ref[same_rows])


def make_qk(case, seed=0):
    b, n, h, hk, d, *_, dtype, _, _ = case
    q, k, _, _ = llm_like_qkv(batch=b, n=n, heads=h, kv_heads=hk, dim=d, num_needles=2, seed=seed)
    return q.to(dtype), k.to(dtype)


@pytest.mark.parametrize("case", MAP_CASES, ids=map_id)
def test_map_matches_cpu_from_the_same_quantized_values(case):
    _, n, h, _, d, block, quant_block, sink, local, causal, _, taus, scale = case
    q, k = make_qk(case)
    qq, kq = ops.smooth_quantize(q, quant_block, 8), ops.smooth_quantize(k, quant_block, 8)
    log_tau = torch.log(torch.tensor(taus, dtype=torch.float32))
    args = (*block, quant_block, sink, local, causal, scale)
    nb_ref, idx_ref = ops.estimate_block_mask(q, k, *qq, *kq, log_tau, *args)
    dev = lambda ts: [t.to(DEVICE) for t in ts]  # noqa: E731
    poison_memory()
    nb, idx = ops.estimate_block_mask(*dev([q, k, *qq, *kq, log_tau]), *args)
    assert nb.device.type == DEVICE and nb.dtype == torch.int32 and idx.dtype == torch.int32
    assert nb.shape == nb_ref.shape and idx.shape == idx_ref.shape
    margin_fn = lambda: estimate_block_mask_reference(  # noqa: E731
        q, k, qq, kq, log_tau, block, quant_block, sink, local, causal, scale)[1]
    assert_maps_match(nb.cpu(), idx.cpu(), nb_ref, idx_ref, margin_fn, block)


# Pass 3 has four CUDA kernels, picked per call by EFFATTN_ESTIMATE_IMPL (default wgmma where usable): mma.sync
# (estimate_int8.cu) and, with "wgmma" / "wgmma2u", the Hopper ones (estimate_int8_sm90.cu:
# v2, the default, / v2 with its chunk loop unrolled by 2 / v1) where they run (head_dim 128, sm_90a
# build on an sm_90 device; elsewhere they run the mma.sync kernel). All must give the same map. Cases: D = 128, in MAP_CASES' format, with their inputs
# (llm_like_qkv, or randn: also where llm_like_qkv needs more tokens).
IMPL_CASES = [
    ((2, 1100, 8, 1, 128, (64, 128), 1, 64, 256, True, torch.bfloat16, [1e-4] * 8, None), "llm_like"),  # G = 8
    ((1, 1025, 4, 2, 128, (64, 64), 1, 64, 128, True, torch.float16, [1e-3, 1e-2, 1e-4, 1e-1], None), "llm_like"),
    ((1, 777, 4, 2, 128, (128, 128), 64, 0, 100, False, torch.bfloat16, [1e-2, 1e-3, 0.0, 1e-1], -0.1),
     "llm_like"),
    ((1, 40, 2, 1, 128, (64, 64), 1, 0, 0, True, torch.bfloat16, [1e-2, 1e-2], None),
     "randn"),  # N < one chunk: a single, always kept block
    ((1, 777, 4, 2, 128, (128, 128), 64, 0, 100, False, torch.bfloat16, [0.5, 0.3, 0.1, 0.05], -0.1),
     "randn"),  # llm_like_qkv's map is dense with scale < 0, this one is not
] + [(c, "llm_like") for c in MAP_CASES if c[4] == 128]


def make_qk_randn(case, seed=0):
    b, n, h, hk, d, *_, dtype, _, _ = case
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, h, d, generator=g).to(dtype), torch.randn(b, n, hk, d, generator=g).to(dtype)


@pytest.mark.parametrize("case, inputs", IMPL_CASES, ids=lambda c: map_id(c) if isinstance(c, tuple) else c)
def test_mma_and_wgmma_kernels_give_the_same_map(case, inputs, monkeypatch):
    """EFFATTN_ESTIMATE_IMPL=mma, =wgmma and =wgmma2u in one process: the same map bit
    for bit, and the CPU op's (up to its ties)."""
    _, n, h, _, d, block, quant_block, sink, local, causal, _, taus, scale = case
    q, k = make_qk(case) if inputs == "llm_like" else make_qk_randn(case)
    qq, kq = ops.smooth_quantize(q, quant_block, 8), ops.smooth_quantize(k, quant_block, 8)
    log_tau = torch.log(torch.tensor(taus, dtype=torch.float32))
    args = (*block, quant_block, sink, local, causal, scale)
    on_device = [t.to(DEVICE) for t in (q, k, *qq, *kq, log_tau)]
    maps = {}
    for impl in ("mma", "wgmma", "wgmma2u"):
        monkeypatch.setenv("EFFATTN_ESTIMATE_IMPL", impl)  # read by the launcher at every call
        poison_memory()
        maps[impl] = [t.cpu() for t in ops.estimate_block_mask(*on_device, *args)]
    (nb, idx) = maps["mma"]
    live = torch.arange(idx.shape[-1]) < nb[..., None].long()
    for impl in ("wgmma", "wgmma2u"):
        nb_w, idx_w = maps[impl]
        assert torch.equal(nb_w, nb), impl
        assert torch.equal(idx_w[live], idx[live]), impl
    nb_w, idx_w = maps["wgmma"]
    nb_ref, idx_ref = ops.estimate_block_mask(q, k, *qq, *kq, log_tau, *args)
    margin_fn = lambda: estimate_block_mask_reference(  # noqa: E731
        q, k, qq, kq, log_tau, block, quant_block, sink, local, causal, scale)[1]
    assert_maps_match(nb_w, idx_w, nb_ref, idx_ref, margin_fn, block)


def test_wgmma_setting_runs_the_sm90_kernel(monkeypatch):
    """The kernel that runs, by name (profiler): =mma never a Hopper kernel; on an sm_90 device
    (D = 128) =wgmma the Hopper kernel estimate_sm90_v2_kernel<1>, =wgmma2u and unset (the default)
    estimate_sm90_v2_kernel<2>."""
    if DEVICE != "cuda":
        pytest.skip("profiles CUDA kernels")
    case = IMPL_CASES[0][0]
    _, n, h, _, d, block, quant_block, sink, local, causal, _, taus, scale = case
    q, k = (t.to(DEVICE) for t in make_qk(case))
    inputs = (q, k, *ops.smooth_quantize(q, quant_block, 8), *ops.smooth_quantize(k, quant_block, 8),
              torch.log(torch.tensor(taus, device=DEVICE)), *block, quant_block, sink, local, causal, scale)

    def kernels_run(impl):
        if impl is None:
            monkeypatch.delenv("EFFATTN_ESTIMATE_IMPL", raising=False)
        else:
            monkeypatch.setenv("EFFATTN_ESTIMATE_IMPL", impl)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            ops.estimate_block_mask(*inputs)
            torch.cuda.synchronize()
        return sorted({e.name for e in prof.events()})

    names = kernels_run("mma")
    assert any("estimate_kernel" in x for x in names) and not any("estimate_sm90" in x for x in names), names
    names = kernels_run("wgmma")
    if torch.cuda.get_device_capability() != (9, 0) or os.environ.get("EFFATTN_FORCE_SM80", "0") not in ("", "0"):
        pytest.skip("the wgmma kernel runs on sm_90 only (and not under EFFATTN_FORCE_SM80)")
    v2 = lambda u, xs: any(f"estimate_sm90_v2_kernel<{u}>" in x or f"estimate_sm90_v2_kernelILi{u}E" in x  # noqa: E731
                           for x in xs)  # demangled or not
    assert v2(1, names), names
    names = kernels_run("wgmma2u")
    assert v2(2, names), names
    names = kernels_run(None)  # the default
    assert v2(2, names), names


@pytest.mark.parametrize("case", [MAP_CASES[0], MAP_CASES[2], MAP_CASES[4]], ids=map_id)
def test_end_to_end_on_device(case):
    """Quantization and estimation both on the device, against the CPU op run on the
    device's quantized values."""
    _, n, h, _, d, block, quant_block, sink, local, causal, _, taus, scale = case
    q, k = make_qk(case, seed=1)
    tau = torch.tensor(taus, dtype=torch.float32)
    nb, idx = effattn.estimate_block_mask(q.to(DEVICE), k.to(DEVICE), tau.to(DEVICE), block, sink, local,
                                          causal, quant_block=quant_block, scale=scale)
    qq = [t.cpu() for t in ops.smooth_quantize(q.to(DEVICE), quant_block, 8)]
    kq = [t.cpu() for t in ops.smooth_quantize(k.to(DEVICE), quant_block, 8)]
    log_tau = torch.log(tau)
    nb_ref, idx_ref = ops.estimate_block_mask(q, k, *qq, *kq, log_tau, *block, quant_block, sink, local,
                                              causal, scale)
    margin_fn = lambda: estimate_block_mask_reference(  # noqa: E731
        q, k, qq, kq, log_tau, block, quant_block, sink, local, causal, scale)[1]
    assert_maps_match(nb.cpu(), idx.cpu(), nb_ref, idx_ref, margin_fn, block)


def test_non_contiguous_inputs_give_the_same_map():
    q, k = make_qk(MAP_CASES[0])
    q, k = q.to(DEVICE), k.to(DEVICE)
    qp = q.transpose(1, 2).contiguous().transpose(1, 2)  # heads-last views of heads-first data
    kp = k.transpose(1, 2).contiguous().transpose(1, 2)
    a = effattn.estimate_block_mask(q, k, 1e-2, (64, 64), 64, 96)
    b = effattn.estimate_block_mask(qp, kp, 1e-2, (64, 64), 64, 96)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_sparse_prefill_on_device_times_both_phases():
    q, k, v, _ = llm_like_qkv(batch=1, n=700, heads=4, kv_heads=2, dim=64, num_needles=2, seed=2)
    dtype = torch.bfloat16 if DEVICE == "cuda" else torch.float32
    q, k, v = (t.to(DEVICE, dtype) for t in (q, k, v))
    out, stats = effattn.sparse_prefill_attention(q, k, v, 0.0, return_stats=True)
    assert torch.allclose(stats["density"], torch.ones(4, device=DEVICE))
    group = q.shape[2] // k.shape[2]
    dense = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2).repeat_interleave(group, 1),
        v.transpose(1, 2).repeat_interleave(group, 1), is_causal=True).transpose(1, 2)
    assert (out.float() - dense.float()).abs().max().item() < (5e-2 if DEVICE == "cuda" else 1e-5)
    out, stats = effattn.sparse_prefill_attention(q, k, v, 1e-2, return_stats=True)
    assert stats["density"].mean().item() < 1.0
    if DEVICE == "cuda":
        assert stats["estimate_ms"] > 0 and stats["attention_ms"] > 0


def estimate_args(dim=64, dtype=torch.bfloat16, block_q=64, quant_block=1, sink_tokens=0, is_causal=True,
                  threshold_heads=2, threshold_device=None):
    """Arguments of ops.estimate_block_mask for q = k [1, 100, 2, dim]. The quantized tensors have
    the shapes and dtypes of smooth_quantize(q, 1, 8) (per-token scales) but are made without any
    effattn kernel, so that a rejected call runs nothing but the argument checks."""
    q = torch.randn(1, 100, 2, dim, device=DEVICE).to(dtype)
    quant = (torch.zeros(q.shape, device=DEVICE, dtype=torch.int8), torch.ones(1, 100, 2, device=DEVICE),
             torch.zeros(1, 2, dim, device=DEVICE))
    log_threshold = torch.zeros(threshold_heads, device=threshold_device or DEVICE)
    return (q, q, *quant, *quant, log_threshold, block_q, 64, quant_block, sink_tokens, 0, is_causal, None)


BAD_ESTIMATE_CASES = [  # (id, exception, message, changes to a valid call, CUDA-only limit)
    ("block_q", RuntimeError, "block_q must be 64 or 128", dict(block_q=32), False),
    ("sink_not_causal", RuntimeError, "sink_tokens must be 0 when is_causal=False",
     dict(sink_tokens=64, is_causal=False), False),
    ("threshold_shape", RuntimeError, "log_threshold must have shape", dict(threshold_heads=3), False),
    ("per_token_scales_for_quant_block_2", RuntimeError, "q_scale must be float32", dict(quant_block=2), False),
    ("threshold_on_cpu", RuntimeError, "on q's device", dict(threshold_device="cpu"), True),
    ("float32", NotImplementedError, "float16 and bfloat16", dict(dtype=torch.float32), True),
    ("head_dim_48", NotImplementedError, "head dims 32, 64 and 128", dict(dim=48), True),
]


@pytest.mark.parametrize("case", BAD_ESTIMATE_CASES, ids=lambda c: c[0])
def test_bad_estimate_inputs_are_rejected_before_any_kernel(case):
    _, error, message, changes, cuda_only = case
    if cuda_only and DEVICE != "cuda":
        pytest.skip("a limit of the CUDA kernels only")
    with pytest.raises(error, match=message):
        ops.estimate_block_mask(*estimate_args(**changes))


@pytest.mark.parametrize("args, error, message", [
    ((0, 8), RuntimeError, "quant_block must be >= 1"),
    ((1, 4), NotImplementedError, "bits must be 8"),
], ids=["quant_block_0", "bits_4"])
def test_bad_quantize_inputs_are_rejected_before_any_kernel(args, error, message):
    x = torch.randn(1, 100, 2, 64, device=DEVICE, dtype=torch.bfloat16)
    with pytest.raises(error, match=message):
        ops.smooth_quantize(x, *args)


def test_opcheck_and_compile():
    q, k = make_qk(MAP_CASES[0])
    q, k = q[:1, :300].to(DEVICE), k[:1, :300].to(DEVICE)
    torch.library.opcheck(ops.smooth_quantize, (q, 64, 8))
    qq, kq = ops.smooth_quantize(q, 1, 8), ops.smooth_quantize(k, 1, 8)
    log_tau = torch.log(torch.full((4,), 1e-2, device=DEVICE))
    torch.library.opcheck(ops.estimate_block_mask, (q, k, *qq, *kq, log_tau, 64, 64, 1, 64, 64, True, None))
    torch._dynamo.reset()
    compiled = torch.compile(lambda q, k: effattn.estimate_block_mask(q, k, 1e-2), fullgraph=True)
    for a, b in zip(compiled(q, k), effattn.estimate_block_mask(q, k, 1e-2)):
        assert torch.equal(a, b)


if __name__ == "__main__":
    # Timing, not a test: the estimation (both quantizations + the map) against cuDNN dense
    # causal attention at the sizes of DESIGN.md §6 (python tests/cuda/test_estimate_cuda.py [N]).
    import sys

    from triton.testing import do_bench

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 65536
    q, k, v = (torch.randn(1, n, 32, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    tau = torch.full((32,), 1e-3, device="cuda")
    lt = torch.log(tau)
    qq, kq = ops.smooth_quantize(q, 1, 8), ops.smooth_quantize(k, 1, 8)
    t_quant = do_bench(lambda: ops.smooth_quantize(q, 1, 8))
    t_map = do_bench(lambda: ops.estimate_block_mask(q, k, *qq, *kq, lt, 64, 64, 1, 64, 256, True, None))
    t_all = do_bench(lambda: effattn.estimate_block_mask(q, k, tau))
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.CUDNN_ATTENTION):
        t_dense = do_bench(lambda: torch.nn.functional.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True))
    nb, _ = ops.estimate_block_mask(q, k, *qq, *kq, lt, 64, 64, 1, 64, 256, True, None)
    macs = n * n / 2 * 32 * 128
    print(f"N={n}: quantize one tensor {t_quant:.3f} ms, map {t_map:.3f} ms "
          f"({2 * macs / t_map / 1e9:.0f} int8 TOP/s if every causal entry were estimated), "
          f"estimate_block_mask total {t_all:.3f} ms, cuDNN dense causal {t_dense:.3f} ms, "
          f"ratio {t_all / t_dense:.3f}, density {nb.float().sum().item() / (32 * (n // 64) * (n // 64 + 1) / 2):.3f}")
