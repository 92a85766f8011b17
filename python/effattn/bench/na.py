"""Neighborhood-attention problems: effattn beside FlexAttention (NA as a mask_mod), dense
SDPA (cuDNN and flash on GPU) and, on the CPU, the explicit-mask reference."""
import math

import torch
import torch.nn.functional as F

from ..functional import neighborhood_attention
from ..reference import attention_reference, na_mask
from .cases import Case, Impl

# (batch, heads, grid, kernel, head_dim): ANCHORS.md's NA problems.
GPU_PROBLEMS = [
    (2, 16, (32768,), (2049,), 128),
    (1, 16, (128, 128), (13, 13), 128),
    (1, 16, (128, 128), (31, 31), 128),
    (64, 4, (56, 56), (7, 7), 32),
    (2, 16, (16, 32, 32), (7, 7, 7), 64),
    (1, 24, (30, 48, 80), (18, 24, 24), 128),
]
# Reduced sizes for the CPU, with a window sweep per rank for the speed-up plot.
CPU_PROBLEMS = [
    (1, 4, (2048,), (17,), 32),
    (1, 4, (2048,), (129,), 32),
    (1, 4, (48, 48), (5, 5), 32),
    (1, 4, (48, 48), (13, 13), 32),
    (1, 2, (12, 16, 16), (3, 3, 3), 32),
    (1, 2, (12, 16, 16), (7, 7, 7), 32),
]


def closure(fn, *inputs):
    """A forward closure that remembers its differentiable inputs (for the backward timing)."""
    run = lambda: fn(*inputs)  # noqa: E731
    run.inputs = inputs
    return run


def problem_name(batch, heads, grid, kernel, dim):
    return (f"{len(grid)}D {'x'.join(map(str, grid))} K{'x'.join(map(str, kernel))} "
            f"B{batch} H{heads} D{dim}")


def _mask_mod(grid, kernel):
    """NATTEN windows (dilation 1, stride 1, non-causal) on row-major flattened tokens."""
    strides = [math.prod(grid[a + 1:]) for a in range(len(grid))]

    def mask_mod(b, h, q_idx, kv_idx):
        keep = None
        for a, (length, k) in enumerate(zip(grid, kernel)):
            qc, kc = (q_idx // strides[a]) % length, (kv_idx // strides[a]) % length
            start = torch.clamp(qc - k // 2, min=0, max=length - k)
            inside = (kc >= start) & (kc < start + k)
            keep = inside if keep is None else keep & inside
        return keep

    return mask_mod


def _flex():
    """A freshly compiled flex_attention: resetting dynamo per problem keeps the recompile
    limit from silently falling back to the eager path (which materialises N×N scores)."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    torch._dynamo.reset()
    return torch.compile(flex_attention, dynamic=False), create_block_mask


def make_cases(device, dtype, quick):
    problems = GPU_PROBLEMS if device == "cuda" else CPU_PROBLEMS
    if quick:
        problems = problems[:3] if device == "cuda" else problems[::2]
    cases = []
    for batch, heads, grid, kernel, dim in problems:
        n, window = math.prod(grid), math.prod(kernel)

        def heads_last(batch=batch, heads=heads, grid=grid, dim=dim):
            return [torch.randn(batch, *grid, heads, dim, device=device, dtype=dtype, requires_grad=True)
                    for _ in range(3)]

        def heads_first(batch=batch, heads=heads, n=n, dim=dim):
            return [torch.randn(batch, heads, n, dim, device=device, dtype=dtype, requires_grad=True)
                    for _ in range(3)]

        impls = [Impl("effattn", lambda kernel=kernel, heads_last=heads_last: closure(
            lambda q, k, v: neighborhood_attention(q, k, v, kernel), *heads_last()))]
        if device == "cuda":
            def flex_setup(grid=grid, kernel=kernel, n=n, heads_first=heads_first):
                flex, create_block_mask = _flex()
                block_mask = create_block_mask(_mask_mod(grid, kernel), None, None, n, n, device=device)
                return closure(lambda q, k, v: flex(q, k, v, block_mask=block_mask), *heads_first())

            impls.append(Impl("flex", flex_setup))
            if n <= 65536:
                from torch.nn.attention import SDPBackend, sdpa_kernel

                for label, backend in (("sdpa-cudnn dense", SDPBackend.CUDNN_ATTENTION),
                                       ("sdpa-flash dense", SDPBackend.FLASH_ATTENTION)):
                    def dense(q, k, v, backend=backend):
                        with sdpa_kernel(backend):
                            return F.scaled_dot_product_attention(q, k, v)

                    impls.append(Impl(label, lambda dense=dense, heads_first=heads_first: closure(
                        dense, *heads_first())))
        else:
            mask = na_mask(grid, kernel, (1,) * len(grid), (1,) * len(grid), (False,) * len(grid))

            def masked(q, k, v, mask=mask, batch=batch, heads=heads, dim=dim):
                return attention_reference(q.reshape(batch, -1, heads, dim), k.reshape(batch, -1, heads, dim),
                                           v.reshape(batch, -1, heads, dim), mask)[0]

            impls.append(Impl("masked reference", lambda masked=masked, heads_last=heads_last: closure(
                masked, *heads_last())))
            impls.append(Impl("sdpa dense", lambda heads_first=heads_first: closure(
                F.scaled_dot_product_attention, *heads_first())))
        cases.append(Case("na", problem_name(batch, heads, grid, kernel, dim),
                          flops_fwd=4 * batch * heads * n * window * dim, impls=impls,
                          x={"rank": len(grid), "window": window, "tokens": n}))
    return cases
