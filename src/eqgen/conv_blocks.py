"""The convolutional building blocks of the column tokenizer's encoder and decoders (latent-diffusion style).

Reflect padding everywhere: zero padding would tell the first and last columns that they are at an edge, and
columns should be alike wherever they sit. Module and parameter names follow the official checkpoint.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, padding_mode="reflect")


def token_conv(cin: int, cout: int) -> nn.Conv1d:
    return nn.Conv1d(cin, cout, 3, padding=1, padding_mode="reflect")


def norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(groups, channels, eps=1e-6)


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = norm(cin, groups), conv3x3(cin, cout)
        self.norm2, self.conv2 = norm(cout, groups), conv3x3(cout, cout)
        self.dropout = nn.Dropout(dropout)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions of a feature map (1×1 conv projections)."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = norm(channels, groups)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(channels, channels, 1) for _ in range(4))

    def forward(self, x):
        B, C, H, W = x.shape
        h = self.norm(x)
        q, k, v = (m(h).flatten(2).transpose(1, 2) for m in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj_out(y.transpose(1, 2).reshape(B, C, H, W))


def pixel_unshuffle(x: torch.Tensor, fh: int, fw: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, C·fh·fw, H/fh, W/fw], channel c·fh·fw + dy·fw + dx (F.pixel_unshuffle's order)."""
    B, C, H, W = x.shape
    x = x.reshape(B, C, H // fh, fh, W // fw, fw).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(B, C * fh * fw, H // fh, W // fw)


def pixel_shuffle(x: torch.Tensor, fh: int, fw: int) -> torch.Tensor:
    """The inverse of `pixel_unshuffle`."""
    B, C, H, W = x.shape
    x = x.reshape(B, C // (fh * fw), fh, fw, H, W).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(B, C // (fh * fw), H * fh, W * fw)


class Downsample(nn.Module):
    """Residual down-sampling by (2, 2), or (2, 1) to halve the height only: a conv to C/k channels,
    pixel-unshuffled back to C, plus the average of each k-pixel cell of the input (k = 4 or 2)."""

    def __init__(self, channels: int, halve_width: bool):
        super().__init__()
        self.factor = (2, 2) if halve_width else (2, 1)
        self.conv = conv3x3(channels, channels // (self.factor[0] * self.factor[1]))

    def forward(self, x):
        return pixel_unshuffle(self.conv(x), *self.factor) + F.avg_pool2d(x, self.factor)


class Upsample(nn.Module):
    """Residual up-sampling, the mirror of `Downsample`: a conv to k·C channels, pixel-shuffled, plus the
    nearest-neighbour upsampled input."""

    def __init__(self, channels: int, double_width: bool):
        super().__init__()
        self.factor = (2, 2) if double_width else (2, 1)
        self.conv = conv3x3(channels, channels * self.factor[0] * self.factor[1])

    def forward(self, x):
        return pixel_shuffle(self.conv(x), *self.factor) + F.interpolate(x, scale_factor=self.factor, mode="nearest")


class Level(nn.Module):
    """Residual blocks at one resolution, each followed by attention where configured, and the resampler
    that leaves the level (applied by the caller, which may want the features before it)."""

    def __init__(self, cin: int, cout: int, blocks: int, attention: bool, groups: int, dropout: float,
                 resample: nn.Module | None = None):
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(cin if i == 0 else cout, cout, groups, dropout) for i in range(blocks))
        self.attn = nn.ModuleList(AttnBlock(cout, groups) for _ in range(blocks if attention else 0))
        self.resample = resample or nn.Identity()

    def forward(self, h):
        for i, block in enumerate(self.block):
            h = block(h)
            if self.attn:
                h = self.attn[i](h)
        return h


class Middle(nn.Module):
    def __init__(self, channels: int, groups: int, dropout: float):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, groups, dropout)
        self.attn_1 = AttnBlock(channels, groups)
        self.block_2 = ResnetBlock(channels, channels, groups, dropout)

    def forward(self, h):
        return self.block_2(self.attn_1(self.block_1(h)))
