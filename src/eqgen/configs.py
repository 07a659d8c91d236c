"""Config dataclasses <-> JSON, and named presets.

Every model config is a plain dataclass. A module keeps its presets as a dict of names to overrides
(gpt-fast style) and builds configs with `from_preset`. The config is saved as `config.json` beside every
checkpoint, so a directory alone rebuilds its model.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, TypeVar

from .errors import EqgenError

T = TypeVar("T")


def from_preset(cls: type[T], presets: dict[str, dict[str, Any]], name: str, **overrides: Any) -> T:
    if name not in presets:
        raise EqgenError(f"unknown preset {name!r}; choose one of: {', '.join(presets)}")
    return from_dict(cls, {**presets[name], **overrides})


def from_dict(cls: type[T], values: dict[str, Any]) -> T:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise EqgenError(f"{cls.__name__} has no field(s) {', '.join(sorted(unknown))}")
    return cls(**values)


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def save_json(path: str | Path, values: dict[str, Any]) -> None:
    from .checkpoint import atomic_write_bytes

    atomic_write_bytes(Path(path), (json.dumps(values, indent=2, sort_keys=True) + "\n").encode())


def load_json(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise EqgenError(f"{path} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise EqgenError(f"{path} is not valid JSON ({err})") from None
