"""Sparse prefill problems: effattn's block-map estimation alone and the whole sparse
prefill (estimate + block-sparse attention) beside dense causal attention, on LLM-like
synthetic inputs. TF/s are dense-causal-equivalent (the work the prefill replaces)."""
import torch
import torch.nn.functional as F

from ..sparse_prefill import estimate_block_mask, sparse_prefill_attention
from .cases import Case, Impl
from .na import closure
from .synthetic import llm_like_qkv

# (tokens, heads, kv_heads, head_dim, threshold): issue 6's sizes; reduced on the CPU. At τ 1e-2
# the synthetic inputs keep 1.4 % / 0.7 % of the blocks with mass recall 0.98 / 0.96 and every
# needle (benchmarks/RESULTS.md, fourth session, run 6).
GPU_PROBLEMS = [(65536, 32, 32, 128, 1e-2), (131072, 32, 32, 128, 1e-2)]
CPU_PROBLEMS = [(2048, 4, 2, 64, 1e-2), (4096, 4, 2, 64, 1e-2)]


def make_cases(device, dtype, quick):
    problems = (GPU_PROBLEMS if device == "cuda" else CPU_PROBLEMS)[:1 if quick else None]
    cases = []
    attn_blocks = (128, 128) if device == "cuda" else None
    for n, heads, kv_heads, dim, tau in problems:
        def inputs(n=n, heads=heads, kv_heads=kv_heads, dim=dim):
            q, k, v, _ = llm_like_qkv(1, n, heads, kv_heads, dim, num_needles=4, dtype=dtype, device=device)
            return q, k, v

        group = heads // kv_heads
        first = lambda t, g=1: t.transpose(1, 2).repeat_interleave(g, 1)  # noqa: E731
        impls = [
            Impl("effattn estimate", lambda tau=tau, inputs=inputs: closure(
                lambda q, k: estimate_block_mask(q, k, tau)[0], *inputs()[:2]), backward=False),
            # On CUDA the attention runs on the 64x64 map coarsened to 128x128 (Hopper core tiles).
            Impl("effattn sparse prefill", lambda tau=tau, inputs=inputs: closure(
                lambda q, k, v: sparse_prefill_attention(q, k, v, tau, attention_block_size=attn_blocks),
                *inputs()), backward=False),
            Impl("sdpa dense causal", lambda inputs=inputs, group=group: closure(
                lambda q, k, v: F.scaled_dot_product_attention(first(q), first(k, group), first(v, group),
                                                               is_causal=True), *inputs()), backward=False),
        ]
        cases.append(Case("sparse", f"N{n} H{heads} D{dim} causal tau {tau:g}",
                          flops_fwd=2 * heads * n * n * dim, impls=impls, x={"tokens": n}))
    return cases
