"""Encode a dataset once; train the generator on the cached tokens.

Encoding every batch with the tokenizer costs far more than a generator step, so the generator trains on a
cache: the posterior means of every image (and of its mirror image: an image's flip is a different token
sequence), as float16 `.npy` shards that are memory-mapped, so a cache larger than memory streams from disk
(ImageNet with flips is about 21 GB). The noise posterior is applied on the fly by the trainer, which draws
new noise every time a sequence is used. Each DDP process reads its own contiguous part of the rows.

    cache/
      index.json            shapes, shard list, class names, the tokenizer's config
      tokens_00000.npy      [n, N, D] float16
      labels_00000.npy      [n] int64
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .configs import from_dict
from .errors import EqgenError
from .files import atomic_write_bytes, load_json, save_json

INDEX = "index.json"


@dataclass
class _Shard:
    tokens: str  # file names inside the cache folder
    labels: str
    rows: int


@dataclass
class _Index:
    signature: dict
    shards: list[_Shard]
    length: int
    token_dim: int
    classes: list[str]


def _rebuild(directory: Path) -> str:
    return f"delete {directory} to rebuild the cache, or choose another --cache"


def _read_index(directory: Path) -> _Index:
    try:
        return from_dict(_Index, load_json(directory / INDEX))
    except EqgenError as err:
        raise EqgenError(f"{err}; {_rebuild(directory)}") from None


@torch.no_grad()
def build_token_cache(tokenizer, source, directory: str | Path, num_images: int, batch_size: int = 64,
                      flips: bool = True, shard_size: int = 8192, device: str | torch.device = "cpu") -> "TokenCache":
    """Encode `num_images` images of `source` (an `ImageSource`) into `directory`; reuse a matching cache."""
    directory = Path(directory)
    signature = {"source": source.spec, "height": source.height, "width": source.width, "seed": source.seed,
                 "num_images": num_images, "flips": flips, "tokenizer": _tokenizer_signature(tokenizer)}
    if (directory / INDEX).exists():
        if _read_index(directory).signature == signature:
            return TokenCache(directory)
        raise EqgenError(f"{directory} holds a token cache of other data or another tokenizer; choose another --cache")
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = tokenizer.to(device).eval()
    shards, tokens, labels, done = [], [], [], 0
    batches = source.batches(batch_size)
    with tqdm(total=num_images, desc="encode tokens", unit="img") as progress:
        while done < num_images:
            images, y = next(batches)
            images, y = images[: num_images - done].to(device), y[: num_images - done]
            views = [images, images.flip(-1)] if flips else [images]
            for view in views:
                tokens.append(tokenizer.encode(view).to("cpu", torch.float16).numpy())
                labels.append(y.numpy().astype(np.int64))
            done += len(images)
            progress.update(len(images))
            if sum(len(t) for t in tokens) >= shard_size or done == num_images:
                shards.append(_write_shard(directory, len(shards), np.concatenate(tokens), np.concatenate(labels)))
                tokens, labels = [], []
    first = np.load(directory / shards[0]["tokens"], mmap_mode="r")
    index = {"signature": signature, "shards": shards, "length": first.shape[1], "token_dim": first.shape[2],
             "classes": list(source.classes)}
    save_json(directory / INDEX, index)
    return TokenCache(directory)


def _tokenizer_signature(tokenizer) -> str:
    """A short fingerprint of the tokenizer's weights, so a cache is never reused with another tokenizer."""
    total = sum(float(p.double().sum()) for p in tokenizer.parameters())
    return f"{sum(p.numel() for p in tokenizer.parameters())}:{total:.6e}"


_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _open_shard(path: Path, shape: tuple[int, ...], dtype: type, rebuild: str) -> np.memmap:
    """Memory-map one `.npy` shard after checking its header against the index and its size against its
    header: a truncated shard is caught here, from its size alone, not when training reaches its end."""
    try:
        with path.open("rb") as f:
            read_header = _HEADERS.get(np.lib.format.read_magic(f))
            if read_header is None:
                raise ValueError("an unknown .npy format version")
            found, fortran, found_dtype = read_header(f)
            needed = f.tell() + int(np.prod(found)) * found_dtype.itemsize
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise EqgenError(f"token cache shard {path} is missing; {rebuild}") from None
    except (OSError, ValueError) as err:
        raise EqgenError(f"token cache shard {path} is not a readable .npy file ({err}); {rebuild}") from None
    if found != shape or found_dtype != dtype or fortran:
        raise EqgenError(f"token cache shard {path} holds {found_dtype} {list(found)}, the index says {np.dtype(dtype)} "
                         f"{list(shape)}; {rebuild}")
    if size < needed:
        raise EqgenError(f"token cache shard {path} is truncated ({size} of {needed} bytes); {rebuild}")
    return np.load(path, mmap_mode="r")


def _write_shard(directory: Path, i: int, tokens: np.ndarray, labels: np.ndarray) -> dict:
    names = {"tokens": f"tokens_{i:05d}.npy", "labels": f"labels_{i:05d}.npy", "rows": len(tokens)}
    for key, array in (("tokens", tokens), ("labels", labels)):
        buffer = io.BytesIO()
        np.save(buffer, array)
        atomic_write_bytes(directory / names[key], buffer.getvalue())
    return names


class TokenCache:
    """Read side: rows of (tokens [N, D], label), memory-mapped.

    Opening checks the index and every shard's header and file size against it, without reading the
    tokens, so a damaged cache (an interrupted copy, a full disk) is refused in one line naming the file."""

    def __init__(self, directory: str | Path):
        directory = Path(directory)
        if not (directory / INDEX).exists():
            raise EqgenError(f"{directory} is not a token cache (no {INDEX})")
        index, rebuild = _read_index(directory), _rebuild(directory)
        self.classes, self.length, self.token_dim = index.classes, index.length, index.token_dim
        self.tokens, labels = [], []
        for shard in index.shards:
            self.tokens.append(_open_shard(directory / shard.tokens, (shard.rows, self.length, self.token_dim),
                                           np.float16, rebuild))
            labels.append(_open_shard(directory / shard.labels, (shard.rows,), np.int64, rebuild))
            if shard.rows and not 0 <= labels[-1].min() <= labels[-1].max() < len(self.classes):
                raise EqgenError(f"{directory / shard.labels} holds labels outside 0..{len(self.classes) - 1}; {rebuild}")
        self.labels = np.concatenate(labels) if labels else np.zeros(0, np.int64)
        self.offsets = np.cumsum([0] + [len(t) for t in self.tokens])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def part(self, rank: int, world_size: int) -> range:
        """The rows DDP process `rank` reads."""
        n = len(self) // world_size
        return range(rank * n, (rank + 1) * n)

    def rows(self, rows: np.ndarray, start: np.ndarray | None = None, length: int | None = None):
        """Tokens [B, length, D] (float32) from column `start` of each row, and labels [B]."""
        length = length or self.length
        start = np.zeros(len(rows), dtype=np.int64) if start is None else start
        out = np.empty((len(rows), length, self.token_dim), dtype=np.float32)
        for j, (row, s) in enumerate(zip(rows, start)):
            shard = np.searchsorted(self.offsets, row, side="right") - 1
            out[j] = self.tokens[shard][row - self.offsets[shard], s:s + length]
        return torch.from_numpy(out), torch.from_numpy(self.labels[rows])
