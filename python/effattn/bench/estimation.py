"""Accuracy harness of the block-map estimators on LLM-like inputs (bench/synthetic.py):
per threshold, the density, the attention-mass recall of the kept blocks, the output
relative L1 error against dense attention and the needle retrieval rate — for effattn's
quantized estimator and, at the same density (row by row), a mean-pooled block estimator
as in SpargeAttn/MInference."""
import math

import torch

from ..block_sparse import block_mask_to_indices, block_sparse_attention, indices_to_block_mask
from ..sparse_prefill import estimate_block_mask


def _heads_first(t, group):
    return t.transpose(1, 2).repeat_interleave(group, dim=1).double()


def dense_probabilities(q, k, scale=None):
    """Exact causal softmax probabilities [B, H, N, N] (float64)."""
    group, n = q.shape[2] // k.shape[2], q.shape[1]
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    scores = scale * torch.einsum("bhnd,bhmd->bhnm", _heads_first(q, 1), _heads_first(k, group))
    causal = torch.ones(n, n, dtype=torch.bool, device=q.device).tril()
    return torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)


def _element_mask(block_mask, n, block_size):
    block_q, block_k = block_size
    full = block_mask.repeat_interleave(block_q, 2).repeat_interleave(block_k, 3)
    return full[..., :n, :n]


def mean_pooled_block_mask(q, k, counts, block_size):
    """Keeps, per (batch, head, query block), the `counts` causally visible key blocks with
    the largest score of the block-mean query against the block-mean key."""
    block_q, block_k = block_size
    group, n = q.shape[2] // k.shape[2], q.shape[1]
    mq, mk = math.ceil(n / block_q), math.ceil(n / block_k)
    pool = lambda t, b, m: torch.nn.functional.pad(t, (0, 0, 0, 0, 0, m * b - n)).unflatten(1, (m, b)).sum(2)  # noqa: E731
    sizes_q = torch.full((mq,), float(block_q)); sizes_q[-1] = n - (mq - 1) * block_q
    sizes_k = torch.full((mk,), float(block_k)); sizes_k[-1] = n - (mk - 1) * block_k
    q_mean = pool(q.float(), block_q, mq) / sizes_q.to(q.device)[None, :, None, None]
    k_mean = (pool(k.float(), block_k, mk) / sizes_k.to(q.device)[None, :, None, None]).repeat_interleave(group, 2)
    scores = torch.einsum("bihd,bjhd->bhij", q_mean, k_mean)
    first_row = torch.arange(mq, device=q.device) * block_q
    last_row = torch.clamp(first_row + block_q - 1, max=n - 1)
    visible = (torch.arange(mk, device=q.device)[None, :] * block_k) <= last_row[:, None]
    scores = scores.masked_fill(~visible, float("-inf"))
    order = scores.argsort(dim=-1, descending=True)
    rank = order.argsort(dim=-1)
    return (rank < counts[..., None]) & visible


def evaluate_map(block_mask, q, k, v, probs, dense_out, needles, block_size):
    """(density, mass recall, output rel-L1 error, needle retrieval rate) of a block map."""
    n = q.shape[1]
    block_q, block_k = block_size
    mq = block_mask.shape[2]
    first_row = torch.arange(mq, device=q.device) * block_q
    visible_blocks = (torch.clamp(first_row + block_q - 1, max=n - 1) // block_k + 1).sum()
    density = (block_mask.sum() / (visible_blocks * block_mask.shape[0] * block_mask.shape[1])).item()
    recall = (probs * _element_mask(block_mask, n, block_size)).sum(-1).mean().item()
    num_blocks, indices = block_mask_to_indices(block_mask.to(torch.bool))
    out = block_sparse_attention(q, k, v, kv_num_blocks=num_blocks, kv_indices=indices,
                                 block_size=block_size, is_causal=True)
    error = ((out.double() - dense_out).abs().sum() / dense_out.abs().sum()).item()
    hits = [block_mask[:, :, nd.query // block_q, nd.key // block_k].float().mean().item() for nd in needles]
    return density, recall, error, (sum(hits) / len(hits) if hits else float("nan"))


def accuracy_table(q, k, v, needles, thresholds, block_size=(64, 64), sink_tokens=64, local_tokens=256):
    """Rows of dicts, one per (threshold, estimator)."""
    probs = dense_probabilities(q, k)
    group = q.shape[2] // k.shape[2]
    dense_out = torch.einsum("bhnm,bhmd->bnhd", probs, _heads_first(v, group))
    mk = math.ceil(q.shape[1] / block_size[1])
    rows = []
    for tau in thresholds:
        num_blocks, indices = estimate_block_mask(q, k, tau, block_size, sink_tokens, local_tokens)
        ours = indices_to_block_mask(num_blocks, indices, mk)
        pooled = mean_pooled_block_mask(q, k, num_blocks, block_size)
        for name, mask in (("effattn int8", ours), ("mean-pooled", pooled)):
            density, recall, error, needle_rate = evaluate_map(mask, q, k, v, probs, dense_out, needles, block_size)
            rows.append({"threshold": tau, "estimator": name, "density": density, "mass_recall": recall,
                         "rel_l1_error": error, "needle_retrieval": needle_rate})
    return rows


def format_accuracy(rows):
    lines = ["| threshold | estimator | density | mass recall | output rel-L1 error | needles found |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['threshold']:g} | {r['estimator']} | {r['density']:.3f} | {r['mass_recall']:.4f} | "
                     f"{r['rel_l1_error']:.2e} | {100 * r['needle_retrieval']:.0f}% |")
    return "\n".join(lines)


def estimator_accuracy(quick):
    """The harness on the CPU (accuracy does not depend on the device) at a size that fits
    the main job: rows of `accuracy_table`."""
    from .synthetic import llm_like_qkv

    n = 1024 if quick else 2048
    q, k, v, needles = llm_like_qkv(1, n, 4, 2, 64, num_needles=6)
    thresholds = [0.1, 0.01, 0.001] if quick else [0.1, 0.03, 0.01, 0.003, 0.001]
    return accuracy_table(q, k, v, needles, thresholds, sink_tokens=64, local_tokens=128)
