"""Lightning-attention problems: effattn beside fla's chunk_lightning_attn (GPU, when
installed), causal dense attention, and on the CPU the O(N²) masked reference."""
import torch
import torch.nn.functional as F

from ..lightning import lightning_attn, lightning_decode
from ..reference import lightning_reference
from .cases import Case, Impl
from .na import closure

# (batch, heads, tokens, head_dim): ANCHORS.md's lightning rows; CPU: an N sweep.
GPU_PROBLEMS = [(4, 32, 8192, 128), (1, 32, 65536, 128), (8, 16, 4096, 64)]
CPU_PROBLEMS = [(1, 4, 512, 64), (1, 4, 1024, 64), (1, 4, 2048, 64), (1, 4, 4096, 64)]
BLOCK = 64  # block size of the FLOP count (intra-block products + state products)
# Decode: (batch, heads, head_dim); memory-bound, reported in GB/s of fp32 state read + write.
GPU_DECODE = (64, 64, 128)
DECODE_GRAPH_STEPS = 8
CPU_DECODE = (8, 16, 64)


def lightning_flops(batch, heads, n, d, e):
    """Blocked-form work: intra QKᵀ and PV on B×B blocks, inter Q·S and the state update."""
    return 2 * batch * heads * n * (BLOCK * (d + e) + 2 * d * e)


def make_cases(device, dtype, quick):
    problems = GPU_PROBLEMS if device == "cuda" else CPU_PROBLEMS
    if quick:
        problems = problems[:1] if device == "cuda" else problems[:3]
    cases = []
    for batch, heads, n, dim in problems:
        slope = torch.linspace(0.05, 1.0, heads, device=device)

        def inputs(batch=batch, heads=heads, n=n, dim=dim):
            # Small values keep linear attention's unnormalised sums in range for bf16.
            return [(0.1 * torch.randn(batch, n, heads, dim, device=device, dtype=dtype)).requires_grad_()
                    for _ in range(3)]

        impls = [Impl("effattn", lambda slope=slope, inputs=inputs: closure(
            lambda q, k, v: lightning_attn(q, k, v, slope)[0], *inputs()))]
        if device == "cuda":
            try:
                from fla.ops.lightning_attn import chunk_lightning_attn

                impls.append(Impl("fla", lambda inputs=inputs: closure(
                    lambda q, k, v: chunk_lightning_attn(q, k, v, layer_idx=0, num_layers=1)[0],
                    *inputs())))
            except ImportError:
                pass
        elif n <= 2048:
            impls.append(Impl("masked reference", lambda slope=slope, inputs=inputs: closure(
                lambda q, k, v: lightning_reference(q, k, v, slope)[0], *inputs())))
        impls.append(Impl("sdpa causal dense", lambda inputs=inputs: closure(
            lambda q, k, v: F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True),
            *inputs())))
        cases.append(Case("lightning", f"B{batch} H{heads} N{n} D{dim}",
                          flops_fwd=lightning_flops(batch, heads, n, dim, dim), impls=impls,
                          x={"tokens": n}))
    cases.append(_decode_case(device, dtype))
    return cases


def _decode_case(device, dtype):
    batch, heads, dim = GPU_DECODE if device == "cuda" else CPU_DECODE
    slope = torch.linspace(0.05, 1.0, heads, device=device)
    # On the GPU the step is replayed from a CUDA graph of DECODE_GRAPH_STEPS steps, as a serving
    # loop runs it: the time is the kernels', not Python's per-call overhead.
    steps = DECODE_GRAPH_STEPS if device == "cuda" else 1

    def setup():
        q, k, v = (0.1 * torch.randn(batch, heads, dim, device=device, dtype=dtype) for _ in range(3))
        state = torch.zeros(batch, heads, dim, dim, device=device, dtype=torch.float32)
        step = lambda: lightning_decode(q, k, v, slope, state)  # noqa: E731
        if device != "cuda":
            return closure(lambda q, k, v: lightning_decode(q, k, v, slope, state), q, k, v)
        step()  # checks the slope once (a host sync), outside the capture
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(steps):
                step()
        return closure(graph.replay)

    state_bytes = batch * heads * dim * dim * 4
    name = f"decode B{batch} H{heads} D{dim}" + (f" (CUDA graph of {steps} steps)" if steps > 1 else "")
    return Case("lightning", name, flops_fwd=4 * batch * heads * dim * dim * steps,
                impls=[Impl("effattn", setup, backward=False)], bytes_fwd=2 * state_bytes * steps,
                x={"decode": 1})
