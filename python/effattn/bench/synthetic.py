"""Synthetic q/k/v with the structure real LLM attention has, for the estimator's accuracy
harness and tests: attention sinks, local decay, vertical columns (keys every query
likes), diagonal "slash" lines (keys at a fixed distance), and planted retrieval needles
(a query whose one matching key sits far back)."""
import math
from dataclasses import dataclass

import torch


@dataclass
class Needle:
    query: int
    key: int


def _positional(n, dim, generator, max_wavelength):
    """Smooth random positional features: nearby positions have similar features."""
    freqs = torch.rand(dim // 2, generator=generator) * (2 * math.pi / max_wavelength)
    angles = torch.arange(n)[:, None].float() * freqs[None, :]
    return torch.cat([angles.cos(), angles.sin()], dim=-1) / math.sqrt(dim / 2)


def llm_like_qkv(batch=1, n=1024, heads=4, kv_heads=2, dim=64, num_needles=4, seed=0,
                 sharpness=4.0, dtype=torch.float32, device="cpu"):
    """Returns (q, k, v, needles): q [B, N, H, D], k/v [B, N, H_kv, D] and the planted
    needles (same positions for every batch element and head). `sharpness` scales q, i.e.
    the logits: real LLM heads are peaked, most keys get almost no mass."""
    g = torch.Generator().manual_seed(seed)
    group = heads // kv_heads
    noise = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    pos = _positional(n + 64, dim, g, max_wavelength=256.0)
    q = 0.3 * noise(batch, n, heads, dim)
    k = 0.3 * noise(batch, n, kv_heads, dim)
    v = noise(batch, n, kv_heads, dim)
    # Local decay: shared smooth positional features, stronger in some heads.
    for h in range(heads):
        q[:, :, h] += (2.0 + h % 3) * pos[:n]
    k += 2.5 * pos[:n][None, :, None]
    # Sinks and vertical columns: a direction every query carries, strong on a few keys.
    sink_dir = noise(dim)
    sink_dir /= sink_dir.norm()
    q += 1.5 * sink_dir
    columns = torch.randperm(n - 8, generator=g)[:4] + 8
    k[:, :4] += 5.0 * sink_dir
    k[:, columns] += 4.0 * sink_dir
    # Slash lines: head h's queries also look `offset` tokens back.
    for h in range(heads):
        offset = 32 * (1 + h % 4)
        q[:, offset:, h] += 3.0 * pos[: n - offset] * (h % 2 == 0)
    # Needles: a unique direction shared by one late query and one early key.
    needles = []
    for j in range(num_needles):
        qi = n - 1 - int(torch.randint(0, n // 4, (1,), generator=g))
        ki = int(torch.randint(64, max(65, n // 2), (1,), generator=g))
        direction = noise(dim)
        direction = 8.0 * direction / direction.norm()
        q[:, qi] += direction
        k[:, ki] += direction.repeat(kv_heads, 1)[None] if kv_heads > 1 else direction
        needles.append(Needle(qi, ki))
    del group
    q = q * sharpness
    return (q.to(device, dtype), k.to(device, dtype), v.to(device, dtype), needles)
