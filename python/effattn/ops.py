"""Python-side registrations for the C++ ops defined in csrc/registration.cpp: fake
(meta) kernels for torch.compile and autograd formulas. No op is defined here."""
import torch

from . import _C  # noqa: F401  (loads the library; its initialisers register the schemas)
from ._validation import check_na_tensors, check_na_window

__all__ = ["na_forward_op", "na_backward_op", "na_op"]


def na_op(rank):
    return getattr(torch.ops.effattn, f"na{rank}d")


def na_forward_op(rank):
    return getattr(torch.ops.effattn, f"na{rank}d_forward")


def na_backward_op(rank):
    return getattr(torch.ops.effattn, f"na{rank}d_backward")


def lse_dtype(dtype):
    """LSE is fp32, or fp64 for fp64 inputs (so fp64 gradients stay exact)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _register_na(rank):
    forward_name = f"effattn::na{rank}d_forward"
    backward_name = f"effattn::na{rank}d_backward"

    @torch.library.register_fake(forward_name)
    def _forward_fake(q, k, v, kernel_size, dilation, stride, is_causal, scale):
        check_na_tensors(rank, q, k, v)
        check_na_window(tuple(q.shape[1:-2]), kernel_size, dilation, stride, is_causal)
        out = q.new_empty(q.shape)
        lse = q.new_empty(q.shape[:-1], dtype=lse_dtype(q.dtype))
        return out, lse

    @torch.library.register_fake(backward_name)
    def _backward_fake(grad_out, grad_lse, q, k, v, out, lse, kernel_size, dilation, stride,
                       is_causal, scale):
        check_na_tensors(rank, q, k, v)
        return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)

    def setup_context(ctx, inputs, output):
        q, k, v, kernel_size, dilation, stride, is_causal, scale = inputs
        out, lse = output
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.window = (kernel_size, dilation, stride, is_causal, scale)

    def backward(ctx, grad_out, grad_lse):
        q, k, v, out, lse = ctx.saved_tensors
        if grad_out is None:
            grad_out = torch.zeros_like(out)
        dq, dk, dv = na_backward_op(rank)(grad_out, grad_lse, q, k, v, out, lse, *ctx.window)
        return dq, dk, dv, None, None, None, None, None

    torch.library.register_autograd(forward_name, backward, setup_context=setup_context)


for _rank in (1, 2, 3):
    _register_na(_rank)
