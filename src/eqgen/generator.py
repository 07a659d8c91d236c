"""EquivariantGenerator: a windowed causal transformer over column tokens with a flow-matching head.

Paper §3.2. The image is a left-to-right sequence of column tokens. Every block has
  1. windowed causal self-attention over the image tokens (RoPE on queries and keys): token i sees tokens
     i−window … i, so every position faces the same prediction with the same amount of context;
  2. cross-attention from the image tokens to a few class tokens (RoPE on the queries only);
  3. an MLP (on image and class tokens alike).
Output i is the condition for token i: output 0 comes from the last class token, output i ≥ 1 from image
token i−1. A small flow head (flow.py) turns each condition into a token. During training every position is
shifted by one random integer in [0, rope_shift), so the cross-attention cannot learn absolute positions —
which is what keeps very long images seamless (paper Fig. 7).

Parameter names follow the official code where the two agree (blocks, flow head), so its checkpoints convert
by renaming a few prefixes and two misleading names (convert/generator.py). eqgen once used those two names
too; `upgrade_state_dict` renames them in weights written then (the shipped model's among them).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import Pretrained
from .errors import EqgenError
from .flow import FlowHead, flow_matching_loss

NULL_LABEL = -1  # the label of the learned null class: unconditional generation and the CFG branch


@dataclass
class GeneratorConfig:
    """Defaults are the official recipe (README training command) with the L shapes of the released model."""
    token_dim: int = 256          # channels of one column token (the tokenizer's D)
    width: int = 1024
    depth: int = 32
    heads: int = 16
    mlp_ratio: float = 4.0
    num_classes: int = 1000
    num_class_tokens: int = 16    # official `buffer_size`
    window: int | None = 3        # official `cond_length`; None = full causal attention (the paper's baseline)
    rope_shift: int = 16          # training positions start at a random integer in [0, rope_shift)
    head_width: int = 1280
    head_depth: int = 12
    noise_draws: int = 4          # flow-matching noise samples per token (official `diffusion_batch_mul`)
    label_dropout: float = 0.1
    attn_dropout: float = 0.1
    proj_dropout: float = 0.1
    train_tokens: int = 16        # sequence length trained on (official `token_num`): the default image length


# Paper Table 7 / the official small/base/large/huge models (1,000 classes, 256-channel tokens, 16 class
# tokens). Parameters: S 127.3M, B 295.6M, L 644.5M, H 1,203.2M. The paper prints 151M for S, which its own
# shapes do not give. The released Places model is "L" with num_classes=30 (643,502,848 parameters).
GENERATOR_PRESETS: dict[str, dict] = {
    "S": dict(width=512, depth=16, heads=8, head_width=960),
    "B": dict(width=768, depth=24, heads=12, head_width=1024),
    "L": dict(width=1024, depth=32, heads=16, head_width=1280),
    "H": dict(width=1280, depth=40, heads=16, head_width=1536),
    # The configuration of fixtures/official/generator_tiny_* (official code, 2 blocks, width 64).
    "official_tiny": dict(token_dim=8, width=64, depth=2, heads=4, num_classes=10, num_class_tokens=4,
                          head_width=32, head_depth=2, noise_draws=1, train_tokens=8),
    # The built-in model's generator (docs/builtin-model.md): 8M parameters, trained on a 2-core CPU.
    "demo": dict(token_dim=16, width=256, depth=6, heads=4, num_classes=8, num_class_tokens=8,
                 head_width=256, head_depth=4, attn_dropout=0.0, proj_dropout=0.0),
    "tiny": dict(token_dim=8, width=32, depth=2, heads=2, num_classes=4, num_class_tokens=4, head_width=32,
                 head_depth=2, noise_draws=2, train_tokens=8, attn_dropout=0.0, proj_dropout=0.0),
}


# ---------------------------------------------------------------------------------------------------------
# The window, defined once: the training mask and the sampling cache both use it.


def window_mask(query_pos: torch.Tensor, key_pos: torch.Tensor, window: int | None) -> torch.Tensor:
    """[Lq, Lk] bool, True where the query at position i may attend the key at position j:
    i − window ≤ j ≤ i (any j ≤ i when window is None)."""
    offset = query_pos[:, None] - key_pos[None, :]
    allowed = offset >= 0
    return allowed if window is None else allowed & (offset <= window)


def receptive_field(window: int | None, depth: int) -> int | None:
    """How many tokens before position p can change the output at p (None = all of them). Each layer looks
    `window` tokens further back, so the model's state after token p depends on tokens p − window·depth … p."""
    return None if window is None else window * depth


