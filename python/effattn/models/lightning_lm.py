"""A small TransNormerLLM / MiniMax-01 style causal language model on effattn's lightning
attention.

token embedding -> L pre-norm blocks [x + LightningAttention(RMSNorm(x)), x + SwiGLU(RMSNorm(x))]
-> final RMSNorm -> LM head tied to the embedding. Layer l gets the per-layer decay slopes
`lightning_slopes(H, l, L)`.

- `forward(input_ids, states=None, return_states=False)`: the parallel (blocked) form over
  the whole sequence; `states` (one `[B, H, D, D]` per layer) continues from earlier tokens,
  `return_states=True` also returns the per-layer final states.
- `step(token_ids, states)`: one token per sequence with the recurrent decode path
  (`LightningAttention.step`); constant memory and time per token.
- `generate(input_ids, max_new_tokens, greedy=True, ...)`: prefill with `forward`, then decode
  token by token with `step`.

Backends (`lightning_backend`): the blocks' parallel forward runs effattn's `lightning_attn`
by default; inside `with lightning_backend("fla"):` it runs fla's Triton kernels on the same
projections, decays and scale (`effattn.models.fla_backend`), so one model with one set of
weights can be timed on both. `step`/`generate` decoding always uses effattn. The setting is
process-wide and restored when the block exits.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..lightning import LightningAttention
from .backends import BackendSwitch
from .fla_backend import fla_lightning_forward

__all__ = ["LightningLM", "lightning_lm_mini", "lightning_backend", "get_lightning_backend"]

_LIGHTNING = BackendSwitch("lightning", ("effattn", "fla"), "effattn")


def get_lightning_backend():
    """The attention backend of the blocks' parallel forward now: "effattn" (default) or "fla"."""
    return _LIGHTNING.current


def lightning_backend(name):
    """Context manager: within the block, `LightningBlock.forward` computes attention with
    backend `name` ("effattn" or "fla"); the previous backend is restored on exit (also on an
    exception)."""
    return _LIGHTNING.use(name)


class SwiGLU(nn.Module):
    """w2(SiLU(w1 x) ⊙ w3 x)."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class LightningBlock(nn.Module):
    def __init__(self, dim, num_heads, layer_idx, num_layers, mlp_hidden, norm_eps=1e-6):
        super().__init__()
        self.norm1 = nn.RMSNorm(dim, eps=norm_eps)
        self.attn = LightningAttention(dim, num_heads, layer_idx=layer_idx, num_layers=num_layers)
        self.norm2 = nn.RMSNorm(dim, eps=norm_eps)
        self.mlp = SwiGLU(dim, mlp_hidden)

    def forward(self, x, state=None):
        """x [B, N, C] -> (y [B, N, C], final state [B, H, D, D])."""
        if _LIGHTNING.current == "fla":
            h, state = fla_lightning_forward(self.attn, self.norm1(x), state)
        else:
            h, state = self.attn(self.norm1(x), state)
        x = x + h
        return x + self.mlp(self.norm2(x)), state

    def step(self, x, state=None):
        """x [B, C] (one token per sequence) -> (y [B, C], state)."""
        h, state = self.attn.step(self.norm1(x), state)
        x = x + h
        return x + self.mlp(self.norm2(x)), state


class LightningLM(nn.Module):
    def __init__(self, vocab_size=256, embed_dim=128, depth=4, num_heads=4, mlp_hidden=None,
                 norm_eps=1e-6, tie_embeddings=True):
        super().__init__()
        if mlp_hidden is None:  # LLaMA's 8/3 · d, rounded up to a multiple of 16
            mlp_hidden = -(-int(8 * embed_dim / 3) // 16) * 16
        self.vocab_size = vocab_size
        self.embed_dim = embed_dim
        self.depth = depth
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.blocks = nn.ModuleList(
            LightningBlock(embed_dim, num_heads, i, depth, mlp_hidden, norm_eps) for i in range(depth))
        self.norm = nn.RMSNorm(embed_dim, eps=norm_eps)
        self.lm_head = nn.Linear(embed_dim, vocab_size, bias=False)
        self.apply(self._init_weights)
        if tie_embeddings:
            self.lm_head.weight = self.embed.weight

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def _check_states(self, states):
        if states is None:
            return [None] * self.depth
        states = list(states)
        if len(states) != self.depth:
            raise ValueError(f"states must hold one state per layer ({self.depth}), got {len(states)}")
        return states

    def forward(self, input_ids, states=None, return_states=False):
        """input_ids int [B, N] -> logits [B, N, vocab] (and the per-layer final states)."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must have shape [B, N], got {tuple(input_ids.shape)}")
        states = self._check_states(states)
        x = self.embed(input_ids)
        new_states = []
        for block, state in zip(self.blocks, states):
            x, state = block(x, state)
            new_states.append(state)
        logits = self.lm_head(self.norm(x))
        return (logits, new_states) if return_states else logits

    def step(self, token_ids, states=None):
        """token_ids int [B] -> (logits [B, vocab], states) through the recurrent decode path.
        Without grad, given states are updated in place."""
        if token_ids.dim() != 1:
            raise ValueError(f"token_ids must have shape [B], got {tuple(token_ids.shape)}")
        states = self._check_states(states)
        x = self.embed(token_ids)
        new_states = []
        for block, state in zip(self.blocks, states):
            x, state = block.step(x, state)
            new_states.append(state)
        return self.lm_head(self.norm(x)), new_states

    @torch.no_grad()
    def generate(self, input_ids, max_new_tokens, greedy=True, temperature=1.0, top_k=None,
                 generator=None):
        """Prefill `input_ids` [B, N ≥ 1] with the parallel form, then decode `max_new_tokens`
        tokens one at a time with the recurrent path. Greedy (argmax) by default, otherwise
        sampling at `temperature`, optionally restricted to the `top_k` most likely tokens.
        Returns [B, N + max_new_tokens]. Runs in eval mode (restored afterwards)."""
        if input_ids.dim() != 2 or input_ids.shape[1] < 1:
            raise ValueError(f"input_ids must have shape [B, N] with N >= 1, got {tuple(input_ids.shape)}")
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        was_training = self.training
        self.eval()
        try:
            logits, states = self.forward(input_ids, return_states=True)
            logits = logits[:, -1]
            tokens = [input_ids]
            for i in range(max_new_tokens):
                nxt = self._pick(logits, greedy, temperature, top_k, generator)
                tokens.append(nxt[:, None])
                if i + 1 < max_new_tokens:
                    logits, states = self.step(nxt, states)
            return torch.cat(tokens, dim=1)
        finally:
            self.train(was_training)

    @staticmethod
    def _pick(logits, greedy, temperature, top_k, generator):
        if greedy:
            return logits.argmax(dim=-1)
        logits = logits.float() / max(temperature, 1e-6)
        if top_k is not None:
            kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        return torch.multinomial(probs, 1, generator=generator)[:, 0]


def lightning_lm_mini(**kwargs):
    """Byte-level (vocab 256) lightning LM: embed 128, 2 layers, 4 heads (head dim 32),
    SwiGLU hidden 352, tied embeddings."""
    config = dict(vocab_size=256, embed_dim=128, depth=2, num_heads=4)
    config.update(kwargs)
    return LightningLM(**config)
