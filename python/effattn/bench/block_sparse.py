"""Block-sparse problems: effattn beside FlexAttention with the same BlockMask and SDPA
dense causal (GPU), or the explicit-mask reference (CPU). Random block maps with the
diagonal kept, causal; TF/s counts live pairs only (DESIGN.md §9)."""
import torch
import torch.nn.functional as F

from ..block_sparse import block_mask_to_indices, block_sparse_attention
from ..functional import neighborhood_attention
from ..reference import block_sparse_reference
from .cases import Case, Impl
from .na import closure

# (tokens, heads, head_dim, block, densities): issue 4's problem; a reduced one on the CPU.
GPU_PROBLEM = (32768, 32, 128, 128, (1.0, 0.5, 0.1))
CPU_PROBLEM = (2048, 4, 64, 64, (1.0, 0.5, 0.2))


def random_causal_block_mask(num_blocks, heads, density, seed=1):
    """[1, H, M, M] bool: each causal block kept with probability `density`, diagonal kept."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(heads, num_blocks, num_blocks, generator=g) < density
    idx = torch.arange(num_blocks)
    mask[:, idx, idx] = True
    return torch.tril(mask)[None]


def live_pairs(block_mask, block):
    """Allowed (query, key) pairs of a causal map with square blocks (diagonal blocks half)."""
    m = block_mask.shape[-1]
    diagonal = block_mask[..., torch.arange(m), torch.arange(m)].sum().item()
    return (block_mask.sum().item() - diagonal) * block * block + diagonal * block * (block + 1) // 2


def make_cases(device, dtype, quick):
    n, heads, dim, block, densities = GPU_PROBLEM if device == "cuda" else CPU_PROBLEM
    if quick:
        densities = densities[1:2]
    cases = []
    for density in densities:
        block_mask = random_causal_block_mask(n // block, heads, density).to(device)
        num_blocks, indices = block_mask_to_indices(block_mask)

        def heads_last():
            return [torch.randn(1, n, heads, dim, device=device, dtype=dtype, requires_grad=True) for _ in range(3)]

        def heads_first():
            return [torch.randn(1, heads, n, dim, device=device, dtype=dtype, requires_grad=True) for _ in range(3)]

        impls = [Impl("effattn", lambda num_blocks=num_blocks, indices=indices: closure(
            lambda q, k, v: block_sparse_attention(q, k, v, kv_num_blocks=num_blocks, kv_indices=indices,
                                                   block_size=(block, block), is_causal=True), *heads_last()))]
        if device == "cuda":
            def flex_setup(num_blocks=num_blocks, indices=indices):
                from torch.nn.attention.flex_attention import BlockMask, flex_attention

                torch._dynamo.reset()  # see na._flex: no silent eager fallback
                flex = torch.compile(flex_attention, dynamic=False)
                mask = BlockMask.from_kv_blocks(num_blocks, indices, BLOCK_SIZE=block,
                                                mask_mod=lambda b, h, q_idx, kv_idx: q_idx >= kv_idx,
                                                seq_lengths=(n, n))
                return closure(lambda q, k, v: flex(q, k, v, block_mask=mask), *heads_first())

            impls.append(Impl("flex", flex_setup))
            from torch.nn.attention import SDPBackend, sdpa_kernel

            def cudnn(q, k, v):
                with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                    return F.scaled_dot_product_attention(q, k, v, is_causal=True)

            impls.append(Impl("sdpa-cudnn dense causal", lambda: closure(cudnn, *heads_first())))
        else:
            impls.append(Impl("masked reference", lambda block_mask=block_mask: closure(
                lambda q, k, v: block_sparse_reference(q, k, v, block_mask=block_mask, block_size=(block, block),
                                                       is_causal=True)[0], *heads_last())))
            impls.append(Impl("sdpa dense causal", lambda: closure(
                lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), *heads_first())))
        if density == 1.0:
            # effattn's own dense causal path (causal 1D NA with the window = the sequence),
            # the yardstick for a full block map.
            impls.append(Impl("effattn dense causal (na1d K=N)", lambda: closure(
                lambda q, k, v: neighborhood_attention(q, k, v, (n,), is_causal=(True,)), *heads_last())))
        cases.append(Case("bs", f"N{n} H{heads} D{dim} causal {block}x{block} density {density:g}",
                          flops_fwd=4 * live_pairs(block_mask, block) * dim, impls=impls,
                          x={"density": density}))
    return cases
