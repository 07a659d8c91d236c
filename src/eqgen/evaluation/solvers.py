"""How accurately a flow-head solver integrates a trained model's ODE, against head evaluations per token.

The transformer's conditions come from real tokens (held-out renders of every class, teacher forcing), so every
solver integrates the same ODEs from the same noise, and each result is compared with a fine reference solve.
The error is the RMS token difference relative to the RMS of the reference tokens.
"""
from __future__ import annotations

import time
from typing import Iterable

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


@torch.no_grad()
def solver_errors(pipe, runs: Iterable[tuple[str, int, float]], cfg: float = 3.0, per_class: int = 4,
                  tokens: int = 16, seed: int = 0, temperature: float = 1.0) -> list[dict]:
    """One row per (solver, steps, rho) of `runs`: head evaluations, relative error against the REFERENCE solve,
    and seconds. cfg is a constant guidance scale (1 = unguided); solver "distilled" is the pipeline's distilled
    head of `steps` evaluations (rho unused)."""
    guided = cfg != 1.0
    z = teacher_conditions(pipe, per_class, tokens, guided)
    n = len(z) // 2 if guided else len(z)
    noise = torch.randn(n, pipe.generator.config.token_dim, generator=torch.Generator().manual_seed(seed)).to(z)
    noise = noise * temperature
    head, scale = pipe.generator.head, (cfg if guided else None)
    ref_solver, ref_steps, ref_rho = REFERENCE
    reference = solve(head, z, noise, ref_steps, ref_solver, scale, ref_rho)
    rms = reference.pow(2).mean().sqrt()
    rows = []
    for solver, steps, rho in runs:
        start = time.perf_counter()
        if solver == DISTILLED:
            options = SamplingOptions(cfg=cfg, cfg_schedule="constant", temperature=temperature, solver=solver,
                                      steps=steps)
            student = distilled_head(pipe.generator, options)
            out = student.sample(z[:n], noise, cfg) if student.guidance_distilled else student.sample(z, noise, scale)
        else:
            out = solve(head, z, noise, steps, solver, scale, rho)
        rows.append(dict(solver=solver, steps=steps, rho=rho, evaluations=evaluations(solver, steps),
                         error=float((out - reference).pow(2).mean().sqrt() / rms), tokens=n,
                         seconds=time.perf_counter() - start))
    return rows
