"""ColumnTokenizer: the equivariant 1-D autoencoder (paper §3.1, appendix B.2).

A convolutional encoder (latent-diffusion style, reflect padding everywhere) turns an image [B,3,H,W] into a
latent [B,C,H/2^(L-1),W/f]; `columnize` folds the latent rows into channels, so that one token is one vertical
strip of f pixels: [B, W/f, C·rows]. A Conv1d along the token axis projects each column to D token channels.
The decoder mirrors it (`rasterize` unfolds the rows again) and, being convolutional along the width, decodes
any number of tokens into an image of any width. The official tokenizer regularises the tokens with a
fixed-std noise posterior: the decoder (and later the generator) sees mean + s·ε with a random per-image s.

Module and parameter names follow the official checkpoint, so `eqgen.convert.tokenizer` is a key rename.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import Pretrained
# the building blocks (pixel_shuffle and pixel_unshuffle, too, are still imported from eqgen.tokenizer)
from .conv_blocks import (Downsample, Level, Middle, Upsample, conv3x3, norm, pixel_shuffle,  # noqa: F401
                          pixel_unshuffle, token_conv)
from .errors import EqgenError


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


def patchify(latent: torch.Tensor, rows: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, W, C·H] like `columnize`, but for the 2-D grid baseline (paper Table 3, AR-MAR-2D):
    the latent is cut into `rows` rows of patches, each H/rows tall and `rows` wide, read in raster order.
    Same token count and channels as columns; W must be a multiple of `rows`."""
    B, C, H, W = latent.shape
    x = latent.reshape(B, C, rows, H // rows, W // rows, rows)           # c, grid row, ph, grid column, pw
    return x.permute(0, 2, 4, 1, 3, 5).reshape(B, W, C * H)


def unpatchify(tokens: torch.Tensor, height: int, rows: int) -> torch.Tensor:
    """[B, N, C·H] -> [B, C, H, N], the inverse of `patchify`."""
    B, N, CH = tokens.shape
    x = tokens.reshape(B, rows, N // rows, CH // height, height // rows, rows)   # grid row, grid column, c, ph, pw
    return x.permute(0, 3, 1, 4, 2, 5).reshape(B, CH // height, height, N)


def conv_tokens(conv: nn.Conv1d, tokens: torch.Tensor) -> torch.Tensor:
    """A Conv1d along the token axis of [B, N, C]: each token also sees its two neighbours."""
    return conv(tokens.transpose(1, 2)).transpose(1, 2)


# ---------------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class TokenizerConfig:
    height: int = 256                   # image height (the official `resolution`); the width is free
    in_channels: int = 3
    out_channels: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 4, 4)   # one level per entry; L levels halve the height L-1 times
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)    # feature heights at which self-attention follows each block
    z_channels: int = 256
    embed_dim: int = 256                # D: channels of one column token
    len_down_scale: int = 4             # the first this-many downsamples also halve the width: f = 2^this
    norm_groups: int = 32
    dropout: float = 0.0
    posterior: str = "noise"            # "noise": the official fixed-std rule; "kl": a diagonal Gaussian
    noise_std: float = 2.5
    semantic_widths: tuple[int, ...] = (768, 768)  # semantic decoder levels (REPA-style alignment); () = none
    semantic_res_blocks: int = 2
    semantic_dim: int = 768             # channels of the frozen vision encoder the semantic output aligns to
    latent_scale: float = 1.0           # tokens × latent_scale ≈ unit variance for the generator
    grid_rows: int = 0                  # 0: column tokens. k > 0: the 2-D grid baseline (`patchify`), k token rows

    def __post_init__(self):
        for name in ("ch_mult", "attn_resolutions", "semantic_widths"):
            setattr(self, name, tuple(getattr(self, name)))
        if self.posterior not in ("noise", "kl"):
            raise EqgenError(f"unknown posterior {self.posterior!r}; choose noise or kl")
        if not 0 <= self.len_down_scale < len(self.ch_mult):
            raise EqgenError(f"len_down_scale {self.len_down_scale} must lie in 0..{len(self.ch_mult) - 1} "
                             f"(there are {len(self.ch_mult) - 1} downsamples)")
        rows = 2 ** (len(self.ch_mult) - 1)
        if self.height % rows or self.height // rows < 2:
            raise EqgenError(f"height {self.height} must be a multiple of {rows} with at least 2 latent rows")
        if any(self.ch * m % 4 for m in self.ch_mult):
            raise EqgenError(f"ch × ch_mult must be multiples of 4 (the pixel-shuffle resamplers), got "
                             f"{[self.ch * m for m in self.ch_mult]}")
        if self.grid_rows and (self.grid_rows < 0 or self.latent_height % self.grid_rows):
            raise EqgenError(f"grid_rows {self.grid_rows} must divide the {self.latent_height} latent rows")
        normed = {self.ch * m for m in self.ch_mult} | set(self.semantic_widths)
        if any(c % self.norm_groups for c in normed):
            raise EqgenError(f"norm_groups {self.norm_groups} must divide every channel count {sorted(normed)}")

    @property
    def token_width(self) -> int:
        """Pixels per token, f."""
        return 2 ** self.len_down_scale

    @property
    def latent_height(self) -> int:
        return self.height // 2 ** (len(self.ch_mult) - 1)

    @property
    def column_channels(self) -> int:
        """Channels of one latent column before the token projection: z_channels × latent rows."""
        return self.z_channels * self.latent_height


TOKENIZER_PRESETS: dict[str, dict] = {
    # The released 256² tokenizer (configs/second_stage/tokenizer_config.yaml): 16 tokens of 256 channels.
    "paper": dict(latent_scale=0.05493),
    # Exactly the official test fixture (shared/fixtures/official/tokenizer_tiny_config.json).
    "official_tiny": dict(height=32, ch=32, ch_mult=(2, 1, 1), num_res_blocks=1, attn_resolutions=(8,), z_channels=8,
                          embed_dim=8, len_down_scale=2, semantic_widths=(32, 32), semantic_res_blocks=1,
                          semantic_dim=32),
    # The built-in model's tokenizer, sized for a CPU: 64 px tall, 8 px per token, 8 latent rows × 8 channels ->
    # 16 channels per token. Noise std 0.5 with the demo training preset's lr 5e-4: at 1.0 and 1.5e-3 the
    # reconstructions were blurred colour bands (docs/builtin-model.md, with what else was tried).
    "demo": dict(height=64, ch=16, ch_mult=(1, 2, 4, 4), num_res_blocks=1, attn_resolutions=(), z_channels=8,
                 embed_dim=16, len_down_scale=3, norm_groups=8, noise_std=0.5, semantic_widths=()),
    # Unit tests.
    "tiny": dict(height=16, ch=8, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(4,), z_channels=4,
                 embed_dim=4, len_down_scale=2, norm_groups=4, semantic_widths=(8,), semantic_res_blocks=1,
                 semantic_dim=8),
}


# ---------------------------------------------------------------------------------------------------------
# Encoder and decoders


class Encoder(nn.Module):
    """Image [B,3,H,W] -> column features [B, W/f, z_channels·latent rows]."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        g, chans = cfg.norm_groups, [cfg.ch] + [cfg.ch * m for m in cfg.ch_mult]
        self.conv_in = conv3x3(cfg.in_channels, cfg.ch)
        self.down = nn.ModuleList()
        for i in range(len(cfg.ch_mult)):
            height = cfg.height // 2**i
            last = i == len(cfg.ch_mult) - 1
            resample = None if last else Downsample(chans[i + 1], halve_width=i < cfg.len_down_scale)
            self.down.append(Level(chans[i], chans[i + 1], cfg.num_res_blocks, height in cfg.attn_resolutions, g,
                                   cfg.dropout, resample))
        self.mid = Middle(chans[-1], g, cfg.dropout)
        self.norm_out = norm(chans[-1], g)
        self.conv_out = conv3x3(chans[-1], cfg.z_channels)
        self.encoder1d = token_conv(cfg.column_channels, cfg.column_channels)
        self.grid_rows = cfg.grid_rows

    def forward(self, x):
        h = self.conv_in(x)
        for level in self.down:
            h = level.resample(level(h))
        h = self.conv_out(F.silu(self.norm_out(self.mid(h))))
        tokens = patchify(h, self.grid_rows) if self.grid_rows else columnize(h)
        return conv_tokens(self.encoder1d, tokens)


class Decoder(nn.Module):
    """Column features [B, N, z_channels·latent rows] -> image [B,3,H,N·f], plus the features the semantic
    decoder reads: those of the lowest-resolution level, after its blocks and before its upsample."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        g, self.latent_height, levels = cfg.norm_groups, cfg.latent_height, len(cfg.ch_mult)
        self.grid_rows = cfg.grid_rows
        cin = cfg.ch * cfg.ch_mult[-1]
        self.decoder1d = token_conv(cfg.column_channels, cfg.column_channels)
        self.conv_in = conv3x3(cfg.z_channels, cin)
        self.mid = Middle(cin, g, cfg.dropout)
        self.up = nn.ModuleList()
        for i in reversed(range(levels)):   # built from the lowest resolution; stored highest first (official)
            cout, height = cfg.ch * cfg.ch_mult[i], cfg.height // 2**i
            resample = Upsample(cout, double_width=i <= cfg.len_down_scale) if i > 0 else None
            self.up.insert(0, Level(cin, cout, cfg.num_res_blocks + 1, height in cfg.attn_resolutions, g,
                                    cfg.dropout, resample))
            cin = cout
        self.norm_out = norm(cin, g)
        self.conv_out = conv3x3(cin, cfg.out_channels)

    def forward(self, columns):
        columns = conv_tokens(self.decoder1d, columns)
        h = (unpatchify(columns, self.latent_height, self.grid_rows) if self.grid_rows
             else rasterize(columns, self.latent_height))
        h = self.mid(self.conv_in(h))
        lowest, *rest = reversed(self.up)
        features = lowest(h)
        h = lowest.resample(features)
        for level in rest:
            h = level.resample(level(h))
        return self.conv_out(F.silu(self.norm_out(h))), features


class SemanticDecoder(nn.Module):
    """The decoder's lowest-resolution features -> `semantic_dim` channels on the same grid, trained to match
    a frozen vision encoder's patch features (REPA-style alignment)."""

    def __init__(self, cfg: TokenizerConfig):
        super().__init__()
        g, widths = cfg.norm_groups, (cfg.ch * cfg.ch_mult[-1],) + cfg.semantic_widths
        self.down = nn.ModuleList(Level(widths[i], widths[i + 1], cfg.semantic_res_blocks, False, g, cfg.dropout)
                                  for i in range(len(cfg.semantic_widths)))
        self.norm_out = norm(widths[-1], g)
        self.conv_out = conv3x3(widths[-1], cfg.semantic_dim)

    def forward(self, h):
        for level in self.down:
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


# ---------------------------------------------------------------------------------------------------------
# The tokenizer


class ColumnTokenizer(Pretrained, nn.Module):
    """tokens = tok.encode(images)  # [B,3,H,W] in [-1,1] -> [B, W/f, D];  tok.decode(tokens) -> [B,3,H,N·f]"""

    config_class = TokenizerConfig

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        self.config = cfg = config
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.semantic_decoder = SemanticDecoder(cfg) if cfg.semantic_widths else None
        moments = 2 * cfg.embed_dim if cfg.posterior == "kl" else cfg.embed_dim   # "kl": means and log-variances
        self.quant_layer = token_conv(cfg.column_channels, moments)
        self.post_quant_layer = token_conv(cfg.embed_dim, cfg.column_channels)

    @property
    def token_width(self) -> int:
        """Pixels per token (f)."""
        return self.config.token_width

    # -- encoding -----------------------------------------------------------------------------------------

    def encode_moments(self, images: torch.Tensor) -> torch.Tensor:
        """The posterior's parameters per token: [B, N, D] means ('noise'), or [B, N, 2D] means and
        log-variances ('kl')."""
        cfg, f = self.config, self.token_width
        if images.ndim != 4 or images.shape[1] != cfg.in_channels:
            raise EqgenError(f"images must be [B, {cfg.in_channels}, H, W], got {list(images.shape)}")
        H, W = images.shape[-2:]
        if H != cfg.height:
            raise EqgenError(f"image height {H} != the tokenizer's height {cfg.height} (resize or crop first)")
        step = f * max(1, cfg.grid_rows)
        if W % step or W < 2 * f:
            raise EqgenError(f"image width {W} must be a multiple of {step} and at least {2 * f} (two tokens)")
        return conv_tokens(self.quant_layer, self.encoder(images))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B,3,H,W] in [-1,1] -> tokens [B, W/f, D] (the posterior mean)."""
        return self.encode_moments(images)[..., : self.config.embed_dim]

    def sample(self, moments: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """A draw from the posterior, as the decoder sees it in training and the generator learns it.

        'noise' (official): s = clamp(N(0,1)·std/0.8, ±std), one per image, then mean + s·ε; the draws are
        made on the generator's device (CPU by default) in that order, as the official code does. 'kl':
        mean + exp(logvar/2)·ε; given means alone (a token cache), it returns them unchanged."""
        D = self.config.embed_dim
        mean = moments[..., :D]
        device = generator.device if generator is not None else torch.device("cpu")

        def randn(*shape):
            return torch.randn(*shape, generator=generator, device=device).to(mean)

        if self.config.posterior == "kl":
            if moments.shape[-1] == D:
                return mean
            return mean + (0.5 * moments[..., D:].clamp(-30.0, 20.0)).exp() * randn(mean.shape)
        std = self.config.noise_std
        s = (randn(mean.shape[0]) * (std / 0.8)).clamp(-std, std)
        return mean + s.view(-1, *[1] * (mean.ndim - 1)) * randn(mean.shape)

    def regularization(self, moments: torch.Tensor) -> torch.Tensor:
        """Per-image regulariser, summed over tokens: KL to N(0, I) ('kl'), or ½·Σ mean² ('noise', the
        official fixed-std posterior's "kl")."""
        D = self.config.embed_dim
        mean = moments[..., :D]
        if self.config.posterior == "kl":
            logvar = moments[..., D:].clamp(-30.0, 20.0)
            return 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).sum(dim=(1, 2))
        return 0.5 * mean.pow(2).sum(dim=(1, 2))

    # -- decoding -----------------------------------------------------------------------------------------

    def decode(self, tokens: torch.Tensor, return_semantic: bool = False):
        """Tokens [B, N, D] -> images [B,3,H,N·f]; with `return_semantic`, also the semantic decoder's output
        [B, semantic_dim, latent rows, N] (None without a semantic decoder)."""
        if tokens.ndim != 3 or tokens.shape[-1] != self.config.embed_dim:
            raise EqgenError(f"tokens must be [B, N, {self.config.embed_dim}], got {list(tokens.shape)}")
        if tokens.shape[1] < 2:
            raise EqgenError("decoding needs at least 2 tokens (the token convolutions pad by reflection)")
        if self.config.grid_rows and tokens.shape[1] % self.config.grid_rows:
            raise EqgenError(f"a grid of {self.config.grid_rows} token rows needs a multiple of "
                             f"{self.config.grid_rows} tokens, got {tokens.shape[1]}")
        images, features = self.decoder(conv_tokens(self.post_quant_layer, tokens))
        if not return_semantic:
            return images
        return images, (self.semantic_decoder(features) if self.semantic_decoder is not None else None)

    def forward(self, images: torch.Tensor, sample_posterior: bool = True, generator: torch.Generator | None = None):
        """Reconstruction for training: (images, posterior moments, semantic output or None)."""
        moments = self.encode_moments(images)
        tokens = self.sample(moments, generator) if sample_posterior else moments[..., : self.config.embed_dim]
        recon, semantic = self.decode(tokens, return_semantic=True)
        return recon, moments, semantic