# ---------------------------------------------------------------------------------------------------------
# Rotary position embedding: channels rotated in interleaved pairs (2k, 2k+1), in float32 — or wider, for a
# model run in float64 (the parity tests do).


def rope_angles(positions: torch.Tensor, head_dim: int,
                dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [L, head_dim/2] of the angles position·10000^(−2k/head_dim)."""
    freqs = 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=dtype) / head_dim))
    angles = torch.outer(positions.to(dtype), freqs)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, heads, L, head_dim] rotated by the angles of its L positions."""
    pairs = x.to(cos.dtype).unflatten(-1, (-1, 2))
    x0, x1 = pairs[..., 0], pairs[..., 1]
    return torch.stack([x0 * cos - x1 * sin, x1 * cos + x0 * sin], dim=-1).flatten(-2).type_as(x)


class Rope(NamedTuple):
    """The positions of the image tokens in one forward pass and their rotation angles."""
    positions: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor


# ---------------------------------------------------------------------------------------------------------
# The block


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)  # [B, L, D] -> [B, heads, L, head_dim]


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2).flatten(2)


class SelfAttention(nn.Module):
    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.heads, self.window, self.dropout = cfg.heads, cfg.window, cfg.attn_dropout
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width)
        self.proj = nn.Linear(cfg.width, cfg.width)
        self.proj_drop = nn.Dropout(cfg.proj_dropout)

    def forward(self, x: torch.Tensor, rope: Rope, cache=None) -> torch.Tensor:
        q, k, v = (split_heads(t, self.heads) for t in self.qkv(x).chunk(3, dim=-1))
        q, k = apply_rope(q, rope.cos, rope.sin), apply_rope(k, rope.cos, rope.sin)
        key_pos = rope.positions
        if cache is not None:  # sampling: prepend the cached keys/values of the previous tokens
            k, v, key_pos = cache.update(k, v, key_pos)
        mask = window_mask(rope.positions, key_pos, self.window)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.proj_drop(self.proj(merge_heads(y)))


class CrossAttention(nn.Module):
    """Image tokens (queries, rotated by their positions) attend to all class tokens (keys not rotated)."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.heads, self.dropout = cfg.heads, cfg.attn_dropout
        self.q = nn.Linear(cfg.width, cfg.width)  # officially `qkv`, though it projects the queries only
        self.k = nn.Linear(cfg.width, cfg.width)
        self.v = nn.Linear(cfg.width, cfg.width)
        self.proj = nn.Linear(cfg.width, cfg.width)
        self.proj_drop = nn.Dropout(cfg.proj_dropout)

    def keys_values(self, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return split_heads(self.k(c), self.heads), split_heads(self.v(c), self.heads)

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], rope: Rope) -> torch.Tensor:
        q = apply_rope(split_heads(self.q(x), self.heads), rope.cos, rope.sin)
        y = F.scaled_dot_product_attention(q, *kv, dropout_p=self.dropout if self.training else 0.0)
        return self.proj_drop(self.proj(merge_heads(y)))


class MLP(nn.Module):
    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.width, int(cfg.width * cfg.mlp_ratio))
        self.fc2 = nn.Linear(int(cfg.width * cfg.mlp_ratio), cfg.width)
        self.drop = nn.Dropout(cfg.proj_dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(F.gelu(self.fc1(x)))))


class Block(nn.Module):
    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, eps=1e-6)
        self.attn = SelfAttention(cfg)
        # eps 1e-5: the official model builds these two as plain nn.LayerNorm, unlike every other norm.
        self.cross_norm = nn.LayerNorm(cfg.width, eps=1e-5)
        self.cross_cond_norm = nn.LayerNorm(cfg.width, eps=1e-5)
        self.attn2 = CrossAttention(cfg)
        self.norm2 = nn.LayerNorm(cfg.width, eps=1e-6)
        self.mlp = MLP(cfg)

    def class_step(self, c: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The class tokens c [B, K, D] in this block: the cross-attention keys/values they offer, and the
        class tokens of the next block. They never attend to anything; only the MLP changes them."""
        return self.attn2.keys_values(self.cross_cond_norm(c)), c + self.mlp(self.norm2(c))

    def forward(self, x: torch.Tensor, class_kv, rope: Rope, cache=None) -> torch.Tensor:
        """x [B, L, D] image tokens."""
        x = x + self.attn(self.norm1(x), rope, cache)
        x = x + self.attn2(self.cross_norm(x), class_kv, rope)
        return x + self.mlp(self.norm2(x))


