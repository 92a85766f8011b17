"""Hierarchical neighborhood-attention vision backbones: NAT (Hassani et al., 2023) and
DiNAT (Hassani & Shi, 2022) built from effattn's 2-D NA.

Layout follows NATTEN's classification models, so their parameter names match
(`patch_embed.proj.{0,1}`, `levels.{i}.blocks.{j}.attn.qkv`, `levels.{i}.downsample.reduction`,
`norm`, `head`): a checkpoint without relative position bias loads with `load_state_dict`
(see `effattn.models.convert`).

- patch embedding: two 3×3 stride-2 convolutions (overlapping, /4) + LayerNorm
- stages ("levels") of NATLayer blocks (pre-norm NA + GELU MLP, stochastic depth), tokens
  channels-last [B, H, W, C]; a 3×3 stride-2 convolution + LayerNorm doubles the channels
  and halves the resolution between stages
- final LayerNorm, global average pool, linear head

Inputs are [B, 3, H, W] (any H, W ≥ 4; odd sizes fine) and the output is logits
[B, num_classes]; with `features_only=True` the model has no final norm/head and returns the
list of each stage's output (before downsampling) as NCHW tensors, like timm
(`model.feature_info` gives channels and reductions). When a stage's feature map is smaller
than kernel·dilation the window is clamped for that input (`effattn.models.layers`).
"""
import torch
from torch import nn

from .layers import NATLayer, trunc_normal_init

__all__ = ["NAT", "nat_mini", "nat_tiny", "dinat_tiny"]


