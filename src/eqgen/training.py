"""The training loop shared by the tokenizer and the generator.

A model's training is a `Task`: it owns the modules, optimizers and schedulers, and knows how to make the
batch of any step and how to take one step. `fit` owns everything around that: devices, DDP, EMA,
checkpoints, resume, the NaN/inf guard, progress and metrics. A killed run resumes from its last
checkpoint to the same result as an uninterrupted one, because everything random is either a function of the
step (the data) or saved in the checkpoint (the torch RNG state). How checkpoints are written, repaired after
a kill and resumed from is `resume.py`.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from .checkpoint import WEIGHTS, holds_checkpoint, load_training_state
from .devices import distributed_device, resolve_precision
from .errors import EqgenError
from .files import atomic_write_bytes, remove_temporaries
from .resume import DIVERGED, Checkpoints, keeping_rng, restore

METRICS = "metrics.jsonl"


@dataclass
class RunConfig:
    steps: int = 1000
    batch_size: int = 32          # per process
    seed: int = 0
    ema_decay: float = 0.999
    log_every: int = 10
    save_every: int = 500
    device: str = "auto"
    precision: str = "auto"       # bf16 (autocast), fp32, or auto: bf16 where the hardware has it

    def __post_init__(self):
        if not 0 <= self.ema_decay < 1:   # also refuses NaN; 1 would freeze the EMA, above 1 it diverges
            raise EqgenError(f"the EMA decay (--ema) must lie in [0, 1), got {self.ema_decay}")


# ---------------------------------------------------------------------------------------------------------
# Small pieces the tasks use


def warmup_lr(warmup_steps: int, decay_every: int = 0, decay_factor: float = 1.0):
    """LambdaLR factor: linear warm-up, then constant, or x`decay_factor` every `decay_every` steps."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return decay_factor ** ((step - warmup_steps) // decay_every) if decay_every else 1.0

    return factor


def cosine_lr(warmup_steps: int, total_steps: int, final: float = 0.02):
    """LambdaLR factor: linear warm-up, then a cosine from 1 down to `final` at `total_steps`."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def clip_and_step(optimizer: torch.optim.Optimizer, max_norm: float) -> float:
    """Clip the gradients of the optimizer's parameters, step, and return the pre-clip gradient norm."""
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm) if max_norm > 0 else _grad_norm(params)
    optimizer.step()
    return float(norm)


def _grad_norm(params: list[torch.Tensor]) -> torch.Tensor:
    return torch.linalg.vector_norm(torch.stack([p.grad.detach().norm() for p in params])) if params else torch.zeros(())


class EMA(nn.Module):
    """An exponential moving average of a module's parameters (buffers are copied)."""

    def __init__(self, model: nn.Module, decay: float):
        super().__init__()
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema, live = self.shadow.state_dict(), model.state_dict()
        floats = [k for k, v in ema.items() if v.is_floating_point()]
        torch._foreach_lerp_([ema[k] for k in floats], [live[k] for k in floats], 1.0 - self.decay)
        for k, v in ema.items():
            if not v.is_floating_point():
                v.copy_(live[k])


class Task:
    """One model's training. Subclasses set `model` (exported as the EMA copy) and implement the rest.
    Schedulers are `LambdaLR`s (a function of the step), so that a resumed run can take a new learning rate
    and warm-up."""

    model: nn.Module
    kind: str = "model"           # saved in the training state: a run resumes only with a task of its kind
    weights_name: str = WEIGHTS   # the file the EMA weights are exported to, beside config.json
    obsolete: tuple[str, ...] = ()   # files of an earlier layout of the run directory, removed once replaced
    # Fields of `settings()` that a resumed run may change (they apply from the resumed step on).
    changeable: frozenset[str] = frozenset()
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32     # the autocast dtype (set by `fit` from RunConfig.precision)
    rank: int = 0
    world_size: int = 1
    # True when some parameters get no gradient in some steps (a loss that starts late): DDP must look for them.
    find_unused_parameters: bool = False

    def modules(self) -> dict[str, nn.Module]:
        """Every trained module, by name (saved in the training state; wrapped in DDP when distributed)."""
        return {"model": self.model}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        raise NotImplementedError

    def schedulers(self) -> dict[str, Any]:
        return {}

    def batches(self, start: int) -> Iterator[Any]:
        """This process's batches for steps start, start+1, ... (a function of the step, the seed and the rank)."""
        raise NotImplementedError

    def training_step(self, batch: Any, step: int) -> dict[str, float]:
        """Forward, backward, optimizer steps. Returns metrics, "loss" among them."""
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """What the run depends on besides the RunConfig: saved with each checkpoint, compared on resume."""
        return {}

    def prepare(self, out: Path) -> None:
        """Write what the run directory needs besides its checkpoints and does not change during the run, when
        it starts or resumes (before a resume repairs its last checkpoint)."""

    def export_config(self, ema_model: nn.Module) -> dict[str, Any]:
        """What goes into config.json beside the exported weights (`ema_model`)."""
        raise NotImplementedError

    def evaluate(self, ema_model: nn.Module, step: int, out: Path) -> dict[str, float]:
        return {}

    def images_per_step(self, batch: Any) -> int:
        return len(batch[0]) if isinstance(batch, (tuple, list)) else len(batch)

    # Set by `fit`: the modules to call in `training_step` (DDP-wrapped when distributed).
    wrapped: dict[str, nn.Module]

    def autocast(self):
        """Mixed precision for the forward passes: bf16 autocast, or nothing in fp32. Parameters, optimizer
        state and EMA stay fp32."""
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)


