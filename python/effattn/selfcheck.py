"""`python -m effattn check`: every op against its fp64 reference on small problems.

Each check computes an op's outputs and gradients on the given device and the same
quantities with the pure-PyTorch reference in fp64 on the CPU, and reports the largest
relative error."""
import torch

from .block_sparse import block_sparse_attention, indices_to_block_mask
from .functional import neighborhood_attention
from .lightning import lightning_attn, lightning_decode
from .reference import (block_sparse_reference, estimate_block_mask_reference, lightning_reference,
                        na_reference, smooth_quantize_reference)
from .sparse_prefill import estimate_block_mask

# (name, grid, kernel_size, dilation, stride, is_causal, heads, kv_heads)
NA_CHECKS = [
    ("na1d", (33,), (5,), (2,), (1,), (False,), 4, 2),
    ("na1d causal+stride", (40,), (8,), (1,), (4,), (True,), 2, 1),
    ("na2d", (11, 14), (3, 4), (1, 2), (1, 2), (False, False), 4, 2),
    ("na2d causal axis", (9, 10), (5, 3), (1, 3), (2, 1), (True, False), 2, 2),
    ("na3d", (5, 6, 7), (3, 2, 3), (1, 2, 2), (1, 1, 3), (False, True, False), 4, 1),
    ("na3d kernel=input", (4, 5, 3), (4, 5, 3), (1, 1, 1), (1, 1, 1), (False,) * 3, 2, 2),
]

TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 2e-2, torch.bfloat16: 5e-2}


def _max_rel_err(ours, refs):
    return max(((a.double().cpu() - b).abs().max() / b.abs().max().clamp_min(1)).item()
               for a, b in zip(ours, refs))


def _compare(fn, ref_fn, inputs):
    """Runs fn on `inputs` and ref_fn on fp64 CPU copies; both return a tuple of tensors
    whose sum with random weights is backpropagated to every input."""
    outs = fn(*inputs)
    weights = [torch.randn_like(o) for o in outs]
    grads = torch.autograd.grad(outs, inputs, weights)
    ref_in = [t.detach().double().cpu().requires_grad_() for t in inputs]
    ref_outs = ref_fn(*ref_in)
    ref_grads = torch.autograd.grad(ref_outs, ref_in, [w.double().cpu() for w in weights])
    return _max_rel_err((*outs, *grads), (*ref_outs, *ref_grads))


def _na_checks(device, dtype):
    for name, grid, ks, dil, st, causal, heads, kv_heads in NA_CHECKS:
        q = torch.randn(2, *grid, heads, 16, device=device, dtype=dtype, requires_grad=True)
        k = torch.randn(2, *grid, kv_heads, 16, device=device, dtype=dtype, requires_grad=True)
        v = torch.randn_like(k, requires_grad=True)
        yield name, lambda q=q, k=k, v=v, ks=ks, dil=dil, st=st, causal=causal: _compare(
            lambda q, k, v: (neighborhood_attention(q, k, v, ks, dil, st, causal),),
            lambda q, k, v: (na_reference(q, k, v, ks, dil, st, causal)[0],), [q, k, v])


def _lightning_checks(device, dtype):
    # D = E = 64: a head dim the CUDA kernels support too; N not a multiple of their chunk.
    heads, n, dim = 3, 77, 64
    slope = torch.tensor([0.05, 0.3, 1.0], device=device)
    q, k, v = (0.2 * torch.randn(2, n, heads, dim, device=device, dtype=dtype) for _ in range(3))
    s0 = 0.2 * torch.randn(2, heads, dim, dim, device=device,
                           dtype=torch.float64 if dtype == torch.float64 else torch.float32)
    inputs = [t.requires_grad_() for t in (q, k, v, s0)]

    def ours(q, k, v, s0):
        return lightning_attn(q, k, v, slope, 0.7, initial_state=s0, output_final_state=True)

    def ref(q, k, v, s0):
        return lightning_reference(q, k, v, slope.double().cpu(), 0.7, initial_state=s0)

    yield "lightning_attn (+state in/out)", lambda: _compare(ours, ref, inputs)

    def decode():
        state = s0.detach().clone()
        out = lightning_decode(q[:, 0].detach(), k[:, 0].detach(), v[:, 0].detach(), slope, state, 0.7)
        ref_out, ref_state = lightning_reference(q[:, :1].detach().double().cpu(), k[:, :1].detach().double().cpu(),
                                                 v[:, :1].detach().double().cpu(), slope.double().cpu(), 0.7,
                                                 initial_state=s0.detach().double().cpu())
        return _max_rel_err((out, state), (ref_out[:, 0], ref_state))

    yield "lightning_decode (state in place)", decode