class ConvTokenizer(nn.Module):
    """Overlapping patch embedding: two 3×3 stride-2 convolutions (/4), then LayerNorm."""

    def __init__(self, in_chans=3, embed_dim=64):
        super().__init__()
        self.proj = nn.Sequential(
            nn.Conv2d(in_chans, embed_dim // 2, kernel_size=3, stride=2, padding=1),
            nn.Conv2d(embed_dim // 2, embed_dim, kernel_size=3, stride=2, padding=1),
        )
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x):
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class ConvDownsampler(nn.Module):
    """3×3 stride-2 convolution doubling the channels, then LayerNorm (channels-last in/out)."""

    def __init__(self, dim):
        super().__init__()
        self.reduction = nn.Conv2d(dim, 2 * dim, kernel_size=3, stride=2, padding=1, bias=False)
        self.norm = nn.LayerNorm(2 * dim)

    def forward(self, x):
        return self.norm(self.reduction(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class NATBlock(nn.Module):
    """One stage: `depth` NATLayers, then (except the last stage) a ConvDownsampler."""

    def __init__(self, dim, depth, num_heads, kernel_size, dilations, downsample, mlp_ratio,
                 qkv_bias, qk_scale, drop, drop_path, layer_scale):
        super().__init__()
        self.blocks = nn.ModuleList(
            NATLayer(dim, num_heads, kernel_size, dilation=dilations[i], mlp_ratio=mlp_ratio,
                     qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop, drop_path=drop_path[i],
                     layer_scale=layer_scale)
            for i in range(depth))
        self.downsample = ConvDownsampler(dim) if downsample else None

    def forward_blocks(self, x):
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, x):
        x = self.forward_blocks(x)
        return x if self.downsample is None else self.downsample(x)


def _per_stage(value, stages, name):
    if isinstance(value, int):
        return [value] * stages
    value = list(value)
    if len(value) != stages:
        raise ValueError(f"{name} must be an int or have one entry per stage ({stages}), got {value!r}")
    return value


class NAT(nn.Module):
    """NAT / DiNAT backbone. `kernel_size`: int or one per stage; `dilations`: None (all 1) or,
    per stage, a list of per-block dilations (or one int for the whole stage)."""

    def __init__(self, embed_dim=64, depths=(3, 4, 18, 5), num_heads=(2, 4, 8, 16), kernel_size=7,
                 dilations=None, mlp_ratio=3.0, num_classes=1000, in_chans=3, qkv_bias=True,
                 qk_scale=None, drop_rate=0.0, drop_path_rate=0.2, layer_scale=None,
                 features_only=False):
        super().__init__()
        stages = len(depths)
        if len(num_heads) != stages:
            raise ValueError(f"num_heads must have one entry per stage ({stages}), got {num_heads!r}")
        kernels = _per_stage(kernel_size, stages, "kernel_size")
        if dilations is None:
            dilations = [1] * stages
        dilations = _per_stage(dilations, stages, "dilations")
        block_dilations = []
        for i, (depth, dil) in enumerate(zip(depths, dilations)):
            dil = [dil] if isinstance(dil, int) else list(dil)
            # A short list alternates: [1, 8] over 3 blocks is 1, 8, 1 (DiNAT's pattern).
            block_dilations.append([dil[j % len(dil)] for j in range(depth)])
        self.num_classes = num_classes
        self.features_only = features_only
        self.depths = tuple(depths)
        self.num_features = int(embed_dim * 2 ** (stages - 1))
        self.patch_embed = ConvTokenizer(in_chans, embed_dim)
        self.pos_drop = nn.Dropout(drop_rate)
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.levels = nn.ModuleList()
        self.feature_info = []
        for i in range(stages):
            dim = int(embed_dim * 2 ** i)
            start = sum(depths[:i])
            self.levels.append(NATBlock(
                dim, depths[i], num_heads[i], kernels[i], block_dilations[i],
                downsample=i < stages - 1, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                qk_scale=qk_scale, drop=drop_rate, drop_path=rates[start:start + depths[i]],
                layer_scale=layer_scale))
            self.feature_info.append(dict(num_chs=dim, reduction=4 * 2 ** i, module=f"levels.{i}"))
        if not features_only:
            self.norm = nn.LayerNorm(self.num_features)
            self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(trunc_normal_init)

    def forward_features(self, x):
        """[B, 3, H, W] -> final normalized tokens [B, H/32, W/32, C] (channels-last)."""
        x = self.pos_drop(self.patch_embed(x))
        for level in self.levels:
            x = level(x)
        return self.norm(x)

    def forward_head(self, x, pre_logits=False):
        x = x.flatten(1, 2).mean(dim=1)
        return x if pre_logits else self.head(x)

    def forward_intermediates(self, x):
        """List of each stage's output (before downsampling), NCHW."""
        x = self.pos_drop(self.patch_embed(x))
        features = []
        for level in self.levels:
            x = level.forward_blocks(x)
            features.append(x.permute(0, 3, 1, 2).contiguous())
            if level.downsample is not None:
                x = level.downsample(x)
        return features

    def forward(self, x):
        if x.dim() != 4:
            raise ValueError(f"{type(self).__name__} expects images [B, C, H, W], got shape {tuple(x.shape)}")
        if self.features_only:
            return self.forward_intermediates(x)
        return self.forward_head(self.forward_features(x))


def _build(defaults, kwargs):
    config = dict(defaults)
    config.update(kwargs)
    return NAT(**config)


NAT_MINI = dict(embed_dim=32, depths=(2, 2, 2), num_heads=(1, 2, 4), kernel_size=(5, 3, 3),
                mlp_ratio=2.0, drop_path_rate=0.0, num_classes=10)
NAT_TINY = dict(embed_dim=64, depths=(3, 4, 18, 5), num_heads=(2, 4, 8, 16), kernel_size=7,
                mlp_ratio=3.0, drop_path_rate=0.2, num_classes=1000)
DINAT_TINY = dict(NAT_TINY, dilations=([1, 8], [1, 4], [1, 2], [1]))


def nat_mini(**kwargs):
    """A tiny NAT for tests and examples: 32×32 inputs give 8×8, 4×4, 2×2 feature maps,
    head dim 32 (embed 32, heads 1/2/4), kernels 5/3/3 (the last clamped to 2 at 32×32),
    10 classes."""
    return _build(NAT_MINI, kwargs)


def nat_tiny(**kwargs):
    """NAT-Tiny: embed 64, depths (3, 4, 18, 5), heads (2, 4, 8, 16), kernel 7, MLP ratio 3,
    stochastic depth 0.2, 1000 classes (no relative position bias)."""
    return _build(NAT_TINY, kwargs)


def dinat_tiny(**kwargs):
    """DiNAT-Tiny: NAT-Tiny with per-block alternating dilations [1, 8], [1, 4], [1, 2], [1]
    (kernel·dilation = feature size at 224×224; clamped for smaller inputs)."""
    return _build(DINAT_TINY, kwargs)
