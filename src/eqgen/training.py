"""The training loop shared by the tokenizer and the generator.

A model's training is a `Task`: it owns the modules, optimizers and schedulers, and knows how to make the
batch of any step and how to take one step. `fit` owns everything around that: devices, DDP, EMA,
checkpoints, resume, the NaN/inf guard, progress and metrics. A killed run resumes from its last
checkpoint to the same result as an uninterrupted one, because everything random is either a function of the
step (the data) or saved in the checkpoint (the torch RNG state).

Crash safety: a checkpoint is committed by renaming its training state into place after its exported weights
and config.json (see `checkpoint.py`), so a kill at any moment leaves either the previous checkpoint or the
new one, and a directory that never got one is free for a fresh start. On the next start `fit` deletes the
temporary files a killed writer left, exports the weights again if a kill fell between a checkpoint's renames,
and drops the metrics records (and a torn last line) beyond the checkpoint it continues from. A failed write
(a full disk) stops the run with one line; the previous checkpoint stays.

Resume: the training state saves the run's settings. Those in `RESUMABLE` (and the task's `changeable` ones:
learning rate, warm-up, ...) may differ when a run is resumed and apply from the resumed step on; any other
difference is refused in one line.
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from .checkpoint import (CONFIG, TRAINING_STATE, WEIGHTS, check_fits, holds_checkpoint, load_training_state,
                         non_finite, state_bytes, upgraded, weights_bytes, weights_step)
from .configs import from_dict, to_dict
from .errors import EqgenError
from .files import atomic_write_bytes, commit_files, json_bytes, load_json, remove_temporaries

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


# RunConfig fields a resumed run may change; the batch size and the seed decide the data, so they must match.
RESUMABLE = frozenset({"steps", "save_every", "log_every", "ema_decay", "device", "precision"})


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


# ---------------------------------------------------------------------------------------------------------
# Distributed set-up: torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT.


def _init_distributed(device: torch.device) -> tuple[int, int]:
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return 0, 1
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _wrap(module: nn.Module, device: torch.device, world_size: int, find_unused: bool) -> nn.Module:
    if world_size == 1 or not any(p.requires_grad for p in module.parameters()):
        return module
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused)


# ---------------------------------------------------------------------------------------------------------
# The loop

DIVERGED = "a lower --lr or a longer --warmup"   # the remedy for a loss or a weight gone NaN/inf


def fit(task: Task, run: RunConfig, out: str | Path, resume: bool = False) -> nn.Module:
    """Train `task` for `run.steps` steps, writing checkpoints into `out`. Returns the EMA model."""
    out = Path(out)
    device = resolve_device(run.device)
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    rank, world_size = _init_distributed(device)
    task.device, task.rank, task.world_size = device, rank, world_size
    task.dtype = resolve_precision(run.precision, device)
    for module in task.modules().values():
        module.to(device)
    ema = EMA(task.model, run.ema_decay)
    optimizers, schedulers = task.optimizers(), task.schedulers()
    checkpoints = _Checkpoints(task, run, ema, optimizers, schedulers, out)

    if resume:
        start = _restore(checkpoints, load_training_state(out, map_location=device))
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
                log.write(done, _keeping_rng(task.evaluate, ema.shadow, done, checkpoints.out))
            if done % run.save_every == 0 or final or stop.requested:
                checkpoints.save(done)
            if stop.requested:
                raise EqgenError(f"stopped at step {done} ({stop.requested}); checkpoint saved, continue with --resume")


def _keeping_rng(fn, *args):
    """Call `fn` without drawing from the global RNG streams: evaluation and export must not change training."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        return fn(*args)


