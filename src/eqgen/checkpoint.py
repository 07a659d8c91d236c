"""Model directories and training checkpoints.

A model directory holds `config.json` and `model.safetensors` (the weights used for inference; EMA weights
after training). A training run adds `training_state.pt`: everything needed to resume (raw and EMA weights,
optimizer, RNG, data position, the run's settings), tensors and plain Python values only, so it loads with
`torch.load(weights_only=True)`.

Every file is written atomically (`files.py`). A checkpoint is several files: `commit_files` writes all of
them before it renames any, and renames the training state last. `training_state.pt` is therefore the commit
record: a directory without it holds no checkpoint, one with it holds a complete one. The exported weights
carry their step in the safetensors metadata, so a resume sees when a kill fell between the renames and
exports them again.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from .configs import from_dict, to_dict
from .errors import EqgenError
from .files import atomic_write_bytes, commit_files, json_bytes, load_json

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
TRAINING_STATE = "training_state.pt"


def non_finite(state_dict: dict[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor holding a NaN or an infinity, or None."""
    return next((k for k, v in state_dict.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)


def weights_bytes(state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None = None,
                  name: str = "weights") -> bytes:
    """A safetensors file of `state_dict`, refused in one line if a tensor is not finite (nothing is written)."""
    bad = non_finite(state_dict)
    if bad is not None:
        raise EqgenError(f"refusing to write {name}: tensor {bad} is not finite")
    return save({k: v.detach().contiguous().cpu() for k, v in state_dict.items()}, metadata=metadata)


def save_weights(path: Path, state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    atomic_write_bytes(path, weights_bytes(state_dict, metadata, str(path)))


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise EqgenError(f"{path} not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise EqgenError(f"{path} is not a readable safetensors file ({err})") from None


def weights_step(path: Path) -> int | None:
    """The training step that wrote the weights file `path` (its metadata), or None if it does not say."""
    try:
        with safe_open(str(path), "pt") as f:
            return int((f.metadata() or {})["step"])
    except (SafetensorError, OSError, ValueError, KeyError):
        return None


def model_files(config: dict[str, Any], state_dict: dict[str, torch.Tensor], folder: str = "",
                dtype: torch.dtype | None = None) -> dict[str, bytes]:
    """The files of a model directory, by name inside its parent when `folder` is given ("generator/
    model.safetensors"): the weights (cast to `dtype` if given) and config.json, which is renamed last."""
    prefix = f"{folder}/" if folder else ""
    if dtype is not None:
        state_dict = {k: v.to(dtype) for k, v in state_dict.items()}
    return {prefix + WEIGHTS: weights_bytes(state_dict, name=prefix + WEIGHTS), prefix + CONFIG: json_bytes(config)}


def save_model_dir(directory: str | Path, config: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> None:
    """Write `config.json` and `model.safetensors` into `directory`."""
    commit_files(directory, model_files(config, state_dict))


def holds_checkpoint(directory: str | Path) -> bool:
    return (Path(directory) / TRAINING_STATE).is_file()


def state_bytes(state: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def load_training_state(directory: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(directory) / TRAINING_STATE
    if not path.is_file():
        raise EqgenError(f"nothing to resume: {path} not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which, never a traceback
        raise EqgenError(f"{path} is not a readable training state ({type(err).__name__}: {err})") from None


def upgraded(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` under the module's names: a module whose parameter names changed has an `upgrade_state_dict`
    that renames the ones of weights written before."""
    upgrade = getattr(module, "upgrade_state_dict", None)
    return state if upgrade is None else upgrade(state)


def check_fits(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str,
               verdict: str = "does not fit this model") -> dict[str, torch.Tensor]:
    """`upgraded(module, state)`, refused in one line unless its keys and shapes fit the module."""
    state = upgraded(module, state)
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    problems = [f"{name}: {', '.join(items[:3])}{' …' if len(items) > 3 else ''}"
                for name, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if items]
    if problems:
        raise EqgenError(f"{source} {verdict} ({'; '.join(problems)})")
    return state


def load_fitting(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str,
                 verdict: str = "does not fit this model") -> None:
    """Load a state dict that must fit exactly, in the module's own dtypes (shipped weights may be float16)."""
    state = check_fits(module, state, source, verdict)
    dtypes = {k: v.dtype for k, v in module.state_dict().items()}
    module.load_state_dict({k: v.to(dtypes[k]) for k, v in state.items()})


class Pretrained:
    """`save_pretrained` / `from_pretrained` for a module built from one config dataclass (`config_class`):
    a directory of config.json + model.safetensors."""

    config_class: type

    def save_pretrained(self, directory: str | Path, dtype: torch.dtype | None = None) -> None:
        """Write the model directory; dtype=torch.float16 halves its size."""
        commit_files(directory, model_files(to_dict(self.config), self.state_dict(), dtype=dtype))

    @classmethod
    def from_pretrained(cls, directory: str | Path):
        directory = Path(directory)
        if not directory.is_dir():
            raise EqgenError(f"model directory {directory} not found")
        file = directory / CONFIG
        config = from_dict(cls.config_class, load_json(file))
        return cls.from_weights(config, directory / WEIGHTS, f"{file}: ", "does not hold weights for its config.json")

    @classmethod
    def from_weights(cls, config, weights: Path, source: str, verdict: str):
        """The model of `config` with the weights in the file `weights`, in eval mode. What the model refuses
        in its config is reported after `source` ("path/config.json: "), weights that do not fit with `verdict`."""
        try:
            model = cls(config)
        except EqgenError as err:
            raise EqgenError(f"{source}{err}") from None
        except (RuntimeError, ValueError) as err:  # sizes torch cannot build (a negative width)
            raise EqgenError(f"{source}these sizes do not make a model ({str(err).splitlines()[0]})") from None
        load_fitting(model, load_weights(weights), str(weights), verdict)
        return model.eval()
