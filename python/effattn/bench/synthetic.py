"""Synthetic q/k/v with the structure real LLM attention has, for the estimator's accuracy
harness and tests: attention sinks, local decay, vertical columns (keys every query
likes), diagonal "slash" lines (keys at a fixed distance), and planted retrieval needles
(a query whose one matching key sits far back).

Each structure is set by the logit (q·k/√D, in nats) it adds, so the attention has the same
shape at every head dim; the defaults give a peaked distribution like real long-context
heads (most keys get almost no mass: at 64K tokens, 95 % of a row's mass lies in ~10 % of
its 64x64 blocks), with needles clearly above the sinks."""
import math
from dataclasses import dataclass

import torch


@dataclass
class Needle:
    query: int
    key: int


def _positional(n, dim, generator, max_wavelength):
    """Smooth random positional features of norm 1: nearby positions have similar features."""
    freqs = torch.rand(dim // 2, generator=generator) * (2 * math.pi / max_wavelength)
    angles = torch.arange(n)[:, None].float() * freqs[None, :]
    return torch.cat([angles.cos(), angles.sin()], dim=-1) / math.sqrt(dim / 2)


LOGITS = {"noise": 0.5, "sink": 13.0, "column": 9.0, "local": 8.0, "slash": 6.0, "needle": 24.0}


def llm_like_qkv(batch=1, n=1024, heads=4, kv_heads=2, dim=64, num_needles=4, seed=0,
                 sharpness=1.0, dtype=torch.float32, device="cpu", logits=None):
    """Returns (q, k, v, needles): q [B, N, H, D], k/v [B, N, H_kv, D] and the planted
    needles (same positions for every batch element and head). `logits` overrides entries
    of LOGITS (nats each structure adds); `sharpness` scales all of them."""
    g = torch.Generator().manual_seed(seed)
    lg = {**LOGITS, **(logits or {})}
    noise = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    root = dim ** 0.25  # a q part of size root·√L against a k part of root·√L adds L nats

    # Disjoint subspaces keep the structures from leaking into each other through large
    # vectors: dim 0 the sink direction, the next D/4 dims the needles, the rest positional
    # features and noise.
    nd = dim // 4
    rest = dim - 2 - nd

    def needle_dir():
        d = torch.zeros(dim)
        d[2:2 + nd] = noise(nd)
        return d / d.norm()

    pos = torch.zeros(n + 64, dim)
    pos[:, 2 + nd:] = _positional(n + 64, rest, g, max_wavelength=256.0)
    q = torch.zeros(batch, n, heads, dim)
    k = torch.zeros(batch, n, kv_heads, dim)
    spread = math.sqrt(lg["noise"]) * (dim / rest) ** 0.25  # noise logits of std lg["noise"]
    q[..., 2 + nd:] = spread * noise(batch, n, heads, rest)
    k[..., 2 + nd:] = spread * noise(batch, n, kv_heads, rest)
    v = noise(batch, n, kv_heads, dim)
    # Local decay: shared smooth positional features, stronger in some heads.
    for h in range(heads):
        q[:, :, h] += (0.75 + 0.25 * (h % 3)) * root * math.sqrt(lg["local"]) * pos[:n]
    k += root * math.sqrt(lg["local"]) * pos[:n][None, :, None]
    # Sinks and vertical columns: a direction every query carries, strong on a few keys.
    sink_dir = torch.zeros(dim)
    sink_dir[0] = 1.0
    for h in range(heads):  # sink-heavy and local-heavy heads
        q[:, :, h] += (0.9 + 0.15 * (h % 3)) * root * sink_dir
    columns = torch.randperm(n - 8, generator=g)[:4] + 8
    k[:, :4] += root * lg["sink"] * sink_dir
    k[:, columns] += root * lg["column"] * sink_dir
    # Slash lines: head h's queries also look `offset` tokens back.
    for h in range(heads):
        offset = 32 * (1 + h % 4)
        q[:, offset:, h] += root * math.sqrt(lg["slash"]) * pos[: n - offset] * (h % 2 == 0)
    # Needles: a unique direction shared by one late query and one early key.
    needles = []
    for _ in range(num_needles):
        qi = n - 1 - int(torch.randint(0, n // 4, (1,), generator=g))
        ki = int(torch.randint(64, max(65, n // 2), (1,), generator=g))
        direction = needle_dir() * root * math.sqrt(lg["needle"])
        q[:, qi] += direction
        k[:, ki] += direction
        needles.append(Needle(qi, ki))
    q = q * sharpness
    return (q.to(device, dtype), k.to(device, dtype), v.to(device, dtype), needles)
