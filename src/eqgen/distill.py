"""A few-step flow head: a student that samples a token in K head evaluations, distilled from the teacher head.

The transformer stays frozen and no training data is needed. The conditions z come from the pipeline's own
sampling (every position of sequences it generates, conditional and unconditional branch); for each condition
the teacher (the pipeline's flow head) integrates its guided ODE finely from noise, and the student, started
from the teacher's weights, learns to follow it in K Euler steps on the grid `flow.time_grid(K, rho)`.

Two ways of learning it (benchmarks/bench_distill.py measures both side by side):

- "trajectory": the teacher's solve passes through the student's grid times; the student's step from the
  teacher's state at t_k must land on the teacher's state at t_{k+1} (for K = 1 the direct distillation of
  Luhman & Luhman 2021; progressive distillation's target, taken from the fine solve at once).
- "reflow": the straight path from the noise to the teacher's token (rectified flow's reflow, Liu et al.
  2022), flow matching at random times; its flow is nearly straight, so few Euler steps follow it.

Guidance. With guidance "distilled" the student takes the guidance scale as an input (an embedding added to the
time embedding, zero at the start, as in Meng et al. 2023) and learns the teacher's guided flow: one branch,
no unconditional transformer pass. With "per-evaluation" it learns the unguided flow of both branches and
sampling guides each of its evaluations, as the teacher does. Temperature scales the start noise in both.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import CONFIG, WEIGHTS, load_fitting, load_weights, model_files
from .configs import from_dict, to_dict
from .errors import EqgenError
from .files import load_json
from .flow import SOLVERS, FlowHead, TimestepEmbedder, cfg_scale, guide, head_velocity, time_grid

METHODS = ("trajectory", "reflow")
FOLDER = "distilled-{}"   # a pipeline directory's distilled head of K evaluations: distilled-K/
GUIDANCE = ("distilled", "per-evaluation")


@dataclass
class StudentConfig:
    """What a distilled head is: saved beside its weights, read when sampling."""
    evals: int = 4                   # head evaluations per token (Euler steps on time_grid(evals, rho))
    rho: float = 1.5
    method: str = "trajectory"
    guidance: str = "distilled"
    cfg_range: tuple[float, float] = (1.0, 5.0)          # the guidance scales it learned (guidance "distilled")
    temperature_range: tuple[float, float] = (0.0, 1.0)  # the start-noise scales it learned

    def __post_init__(self):
        if self.evals < 1:
            raise EqgenError(f"a distilled head needs at least 1 evaluation, got {self.evals}")
        if self.method not in METHODS:
            raise EqgenError(f"unknown distillation method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.guidance not in GUIDANCE:
            raise EqgenError(f"unknown guidance mode {self.guidance!r}; choose one of {', '.join(GUIDANCE)}")
        if self.rho <= 0:
            raise EqgenError(f"rho must be positive, got {self.rho}")
        for name, (lo, hi) in (("cfg_range", self.cfg_range), ("temperature_range", self.temperature_range)):
            if not 0 <= lo <= hi:
                raise EqgenError(f"{name} must be two numbers 0 ≤ low ≤ high, got {lo}, {hi}")


class StudentHead(FlowHead):
    """The teacher's architecture; with distilled guidance, plus an embedding of the guidance scale whose output
    layer starts at zero, so that before training the student is exactly the teacher."""

    def __init__(self, token_dim: int, cond_dim: int, width: int, depth: int, config: StudentConfig):
        super().__init__(token_dim, cond_dim, width, depth)
        self.config = config
        self.guidance_embed = TimestepEmbedder(width) if config.guidance == "distilled" else None
        if self.guidance_embed is not None:
            nn.init.normal_(self.guidance_embed.mlp[0].weight, std=0.02)
            nn.init.zeros_(self.guidance_embed.mlp[2].weight)
            nn.init.zeros_(self.guidance_embed.mlp[2].bias)

    @classmethod
    def for_generator(cls, generator_config, config: StudentConfig) -> "StudentHead":
        g = generator_config
        return cls(g.token_dim, g.width, g.head_width, g.head_depth, config)

    @classmethod
    def from_teacher(cls, generator, config: StudentConfig) -> "StudentHead":
        """A student of the generator's flow head, its weights the teacher's (and the guidance embedding zero)."""
        student = cls.for_generator(generator.config, config)
        student.load_state_dict(generator.head.state_dict(), strict=False)   # all but the guidance embedding
        return student.to(next(generator.head.parameters()))

    @property
    def guidance_distilled(self) -> bool:
        return self.guidance_embed is not None

    def embed(self, z: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
        """cond_embed(z) (+ the guidance embedding of `scale` [N] with distilled guidance), [N, width]."""
        y = self.cond_embed(z)
        if self.guidance_embed is not None:
            y = y + self.guidance_embed(scale.to(y.dtype).expand(len(z)))
        return y

    def forward(self, x: torch.Tensor, t: torch.Tensor, z: torch.Tensor,
                scale: torch.Tensor | None = None) -> torch.Tensor:
        return self.velocity(x, self.modulations(self.time_embed(t) + self.embed(z, scale)))

    def sample(self, z: torch.Tensor, noise: torch.Tensor, scale: float | torch.Tensor | None) -> torch.Tensor:
        """Tokens [B, C] from `noise` [B, C] in `evals` Euler steps. Distilled guidance: z [B, D] (conditional
        rows only) and the scale; per evaluation: z = [cond; uncond] [2B, D] when `scale` is given.

        The grid's times are known before the first step, so the blocks' modulations of all of them come from one
        batched call ([evals·B, width] rows): at batch 1 each weight is read once per token, not once per step."""
        K, times = self.config.evals, time_grid(self.config.evals, self.config.rho)
        distilled = self.guidance_distilled
        if distilled:
            scale = torch.as_tensor(1.0 if scale is None else scale, device=z.device).reshape(-1)
        y = self.embed(z, scale if distilled else None)
        embedded = self.time_embed(torch.tensor(times[:-1], device=z.device, dtype=z.dtype))
        every = self.modulations((embedded[:, None] + y[None]).flatten(0, 1))   # [K·B', width] per entry
        x = noise
        for k, (t, t_next) in enumerate(zip(times[:-1], times[1:])):
            mods = [tuple(m.unflatten(0, (K, -1))[k] for m in mod) for mod in every]
            if distilled or scale is None:
                v = self.velocity(x, mods)
            else:
                v = guide(self.velocity(torch.cat([x, x]), mods), scale)
            x = x + (t_next - t) * v
        return x


# ---------------------------------------------------------------------------------------------------------
# What the student learns from


@torch.no_grad()
def teacher_states(teacher: FlowHead, z: torch.Tensor, noise: torch.Tensor, scale: torch.Tensor | None,
                   evals: int, rho: float, substeps: int) -> torch.Tensor:
    """The teacher's (guided) ODE solve from `noise` [N, C] at the student's grid times: states [evals + 1, N, C]
    (the noise first, the token last). It runs Heun on time_grid(evals·substeps, rho), whose every
    `substeps`-th time is one of time_grid(evals, rho). z, scale as for `flow.solve` (scale [N, 1] or None)."""
    times = time_grid(evals * substeps, rho)
    velocity = head_velocity(teacher, z, times, scale)
    states, x = [noise], noise
    for k in range(evals):
        x = SOLVERS["heun"](velocity, x, times[k * substeps:(k + 1) * substeps + 1])
        states.append(x)
    return torch.stack(states)


def trajectory_loss(student: nn.Module, states: torch.Tensor, z: torch.Tensor, scale: torch.Tensor | None,
                    segment: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    """The student's Euler step from the teacher's state at grid time k = segment [N] (of `times`, the student's
    grid) against the teacher's step to k + 1, as a velocity error (the displacement over the step's length)."""
    rows = torch.arange(len(z), device=z.device)
    x, x_next = states[segment, rows], states[segment + 1, rows]
    t, t_next = times[segment], times[segment + 1]
    target = (x_next - x) / (t_next - t)[:, None]
    return F.mse_loss(student(x, t, z, scale), target)


def reflow_loss(student: nn.Module, noise: torch.Tensor, token: torch.Tensor, z: torch.Tensor,
                scale: torch.Tensor | None, t: torch.Tensor) -> torch.Tensor:
    """Flow matching on the straight path from the noise to the teacher's token, at times t [N]."""
    x_t = t[:, None] * noise + (1 - t[:, None]) * token
    return F.mse_loss(student(x_t, t, z, scale), noise - token)


