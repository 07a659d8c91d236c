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


def state_dict_in(value: Any, path: str | Path, what: str, expected: str) -> dict[str, torch.Tensor]:
    """`value` as a state dict (names -> tensors), or one line saying that `path` holds no `what` weights."""
    if not (isinstance(value, dict) and value and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                      for k, v in value.items())):
        raise EqgenError(f"{path} holds no {what} weights (expected {expected})")
    return value