class _Checkpoints:
    """Writes the checkpoints of one run and remembers the last one, so that errors say what is kept."""

    def __init__(self, task: Task, run: RunConfig, ema: EMA, optimizers: dict, schedulers: dict, out: Path):
        self.task, self.ema, self.optimizers, self.schedulers, self.out = task, ema, optimizers, schedulers, out
        self.settings = _flat({**to_dict(run), **task.settings()})
        self.last: int | None = None   # the step of the checkpoint in `out`, None while there is none

    def stopped(self, cause: str, remedy: str = "") -> EqgenError:
        """The error that ends the run: its cause, whether a checkpoint is kept, and how to go on."""
        if self.last is None:
            then = f": start again with {remedy}" if remedy else ""
            return EqgenError(f"{cause}; stopped. No checkpoint was saved in {self.out} yet{then}")
        then = f" and {remedy} (they apply to a resumed run)" if remedy else ""
        return EqgenError(f"{cause}; stopped. The checkpoint of step {self.last} in {self.out} is kept: continue "
                          f"it with --resume{then}")

    def save(self, step: int) -> None:
        rng = _gather_rng(self.task.world_size)
        if self.task.rank != 0:
            return
        modules = {name: m.state_dict() for name, m in self.task.modules().items()}
        for what, weights in [*modules.items(), ("EMA", self.ema.shadow.state_dict())]:
            bad = non_finite(weights)
            if bad is not None:
                raise self.stopped(f"weight {bad} of the {what} is not finite at step {step}", DIVERGED)
        state = {
            "step": step,
            "kind": self.task.kind,
            "settings": self.settings,
            "modules": modules,
            "ema": self.ema.shadow.state_dict(),
            "optimizers": {name: o.state_dict() for name, o in self.optimizers.items()},
            "schedulers": {name: s.state_dict() for name, s in self.schedulers.items()},
            "rng": rng,
        }
        self._commit({**self._export(step), TRAINING_STATE: state_bytes(state)})  # the state commits
        self.last = step

    def repair(self, step: int) -> None:
        """A kill between a checkpoint's renames leaves exported weights of another step than the training
        state they belong with (or, with earlier eqgen, no config.json, or no weights where today's layout
        has them): export them again from the state."""
        if weights_step(self.out / self.task.weights_name) != step or not (self.out / CONFIG).exists():
            self._commit(self._export(step))

    def _commit(self, files: dict[str, bytes]) -> None:
        commit_files(self.out, files)
        for name in self.task.obsolete:   # what the files just written replace
            (self.out / name).unlink(missing_ok=True)

    def _export(self, step: int) -> dict[str, bytes]:
        weights = weights_bytes(self.ema.shadow.state_dict(), {"step": str(step)}, self.task.weights_name)
        config = _keeping_rng(self.task.export_config, self.ema.shadow)
        return {self.task.weights_name: weights, CONFIG: json_bytes(config)}


