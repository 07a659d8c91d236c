"""A training run's checkpoints, and resuming from them.

Crash safety: a checkpoint is committed by renaming its training state into place after its exported weights
and config.json (see `checkpoint.py`), so a kill at any moment leaves either the previous checkpoint or the
new one, and a directory that never got one is free for a fresh start. On the next start `fit` deletes the
temporary files a killed writer left, `Checkpoints.repair` exports the weights again if a kill fell between a
checkpoint's renames, and `fit` drops the metrics records (and a torn last line) beyond the checkpoint it
continues from. A failed write (a full disk) stops the run with one line; the previous checkpoint stays.

Resume: the training state saves the run's settings. Those in `RESUMABLE` (and the task's `changeable` ones:
learning rate, warm-up, ...) may differ when a run is resumed and apply from the resumed step on; any other
difference is refused in one line. The task, EMA and run config below are `training.py`'s.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from .checkpoint import (CONFIG, TRAINING_STATE, check_fits, holds_checkpoint, non_finite, state_bytes, upgraded,
                         weights_bytes, weights_step)
from .configs import from_dict, to_dict
from .errors import EqgenError
from .files import commit_files, json_bytes, load_json

# RunConfig fields a resumed run may change; the batch size and the seed decide the data, so they must match.
RESUMABLE = frozenset({"steps", "save_every", "log_every", "ema_decay", "device", "precision"})
DIVERGED = "a lower --lr or a longer --warmup"   # the remedy for a loss or a weight gone NaN/inf


def keeping_rng(fn, *args):
    """Call `fn` without drawing from the global RNG streams: evaluation and export must not change training."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        return fn(*args)


class Checkpoints:
    """Writes the checkpoints of one run and remembers the last one, so that errors say what is kept."""

    def __init__(self, task, run, ema, optimizers: dict, schedulers: dict, out: Path):
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
        config = keeping_rng(self.task.export_config, self.ema.shadow)
        return {self.task.weights_name: weights, CONFIG: json_bytes(config)}


def restore(checkpoints: Checkpoints, state: Any) -> int:
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


def _check_state(state: Any, checkpoints: Checkpoints, path: Path) -> None:
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


def _gather_rng(world_size: int) -> list[dict[str, torch.Tensor]]:
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    if world_size == 1:
        return [state]
    states = [None] * world_size
    dist.all_gather_object(states, state)
    return states