# ---------------------------------------------------------------------------------------------------------
# The distilled heads a generator carries


def distilled_head(generator, options) -> StudentHead:
    """The generator's distilled head of `options.steps` evaluations, refused in one line if it has none, or if
    the options ask for a guidance scale or temperature outside what it learned."""
    students = generator.students
    head = students.get(options.steps)
    if head is None:
        have = (f"it has distilled heads of {', '.join(map(str, sorted(students)))} evaluations: --steps "
                f"{min(students)}" if students else "it has none")
        raise EqgenError(f"this model has no distilled head of {options.steps} evaluations ({have}); make one with "
                         f"eqgen distill head --evals {options.steps}, or sample with --solver heun")
    c = head.config
    lo, hi = c.cfg_range
    low_scale = cfg_scale(0, 1 << 30, options.cfg, options.cfg_schedule)   # the schedule's smallest scale
    if head.guidance_distilled and not (lo <= min(low_scale, options.cfg) and max(low_scale, options.cfg) <= hi):
        raise EqgenError(f"the distilled head of {options.steps} evaluations learned guidance scales {lo:g}–{hi:g}, "
                         f"not cfg {options.cfg:g}; sample with --solver heun for it")
    lo, hi = c.temperature_range
    if not lo <= options.temperature <= hi:
        raise EqgenError(f"the distilled head of {options.steps} evaluations learned temperatures {lo:g}–{hi:g}, "
                         f"not {options.temperature:g}; sample with --solver heun for it")
    return head


def load_students(directory: Path, generator) -> dict[int, StudentHead]:
    """The distilled heads in a pipeline directory (its distilled-K/ folders), by evaluations. A folder without
    config.json (a distillation still running) holds none yet."""
    students = {}
    for folder in sorted(Path(directory).glob(FOLDER.format("*"))):
        file = folder / CONFIG
        if not file.is_file():
            continue
        config = from_dict(StudentConfig, load_json(file))
        if folder.name != FOLDER.format(config.evals):
            raise EqgenError(f"{file}: a head of {config.evals} evaluations belongs in {FOLDER.format(config.evals)}/")
        head = StudentHead.for_generator(generator.config, config)
        load_fitting(head, load_weights(folder / WEIGHTS), str(folder / WEIGHTS), "does not fit its config.json")
        students[config.evals] = head.eval()
    return students


def student_files(students: dict[int, StudentHead], dtype: torch.dtype | None = None) -> dict[str, bytes]:
    """The distilled-K/ folders of a pipeline directory, by file name."""
    files = {}
    for evals, head in students.items():
        files |= model_files(to_dict(head.config), head.state_dict(), folder=FOLDER.format(evals), dtype=dtype)
    return files
