"""Reading official checkpoints safely: tensors and plain values only, never arbitrary pickled objects."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import load_weights
from ..errors import EqgenError


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A `.safetensors` file, or a `torch.save` file loaded with `weights_only=True` (argparse.Namespace,
    which the official generator checkpoints carry as `args`, is the only class allowed in)."""
    path = Path(path)
    if not path.is_file():
        raise EqgenError(f"checkpoint {path} not found")
    if path.suffix == ".safetensors":
        return load_weights(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise EqgenError(f"{path} is not a checkpoint eqgen can read safely (tensors and plain values only): "
                         f"{type(err).__name__}: {str(err).splitlines()[0]}") from None


def check_fits(module: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Refuse, in one line, a state dict whose keys or shapes do not fit the module."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    problems = [f"{name}: {', '.join(items[:3])}{' …' if len(items) > 3 else ''}"
                for name, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if items]
    if problems:
        raise EqgenError(f"{source} does not fit this model ({'; '.join(problems)})")
