"""The public API: render any crop of any landscape, and endless resumable training batches."""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from ...errors import EqgenError
from ...imageio import from_uint8
from .noise import derive_seeds, hashed_uniform
from .recipes import RECIPES
from .scene import Scene

CLASSES = tuple(RECIPES)  # desert, alpine, forest, coast, canyon, tundra, night, savanna: labels 0..7
MIN_HEIGHT = 8


def class_index(name: str) -> int:
    if name not in CLASSES:
        raise EqgenError(f"unknown landscape class {name!r}; choose one of: {', '.join(CLASSES)}")
    return CLASSES.index(name)


def render_batch(classes: Sequence[str | int], seeds: Sequence[int], width: int, height: int,
                 x0: int = 0) -> np.ndarray:
    """uint8 [B, H, W, 3]: image b shows class classes[b] from seeds[b], columns x0 .. x0 + width - 1."""
    labels = np.array([c if isinstance(c, (int, np.integer)) else class_index(c) for c in classes], np.int64)
    if len(labels) != len(seeds):
        raise EqgenError(f"got {len(labels)} classes for {len(seeds)} seeds")
    if np.any((labels < 0) | (labels >= len(CLASSES))):
        raise EqgenError(f"class indices must be in [0, {len(CLASSES)})")
    _check_shape(height, width)
    if int(x0) != x0:
        raise EqgenError(f"x0 must be an integer pixel column, got {x0}")
    seeds = np.array([int(s) % 2 ** 64 for s in seeds], np.uint64)
    out = np.empty((len(labels), height, width, 3), np.uint8)
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        scene = Scene(seeds[idx], int(label), int(width), int(height), int(x0))
        RECIPES[CLASSES[label]](scene)
        out[idx] = np.rint(np.clip(scene.img, 0, 1) * 255)
    return out


def render(cls: str | int, width: int, height: int = 64, seed: int = 0, x0: int = 0) -> np.ndarray:
    """One landscape, uint8 [H, W, 3]; render(c, w, h, s, x0=a) is columns a .. a+w-1 of any wider render."""
    return render_batch([cls], [seed], width, height, x0)[0]


# --- torch batches ----------------------------------------------------------------------------------------


def _class_names(classes: Sequence[str] | None) -> list[str]:
    names = list(CLASSES if classes is None else classes)
    if not names:
        raise EqgenError("classes must name at least one landscape class")
    for name in names:
        class_index(name)
    if len(set(names)) != len(names):
        raise EqgenError(f"classes has duplicates: {', '.join(names)}")
    return names


def _check_shape(height: int, width: int) -> None:
    if int(width) != width or width < 1:
        raise EqgenError(f"width must be a positive integer, got {width}")
    if int(height) != height or height < MIN_HEIGHT:
        raise EqgenError(f"height must be an integer >= {MIN_HEIGHT}, got {height}")


def iterate_landscapes(batch_size: int, height: int, width: int, seed: int = 0, classes: Sequence[str] | None = None,
                       start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless fresh batches (images [B, 3, H, W] float in [-1, 1], labels [B] long indexing `classes`).

    Batch k is a pure function of (seed, k), so a run resumed with start=k sees exactly the batches an
    uninterrupted run would have seen. Labels are drawn uniformly.
    """
    if int(batch_size) != batch_size or batch_size < 1:
        raise EqgenError(f"batch_size must be a positive integer, got {batch_size}")
    _check_shape(height, width)
    return _batches(int(batch_size), int(height), int(width), int(seed), _class_names(classes), int(start))


def _batches(batch_size, height, width, seed, names, step):
    position = np.arange(batch_size)
    while True:
        labels = (hashed_uniform(derive_seeds(seed, 2, step), position) * len(names)).astype(np.int64)
        seeds = derive_seeds(seed, 1, step, position)
        images = render_batch([names[k] for k in labels], seeds.tolist(), width, height)
        yield from_uint8(images), torch.from_numpy(labels)
        step += 1
