"""How accurately a flow-head solver integrates a trained model's ODE, against head evaluations per token.

The transformer's conditions come from real tokens (held-out renders of every class, teacher forcing), so every
solver integrates the same ODEs from the same noise, and each result is compared with a fine reference solve.
The error is the RMS token difference relative to the RMS of the reference tokens.
"""
from __future__ import annotations

import time
from typing import Iterable, NamedTuple

import torch

from ..distill import distilled_head
from ..flow import DISTILLED, evaluations, solve
from ..generator import NULL_LABEL
from ..sampling import SamplingOptions
from .positions import held_out_tokens

REFERENCE = ("heun", 400, 1.0)


@torch.no_grad()
def teacher_conditions(pipe, per_class: int, tokens: int, guided: bool) -> torch.Tensor:
    """z [N, D] of every token of `per_class` held-out renders of each class ([cond; uncond] [2N, D] if guided)."""
    x, classes = held_out_tokens(pipe, per_class, tokens)
    branches = [classes] + ([torch.full_like(classes, NULL_LABEL)] if guided else [])
    return torch.cat([pipe.generator.condition(x, y) for y in branches]).flatten(0, 1)


class Problem(NamedTuple):
    """Held-out ODEs: conditions z ([cond; uncond] when guided), start noise, the constant guidance scale (None:
    unguided) and the REFERENCE solve's tokens."""
    z: torch.Tensor
    noise: torch.Tensor
    cfg: float | None
    reference: torch.Tensor

    def error(self, tokens: torch.Tensor) -> float:
        """RMS difference to the reference tokens relative to their RMS."""
        return float((tokens - self.reference).pow(2).mean().sqrt() / self.reference.pow(2).mean().sqrt())

    def solve(self, head, steps: int, solver: str, rho: float) -> torch.Tensor:
        return solve(head, self.z, self.noise, steps, solver, self.cfg, rho)

    def distilled(self, student) -> torch.Tensor:
        """The tokens of a distilled head (distill.StudentHead) from the same noise."""
        if student.guidance_distilled:
            return student.sample(self.z[:len(self.noise)], self.noise, 1.0 if self.cfg is None else self.cfg)
        return student.sample(self.z, self.noise, self.cfg)


@torch.no_grad()
def held_out_problem(pipe, cfg: float = 3.0, per_class: int = 4, tokens: int = 16, seed: int = 0,
                     temperature: float = 1.0) -> Problem:
    guided = cfg != 1.0
    z = teacher_conditions(pipe, per_class, tokens, guided)
    n = len(z) // 2 if guided else len(z)
    noise = torch.randn(n, pipe.generator.config.token_dim, generator=torch.Generator().manual_seed(seed)).to(z)
    noise = noise * temperature
    scale = cfg if guided else None
    ref_solver, ref_steps, ref_rho = REFERENCE
    return Problem(z, noise, scale, solve(pipe.generator.head, z, noise, ref_steps, ref_solver, scale, ref_rho))


@torch.no_grad()
def solver_errors(pipe, runs: Iterable[tuple[str, int, float]], cfg: float = 3.0, per_class: int = 4,
                  tokens: int = 16, seed: int = 0, temperature: float = 1.0) -> list[dict]:
    """One row per (solver, steps, rho) of `runs`: head evaluations, relative error against the REFERENCE solve,
    and seconds. cfg is a constant guidance scale (1 = unguided); solver "distilled" is the pipeline's distilled
    head of `steps` evaluations (rho unused)."""
    problem = held_out_problem(pipe, cfg, per_class, tokens, seed, temperature)
    rows = []
    for solver, steps, rho in runs:
        start = time.perf_counter()
        if solver == DISTILLED:
            options = SamplingOptions(cfg=cfg, cfg_schedule="constant", temperature=temperature, solver=solver,
                                      steps=steps)
            out = problem.distilled(distilled_head(pipe.generator, options))
        else:
            out = problem.solve(pipe.generator.head, steps, solver, rho)
        rows.append(dict(solver=solver, steps=steps, rho=rho, evaluations=evaluations(solver, steps),
                         error=problem.error(out), tokens=len(problem.noise), seconds=time.perf_counter() - start))
    return rows
