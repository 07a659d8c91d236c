"""EquivariantGenerator: a windowed causal transformer over column tokens with a flow-matching head.

Paper §3.2. The image is a left-to-right sequence of column tokens. Every block has
  1. windowed causal self-attention over the image tokens (RoPE on queries and keys): token i sees tokens
     i−window … i, so every position faces the same prediction with the same amount of context;
  2. cross-attention from the image tokens to a few class tokens (RoPE on the queries only);
  3. an MLP (on image and class tokens alike).
Output i is the condition for token i: output 0 comes from the last class token, output i ≥ 1 from image
token i−1. A small flow head turns each condition into a token (flow.py). During training every RoPE position
is shifted by one random integer in [0, rope_shift), so the cross-attention cannot learn absolute positions —
which is what keeps very long images seamless (paper Fig. 7).
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
from .flow import FlowHead, flow_matching_loss


@dataclass
class GeneratorConfig:
    token_dim: int = 256          # channels of one column token (the tokenizer's D)
    width: int = 1024
    depth: int = 32
    heads: int = 16
    mlp_ratio: float = 4.0
    num_classes: int = 1000
    class_tokens: int = 64        # the official `buffer_size`
    window: int | None = 3        # official `cond_length`; None = full causal attention (the paper's baseline)
    rope_shift: int = 16          # training positions start at a random integer in [0, rope_shift)
    head_width: int = 1280
    head_depth: int = 12
    noise_draws: int = 4          # flow-matching noise samples per token (official `diffusion_batch_mul`)
    label_dropout: float = 0.1
    attn_dropout: float = 0.1
    proj_dropout: float = 0.1
    train_tokens: int = 16        # sequence length trained on: the default length of a generated image


# Paper Table 7 / the official small/base/large/huge models (1,000 classes, 256-channel tokens). Parameters:
# S 127.3M, B 295.6M, L 644.5M, H 1,203.2M. The paper prints 151M for S, which its own shapes do not give.
GENERATOR_PRESETS: dict[str, dict] = {
    "S": dict(width=512, depth=16, heads=8, head_width=960),
    "B": dict(width=768, depth=24, heads=12, head_width=1024),
    "L": dict(width=1024, depth=32, heads=16, head_width=1280),
    "H": dict(width=1280, depth=40, heads=16, head_width=1536),
    # Small enough to train on a laptop CPU; sized for the built-in landscapes and the demo tokenizer.
    "demo": dict(token_dim=16, width=256, depth=6, heads=4, class_tokens=8, head_width=256, head_depth=4,
                 num_classes=8, noise_draws=4, train_tokens=16, attn_dropout=0.0, proj_dropout=0.0),
    "tiny": dict(token_dim=8, width=32, depth=2, heads=2, class_tokens=4, head_width=32, head_depth=2,
                 num_classes=4, noise_draws=2, train_tokens=8, attn_dropout=0.0, proj_dropout=0.0),
}


# ---------------------------------------------------------------------------------------------------------
# The window, defined once: the training mask and the sampling cache both follow it.


def window_mask(length: int, window: int | None, device=None) -> torch.Tensor:
    """[L, L] bool, True where query i may attend to key j: i − window ≤ j ≤ i (any j ≤ i if window is None)."""
    i = torch.arange(length, device=device)[:, None]
    j = torch.arange(length, device=device)[None, :]
    causal = j <= i
    return causal if window is None else causal & (i - j <= window)


def history_needed(window: int | None, depth: int) -> int | None:
    """How many of the last tokens determine everything that comes next (None = all): a token's final state
    depends on itself and the window × depth tokens before it."""
    return None if window is None else window * depth + 1


# ---------------------------------------------------------------------------------------------------------
# Rotary position embedding: channels rotated in interleaved pairs (2k, 2k+1), in float32.


def rope_angles(positions: torch.Tensor, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [L, head_dim/2] for (float) positions [L]."""
    freqs = 10000.0 ** (-torch.arange(0, head_dim, 2, device=positions.device)[: head_dim // 2].float() / head_dim)
    angles = torch.outer(positions.float(), freqs)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, heads, L, head_dim] rotated by position."""
    pairs = x.float().unflatten(-1, (-1, 2))
    x0, x1 = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack([x0 * cos - x1 * sin, x1 * cos + x0 * sin], dim=-1)
    return rotated.flatten(-2).type_as(x)


# ---------------------------------------------------------------------------------------------------------
# The block


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, attn_dropout: float, proj_dropout: float):
        super().__init__()
        self.heads, self.attn_dropout = heads, attn_dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_dropout)

    def forward(self, x, cos, sin, mask, cache=None):
        q, k, v = self.qkv(x).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:  # decoding: the keys/values of the previous `window` tokens come from the cache
            k, v = cache.extend(k, v)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.attn_dropout if self.training else 0.0)
        return self.proj_drop(self.proj(y.transpose(1, 2).flatten(2)))


class CrossAttention(nn.Module):
    """Image tokens (queries, rotated by their positions) attend to the class tokens (not rotated)."""

    def __init__(self, dim: int, heads: int, attn_dropout: float, proj_dropout: float):
        super().__init__()
        self.heads, self.attn_dropout = heads, attn_dropout
        self.qkv = nn.Linear(dim, dim)  # the query projection; the official name kept for checkpoints
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_dropout)

    def keys_values(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the (normalised) class tokens [B, K, D]; a sampler computes them once."""
        split = lambda t: t.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # noqa: E731
        return split(self.k(c)), split(self.v(c))

    def forward(self, x, kv, cos, sin):
        q = apply_rope(self.qkv(x).unflatten(-1, (self.heads, -1)).transpose(1, 2), cos, sin)
        y = F.scaled_dot_product_attention(q, *kv, dropout_p=self.attn_dropout if self.training else 0.0)
        return self.proj_drop(self.proj(y.transpose(1, 2).flatten(2)))


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


class Block(nn.Module):
    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        d = cfg.width
        self.norm1 = nn.LayerNorm(d, eps=1e-6)
        self.attn = SelfAttention(d, cfg.heads, cfg.attn_dropout, cfg.proj_dropout)
        self.cross_norm = nn.LayerNorm(d)       # eps 1e-5 (plain nn.LayerNorm in the official model)
        self.cross_cond_norm = nn.LayerNorm(d)
        self.attn2 = CrossAttention(d, cfg.heads, cfg.attn_dropout, cfg.proj_dropout)
        self.norm2 = nn.LayerNorm(d, eps=1e-6)
        self.mlp = MLP(d, int(d * cfg.mlp_ratio), cfg.proj_dropout)

    def class_kv(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.attn2.keys_values(self.cross_cond_norm(c))

    def forward(self, x, class_kv, cos, sin, mask, cache=None):
        """x [B, L, D] image tokens; class_kv the cross-attention keys/values of this block's class tokens."""
        x = x + self.attn(self.norm1(x), cos, sin, mask, cache)
        x = x + self.attn2(self.cross_norm(x), class_kv, cos, sin)
        return x + self.mlp(self.norm2(x))


# ---------------------------------------------------------------------------------------------------------
# The model


class EquivariantGenerator(nn.Module):
    def __init__(self, config: GeneratorConfig):
        super().__init__()
        if config.width % config.heads or (config.width // config.heads) % 2:
            raise EqgenError(f"width {config.width} must split into {config.heads} heads of even size")
        if config.window is not None and config.window < 1:
            raise EqgenError("window must be a positive number of tokens (or None for full causal attention)")
        self.config = cfg = config
        self.class_emb = nn.Embedding(cfg.num_classes, cfg.width)
        self.fake_latent = nn.Parameter(torch.zeros(1, cfg.width))  # the learned null class (CFG)
        self.class_pos = nn.Parameter(torch.zeros(1, cfg.class_tokens, cfg.width))
        self.z_proj = nn.Linear(cfg.token_dim, cfg.width)
        self.z_proj_ln = nn.LayerNorm(cfg.width, eps=1e-6)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width, eps=1e-6)
        self._init_weights()
        self.head = FlowHead(cfg.token_dim, cfg.width, cfg.head_width, cfg.head_depth)

    def _init_weights(self):
        for p in (self.class_emb.weight, self.fake_latent, self.class_pos):
            nn.init.normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def head_dim(self) -> int:
        return self.config.width // self.config.heads

    # -- the pieces a sampler reuses ---------------------------------------------------------------------

    def class_embedding(self, labels: torch.Tensor | None, batch: int | None = None) -> torch.Tensor:
        """[B, D]: the class rows, or the null class where labels is None."""
        if labels is None:
            return self.fake_latent.expand(batch, -1)
        return self.class_emb(labels)

    def class_context(self, class_embedding: torch.Tensor) -> tuple[list, torch.Tensor]:
        """What the class tokens give the image tokens: each block's cross-attention keys/values, and the
        condition of token 0 (the last class token after the final norm).

        The class tokens never attend to anything: they change only through each block's MLP, so all of
        this depends on the label alone and a sampler computes it once."""
        c = self.z_proj_ln(class_embedding[:, None] + self.class_pos)
        kvs = []
        for block in self.blocks:
            kvs.append(block.class_kv(c))
            c = c + block.mlp(block.norm2(c))
        return kvs, self.norm(c[:, -1])

    def rope(self, start: float, length: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        return rope_angles(torch.arange(length, device=device) + start, self.head_dim)

    # -- training ---------------------------------------------------------------------------------------

    def condition(self, tokens: torch.Tensor, class_embedding: torch.Tensor, offset: float = 0.0) -> torch.Tensor:
        """z [B, L, D]: output i conditions token i (teacher forcing over the whole sequence)."""
        kvs, first = self.class_context(class_embedding)
        x = self.embed(tokens)
        cos, sin = self.rope(offset, tokens.shape[1], tokens.device)
        mask = window_mask(tokens.shape[1], self.config.window, tokens.device)
        for block, kv in zip(self.blocks, kvs):
            x = block(x, kv, cos, sin, mask)
        # Shift right by one: the last class token predicts token 0, image token i−1 predicts token i.
        return torch.cat([first[:, None], self.norm(x[:, :-1])], dim=1)

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.z_proj_ln(self.z_proj(tokens))

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor,
                position_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The flow-matching loss of tokens [B, L, C] given labels [B]; position_mask [L] (bool) keeps the
        loss to those positions only (the zero-shot experiments of paper Table 1)."""
        B, L, C = tokens.shape
        if C != self.config.token_dim:
            raise EqgenError(f"tokens have {C} channels; this generator models {self.config.token_dim}")
        class_embedding = self.class_emb(labels)
        offset = 0
        if self.training:
            drop = torch.rand(B, device=tokens.device) < self.config.label_dropout
            class_embedding = torch.where(drop[:, None], self.fake_latent.to(class_embedding.dtype), class_embedding)
            offset = int(torch.randint(0, self.config.rope_shift, (1,))) if self.config.rope_shift > 1 else 0
        z = self.condition(tokens, class_embedding, offset)
        weight = None if position_mask is None else position_mask.to(tokens.device).expand(B, L).reshape(-1)
        return flow_matching_loss(self.head, tokens.reshape(B * L, C), z.reshape(B * L, -1),
                                  self.config.noise_draws, weight)

    # -- saving and loading -----------------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path) -> None:
        save_model_dir(directory, to_dict(self.config), self.state_dict())

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "EquivariantGenerator":
        config, weights = load_model_dir(directory)
        model = cls(from_dict(GeneratorConfig, config))
        model.load_state_dict(weights)
        return model.eval()
