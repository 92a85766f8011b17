"""Argument normalisation and checks shared by the functional API and the fake kernels.
Every error names the argument and the allowed range (DESIGN.md §8). The C++ ops repeat
these checks, so direct `torch.ops.effattn.*` calls are guarded too."""
import weakref

import torch

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def per_axis(value, rank, name, kind=int):
    """An int (bool) or a sequence of `rank` of them, as a tuple of length `rank`."""
    if isinstance(value, (bool, int)) and (kind is bool or not isinstance(value, bool)):
        return (kind(value),) * rank
    try:
        values = tuple(value)
    except TypeError:
        raise ValueError(f"{name} must be a {kind.__name__} or a sequence of {rank}, got {value!r}")
    if len(values) != rank or not all(isinstance(x, (bool, int)) for x in values):
        raise ValueError(f"{name} must be a {kind.__name__} or a sequence of {rank} "
                         f"{kind.__name__}s (one per token axis), got {value!r}")
    return tuple(kind(x) for x in values)


def check_na_tensors(rank, q, k, v):
    """Shape/dtype/device checks of q, k, v for an `na{rank}d` op."""
    ndim = rank + 3
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != ndim:
            raise ValueError(f"{name} must have rank {ndim} ([B, {rank} token axes, H, D]), "
                             f"got shape {tuple(t.shape)}")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got {tuple(k.shape)} and {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k and v must have the same dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.dtype not in _FLOAT_DTYPES:
        raise ValueError(f"q must be float16, bfloat16, float32 or float64, got {q.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k and v must be on the same device, got {q.device}, {k.device}, {v.device}")
    if q.shape[: rank + 1] != k.shape[: rank + 1]:
        raise ValueError("q and k must agree on the batch and token axes, got "
                         f"{tuple(q.shape)} and {tuple(k.shape)}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must have the same head dim, got {q.shape[-1]} and {k.shape[-1]}")
    if k.shape[-2] < 1 or q.shape[-2] % k.shape[-2] != 0:
        raise ValueError(f"the number of query heads ({q.shape[-2]}) must be a multiple of the "
                         f"number of key/value heads ({k.shape[-2]})")


def check_na_window(grid, kernel_size, dilation, stride, is_causal):
    """Per-axis window checks; all arguments are tuples of length rank."""
    rank = len(grid)
    for name, values in (("kernel_size", kernel_size), ("dilation", dilation),
                         ("stride", stride), ("is_causal", is_causal)):
        if len(values) != rank:
            raise ValueError(f"{name} must have {rank} entries (one per token axis), got {len(values)}")
    for a, (length, kernel, dil, st) in enumerate(zip(grid, kernel_size, dilation, stride)):
        if dil < 1:
            raise ValueError(f"dilation[{a}] must be >= 1, got {dil}")
        if kernel < 2:
            raise ValueError(f"kernel_size[{a}] must be >= 2, got {kernel}")
        if kernel * dil > length:
            raise ValueError(f"kernel_size[{a}] * dilation[{a}] must be <= the input length {length} "
                             f"on that axis, got {kernel} * {dil}")
        if not 1 <= st <= kernel:
            raise ValueError(f"stride[{a}] must be in [1, kernel_size] = [1, {kernel}], got {st}")


def check_extra_kv(q, k, additional_keys, additional_values):
    """Checks of the extra keys/values every query also attends to."""
    if (additional_keys is None) != (additional_values is None):
        raise ValueError("additional_keys and additional_values must be given together")
    if additional_keys is None:
        return
    for name, t in (("additional_keys", additional_keys), ("additional_values", additional_values)):
        if t.dim() != 4:
            raise ValueError(f"{name} must have shape [B, N_extra, H_kv, D], got {tuple(t.shape)}")
        if t.shape[0] != q.shape[0] or t.shape[2:] != k.shape[-2:]:
            raise ValueError(f"{name} must have shape [B={q.shape[0]}, N_extra, H_kv={k.shape[-2]}, "
                             f"D={k.shape[-1]}], got {tuple(t.shape)}")
        if t.dtype != q.dtype or t.device != q.device:
            raise ValueError(f"{name} must have the dtype and device of q")
    if additional_keys.shape != additional_values.shape:
        raise ValueError("additional_keys and additional_values must have the same shape")


def kernel_devices(op_name):
    """Devices this build has kernels for, for `effattn::<op_name>`. Call once at import:
    dynamo cannot trace the dispatcher query itself."""
    return frozenset(device for device, key in (("cpu", "CPU"), ("cuda", "CUDA"))
                     if torch._C._dispatch_has_kernel_for_dispatch_key(f"effattn::{op_name}", key))


def check_device(t, devices, api_name):
    """A clear NotImplementedError where this build has no kernel for t's device (never a
    silent fallback)."""
    if t.device.type not in devices:
        raise NotImplementedError(
            f"effattn.{api_name}: this build of effattn has no kernel for device '{t.device.type}'"
            + ("; CUDA kernels need a CUDA-enabled torch and nvcc at build time" if t.device.type == "cuda" else ""))


def can_read_values(*tensors):
    """Value checks (which read tensor contents) need real data: not while tracing, not on
    fake or meta tensors."""
    if torch.compiler.is_compiling():
        return False
    return not any(t is not None and (t.device.type == "meta" or isinstance(t, torch._subclasses.FakeTensor))
                   for t in tensors)


# Tensors whose values passed a check: (check name, id) -> (weak reference, version counter).
# Per-call value checks of a CUDA tensor wait for the GPU; a decode loop or a model passes the
# same slope tensor on every call, so a check is repeated only when the tensor was written to
# since (its version counter moved) or is a different tensor.
_CHECKED = {}
_CHECKED_MAX = 1024


def values_checked(name, t, check):
    """check(t) -> bool, remembered for t's current version. Inference tensors have no version
    counter: always checked."""
    if t.is_inference():
        return check(t)
    key = (name, id(t))
    entry = _CHECKED.get(key)
    if entry is not None and entry[0]() is t and entry[1] == t._version:
        return True
    if not check(t):
        return False
    if len(_CHECKED) >= _CHECKED_MAX:
        _CHECKED.clear()
    _CHECKED[key] = (weakref.ref(t), t._version)
    return True

