"""PyTorch custom-op contract: opcheck on every op, torch.compile(fullgraph=True)."""
import pytest
import torch

import effattn
from effattn.ops import na_backward_op, na_forward_op, na_op
from na_cases import CASES, make_qkv, max_err

# One case per rank, with dilation, stride, causal axes and GQA.
RANK_CASES = {1: CASES[2], 2: CASES[5], 3: CASES[9]}


def _op_args(rank, dtype=torch.float64, requires_grad=True):
    case = RANK_CASES[rank]
    q, k, v = make_qkv(case, dtype, requires_grad=requires_grad)
    _, ks, dil, st, causal, _, _ = case
    return (q, k, v), (list(ks), list(dil), list(st), list(causal), None)


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_opcheck_forward_ops(rank):
    tensors, window = _op_args(rank)
    torch.library.opcheck(na_forward_op(rank), (*tensors, *window))
    torch.library.opcheck(na_op(rank), (*tensors, *window))


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("with_grad_lse", [False, True])
def test_opcheck_backward_op(rank, with_grad_lse):
    (q, k, v), window = _op_args(rank, requires_grad=False)
    out, lse = na_forward_op(rank)(q, k, v, *window)
    grad_lse = torch.randn_like(lse) if with_grad_lse else None
    torch.library.opcheck(na_backward_op(rank),
                          (torch.randn_like(out), grad_lse, q, k, v, out, lse, *window))


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_compile_fullgraph_forward_and_backward(rank):
    torch._dynamo.reset()
    (q, k, v), window = _op_args(rank, dtype=torch.float32)
    ks, dil, st, causal, _ = window

    def fn(q, k, v):
        out, lse = effattn.neighborhood_attention(q, k, v, ks, dil, st, causal, return_lse=True)
        return (out * out).sum() + lse.sum()

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    eager_loss = fn(q, k, v)
    eager_grads = torch.autograd.grad(eager_loss, (q, k, v))
    loss = compiled(q, k, v)
    grads = torch.autograd.grad(loss, (q, k, v))
    assert max_err(loss, eager_loss) < 1e-4
    for a, b in zip(grads, eager_grads):
        assert max_err(a, b) < 1e-5


def test_compile_inductor_module():
    torch._dynamo.reset()
    layer = effattn.NeighborhoodAttention2D(32, 4, kernel_size=3, dilation=2)
    x = torch.randn(2, 9, 11, 32, requires_grad=True)
    compiled = torch.compile(layer, fullgraph=True)
    out = compiled(x)
    assert max_err(out, layer(x)) < 1e-5
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_opcheck_with_permuted_inputs(rank):
    # Heads-last views of heads-first tensors: outputs must still match the fake kernels.
    case = RANK_CASES[rank]
    grid, ks, dil, st, causal, heads, kv_heads = case
    def permuted(h):
        base = torch.randn(2, h, *grid, 8, dtype=torch.float64)
        return base.movedim(1, -2).requires_grad_()
    q, k, v = permuted(heads), permuted(kv_heads), permuted(kv_heads)
    window = (list(ks), list(dil), list(st), list(causal), None)
    torch.library.opcheck(na_forward_op(rank), (q, k, v, *window))
    out, lse = na_forward_op(rank)(q, k, v, *window)
    grad = torch.randn(2, heads, *grid, 8, dtype=torch.float64).movedim(1, -2)
    torch.library.opcheck(na_backward_op(rank), (grad, None, q.detach(), k.detach(), v.detach(), out, lse, *window))
