"""ColumnTokenizer: the equivariant 1-D autoencoder (paper §3.1, appendix B.2).

A convolutional encoder (latent-diffusion style, reflect padding everywhere) turns an image [B,3,H,W] into a
latent [B,C,H/f,W/f]; `columnize` folds the latent rows into channels, so that one token is one vertical
strip of the image: [B, W/f, C·H/f]. A Conv1d along the token axis projects each column to D token channels.
The decoder mirrors it (`rasterize` unfolds the rows again) and, being convolutional along the width, decodes
any number of tokens into an image of any width. The official tokenizer regularises the tokens with a
fixed-std noise posterior: the generator trains on mean + s·ε with a random per-image s.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import load_model_dir, save_model_dir
from .configs import from_dict, to_dict
from .errors import EqgenError


@dataclass
class TokenizerConfig:
    height: int = 256                   # image height (the official `resolution`); the width is free
    in_channels: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 4, 4)   # one level per entry; f = 2^(levels−1)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)    # latent heights at which a self-attention block follows
    z_channels: int = 256
    embed_dim: int = 256                # D: channels of one column token
    norm_groups: int = 32
    dropout: float = 0.0
    posterior: str = "noise"            # "noise": the official fixed-std rule; "kl": a diagonal Gaussian
    noise_std: float = 2.5
    semantic_ch: int = 64               # the semantic decoder (REPA-style alignment); 0 = none
    semantic_ch_mult: tuple[int, ...] = (8, 12)
    semantic_out: int = 768
    latent_scale: float = 1.0           # tokens × latent_scale ≈ unit variance for the generator

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def latent_height(self) -> int:
        return self.height // self.downsample

    @property
    def column_channels(self) -> int:
        """Channels of a column before the token projection: z_channels × latent height."""
        return self.z_channels * self.latent_height


TOKENIZER_PRESETS: dict[str, dict] = {
    # The released 256² tokenizer: 16 tokens of 256 channels (latent scale 0.05493).
    "paper": dict(latent_scale=0.05493),
    # Sized for the built-in landscapes on a CPU: 64 px tall, 8 px per token, 16 channels per token.
    "demo": dict(height=64, ch=32, ch_mult=(1, 2, 2, 4), num_res_blocks=1, attn_resolutions=(), z_channels=8,
                 embed_dim=16, norm_groups=16, semantic_ch=0),
    "tiny": dict(height=16, ch=8, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(4,), z_channels=4,
                 embed_dim=4, norm_groups=4, semantic_ch=8, semantic_ch_mult=(2, 2), semantic_out=8),
}


# ---------------------------------------------------------------------------------------------------------
# Columns: the whole idea of the tokenizer in two functions.


def columnize(latent: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, W, C·H]: one token per latent column; feature index c·H + h."""
    B, C, H, W = latent.shape
    return latent.permute(0, 3, 1, 2).reshape(B, W, C * H)


def rasterize(tokens: torch.Tensor, height: int) -> torch.Tensor:
    """[B, W, C·H] -> [B, C, H, W], the inverse of `columnize`."""
    B, W, CH = tokens.shape
    return tokens.reshape(B, W, CH // height, height).permute(0, 2, 3, 1)


def conv1d_tokens(conv: nn.Conv1d, tokens: torch.Tensor) -> torch.Tensor:
    """A Conv1d along the token axis of [B, N, C]."""
    return conv(tokens.transpose(1, 2)).transpose(1, 2)


# ---------------------------------------------------------------------------------------------------------
# Building blocks (reflect padding: fewer edge artefacts, more uniform columns)


def conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, padding_mode="reflect")