def _wrap(module: nn.Module, device: torch.device, world_size: int, find_unused: bool) -> nn.Module:
    if world_size == 1 or not any(p.requires_grad for p in module.parameters()):
        return module
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused)


# ---------------------------------------------------------------------------------------------------------
# The loop

def fit(task: Task, run: RunConfig, out: str | Path, resume: bool = False) -> nn.Module:
    """Train `task` for `run.steps` steps, writing checkpoints into `out`. Returns the EMA model."""
    out = Path(out)
    device, rank, world_size = distributed_device(run.device)
    task.device, task.rank, task.world_size = device, rank, world_size
    task.dtype = resolve_precision(run.precision, device)
    for module in task.modules().values():
        module.to(device)
    ema = EMA(task.model, run.ema_decay)
    optimizers, schedulers = task.optimizers(), task.schedulers()
    checkpoints = Checkpoints(task, run, ema, optimizers, schedulers, out)

    if resume:
        start = restore(checkpoints, load_training_state(out, map_location=device))
        if start >= run.steps:
            raise EqgenError(f"{out} is already trained to step {start}; raise --steps to continue")
        checkpoints.last = start
    else:
        if rank == 0 and holds_checkpoint(out):
            raise EqgenError(f"{out} already holds a training run; pass --resume to continue it, or choose another --out")
        start = 0
        torch.manual_seed(run.seed + rank)
    task.wrapped = {name: _wrap(m, device, world_size, task.find_unused_parameters) for name, m in task.modules().items()}

    log = _MetricsLog(out / METRICS) if rank == 0 else None
    progress = tqdm(total=run.steps, initial=start, disable=rank != 0, dynamic_ncols=True,
                    desc=f"train {str(task.dtype).removeprefix('torch.')}")
    try:
        if rank == 0:
            remove_temporaries(out)
            _truncate_metrics(out / METRICS, start)   # a fresh start drops the records of a run that never saved
            task.prepare(out)
            if resume:
                checkpoints.repair(start)
        _loop(task, run, ema, optimizers, checkpoints, log, progress, start)
    except OSError as err:   # a full disk, a directory taken away: the previous checkpoint is whole
        raise checkpoints.stopped(f"{err.filename or out}: {err.strerror or err}") from None
    finally:
        progress.close()
    if world_size > 1:
        dist.barrier()
    return ema.shadow


def _loop(task, run, ema, optimizers, checkpoints, log, progress, start: int) -> None:
    images, tick = 0, time.perf_counter()
    data = task.batches(start)
    with _StopRequests() as stop:
        for step in range(start, run.steps):
            batch = next(data)
            for module in task.modules().values():
                module.train()
            metrics = task.training_step(batch, step)
            if not math.isfinite(metrics["loss"]):
                raise checkpoints.stopped(f"loss became {metrics['loss']} at step {step}", DIVERGED)
            ema.update(task.model)
            images += task.images_per_step(batch) * task.world_size
            done = step + 1
            final = done == run.steps
            if log and (done % run.log_every == 0 or final):
                elapsed = time.perf_counter() - tick
                metrics = {**metrics, "images_per_s": images / elapsed, **_lrs(optimizers)}
                log.write(done, metrics)
                progress.set_postfix(loss=f"{metrics['loss']:.4f}", img_s=f"{metrics['images_per_s']:.1f}")
                images, tick = 0, time.perf_counter()
            progress.update(1)
            # The evaluation comes before the final checkpoint: a run whose last checkpoint is final is done.
            if log and final:
                log.write(done, keeping_rng(task.evaluate, ema.shadow, done, checkpoints.out))
            if done % run.save_every == 0 or final or stop.requested:
                checkpoints.save(done)
            if stop.requested:
                raise EqgenError(f"stopped at step {done} ({stop.requested}); checkpoint saved, continue with --resume")


class _StopRequests:
    """Turn Ctrl-C / SIGTERM into a request honoured at the end of the current step, so no work is lost and
    the saved state is exactly that of a finished step."""

    def __enter__(self):
        self.requested = ""
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._request)
        return self

    def _request(self, signum, frame):
        if self.requested:  # a second Ctrl-C: leave now
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False


def _lrs(optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, float]:
    return {f"lr_{name}": opt.param_groups[0]["lr"] for name, opt in optimizers.items()}


class _MetricsLog:
    """metrics.jsonl: one JSON object per logged step."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path

    def write(self, step: int, metrics: dict[str, float]) -> None:
        if metrics:
            with self.path.open("a") as f:
                f.write(json.dumps({"step": step, **{k: float(v) for k, v in metrics.items()}}) + "\n")


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep the records up to `step`, the checkpoint a run continues from (0 for a fresh start): an interrupted
    run may have logged steps after it, and a kill or a full disk mid-write leaves a torn last line."""
    if not path.exists():
        return
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    keep = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise EqgenError(f"{path}: line {number} is not JSON; repair or delete the file") from None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise EqgenError(f"{path}: line {number} is not a metrics record (no step); repair or delete the file")
        if record["step"] <= step:
            keep.append(line)
    if len(keep) < len(lines):
        atomic_write_bytes(path, "".join(line + "\n" for line in keep).encode())
