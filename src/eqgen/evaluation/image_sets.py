"""Image sets for evaluation: a folder of files, or an ADM-style npz, read in batches of uint8 [B, H, W, 3].

    samples = open_images("samples/")                       # as they are: every image must have one size
    reference = open_images("imagenet/train", size=(256, 256))   # real images, prepared as ADM prepares its own

A folder is read recursively (class sub-folders or flat; hidden files and non-images are ignored) in sorted
order, by DataLoader workers; an unreadable file, or a sample of another size, is skipped and reported. An npz
holds `arr_0` uint8 [N, H, W, 3], read straight from the archive a slice at a time, so a 50,000-image file is
never loaded whole. `batches(start, stop, batch)` reads the units start … stop−1 only: how torchrun ranks share
a set.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ..data.folders import EXTENSIONS, to_rgb
from ..errors import EqgenError


@dataclass
class Batch:
    pixels: np.ndarray        # uint8 [B, H, W, 3]
    index: np.ndarray         # [B] the unit each row comes from
    skipped: list[str]        # "path: reason" for the units of this batch that could not be used


def adm_center_crop(image: Image.Image, height: int, width: int) -> np.ndarray:
    """The ADM reference preparation (guided-diffusion's `center_crop_arr`), for any height × width: halve with
    a box filter while the image is at least twice the target both ways, resize with bicubic so that it just
    covers the target, and cut out the centre. For a square target exactly ADM's."""
    image = to_rgb(image)
    while image.width >= 2 * width and image.height >= 2 * height:
        image = image.resize((image.width // 2, image.height // 2), resample=Image.Resampling.BOX)
    scale = max(width / image.width, height / image.height)
    size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    array = np.asarray(image.resize(size, resample=Image.Resampling.BICUBIC))
    y, x = (array.shape[0] - height) // 2, (array.shape[1] - width) // 2
    return array[y:y + height, x:x + width]


def list_images(root: Path) -> list[Path]:
    """Every image file under `root`, any depth, sorted; hidden files and folders are left out."""
    files = []
    for folder, subfolders, names in os.walk(root, followlinks=True):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        files += [Path(folder) / n for n in sorted(names)
                  if not n.startswith(".") and Path(n).suffix.lower() in EXTENSIONS]
    return files


class _Files(Dataset):
    def __init__(self, files: Sequence[Path], size: tuple[int, int], crop: bool):
        self.files, self.size, self.crop = files, size, crop

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        path = self.files[i]
        try:
            with Image.open(path) as image:
                pixels = adm_center_crop(image, *self.size) if self.crop else np.asarray(to_rgb(image))
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
            return i, None, f"{path}: {err or type(err).__name__}"
        if pixels.shape[:2] != self.size:
            height, width = self.size
            return i, None, f"{path}: {pixels.shape[1]}x{pixels.shape[0]}, not {width}x{height} like the rest"
        return i, pixels, None


def _collate(items) -> tuple[list[int], list[np.ndarray], list[str]]:
    return ([i for i, p, _ in items if p is not None], [p for _, p, _ in items if p is not None],
            [why for _, p, why in items if p is None])


class FolderImages:
    """The images of a folder; size=(H, W) prepares each with `adm_center_crop`, size=None takes them as they
    are (the first image's size is the set's)."""

    def __init__(self, root: str | Path, size: tuple[int, int] | None = None, workers: int = 0):
        if workers < 0:
            raise EqgenError(f"the number of decoding workers must be at least 0, got {workers}")
        self.root, self.workers, self.crop = Path(root), workers, size is not None
        self.files = list_images(self.root)
        if not self.files:
            raise EqgenError(f"{self.root} holds no image files")
        if size is None:
            try:
                with Image.open(self.files[0]) as image:
                    size = (image.height, image.width)
            except (OSError, ValueError) as err:
                raise EqgenError(f"cannot read {self.files[0]}: {err}") from None
        self.size = tuple(size)

    @property
    def name(self) -> str:
        return f"{self.root} ({len(self)} files" + (", ADM centre crop)" if self.crop else ")")

    def __len__(self) -> int:
        return len(self.files)

    def batches(self, start: int, stop: int, batch: int) -> Iterator[Batch]:
        loader = DataLoader(_Files(self.files[start:stop], self.size, self.crop), batch_size=batch,
                            num_workers=self.workers, collate_fn=_collate)
        for index, pixels, skipped in loader:
            pixels = np.stack(pixels) if pixels else np.zeros((0, *self.size, 3), np.uint8)
            yield Batch(pixels, np.array(index, int) + start, skipped)


_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


class NpzImages:
    """`arr_0` uint8 [N, H, W, 3] of an npz (np.savez, as the ADM evaluator reads it), a slice at a time."""

    def __init__(self, path: str | Path, key: str = "arr_0"):
        self.path, self.key = Path(path), key
        try:
            with zipfile.ZipFile(self.path) as archive, archive.open(f"{key}.npy") as f:
                read_header = _HEADERS.get(np.lib.format.read_magic(f))
                if read_header is None:
                    raise ValueError("an .npy format version other than 1.0 or 2.0")
                shape, fortran, dtype = read_header(f)
                self.offset = f.tell()
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
            raise EqgenError(f"{self.path} is not an npz with images in {key!r}: {err}") from None
        if dtype != np.uint8 or len(shape) != 4 or shape[3] != 3 or fortran:
            raise EqgenError(f"{self.path}: {key} must be uint8 [N, H, W, 3], got {dtype} {list(shape)}")
        self.count, self.size = shape[0], (shape[1], shape[2])

    @property
    def name(self) -> str:
        return f"{self.path} ({len(self)} images)"

    def __len__(self) -> int:
        return self.count

    def batches(self, start: int, stop: int, batch: int) -> Iterator[Batch]:
        row = self.size[0] * self.size[1] * 3
        with zipfile.ZipFile(self.path) as archive, archive.open(f"{self.key}.npy") as f:
            f.seek(self.offset + start * row)
            for first in range(start, stop, batch):
                n = min(batch, stop - first)
                data = f.read(n * row)
                if len(data) != n * row:
                    raise EqgenError(f"{self.path} is truncated: {self.key} ends before image "
                                     f"{first + len(data) // row}")
                pixels = np.frombuffer(bytearray(data), np.uint8).reshape(n, *self.size, 3)   # writable, for torch
                yield Batch(pixels, np.arange(first, first + n), [])


class Crops:
    """Windows `width` px wide at the given pixel offsets of every image of a set of wide images; a unit is a wide
    image, its rows are its windows (how long-image scores cut panoramas)."""

    def __init__(self, images: FolderImages | NpzImages, width: int, offsets: Sequence[int]):
        height, full = images.size
        if not offsets or min(offsets) < 0 or max(offsets) + width > full:
            raise EqgenError(f"windows of {width} px at offsets {list(offsets)} do not fit {full}-px-wide images")
        self.images, self.width, self.offsets, self.size = images, width, list(offsets), (height, width)

    @property
    def name(self) -> str:
        return f"{self.images.name}, {len(self.offsets)} windows each"

    def __len__(self) -> int:
        return len(self.images)

    def batches(self, start: int, stop: int, batch: int) -> Iterator[Batch]:
        per = max(1, batch // len(self.offsets))
        for b in self.images.batches(start, stop, per):
            crops = np.stack([b.pixels[:, :, x:x + self.width] for x in self.offsets], axis=1)
            yield Batch(crops.reshape(-1, *self.size, 3), b.index.repeat(len(self.offsets)), b.skipped)


def open_images(path: str | Path, size: tuple[int, int] | None = None, workers: int = 0) -> FolderImages | NpzImages:
    """A folder or an npz with images. size=(H, W): real images for a reference, prepared ADM's way (a folder)
    or checked to have that size (an npz)."""
    path = Path(path)
    if path.is_dir():
        return FolderImages(path, size, workers)
    if not path.is_file():
        raise EqgenError(f"{path} not found")
    images = NpzImages(path)
    if size is not None and images.size != tuple(size):
        raise EqgenError(f"the images in {path} are {images.size[1]}x{images.size[0]}, the samples "
                         f"{size[1]}x{size[0]}: compare images of one size")
    return images