def token_conv(cin: int, cout: int) -> nn.Conv1d:
    return nn.Conv1d(cin, cout, 3, padding=1, padding_mode="reflect")


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=1e-6)
        self.conv1 = conv3x3(cin, cout)
        self.norm2 = nn.GroupNorm(groups, cout, eps=1e-6)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv3x3(cout, cout)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all positions of a feature map."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(channels, channels, 1) for _ in range(4))

    def forward(self, x):
        B, C, H, W = x.shape
        h = self.norm(x)
        q, k, v = (m(h).flatten(2).transpose(1, 2) for m in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj_out(y.transpose(1, 2).reshape(B, C, H, W))


class ShuffleConv(nn.Module):
    """A 3×3 conv wrapped so that checkpoint keys read `…sample.conv.conv.weight` as in the official code."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = conv3x3(cin, cout)

    def forward(self, x):
        return self.conv(x)


class Downsample(nn.Module):
    """×½: pixel-unshuffle of a conv (C → C/4 → C) plus a 2×2 average pool of the input (the residual)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = ShuffleConv(channels, channels // 4)

    def forward(self, x):
        return F.pixel_unshuffle(self.conv(x), 2) + F.avg_pool2d(x, 2)


class Upsample(nn.Module):
    """×2: pixel-shuffle of a conv (C → 4C → C) plus a nearest-neighbour upsample of the input."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = ShuffleConv(channels, channels * 4)

    def forward(self, x):
        return F.pixel_shuffle(self.conv(x), 2) + F.interpolate(x, scale_factor=2.0, mode="nearest")


class Level(nn.Module):
    """Residual blocks at one resolution, each followed by attention where configured."""

    def __init__(self, cin: int, cout: int, blocks: int, attention: bool, groups: int, dropout: float):
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(cin if i == 0 else cout, cout, groups, dropout) for i in range(blocks))
        self.attn = nn.ModuleList(AttnBlock(cout, groups) for _ in range(blocks if attention else 0))

    def forward(self, h):
        for i, block in enumerate(self.block):
            h = block(h)
            if len(self.attn):
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


# ---------------------------------------------------------------------------------------------------------
# Encoder and decoder


class Encoder(nn.Module):
    """Image [B,3,H,W] -> column features [B, W/f, z_channels·H/f]."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        g, mult = cfg.norm_groups, (1,) + tuple(cfg.ch_mult)
        self.conv_in = conv3x3(cfg.in_channels, cfg.ch)
        self.down = nn.ModuleList()
        res = cfg.height
        for i, m in enumerate(cfg.ch_mult):
            level = Level(cfg.ch * mult[i], cfg.ch * m, cfg.num_res_blocks, res in cfg.attn_resolutions, g, cfg.dropout)
            if i < len(cfg.ch_mult) - 1:
                level.downsample = Downsample(cfg.ch * m)
                res //= 2
            self.down.append(level)
        top = cfg.ch * cfg.ch_mult[-1]
        self.mid = Middle(top, g, cfg.dropout)
        self.norm_out = nn.GroupNorm(g, top, eps=1e-6)
        self.conv_out = conv3x3(top, cfg.z_channels)
        self.encoder1d = token_conv(cfg.column_channels, cfg.column_channels)

    def forward(self, x):
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        h = self.conv_out(F.silu(self.norm_out(self.mid(h))))
        return conv1d_tokens(self.encoder1d, columnize(h))


class Decoder(nn.Module):
    """Column features [B, N, z_channels·H/f] -> image [B,3,H,N·f], and the early features that the
    semantic alignment loss reads (after the lowest-resolution level, before its upsample)."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        g, self.latent_height = cfg.norm_groups, cfg.latent_height
        self.decoder1d = token_conv(cfg.column_channels, cfg.column_channels)
        cin = cfg.ch * cfg.ch_mult[-1]
        self.conv_in = conv3x3(cfg.z_channels, cin)
        self.mid = Middle(cin, g, cfg.dropout)
        levels, res = [], cfg.latent_height
        for i in reversed(range(len(cfg.ch_mult))):
            cout = cfg.ch * cfg.ch_mult[i]
            level = Level(cin, cout, cfg.num_res_blocks + 1, res in cfg.attn_resolutions, g, cfg.dropout)
            if i > 0:
                level.upsample = Upsample(cout)
                res *= 2
            levels.insert(0, level)
            cin = cout
        self.up = nn.ModuleList(levels)
        self.norm_out = nn.GroupNorm(g, cin, eps=1e-6)
        self.conv_out = conv3x3(cin, 3)

    def forward(self, columns):
        h = rasterize(conv1d_tokens(self.decoder1d, columns), self.latent_height)
        h = self.mid(self.conv_in(h))
        features = None
        for i in reversed(range(len(self.up))):
            h = self.up[i](h)
            if i == len(self.up) - 1:
                features = h
            if i > 0:
                h = self.up[i].upsample(h)
        return self.conv_out(F.silu(self.norm_out(h))), features


class SemanticDecoder(nn.Module):
    """The decoder's early features -> the feature space of a frozen vision encoder (REPA-style)."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        g, ch = cfg.norm_groups, cfg.semantic_ch
        outs = tuple(cfg.semantic_ch_mult) + (cfg.semantic_out // ch,)
        self.down = nn.ModuleList(
            Level(ch * m, ch * outs[i + 1], cfg.num_res_blocks, False, g, cfg.dropout)
            for i, m in enumerate(cfg.semantic_ch_mult))
        top = ch * outs[-1]
        self.norm_out = nn.GroupNorm(g, top, eps=1e-6)
        self.conv_out = conv3x3(top, cfg.semantic_out)

    def forward(self, h):
        for level in self.down:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


# ---------------------------------------------------------------------------------------------------------
# The tokenizer


class ColumnTokenizer(nn.Module):
    def __init__(self, config: TokenizerConfig):
        super().__init__()
        self.config = cfg = config
        if cfg.height % cfg.downsample:
            raise EqgenError(f"height {cfg.height} is not a multiple of the downsampling factor {cfg.downsample}")
        if cfg.posterior not in ("noise", "kl"):
            raise EqgenError(f"unknown posterior {cfg.posterior!r}; choose noise or kl")
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        if cfg.semantic_ch:
            self.semantic_decoder = SemanticDecoder(cfg)
        moments = 2 * cfg.embed_dim if cfg.posterior == "kl" else cfg.embed_dim
        self.quant_layer = token_conv(cfg.column_channels, moments)
        self.post_quant_layer = token_conv(cfg.embed_dim, cfg.column_channels)

    @property
    def token_width(self) -> int:
        """Pixels per token (the downsampling factor f)."""
        return self.config.downsample

    # -- encoding -----------------------------------------------------------------------------------------

    def _check_images(self, images: torch.Tensor) -> None:
        cfg = self.config
        if images.ndim != 4 or images.shape[1] != cfg.in_channels:
            raise EqgenError(f"images must be [B, {cfg.in_channels}, H, W], got {list(images.shape)}")
        H, W = images.shape[-2:]
        if H != cfg.height:
            raise EqgenError(f"image height {H} != the tokenizer's height {cfg.height} (resize or crop first)")
        if W % self.token_width or W // self.token_width < 2:
            raise EqgenError(f"image width {W} must be a multiple of {self.token_width} and at least "
                             f"{2 * self.token_width} (two tokens)")

    def posterior(self, images: torch.Tensor) -> torch.Tensor:
        """The posterior's parameters per token: [B, N, D] means ('noise') or [B, N, 2D] means and
        log-variances ('kl')."""
        self._check_images(images)
        return conv1d_tokens(self.quant_layer, self.encoder(images))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B,3,H,W] in [-1,1] -> tokens [B, W/f, D] (the posterior mean)."""
        return self.posterior(images)[..., : self.config.embed_dim]

    def sample(self, moments: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A draw from the posterior. 'noise' (official): s = clamp(N(0,1)·std/0.8, ±std) per image, then
        mean + s·ε — the generator learns tokens under noise of every strength up to std."""
        D = self.config.embed_dim
        mean = moments[..., :D]
        randn = lambda *shape: torch.randn(*shape, generator=generator).to(mean.device)  # noqa: E731
        if self.config.posterior == "kl":
            return mean + (0.5 * moments[..., D:]).exp() * randn(mean.shape)
        std = self.config.noise_std
        s = (randn(mean.shape[0]) * (std / 0.8)).clamp(-std, std)
        return mean + s.view(-1, *[1] * (mean.ndim - 1)) * randn(mean.shape)

    def regularization(self, moments: torch.Tensor) -> torch.Tensor:
        """Per-image regulariser: KL to N(0, I) ('kl'), or the official ½·Σ mean² ('noise')."""
        D = self.config.embed_dim
        mean = moments[..., :D]
        if self.config.posterior == "kl":
            logvar = moments[..., D:]
            return 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(dim=(1, 2))
        return 0.5 * mean.pow(2).sum(dim=(1, 2))

    # -- decoding -----------------------------------------------------------------------------------------

    def decode(self, tokens: torch.Tensor, return_features: bool = False):
        """Tokens [B, N, D] -> images [B,3,H,N·f] (and the decoder's early features if asked)."""
        if tokens.ndim != 3 or tokens.shape[-1] != self.config.embed_dim:
            raise EqgenError(f"tokens must be [B, N, {self.config.embed_dim}], got {list(tokens.shape)}")
        if tokens.shape[1] < 2:
            raise EqgenError("decoding needs at least 2 tokens (the token convolutions pad by reflection)")
        images, features = self.decoder(conv1d_tokens(self.post_quant_layer, tokens))
        return (images, features) if return_features else images

    def forward(self, images: torch.Tensor, sample_posterior: bool = True):
        """Reconstruction for training: (images, posterior moments, decoder features)."""
        moments = self.posterior(images)
        tokens = self.sample(moments) if sample_posterior else moments[..., : self.config.embed_dim]
        recon, features = self.decode(tokens, return_features=True)
        return recon, moments, features

    # -- saving and loading -------------------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path) -> None:
        save_model_dir(directory, to_dict(self.config), self.state_dict())

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "ColumnTokenizer":
        config, weights = load_model_dir(directory)
        model = cls(from_dict(TokenizerConfig, config))
        model.load_state_dict(weights)
        return model.eval()
