"""`eqgen distill head`: what a distilled head learns from, and its training in the shared loop (training.py).

The data is made once when a run starts (or resumes; it is a function of the seed and the settings): the
pipeline generates `images_per_class` sequences of `tokens` tokens per class at guidance scales spread over
`cfg_range`; the transformer's conditions at every position of them, conditional and unconditional, are what
the student learns for (with `data`, also those of `data_images` real images, by teacher forcing). Each condition gets one start noise (scaled by a temperature, half of them 1, half
spread over `temperature_range`), a guidance scale drawn from `cfg_range` (distilled guidance) and the teacher's
solve: Heun on time_grid(evals·s, rho), s = ceil(teacher_steps / evals), kept at the student's grid times.
A held-out twentieth of the conditions scores the EMA student at the end (`token_error`, the RMS difference to
the teacher's tokens relative to their RMS, in metrics.jsonl).
"""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from .checkpoint import CONFIG, WEIGHTS, model_files
from .configs import to_dict
from .distill import FOLDER, StudentConfig, StudentHead, reflow_loss, student_files, teacher_states, trajectory_loss
from .errors import EqgenError
from .evaluation.sample_dir import image_seed
from .files import commit_files, json_bytes
from .flow import time_grid
from .generator import NULL_LABEL
from .pipeline import Pipeline, pipeline_config
from .sampling import SamplingOptions, generate_tokens
from .training import RunConfig, Task, clip_and_step, cosine_lr, fit

HELD_OUT = 20   # every 20th condition scores the student, never trains it


@dataclass
class DistillConfig:
    evals: int = 4                   # the student's head evaluations per token
    method: str = "trajectory"
    guidance: str = "distilled"
    rho: float = 1.5                 # the student's time grid
    images_per_class: int = 64       # sequences the pipeline generates per class for the conditions
    tokens: int = 32                 # their length
    draws: int = 8                   # lessons per condition: start noises, each with its guidance scale
    data: str | None = None          # also teacher-forced conditions of real images: 'landscapes' or a folder
    data_images: int = 512           # how many (of --data)
    teacher_steps: int = 16          # Heun steps of the teacher's solve (at least; a multiple of evals)
    cfg_range: tuple[float, float] = (1.0, 5.0)
    temperature_range: tuple[float, float] = (0.0, 1.0)
    lr: float = 3e-4
    warmup_steps: int = 20
    grad_clip: float = 1.0

    def __post_init__(self):
        self.student()   # the student's fields are checked there
        for name in ("images_per_class", "tokens", "draws", "teacher_steps", "data_images"):
            if getattr(self, name) < 1:
                raise EqgenError(f"{name} must be at least 1, got {getattr(self, name)}")

    def student(self) -> StudentConfig:
        return StudentConfig(evals=self.evals, rho=self.rho, method=self.method, guidance=self.guidance,
                             cfg_range=self.cfg_range, temperature_range=self.temperature_range)

    @property
    def substeps(self) -> int:
        return math.ceil(self.teacher_steps / self.evals)