def _block_sparse_checks(device, dtype):
    n, heads, block = 200, 4, 64
    mask = torch.rand(1, heads, 4, 4) < 0.6
    mask[..., torch.arange(4), torch.arange(4)] = True
    q = torch.randn(2, n, heads, 32, device=device, dtype=dtype, requires_grad=True)
    k = torch.randn(2, n, 2, 32, device=device, dtype=dtype, requires_grad=True)
    v = torch.randn_like(k, requires_grad=True)
    for causal in (False, True):
        yield f"block_sparse_attn{' causal' if causal else ''} (GQA, ragged)", lambda causal=causal: _compare(
            lambda q, k, v: (block_sparse_attention(q, k, v, block_mask=mask.to(q.device), block_size=(block, block),
                                                    is_causal=causal),),
            lambda q, k, v: (block_sparse_reference(q, k, v, block_mask=mask, block_size=(block, block),
                                                    is_causal=causal)[0],), [q, k, v])


def _estimate_checks(device, dtype):
    """Fraction of blocks where the estimated map differs from the reference's (ties only)."""
    from .bench.synthetic import llm_like_qkv

    def check():
        q, k, _, _ = llm_like_qkv(1, 500, 4, 2, 64, num_needles=2, seed=1)
        tau = torch.tensor([0.3, 0.1, 0.01, 0.001])
        num, idx = estimate_block_mask(q.to(device, dtype), k.to(device, dtype), tau.to(device), (64, 64),
                                       sink_tokens=64, local_tokens=64)
        qd, kd = q.to(dtype).float(), k.to(dtype).float()
        ref, _ = estimate_block_mask_reference(qd, kd, smooth_quantize_reference(qd), smooth_quantize_reference(kd),
                                               torch.log(tau), (64, 64), 1, 64, 64, True)
        ours = indices_to_block_mask(num.cpu(), idx.cpu(), ref.shape[-1])
        return (ours != ref).float().mean().item()

    yield "estimate_block_mask (int8)", check


CHECKS = [_na_checks, _block_sparse_checks, _estimate_checks, _lightning_checks]


def run_checks(device="cpu", dtypes=None):
    """Returns rows (name, dtype, max relative error over outputs and grads, status) with
    status PASS, FAIL, or SKIP where this build has no kernel for the op on `device` (the
    reason is in the name). For the estimator the error is the fraction of blocks whose
    keep/drop decision differs from the reference's (ties at the threshold only)."""
    if dtypes is None:
        dtypes = [torch.float32] if device == "cpu" else [torch.float16, torch.bfloat16]
    rows = []
    for dtype in dtypes:
        for family in CHECKS:
            for name, check in family(device, dtype):
                try:
                    err = check()
                    ok = err <= (2e-3 if "estimate" in name else TOLERANCE[dtype])
                    status = "PASS" if ok else "FAIL"
                except NotImplementedError as e:  # no kernel for this device: reported, not failed
                    err, status, name = float("nan"), "SKIP", f"{name} (not on {device}: {e})"[:60]
                except Exception as e:  # a crash is a failed check, reported in the table
                    err, status, name = float("nan"), "FAIL", f"{name} ({type(e).__name__}: {e})"[:60]
                rows.append((name, str(dtype).replace("torch.", ""), err, status))
    return rows