def _restore(checkpoints: _Checkpoints, state: Any) -> int:
    """Load a training state into the run; returns its step. The optimizer settings of this run (learning
    rate, betas, the schedulers' base rates and warm-up) replace the saved ones; only the step and the
    optimizer's moments come from the state."""
    task, path = checkpoints.task, checkpoints.out / TRAINING_STATE
    try:
        _check_state(state, checkpoints, path)
    except (AttributeError, TypeError) as err:   # entries of the wrong type
        raise EqgenError(f"{path} does not fit this run ({type(err).__name__}: {err})") from None
    changes = _compare_settings(state.get("settings", {}), checkpoints.settings,
                                RESUMABLE | task.changeable, checkpoints.out)
    wanted = {name: [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
              for name, opt in checkpoints.optimizers.items()}
    bases = {name: (list(s.base_lrs), list(s.lr_lambdas)) for name, s in checkpoints.schedulers.items()}
    try:
        for name, module in task.modules().items():
            module.load_state_dict(upgraded(module, state["modules"][name]))
        checkpoints.ema.shadow.load_state_dict(upgraded(task.model, state["ema"]))
        for name, opt in checkpoints.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        for name, sched in checkpoints.schedulers.items():
            sched.load_state_dict(state["schedulers"][name])
        rng = state["rng"][task.rank]
        torch.set_rng_state(rng["cpu"].cpu())
        if "cuda" in rng and task.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"].cpu())
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise EqgenError(f"{path} does not fit this run ({type(err).__name__}: {err})") from None
    for name, opt in checkpoints.optimizers.items():
        for group, settings in zip(opt.param_groups, wanted[name]):
            group.update(settings)
    for name, sched in checkpoints.schedulers.items():
        sched.base_lrs, sched.lr_lambdas = bases[name]
        for group, base, factor in zip(sched.optimizer.param_groups, sched.base_lrs, sched.lr_lambdas):
            group["lr"] = base * factor(sched.last_epoch)   # what LambdaLR.step computes
        sched._last_lr = [group["lr"] for group in sched.optimizer.param_groups]
    if task.rank == 0 and changes:
        print(f"resuming {checkpoints.out} at step {state['step']} with {', '.join(changes)}", file=sys.stderr)
    return state["step"]


def _check_state(state: Any, checkpoints: _Checkpoints, path: Path) -> None:
    """Refuse, in one line, a training state that is not one of this kind of run."""
    task = checkpoints.task
    parts = {"modules": task.modules(), "optimizers": checkpoints.optimizers, "schedulers": checkpoints.schedulers}
    if not (isinstance(state, dict) and isinstance(state.get("step"), int) and isinstance(state.get("ema"), dict)
            and isinstance(state.get("rng"), list) and isinstance(state.get("settings", {}), dict)
            and all(isinstance(state.get(k), dict) for k in parts)):
        raise EqgenError(f"{path} is not an eqgen training state (it needs step, modules, ema, optimizers, "
                         "schedulers and rng)")
    if state.get("kind", task.kind) != task.kind:
        raise EqgenError(f"{path} is the training state of a {state['kind']}, not of a {task.kind}")
    for part, expected in parts.items():
        if set(state[part]) != set(expected):
            raise EqgenError(f"{path} holds {part} {sorted(state[part])}; this run has {sorted(expected)}")
    for name, module in task.modules().items():
        check_fits(module, state["modules"][name], f"{path} ({name})", "does not fit this run's model")
    check_fits(task.model, state["ema"], f"{path} (EMA)", "does not fit this run's model")
    if len(state["rng"]) != task.world_size:
        raise EqgenError(f"{path} was saved by {len(state['rng'])} process(es); resume it with as many "
                         f"(this run has {task.world_size})")


def _flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as one level ("losses.adversarial_start"), tuples as lists (as JSON would have them)."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = list(value) if isinstance(value, tuple) else value
    return flat


def _compare_settings(saved: dict[str, Any], current: dict[str, Any], changeable: frozenset[str],
                      out: Path) -> list[str]:
    """Refuse in one line a resumed run whose fixed settings differ from the saved ones; return the changed
    settings that apply, as 'name old -> new'."""
    changed = [k for k in current if k in saved and saved[k] != current[k]]
    fixed = [f"{k} {current[k]!r} (the run's: {saved[k]!r})" for k in changed if k not in changeable]
    if fixed:
        raise EqgenError(f"{out} was trained with other settings, and a resumed run keeps them: {', '.join(fixed)}")
    return [f"{k} {saved[k]!r} -> {current[k]!r}" for k in changed]


# ---------------------------------------------------------------------------------------------------------
# The model config of a resumed run


def resumed_config(cls: type, out: Path, asked: Any, section: str | None = None, ignore: tuple[str, ...] = ()):
    """The model config of the run in `out`, from its config.json (or that file's `section`), refused in one
    line where it differs from `asked` (the config --preset and the model flags give; fields in `ignore` may
    differ)."""
    path = Path(out) / CONFIG
    if not path.exists() and holds_checkpoint(out):   # earlier eqgen wrote it after the state: a kill could lose it
        return asked   # the state must fit it; the resume then writes config.json anew
    values = load_json(path)
    if section is not None:
        if section not in values:
            raise EqgenError(f"{path} has no {section!r} section: {out} is not a {section} run")
        values = values[section]
    config = from_dict(cls, values, str(path))   # checks every field's type, naming the file and the field
    mine, theirs = to_dict(config), to_dict(asked)
    differ = [f"{k} {theirs[k]!r} (the run's: {mine[k]!r})" for k in mine if k not in ignore and mine[k] != theirs[k]]
    if differ:
        raise EqgenError(f"the model of the run in {out} differs from the one asked for (--preset and the model "
                         f"flags must be the run's): {', '.join(differ)}")
    return config


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
