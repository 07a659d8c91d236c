"""The flow head: a small per-token velocity model, its flow-matching loss, and the ODE solvers.

Conventions (those of the official code): data x0 at t=0, noise at t=1, z_t = t·noise + (1−t)·x0, and the
head predicts the velocity noise − x0. Sampling integrates from t=1 (noise) to t=0 (data). The head is
MAR's AdaLN MLP: the transformer output z for a token and the time t modulate every residual block.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import EqgenError

CFG_SCHEDULES = ("linear", "constant")


def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of t in [0, 1], used as is (not ×1000), cosines first."""
    half = dim // 2
    dtype = torch.promote_types(t.dtype, torch.float32)
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=dtype, device=t.device) / half)
    args = t[:, None].to(dtype) * freqs[None]
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

    def modulation(self, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.adaLN_modulation(y).chunk(3, dim=-1)

    def forward(self, h: torch.Tensor, mod: tuple[torch.Tensor, ...]) -> torch.Tensor:
        shift, scale, gate = mod
        return h + gate * self.mlp(modulate(self.in_ln(h), shift, scale))


class FinalLayer(nn.Module):
    def __init__(self, width: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(width, out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))

    def modulation(self, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.adaLN_modulation(y).chunk(2, dim=-1)

    def forward(self, h: torch.Tensor, mod: tuple[torch.Tensor, ...]) -> torch.Tensor:
        shift, scale = mod
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
        """x [N, C] noisy tokens, t [N] (or [1]) times in [0, 1], z [N, D] conditions -> velocity [N, C]."""
        return self.velocity(x, self.modulations(self.time_embed(t) + self.cond_embed(z)))

    def modulations(self, y: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        """Every block's (shift, scale[, gate]) from y = time_embed(t) + cond_embed(z) [N, width]. They do not
        depend on the noisy token, so an ODE computes them once per time, not once per evaluation."""
        return [block.modulation(y) for block in self.res_blocks] + [self.final_layer.modulation(y)]

    def velocity(self, x: torch.Tensor, mods: list[tuple[torch.Tensor, ...]]) -> torch.Tensor:
        """The residual MLP on the noisy tokens x [N, C] under `modulations(y)`."""
        h = self.input_proj(x)
        for block, mod in zip(self.res_blocks, mods):
            h = block(h, mod)
        return self.final_layer(h, mods[-1])


def flow_matching_loss(head: FlowHead, x0: torch.Tensor, z: torch.Tensor, draws: int = 1) -> torch.Tensor:
    """Mean squared velocity error of clean tokens x0 [N, C] given their conditions z [N, D], over `draws`
    noise samples per token. The rows are tiled block-wise ([x0; x0; ...]) and the noise, then t, come from
    the global RNG, in the official order."""
    x0, z = x0.repeat(draws, 1), z.repeat(draws, 1)
    noise = torch.randn_like(x0)
    t = torch.rand(len(x0), 1, device=x0.device) * (1 - 1e-5) + 1e-5  # never exactly 0
    z_t = t * noise + (1 - t) * x0
    return F.mse_loss(head(z_t, t.squeeze(1), z), noise - x0)


# ---------------------------------------------------------------------------------------------------------
# Sampling: classifier-free guidance on the velocity, and the ODE from noise (t=1) to data (t=0).


def cfg_scale(step: int, num_tokens: int, cfg: float, schedule: str = "linear") -> float:
    """The guidance scale at token `step` of `num_tokens`: `linear` (official) rises from about 1 at the first
    token to `cfg` at the last; `constant` is `cfg` everywhere."""
    if schedule == "linear":
        return 1 + (cfg - 1) * (step + 1) / num_tokens
    if schedule == "constant":
        return cfg
    raise EqgenError(f"unknown cfg schedule {schedule!r}; choose one of {', '.join(CFG_SCHEDULES)}")


def guide(v: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    """v_u + scale·(v_c − v_u) for v = [v_c; v_u] [2B, C]; scale a number or one per row [B, 1]."""
    v_cond, v_uncond = v.chunk(2)
    return v_uncond + scale * (v_cond - v_uncond)


Velocity = Callable[[torch.Tensor, float], torch.Tensor]


def time_grid(steps: int, rho: float = 1.0) -> list[float]:
    """t_k = (k/steps)^rho for k = steps … 0, from noise (1) to data (0). rho = 1 is the official uniform grid;
    rho > 1 puts the steps closer together near the data, where the velocity changes fastest
    (`benchmarks/bench_solvers.py` measures the error of each choice)."""
    return [(k / steps) ** rho for k in range(steps, -1, -1)]


def euler(velocity: Velocity, x: torch.Tensor, times: Sequence[float]) -> torch.Tensor:
    """The paper's solver: one evaluation per step, at its start (never at t = 0)."""
    for t, t_next in zip(times[:-1], times[1:]):
        x = x + (t_next - t) * velocity(x, t)
    return x


def heun(velocity: Velocity, x: torch.Tensor, times: Sequence[float]) -> torch.Tensor:
    """Second order (trapezoid with an Euler predictor): 2·steps − 1 evaluations; the last step is Euler's,
    so the velocity at t = 0 is never needed. Its error falls as 1/steps², Euler's as 1/steps."""
    for t, t_next in zip(times[:-1], times[1:]):
        v = velocity(x, t)
        x_next = x + (t_next - t) * v
        if t_next > 0:
            x_next = x + (t_next - t) * 0.5 * (v + velocity(x_next, t_next))
        x = x_next
    return x


SOLVERS: dict[str, Callable[[Velocity, torch.Tensor, Sequence[float]], torch.Tensor]] = {"euler": euler, "heun": heun}
# Sampling with a distilled few-step head (distill.py) instead of the flow head: `steps` is its evaluations.
DISTILLED = "distilled"


def evaluations(solver: str, steps: int) -> int:
    """Head evaluations per token (per branch)."""
    return 2 * steps - 1 if solver == "heun" else steps


def solve(head: FlowHead, z: torch.Tensor, noise: torch.Tensor, steps: int = 100, solver: str = "euler",
          cfg: float | torch.Tensor | None = None, rho: float = 1.0) -> torch.Tensor:
    """Tokens [B, C] by integrating the head's flow from `noise` [B, C] (t=1) to t=0 on `time_grid(steps, rho)`.

    z [B, D] are the conditions; with a guidance scale `cfg` (a number, or one per row [B, 1]),
    z = [cond; uncond] [2B, D] and the velocity is guided (`cfg=None`: no unconditional branch at all)."""
    check_solver(solver, steps, rho)
    times = time_grid(steps, rho)
    return SOLVERS[solver](head_velocity(head, z, times, cfg), noise, times)


def head_velocity(head: FlowHead, z: torch.Tensor, times: Sequence[float],
                  cfg: float | torch.Tensor | None = None) -> Velocity:
    """The (guided) velocity v(x, t) of the head's flow under conditions z, for t among `times`.

    z is embedded once and the grid's times in one call; the blocks' modulations once per time (Heun's
    corrector at t and its next predictor at t share them)."""
    cond = head.cond_embed(z)
    embedded = dict(zip(times, head.time_embed(torch.tensor(times, device=z.device, dtype=z.dtype)).split(1)))
    current: dict[float, list] = {}

    def velocity(x: torch.Tensor, t: float) -> torch.Tensor:
        if t not in current:
            current.clear()
            current[t] = head.modulations(embedded[t] + cond)
        if cfg is None:
            return head.velocity(x, current[t])
        return guide(head.velocity(torch.cat([x, x]), current[t]), cfg)

    return velocity


def check_solver(solver: str, steps: int, rho: float) -> None:
    if solver not in (*SOLVERS, DISTILLED):
        raise EqgenError(f"unknown solver {solver!r}; choose one of {', '.join((*SOLVERS, DISTILLED))}")
    if steps < 1:
        raise EqgenError(f"steps must be at least 1, got {steps}")
    if rho <= 0:
        raise EqgenError(f"rho must be positive, got {rho}")
