"""`--data` for the training commands: the built-in landscapes or an image folder, as resumable batches.

Batch k of process r depends only on (seed, k, r), so a resumed run sees exactly the batches an uninterrupted
one would have seen, and DDP processes see different data.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch.utils.data import DataLoader, Sampler

from ..errors import EqgenError

Batch = tuple[torch.Tensor, torch.Tensor]  # images [B,3,H,W] in [-1,1], labels [B]


@dataclass
class ImageSource:
    """Where training images come from: `classes` and resumable `batches`."""

    spec: str
    height: int
    width: int
    seed: int = 0

    def __post_init__(self):
        if self.spec == "landscapes":
            from .landscapes import CLASSES

            self.classes = list(CLASSES)
            self.folder = None
        else:
            from .folders import ImageFolder

            if not Path(self.spec).is_dir():
                raise EqgenError(f"--data must be 'landscapes' or an image folder; {self.spec!r} is neither")
            self.folder = ImageFolder(self.spec, self.height, self.width, train=True, seed=self.seed)
            self.classes = list(self.folder.classes)

    def batches(self, batch_size: int, start: int = 0, rank: int = 0, world_size: int = 1,
                workers: int = 0) -> Iterator[Batch]:
        if self.folder is None:
            from .landscapes import iterate_landscapes

            # Each process renders its own stream; 7919 keeps the rank streams apart for any base seed.
            yield from iterate_landscapes(batch_size, self.height, self.width, seed=self.seed + 7919 * rank,
                                          start=start)
            return
        sampler = _EpochBatches(len(self.folder), batch_size, self.seed, start, rank, world_size)
        loader = DataLoader(self.folder, batch_sampler=sampler, num_workers=workers,
                            persistent_workers=workers > 0)
        yield from loader


    def held_out(self, n: int, width: int | None = None) -> torch.Tensor:
        """n fixed evaluation images [n,3,H,W], never seen in training: landscapes from seeds outside the
        training streams (any width), or the folder's first images, center-cropped."""
        width = width or self.width
        if self.folder is None:
            from ..imageio import from_uint8
            from .landscapes import render_batch

            classes = [i % len(self.classes) for i in range(n)]
            return from_uint8(render_batch(classes, [2**40 + self.seed * 1000 + i for i in range(n)], width, self.height))
        from .folders import ImageFolder

        folder = ImageFolder(self.spec, self.height, width, train=False, seed=self.seed, verify=False)
        return torch.stack([folder[i][0] for i in range(min(n, len(folder)))])


class _EpochBatches(Sampler[list[tuple[int, int]]]):
    """Index batches: one seeded permutation per epoch, process r takes every world_size-th batch. Items are
    (epoch, index) pairs, so every epoch draws new crops and flips, in DataLoader workers too."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int, rank: int, world_size: int):
        if n < batch_size * world_size:
            raise EqgenError(f"the folder has {n} usable images, fewer than one batch ({batch_size} x {world_size})")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.start, self.rank, self.world_size = start, rank, world_size

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        per_epoch = self.n // (self.batch_size * self.world_size)
        step = self.start
        while True:
            epoch, k = divmod(step, per_epoch)
            perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
            first = (k * self.world_size + self.rank) * self.batch_size
            yield [(epoch, i) for i in perm[first:first + self.batch_size].tolist()]
            step += 1
