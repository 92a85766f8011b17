"""Bad input raises a clear error naming the argument, before any kernel runs (DESIGN.md §8)."""
import pytest
import torch

import effattn
from effattn.ops import na_forward_op


def qkv(grid=(8, 9), heads=4, kv_heads=2, dim=16, dtype=torch.float32):
    q = torch.randn(2, *grid, heads, dim, dtype=dtype)
    k = torch.randn(2, *grid, kv_heads, dim, dtype=dtype)
    return q, k, torch.randn_like(k)


BAD_CALLS = [
    ("rank", lambda q, k, v: effattn.na2d(q[0], k[0], v[0], 3), "q must have rank 5"),
    ("rank-generic", lambda q, k, v: effattn.neighborhood_attention(q[0, 0, 0], k, v, 3), "rank 4, 5 or 6"),
    ("k rank", lambda q, k, v: effattn.na2d(q, k[0], v, 3), "k must have rank 5"),
    ("kv shape", lambda q, k, v: effattn.na2d(q, k, v[..., :8], 3), "k and v must have the same shape"),
    ("token axes", lambda q, k, v: effattn.na2d(q, k[:, :7], v[:, :7], 3), "agree on the batch and token axes"),
    ("head dim", lambda q, k, v: effattn.na2d(q[..., :8], k, v, 3), "same head dim"),
    ("dtype", lambda q, k, v: effattn.na2d(q.double(), k, v, 3), "same dtype"),
    ("int dtype", lambda q, k, v: effattn.na2d(q.int(), k.int(), v.int(), 3), "float16, bfloat16, float32 or float64"),
    ("heads", lambda q, k, v: effattn.na2d(q[..., :3, :], k, v, 3), "multiple of the number of key/value heads"),
    ("kernel too big", lambda q, k, v: effattn.na2d(q, k, v, (3, 10)), "kernel_size[1] * dilation[1] must be <= the input length 9"),
    ("kernel*dilation", lambda q, k, v: effattn.na2d(q, k, v, 3, dilation=3), "kernel_size[0] * dilation[0]"),
    ("kernel < 2", lambda q, k, v: effattn.na2d(q, k, v, (1, 3)), "kernel_size[0] must be >= 2"),
    ("dilation < 1", lambda q, k, v: effattn.na2d(q, k, v, 3, dilation=(1, 0)), "dilation[1] must be >= 1"),
    ("stride > kernel", lambda q, k, v: effattn.na2d(q, k, v, 3, stride=4), "stride[0] must be in [1, kernel_size]"),
    ("stride < 1", lambda q, k, v: effattn.na2d(q, k, v, 3, stride=(1, 0)), "stride[1] must be in"),
    ("tuple length", lambda q, k, v: effattn.na2d(q, k, v, (3, 3, 3)), "kernel_size must be a int or a sequence of 2"),
    ("bad type", lambda q, k, v: effattn.na2d(q, k, v, "3"), "kernel_size must be"),
    ("scale nan", lambda q, k, v: effattn.na2d(q, k, v, 3, scale=float("nan")), "scale must be finite"),
    ("extra without values", lambda q, k, v: effattn.na2d(q, k, v, 3, additional_keys=k[:, 0]), "given together"),
    ("extra shape", lambda q, k, v: effattn.na2d(q, k, v, 3, additional_keys=k[:, 0, :, :1], additional_values=v[:, 0, :, :1]), "additional_keys must have shape"),
]


@pytest.mark.parametrize("name,call,message", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_python_api_raises_value_error(name, call, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace("*", r"\*")):
        call(*qkv())


@pytest.mark.parametrize("kwargs,message", [
    (dict(kernel_size=[3, 10]), r"kernel_size\[1\] \* dilation\[1\] must be <= the input length 9"),
    (dict(kernel_size=[1, 3]), r"kernel_size\[0\] must be >= 2"),
    (dict(stride=[4, 1]), r"stride\[0\] must be in \[1, kernel_size\]"),
    (dict(dilation=[0, 1]), r"dilation\[0\] must be >= 1"),
    (dict(is_causal=[False]), "is_causal must have 2 entries"),
    (dict(kernel_size=[2**62, 3], dilation=[4, 1]), r"kernel_size\[0\] \* dilation\[0\] must be <= the input length"),
])
def test_cpp_op_checks_before_running(kwargs, message):
    q, k, v = qkv()
    args = dict(kernel_size=[3, 3], dilation=[1, 1], stride=[1, 1], is_causal=[False, False])
    args.update(kwargs)
    with pytest.raises(RuntimeError, match=message):
        na_forward_op(2)(q, k, v, args["kernel_size"], args["dilation"], args["stride"],
                         args["is_causal"], None)


def test_cpp_op_rejects_bad_heads_and_backward_shapes():
    q, k, v = qkv()
    with pytest.raises(RuntimeError, match="multiple of the number of key/value heads"):
        na_forward_op(2)(q[..., :3, :], k, v, [3, 3], [1, 1], [1, 1], [False, False], None)
    out, lse = na_forward_op(2)(q, k, v, [3, 3], [1, 1], [1, 1], [False, False], None)
    with pytest.raises(RuntimeError, match="lse must have shape"):
        torch.ops.effattn.na2d_backward(out, None, q, k, v, out, lse[..., :2], [3, 3], [1, 1], [1, 1],
                                        [False, False], None)
    with pytest.raises(RuntimeError, match="grad_out must have the shape of q"):
        torch.ops.effattn.na2d_backward(out[:1], None, q, k, v, out, lse, [3, 3], [1, 1], [1, 1],
                                        [False, False], None)


def test_unsupported_device_is_a_clear_not_implemented_error():
    q, k, v = (t.to("meta") for t in qkv())
    with pytest.raises(NotImplementedError, match="no kernel for device 'meta'"):
        effattn.na2d(q, k, v, 3)


def test_module_rejects_bad_configuration_and_input():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        effattn.NeighborhoodAttention2D(30, 4, 3)
    layer = effattn.NeighborhoodAttention2D(32, 4, 3)
    with pytest.raises(ValueError, match="expects input"):
        layer(torch.randn(2, 8, 32))