@torch.no_grad()
def sampled_conditions(generator, num_classes: int, config: DistillConfig, seed: int, rank: int = 0,
                       world_size: int = 1, batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Conditions (z_cond, z_uncond), [N, D] each, at every position of sequences the generator samples: image i
    has class i mod C and its own seed; this process takes every world_size-th batch of images."""
    C, n = num_classes, num_classes * config.images_per_class
    lo, hi = config.cfg_range
    batch = min(batch, math.ceil(n / world_size))   # every process gets a share
    chunks = list(range(0, n, batch))
    conditions = []
    for c, start in list(enumerate(chunks))[rank::world_size]:
        index = range(start, min(start + batch, n))
        labels = torch.tensor([i % C for i in index], device=next(generator.parameters()).device)
        cfg = lo + (hi - lo) * (c + 0.5) / len(chunks)   # guidance spread over the range, batch by batch
        options = SamplingOptions(cfg=cfg, cfg_schedule="constant")
        tokens = generate_tokens(generator, labels, config.tokens, options, rng=[image_seed(seed, int(y), i)
                                                                                  for y, i in zip(labels, index)])
        conditions.append(both_branches(generator, tokens, labels))
    if not conditions:
        raise EqgenError(f"{n} sampled sequences cannot be shared by {world_size} processes; raise --images-per-class")
    z = torch.cat(conditions, dim=1)
    return z[0], z[1]


def both_branches(generator, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[2, B·L, D]: the conditions at every position of tokens [B, L, C] under their labels, then under the null
    class (teacher forcing)."""
    return torch.stack([generator.condition(tokens, y).flatten(0, 1)
                        for y in (labels, torch.full_like(labels, NULL_LABEL))])


class RealImages(NamedTuple):
    """`--data`, opened and checked when the run is set up: its images, and each of its classes' model label."""
    source: Any
    labels: torch.Tensor

    @classmethod
    def open(cls, pipe, config: DistillConfig, seed: int) -> "RealImages":
        from .data.sources import ImageSource

        source = ImageSource(config.data, pipe.height, config.tokens * pipe.token_width, seed=seed)
        unknown = [name for name in source.classes if name not in pipe.classes]
        if unknown:
            raise EqgenError(f"--data {config.data} has classes this model does not know: {', '.join(unknown[:5])}")
        return cls(source, torch.tensor([pipe.classes.index(name) for name in source.classes]))


@torch.no_grad()
def data_conditions(pipe, data: RealImages, config: DistillConfig, rank: int = 0, world_size: int = 1,
                    batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Conditions (z_cond, z_uncond) at every position of real images (`config.tokens` tokens wide), by teacher
    forcing: this process's share of `data_images` images, labelled by the pipeline's class names."""
    wanted, conditions = math.ceil(config.data_images / world_size), []
    for images, labels in data.source.batches(min(batch, wanted), rank=rank, world_size=world_size):
        tokens, labels = pipe.encode(images[:wanted]), data.labels[labels[:wanted]].to(pipe.device)
        conditions.append(both_branches(pipe.generator, tokens, labels))
        wanted -= len(labels)
        if wanted <= 0:
            break
    z = torch.cat(conditions, dim=1)
    return z[0], z[1]


class Lessons:
    """What the student learns from: the conditions z [M, D] (conditional rows; with per-evaluation guidance the
    unconditional ones after them), and `draws` lessons per condition (lesson r learns condition r mod M): a
    guidance scale [R] (distilled guidance) and the teacher's states [evals + 1, R, C] from the start noise to
    the token. Every HELD_OUT-th condition, with all its lessons, is held out."""

    def __init__(self, pipe, config: DistillConfig, seed: int, rank: int, world_size: int,
                 data: RealImages | None = None, progress: bool = False, chunk: int = 8192):
        generator = pipe.generator
        z_cond, z_uncond = sampled_conditions(generator, len(pipe.classes), config, seed, rank, world_size)
        if data is not None:
            data_cond, data_uncond = data_conditions(pipe, data, config, rank, world_size)
            z_cond, z_uncond = torch.cat([z_cond, data_cond]), torch.cat([z_uncond, data_uncond])
        distilled = config.guidance == "distilled"
        self.z = z_cond if distilled else torch.cat([z_cond, z_uncond])
        M, N, C, device = len(self.z), len(z_cond), generator.config.token_dim, z_cond.device
        R = config.draws * M
        g = torch.Generator().manual_seed(seed * 1000 + rank)
        lo, hi = config.temperature_range
        temperature = torch.where(torch.rand(R, generator=g) < 0.5, torch.tensor(hi), lo + (hi - lo) * torch.rand(R, generator=g))
        noise = (torch.randn(R, C, generator=g) * temperature[:, None]).to(device)
        lo, hi = config.cfg_range
        self.scale = (lo + (hi - lo) * torch.rand(R, generator=g)).to(device) if distilled else None
        parts = []
        for a in tqdm(range(0, R, chunk), disable=not progress, desc="teacher", leave=False):
            index = torch.arange(a, min(a + chunk, R), device=device) % M
            if distilled:   # the guided solve: both branches of each condition, one row each
                z, scale = torch.cat([z_cond[index], z_uncond[index]]), self.scale[a:a + chunk, None]
            else:
                z, scale = self.z[index], None
            parts.append(teacher_states(generator.head, z, noise[a:a + chunk], scale, config.evals, config.rho,
                                        config.substeps))
        self.states = torch.cat(parts, dim=1)
        rows = torch.arange(R, device=device)
        held = (rows % M) % N % HELD_OUT == 0   # a held-out condition's branches are held out together
        self.train_rows, self.test_rows = rows[~held], rows[held]

    def conditions(self, rows: torch.Tensor) -> torch.Tensor:
        return self.z[rows % len(self.z)]


class DistillTask(Task):
    """The student learns the teacher's solves; AdamW, warm-up then a cosine decay over the run's steps."""
    kind = "distilled head"
    changeable = frozenset({"lr", "warmup_steps"})

    def __init__(self, pipe: Pipeline, config: DistillConfig, run: RunConfig):
        self.pipe, self.config, self.run = pipe, config, run
        self.generator = pipe.generator.requires_grad_(False)
        self.model = StudentHead.from_teacher(self.generator, config.student())
        self.weights_name = f"{FOLDER.format(config.evals)}/{WEIGHTS}"
        self.times = torch.tensor(time_grid(config.evals, config.rho))
        self.data = RealImages.open(pipe, config, run.seed) if config.data else None   # refused before any work
        self.lessons: Lessons | None = None

    def modules(self):
        return {"student": self.model}

    def optimizers(self):
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=self.config.lr, weight_decay=0.0)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, cosine_lr(self.config.warmup_steps, self.run.steps))
        return {"student": self.opt}

    def schedulers(self):
        return {"student": self.sched}

    def batches(self, start: int) -> Iterator[torch.Tensor]:
        c, begun = self.config, time.perf_counter()
        data = f" and teacher forcing {c.data_images} images of {c.data}" if c.data else ""
        self._say(f"sampling {c.images_per_class * len(self.pipe.classes)} sequences of {c.tokens} tokens{data} for "
                  f"the conditions, then the teacher's solves (Heun, {c.evals * c.substeps} steps)")
        self.lessons = Lessons(self.pipe.to(self.device), c, self.run.seed, self.rank, self.world_size, self.data,
                               progress=self.rank == 0)
        self._say(f"{len(self.lessons.train_rows)} lessons to learn, {len(self.lessons.test_rows)} held out, "
                  f"made in {time.perf_counter() - begun:.0f} s")
        rows = self.lessons.train_rows
        for step in range(start, 2**62):
            rng = np.random.default_rng([self.run.seed, step, self.rank])
            yield rows[torch.from_numpy(rng.integers(0, len(rows), self.run.batch_size)).to(rows.device)], \
                torch.from_numpy(rng.integers(0, self.config.evals, self.run.batch_size)), \
                torch.from_numpy(rng.random(self.run.batch_size)).float()

    def _say(self, message: str) -> None:
        if self.rank == 0:
            tqdm.write(f"distill: {message}", file=sys.stderr)

    def training_step(self, batch, step: int) -> dict[str, float]:
        rows, segment, t = (b.to(self.device) for b in batch)
        lessons, student = self.lessons, self.wrapped["student"]
        z, states = lessons.conditions(rows), lessons.states[:, rows]
        scale = None if lessons.scale is None else lessons.scale[rows]
        with self.autocast():
            if self.config.method == "trajectory":
                loss = trajectory_loss(student, states, z, scale, segment, self.times.to(self.device))
            else:
                loss = reflow_loss(student, states[0], states[-1], z, scale, t)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = clip_and_step(self.opt, self.config.grad_clip)
        self.sched.step()
        return {"loss": loss.item(), "grad_norm": grad_norm}

    def images_per_step(self, batch) -> int:
        return len(batch[0])

    @torch.no_grad()
    def evaluate(self, ema_model, step: int, out: Path) -> dict[str, float]:
        lessons, rows = self.lessons, self.lessons.test_rows
        z, states = lessons.conditions(rows), lessons.states[:, rows]
        if lessons.scale is None:
            tokens = ema_model.sample(z, states[0], None)
        else:
            tokens = ema_model.sample(z, states[0], lessons.scale[rows])
        reference = states[-1]
        return {"token_error": float((tokens - reference).pow(2).mean().sqrt() / reference.pow(2).mean().sqrt())}

    def settings(self) -> dict[str, Any]:
        return to_dict(self.config)

    def prepare(self, out: Path) -> None:
        """The pipeline directory around the head: the teacher's tokenizer and generator, any other distilled
        heads it carries, and the head's config."""
        pipe, students = self.pipe, dict(self.pipe.generator.students)
        students.pop(self.config.evals, None)
        files = {}
        for name, module in (("tokenizer", pipe.tokenizer), ("generator", pipe.generator)):
            files |= model_files(to_dict(module.config), module.state_dict(), folder=name)
        files |= student_files(students)
        files[f"{FOLDER.format(self.config.evals)}/{CONFIG}"] = json_bytes(to_dict(self.model.config))
        commit_files(out, files)

    def export_config(self, ema_model) -> dict[str, Any]:
        return {**pipeline_config(self.pipe.classes), "distillation": to_dict(self.config), "run": to_dict(self.run)}


def distill_head(model: str | Path, out: str | Path, run: RunConfig, config: DistillConfig,
                 resume: bool = False) -> StudentHead:
    """`eqgen distill head`: distil the flow head of the pipeline `model` into a head of `config.evals`
    evaluations; `out` becomes a pipeline directory carrying it (distilled-K/) beside the teacher."""
    if Path(out).resolve() == Path(str(model)).resolve():
        raise EqgenError(f"--out must be a new directory, not the model's own ({model}): the run keeps its "
                         "checkpoints there")
    pipe = Pipeline.from_pretrained(model)
    torch.manual_seed(run.seed)
    return fit(DistillTask(pipe, config, run), run, out, resume=resume)
