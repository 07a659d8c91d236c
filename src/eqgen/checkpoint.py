"""Model directories and atomic writes.

A model directory holds `config.json` and `model.safetensors` (the weights used for inference; EMA weights
after training). A training run adds `training_state.pt`: everything needed to resume (raw and EMA weights,
optimizer, RNG, data position), tensors and plain Python values only, so it loads with
`torch.load(weights_only=True)`. Every file is written to a temporary name and renamed into place, so a crash
mid-write leaves the previous checkpoint loadable.
"""
from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from .configs import from_dict, load_json, save_json, to_dict
from .errors import EqgenError

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
TRAINING_STATE = "training_state.pt"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())   # mkstemp's 0600 would hide the file from everyone else
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_weights(path: Path, state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    atomic_write_bytes(path, save(tensors, metadata=metadata))


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise EqgenError(f"{path} not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise EqgenError(f"{path} is not a readable safetensors file ({err})") from None


def save_model_dir(directory: str | Path, config: dict[str, Any], state_dict: dict[str, torch.Tensor],
                   weights: str = WEIGHTS) -> None:
    """Write `config.json` and the weights (`model.safetensors` by default) into `directory`."""
    directory = Path(directory)
    save_weights(directory / weights, state_dict)
    save_json(directory / CONFIG, config)


def load_model_dir(directory: str | Path, weights: str = WEIGHTS) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    directory = Path(directory)
    if not directory.is_dir():
        raise EqgenError(f"model directory {directory} not found")
    return load_json(directory / CONFIG), load_weights(directory / weights)


def save_training_state(directory: str | Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    atomic_write_bytes(Path(directory) / TRAINING_STATE, buffer.getvalue())


def load_training_state(directory: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(directory) / TRAINING_STATE
    if not path.is_file():
        raise EqgenError(f"nothing to resume: {path} not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which, never a traceback
        raise EqgenError(f"{path} is not a readable training state ({type(err).__name__}: {err})") from None


def check_fits(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str,
               verdict: str = "does not fit this model") -> None:
    """Refuse, in one line, a state dict whose keys or shapes do not fit the module."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    problems = [f"{name}: {', '.join(items[:3])}{' …' if len(items) > 3 else ''}"
                for name, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if items]
    if problems:
        raise EqgenError(f"{source} {verdict} ({'; '.join(problems)})")


def load_fitting(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str,
                 verdict: str = "does not fit this model") -> None:
    """Load a state dict that must fit exactly, in the module's own dtypes (shipped weights may be float16)."""
    check_fits(module, state, source, verdict)
    dtypes = {k: v.dtype for k, v in module.state_dict().items()}
    module.load_state_dict({k: v.to(dtypes[k]) for k, v in state.items()})


class Pretrained:
    """`save_pretrained` / `from_pretrained` for a module built from one config dataclass (`config_class`):
    a directory of config.json + model.safetensors."""

    config_class: type

    def save_pretrained(self, directory: str | Path) -> None:
        save_model_dir(directory, to_dict(self.config), self.state_dict())

    @classmethod
    def from_pretrained(cls, directory: str | Path):
        config, weights = load_model_dir(directory)
        model = cls(from_dict(cls.config_class, config))
        load_fitting(model, weights, str(directory), "does not hold weights for its config.json")
        return model.eval()
