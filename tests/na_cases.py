"""Neighborhood-attention cases shared by the CPU and CUDA suites: odd, non-square grids,
dilation, stride, causal axes, even kernels, GQA/MQA."""
import torch

# (grid, kernel_size, dilation, stride, is_causal, heads, kv_heads)
CASES = [
    ((37,), (5,), (1,), (1,), (False,), 2, 2),
    ((64,), (8,), (3,), (4,), (False,), 4, 1),
    ((29,), (6,), (2,), (1,), (True,), 4, 2),
    ((41,), (7,), (1,), (7,), (True,), 2, 1),
    ((11, 13), (3, 5), (1, 1), (1, 1), (False, False), 2, 2),
    ((14, 9), (4, 2), (2, 3), (3, 2), (False, True), 4, 2),
    ((17, 10), (5, 4), (3, 2), (1, 4), (True, True), 3, 1),
    ((12, 12), (12, 12), (1, 1), (1, 1), (False, False), 2, 2),
    ((5, 6, 7), (3, 3, 3), (1, 1, 1), (1, 1, 1), (False, False, False), 2, 2),
    ((6, 9, 8), (2, 4, 3), (3, 2, 2), (2, 3, 1), (True, False, True), 4, 2),
    ((7, 5, 6), (4, 5, 2), (1, 1, 3), (4, 1, 2), (False, True, False), 2, 1),
]


def case_id(case):
    grid, ks, dil, st, causal, h, hk = case
    return (f"g{'x'.join(map(str, grid))}-k{'x'.join(map(str, ks))}-d{'x'.join(map(str, dil))}"
            f"-s{'x'.join(map(str, st))}-c{''.join('1' if c else '0' for c in causal)}-h{h}kv{hk}")


def make_qkv(case, dtype, device="cpu", batch=2, head_dim=8, requires_grad=False):
    grid, _, _, _, _, heads, kv_heads = case
    q = torch.randn(batch, *grid, heads, head_dim, dtype=dtype, device=device)
    k = torch.randn(batch, *grid, kv_heads, head_dim, dtype=dtype, device=device)
    v = torch.randn(batch, *grid, kv_heads, head_dim, dtype=dtype, device=device)
    return [t.requires_grad_(requires_grad) for t in (q, k, v)]


def window_args(case):
    _, ks, dil, st, causal, _, _ = case
    return ks, dil, st, causal


def max_err(a, b):
    return (a.double() - b.double()).abs().max().item()
