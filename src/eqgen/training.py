"""The training loop shared by the tokenizer and the generator.

A model's training is a `Task`: it owns the modules, optimizers and schedulers, and knows how to make the
batch of any step and how to take one step. `fit` owns everything around that: devices, DDP, EMA,
checkpoints (atomic), resume, the NaN/inf guard, progress and metrics. A killed run resumes from its last
checkpoint to the same result as an uninterrupted one, because everything random is either a function of the
step (the data) or saved in the checkpoint (the torch RNG state).
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
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

from .checkpoint import WEIGHTS, load_training_state, save_model_dir, save_training_state
from .errors import EqgenError


@dataclass
class RunConfig:
    steps: int = 1000
    batch_size: int = 32          # per process
    seed: int = 0
    ema_decay: float = 0.999
    log_every: int = 10
    save_every: int = 500
    eval_every: int = 0           # 0: evaluate only at the end
    device: str = "auto"
    precision: str = "auto"       # bf16 (autocast), fp32, or auto: bf16 where the hardware has it


# ---------------------------------------------------------------------------------------------------------
# Small pieces the tasks use


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes in bf16 natively: CUDA, or a CPU with AVX512-BF16 or AMX (elsewhere CPU
    bf16 is emulated and slower than fp32)."""
    if device.type == "cuda":
        return True
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")   # torch.cpu's own checks
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


PRECISIONS = ("auto", "bf16", "fp32")


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """The autocast dtype of a training run: torch.bfloat16, or torch.float32 (no autocast)."""
    if name not in PRECISIONS:
        raise EqgenError(f"unknown precision {name!r} (use {', '.join(PRECISIONS)})")
    if name == "bf16" or (name == "auto" and native_bf16(device)):
        return torch.bfloat16
    return torch.float32


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise EqgenError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise EqgenError("--device cuda was asked for, but no CUDA device is available")
    return device


def warmup_lr(warmup_steps: int, decay_every: int = 0, decay_factor: float = 1.0):
    """LambdaLR factor: linear warm-up, then constant, or x`decay_factor` every `decay_every` steps."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return decay_factor ** ((step - warmup_steps) // decay_every) if decay_every else 1.0

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
    """One model's training. Subclasses set `model` (exported as the EMA copy) and implement the rest."""

    model: nn.Module
    weights_name: str = WEIGHTS   # the file the EMA weights are exported to, beside config.json
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

    def export_config(self) -> dict[str, Any]:
        """What goes into config.json beside the exported weights."""
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


# ---------------------------------------------------------------------------------------------------------
# Distributed set-up: torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT.


def _init_distributed(device: torch.device) -> tuple[int, int]:
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def distributed_device(name: str) -> tuple[torch.device, int, int]:
    """This process's device (cuda:LOCAL_RANK under torchrun when `name` asks for CUDA), rank and world size;
    joins the process group when torchrun started several processes."""
    device = resolve_device(name)
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    return (device, *_init_distributed(device))


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

    start = 0
    if resume:
        state = load_training_state(out, map_location=device)
        for name, module in task.modules().items():
            module.load_state_dict(state["modules"][name])
        ema.shadow.load_state_dict(state["ema"])
        for name, opt in optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        for name, sched in schedulers.items():
            sched.load_state_dict(state["schedulers"][name])
        start = state["step"]
        torch.set_rng_state(state["rng"][rank]["cpu"].cpu())
        if "cuda" in state["rng"][rank] and device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"][rank]["cuda"].cpu())
        if start >= run.steps:
            raise EqgenError(f"{out} is already trained to step {start}; raise --steps to continue")
        _truncate_metrics(out / "metrics.jsonl", start)
    else:
        if rank == 0 and (out / "training_state.pt").exists():
            raise EqgenError(f"{out} already holds a training run; pass --resume to continue it, or choose another --out")
        torch.manual_seed(run.seed + rank)
    task.wrapped = {name: _wrap(m, device, world_size, task.find_unused_parameters) for name, m in task.modules().items()}

    def save(step: int) -> None:
        rng = _gather_rng(world_size)
        if rank != 0:
            return
        _check_finite(task.model, step, out)
        save_training_state(out, {
            "step": step,
            "modules": {name: m.state_dict() for name, m in task.modules().items()},
            "ema": ema.shadow.state_dict(),
            "optimizers": {name: o.state_dict() for name, o in optimizers.items()},
            "schedulers": {name: s.state_dict() for name, s in schedulers.items()},
            "rng": rng,
        })
        save_model_dir(out, task.export_config(), ema.shadow.state_dict(), task.weights_name)

    log = _MetricsLog(out / "metrics.jsonl") if rank == 0 else None
    progress = tqdm(total=run.steps, initial=start, disable=rank != 0, dynamic_ncols=True,
                    desc=f"train {str(task.dtype).removeprefix('torch.')}")
    images, tick = 0, time.perf_counter()
    data = task.batches(start)
    with _StopRequests() as stop:
        for step in range(start, run.steps):
            batch = next(data)
            for module in task.modules().values():
                module.train()
            metrics = task.training_step(batch, step)
            if not math.isfinite(metrics["loss"]):
                progress.close()
                raise EqgenError(
                    f"loss became {metrics['loss']} at step {step}; stopped. The last good checkpoint in {out} is "
                    "kept: resume from it with a lower learning rate or stronger gradient clipping")
            ema.update(task.model)
            images += task.images_per_step(batch) * world_size
            done = step + 1
            if log and (done % run.log_every == 0 or done == run.steps):
                elapsed = time.perf_counter() - tick
                metrics = {**metrics, "images_per_s": images / elapsed, **_lrs(optimizers)}
                log.write(done, metrics)
                progress.set_postfix(loss=f"{metrics['loss']:.4f}", img_s=f"{metrics['images_per_s']:.1f}")
                images, tick = 0, time.perf_counter()
            progress.update(1)
            if run.eval_every and done % run.eval_every == 0 and done != run.steps and rank == 0:
                log.write(done, task.evaluate(ema.shadow, done, out))
            if done % run.save_every == 0 or done == run.steps or stop.requested:
                save(done)
            if stop.requested:
                progress.close()
                raise EqgenError(f"stopped at step {done} ({stop.requested}); checkpoint saved, continue with --resume")
    progress.close()
    if rank == 0:
        log.write(run.steps, task.evaluate(ema.shadow, run.steps, out))
    if world_size > 1:
        dist.barrier()
    return ema.shadow


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


def _gather_rng(world_size: int) -> list[dict[str, torch.Tensor]]:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    if world_size == 1:
        return [state]
    states = [None] * world_size
    dist.all_gather_object(states, state)
    return states


def _check_finite(model: nn.Module, step: int, out: Path) -> None:
    for name, p in model.state_dict().items():
        if p.is_floating_point() and not torch.isfinite(p).all():
            raise EqgenError(f"weight {name} is not finite at step {step}; the last good checkpoint in {out} is kept")


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
    """On resume, drop the records an interrupted run wrote after its last checkpoint."""
    if path.exists():
        keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in keep))
