"""A small video classifier built from effattn's 3-D neighborhood attention.

[B, 3, T, H, W] -> tubelet embedding (Conv3d, kernel = stride = `patch_size`) + LayerNorm ->
stages of 3-D NATLayers on channels-last tokens [B, T', H', W', C] with a Conv3d downsampler
(3×3×3, stride (1, 2, 2), channels ×2) between stages -> LayerNorm -> mean over all tokens ->
linear head -> logits [B, num_classes]. Windows are clamped to small token grids as in
`effattn.models.layers`.
"""
import torch
from torch import nn

from .layers import NATLayer, trunc_normal_init

__all__ = ["NAVideo", "na3d_video_mini"]


class NAVideo(nn.Module):
    def __init__(self, embed_dim=32, depths=(2, 2), num_heads=(1, 2), kernel_size=(3, 3, 3),
                 patch_size=(2, 4, 4), mlp_ratio=2.0, num_classes=10, in_chans=3,
                 drop_path_rate=0.0, features_only=False):
        super().__init__()
        if len(num_heads) != len(depths):
            raise ValueError(f"num_heads must have one entry per stage ({len(depths)}), got {num_heads!r}")
        self.num_classes = num_classes
        self.features_only = features_only
        self.patch_embed = nn.Conv3d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.patch_norm = nn.LayerNorm(embed_dim)
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.stages = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        self.feature_info = []
        for i, (depth, heads) in enumerate(zip(depths, num_heads)):
            dim = embed_dim * 2 ** i
            start = sum(depths[:i])
            self.stages.append(nn.ModuleList(
                NATLayer(dim, heads, kernel_size, mlp_ratio=mlp_ratio, drop_path=rates[start + j], rank=3)
                for j in range(depth)))
            self.feature_info.append(dict(num_chs=dim, module=f"stages.{i}"))
            if i < len(depths) - 1:
                self.downsamples.append(nn.ModuleDict(dict(
                    reduction=nn.Conv3d(dim, 2 * dim, kernel_size=3, stride=(1, 2, 2), padding=1,
                                        bias=False),
                    norm=nn.LayerNorm(2 * dim))))
        self.num_features = embed_dim * 2 ** (len(depths) - 1)
        if not features_only:
            self.norm = nn.LayerNorm(self.num_features)
            self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(trunc_normal_init)

    def forward(self, x):
        if x.dim() != 5:
            raise ValueError(f"NAVideo expects videos [B, C, T, H, W], got shape {tuple(x.shape)}")
        x = self.patch_norm(self.patch_embed(x).permute(0, 2, 3, 4, 1))
        features = []
        for i, blocks in enumerate(self.stages):
            for block in blocks:
                x = block(x)
            features.append(x.permute(0, 4, 1, 2, 3).contiguous())
            if i < len(self.downsamples):
                down = self.downsamples[i]
                x = down["norm"](down["reduction"](x.permute(0, 4, 1, 2, 3)).permute(0, 2, 3, 4, 1))
        if self.features_only:
            return features
        return self.head(self.norm(x).flatten(1, 3).mean(dim=1))


def na3d_video_mini(**kwargs):
    """Tiny 3-D NA video model: tubelets 2×4×4, embed 32, depths (2, 2), heads (1, 2) (head dim
    32), kernel 3×3×3, 10 classes; [B, 3, 8, 32, 32] gives 4×8×8 then 4×4×4 token grids."""
    return NAVideo(**kwargs)
