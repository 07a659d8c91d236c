"""The flow head: a small per-token velocity model, its flow-matching loss, and the ODE solvers.

Conventions (those of the official code): data x0 at t=0, noise at t=1, z_t = t·noise + (1−t)·x0, and the
head predicts the velocity noise − x0. Sampling integrates from t=1 (noise) to t=0 (data). The head is
MAR's AdaLN MLP: the transformer output z for a token and the time t modulate every residual block.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

SOLVERS = ("euler", "heun")
CFG_SCHEDULES = ("linear", "constant")


def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of t in [0, 1], used as is (not ×1000), cosines first."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedder(nn.Module):
    def __init__(self, width: int, frequencies: int = 256):
        super().__init__()
        self.frequencies = frequencies
        self.mlp = nn.Sequential(nn.Linear(frequencies, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.frequencies))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class ResBlock(nn.Module):
    """h += gate · MLP(LN(h)·(1+scale) + shift), with (shift, scale, gate) from the condition."""

    def __init__(self, width: int):
        super().__init__()
        self.in_ln = nn.LayerNorm(width, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 3 * width))

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale, gate = self.adaLN_modulation(y).chunk(3, dim=-1)
        return h + gate * self.mlp(modulate(self.in_ln(h), shift, scale))


class FinalLayer(nn.Module):
    def __init__(self, width: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(width, out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(y).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(h), shift, scale))


class FlowHead(nn.Module):
    """v(x_t, t, z): the velocity of one token's flow, conditioned on the transformer output z."""

    def __init__(self, token_dim: int, cond_dim: int, width: int, depth: int):
        super().__init__()
        self.time_embed = TimestepEmbedder(width)
        self.cond_embed = nn.Linear(cond_dim, width)
        self.input_proj = nn.Linear(token_dim, width)
        self.res_blocks = nn.ModuleList(ResBlock(width) for _ in range(depth))
        self.final_layer = FinalLayer(width, token_dim)
        self._init_weights()

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.time_embed.mlp[0].weight, std=0.02)
        nn.init.normal_(self.time_embed.mlp[2].weight, std=0.02)
        # Zero modulation and output: every block starts as the identity and the head predicts 0.
        for layer in [b.adaLN_modulation[-1] for b in self.res_blocks] + [self.final_layer.adaLN_modulation[-1],
                                                                          self.final_layer.linear]:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.conditioned(x, self.time_embed(t) + self.cond_embed(z))

    def conditioned(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The velocity given y = time embedding + condition embedding (a sampler reuses the parts)."""
        h = self.input_proj(x)
        for block in self.res_blocks:
            h = block(h, y)
        return self.final_layer(h, y)


def flow_matching_loss(head: FlowHead, x0: torch.Tensor, z: torch.Tensor, draws: int = 1,
                       weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared velocity error over `draws` noise samples per token (rows tiled block-wise).

    x0 [N, C] clean tokens, z [N, D] their conditions, weight [N] optional per-token weights (0/1 masks the
    token out of the loss)."""
    x0, z = x0.repeat(draws, 1), z.repeat(draws, 1)
    noise = torch.randn_like(x0)
    t = torch.rand(len(x0), 1, device=x0.device) * (1 - 1e-5) + 1e-5
    z_t = t * noise + (1 - t) * x0
    per_token = F.mse_loss(head(z_t, t.squeeze(1), z), noise - x0, reduction="none").mean(dim=-1)
    if weight is None:
        return per_token.mean()
    weight = weight.repeat(draws).to(per_token.dtype)
    return (per_token * weight).sum() / weight.sum().clamp_min(1)


# ---------------------------------------------------------------------------------------------------------
# Sampling: classifier-free guidance on the velocity, and the ODE from noise (t=1) to data (t=0).


def cfg_scale(step: int, num_tokens: int, cfg: float, schedule: str = "linear") -> float:
    """The guidance scale at token `step`: `linear` rises from ~1 to `cfg` along the sequence (official)."""
    if schedule == "linear":
        return 1 + (cfg - 1) * (step + 1) / num_tokens
    if schedule == "constant":
        return cfg
    raise ValueError(f"unknown cfg schedule {schedule!r}; choose one of {', '.join(CFG_SCHEDULES)}")


def guided_velocity(head: FlowHead, z: torch.Tensor, scale: float | None) -> Callable:
    """The velocity field v(x, t) for conditions z [B, D], or with CFG for z = [cond; uncond] [2B, D]:
    one batched head call per evaluation, v = v_u + s·(v_c − v_u)."""
    cond = head.cond_embed(z)  # constant along the ODE: embed once

    def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
        if scale is not None:
            x = torch.cat([x, x])
        t_embed = head.time_embed(torch.full((1,), t, device=x.device, dtype=x.dtype))
        v = head.conditioned(x, t_embed + cond)
        if scale is None:
            return v
        v_cond, v_uncond = v.chunk(2)
        return v_uncond + scale * (v_cond - v_uncond)

    return velocity


def solve(velocity: Callable, noise: torch.Tensor, steps: int, solver: str = "euler") -> torch.Tensor:
    """Integrate dx/dt = v from t=1 to t=0 in `steps` uniform steps; the model is never called at t=0.

    euler: `steps` evaluations (the paper's, 100 by default). heun: second order, 2·steps − 1 evaluations
    (the last step is Euler's, since v at t=0 is never evaluated)."""
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    x, dt = noise, 1.0 / steps
    for i in range(steps, 0, -1):
        v = velocity(x, i / steps)
        x_next = x - dt * v
        if solver == "heun" and i > 1:
            x_next = x - dt * 0.5 * (v + velocity(x_next, (i - 1) / steps))
        x = x_next
    return x


def head_evaluations(steps: int, solver: str) -> int:
    return 2 * steps - 1 if solver == "heun" else steps