class ClassContext(NamedTuple):
    """All the image tokens need from the class tokens; a function of the labels alone, so a sampler
    computes it once per image."""
    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per block: cross-attention keys/values
    first: torch.Tensor                            # [B, D] the condition of token 0 (the last class token)


# ---------------------------------------------------------------------------------------------------------
# The model

# Names that earlier eqgen (like the official code) gave two parameters -> today's.
EARLIER_NAMES = {"fake_latent": "null_class", "attn2.qkv": "attn2.q"}


def rename_parts(state: dict[str, torch.Tensor], names: dict[str, str]) -> dict[str, torch.Tensor]:
    """`state` with every key's dotted parts renamed by `names` ({"attn2.qkv": "attn2.q"} turns
    blocks.0.attn2.qkv.weight into blocks.0.attn2.q.weight; only whole parts match)."""
    def renamed(key: str) -> str:
        dotted = f".{key}."
        for old, new in names.items():
            dotted = dotted.replace(f".{old}.", f".{new}.")
        return dotted[1:-1]

    return {renamed(key): value for key, value in state.items()}



class EquivariantGenerator(Pretrained, nn.Module):
    config_class = GeneratorConfig

    @staticmethod
    def upgrade_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Weights written by earlier eqgen under today's names (today's weights are returned as they are);
        every loading path applies it (`checkpoint.check_fits`)."""
        return rename_parts(state, EARLIER_NAMES)

    def __init__(self, config: GeneratorConfig):
        super().__init__()
        check_config(config)
        self.config = cfg = config
        self.class_emb = nn.Embedding(cfg.num_classes, cfg.width)
        self.null_class = nn.Parameter(torch.zeros(1, cfg.width))  # the learned null class (CFG), `fake_latent`
        self.class_pos = nn.Parameter(torch.zeros(1, cfg.num_class_tokens, cfg.width))
        self.z_proj = nn.Linear(cfg.token_dim, cfg.width)
        self.z_proj_ln = nn.LayerNorm(cfg.width, eps=1e-6)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width, eps=1e-6)
        self._init_weights()
        self.head = FlowHead(cfg.token_dim, cfg.width, cfg.head_width, cfg.head_depth)  # initialises itself
        # Distilled few-step heads (distill.py) by their evaluations per token, when a pipeline carries them: kept
        # beside the generator, not among its weights (its directory and state dict are the same with or without).
        self.students: dict = {}

    def _init_weights(self):
        for p in (self.class_emb.weight, self.null_class, self.class_pos):
            nn.init.normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    # -- the class tokens --------------------------------------------------------------------------------

    def class_context(self, labels: torch.Tensor) -> ClassContext:
        """labels [B] (NULL_LABEL = the null class) -> what every image token needs from the class tokens."""
        if labels.ndim != 1 or labels.dtype not in (torch.int32, torch.int64):
            raise EqgenError(f"labels must be a 1-D integer tensor, got {labels.dtype} of shape {list(labels.shape)}")
        # (meta tensors, as in FLOP counting, have no values to check)
        if len(labels) and not labels.is_meta and not (
                NULL_LABEL <= int(labels.min()) <= int(labels.max()) < self.config.num_classes):
            raise EqgenError(f"labels must lie in 0..{self.config.num_classes - 1} (or {NULL_LABEL} for no class)")
        null = (labels == NULL_LABEL)[:, None]
        class_embedding = torch.where(null, self.null_class, self.class_emb(labels.clamp(min=0)))
        # Every class token carries the same class vector; the learned position tells them apart.
        c = self.z_proj_ln(class_embedding[:, None] + self.class_pos)
        kv = []
        for block in self.blocks:
            block_kv, c = block.class_step(c)
            kv.append(block_kv)
        return ClassContext(kv, self.norm(c[:, -1]))

    # -- the image tokens --------------------------------------------------------------------------------

    def hidden(self, tokens: torch.Tensor, context: ClassContext, start: int = 0, caches=None) -> torch.Tensor:
        """The normalised output [B, P, D] of tokens [B, P, C] at positions start … start+P−1; the output of
        the token at position p is the condition of token p+1. With `caches` (one per block, sampling.py) the
        tokens also attend the cached keys/values of earlier tokens, and the caches take in the new ones."""
        x = self.z_proj_ln(self.z_proj(tokens))
        positions = torch.arange(start, start + tokens.shape[1], device=tokens.device)
        dtype = torch.promote_types(self.z_proj.weight.dtype, torch.float32)
        rope = Rope(positions, *rope_angles(positions, self.config.width // self.config.heads, dtype))
        for i, (block, kv) in enumerate(zip(self.blocks, context.kv)):
            x = block(x, kv, rope, None if caches is None else caches[i])
        return self.norm(x)

    def condition(self, tokens: torch.Tensor, labels: torch.Tensor, start: int = 0) -> torch.Tensor:
        """z [B, L, D]: output i conditions token i (teacher forcing over the whole sequence). Positions
        start at `start` (0 when sampling; training draws it at random)."""
        context = self.class_context(labels)
        # Shift right by one: the last class token predicts token 0, image token i−1 predicts token i.
        return torch.cat([context.first[:, None], self.hidden(tokens, context, start)[:, :-1]], dim=1)

    # -- training ----------------------------------------------------------------------------------------

    def forward(self, tokens: torch.Tensor, labels: torch.Tensor,
                position_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The flow-matching loss of tokens [B, L, C] given labels [B]. position_mask [L] (bool) keeps the loss
        to those positions only (the zero-shot experiments of paper Table 1); every token is still context."""
        if tokens.ndim != 3 or tokens.shape[-1] != self.config.token_dim:
            raise EqgenError(f"tokens must be [batch, length, {self.config.token_dim}], got {list(tokens.shape)}")
        B, L, C = tokens.shape
        if len(labels) != B:
            raise EqgenError(f"{len(labels)} labels for {B} sequences")
        start = 0
        if self.training:
            # The official order of random draws: label dropout, then the position shift, then the loss noise.
            drop = torch.rand(B, device=labels.device) < self.config.label_dropout
            labels = labels.masked_fill(drop, NULL_LABEL)
            start = int(torch.randint(0, self.config.rope_shift, (1,)))
        z = self.condition(tokens, labels, start)
        if position_mask is not None:
            if position_mask.shape != (L,) or position_mask.dtype != torch.bool or not position_mask.any():
                raise EqgenError(f"position_mask must be a bool tensor of shape [{L}] with at least one True")
            tokens, z = tokens[:, position_mask], z[:, position_mask]
        return flow_matching_loss(self.head, tokens.reshape(-1, C), z.reshape(-1, z.shape[-1]), self.config.noise_draws)


def check_config(cfg: GeneratorConfig) -> None:
    if cfg.width % cfg.heads or (cfg.width // cfg.heads) % 2:
        raise EqgenError(f"width {cfg.width} must split into {cfg.heads} heads of even size")
    if cfg.window is not None and cfg.window < 1:
        raise EqgenError("window must be a positive number of tokens (or None for full causal attention)")
    for name in ("depth", "num_classes", "num_class_tokens", "rope_shift", "head_depth", "noise_draws", "token_dim"):
        if getattr(cfg, name) < 1:
            raise EqgenError(f"{name} must be at least 1, got {getattr(cfg, name)}")
