"""Real images from a folder: one subfolder per class (ImageNet / Places layout), or a list file.

    root/<class>/<any/depth>/<image>        classes are the sorted subfolder names
    list file: `relative/path.jpg label`    label: an integer, or a class name (then classes are the sorted names)

Indexing checks every file once (in a thread pool) and skips, counts and reports the broken ones in one log
line; a file that breaks later, at load time, is replaced by the next good one. Every image leaves as float
RGB [3, H, W] in [-1, 1]: resized to just cover the crop (a wide target keeps the image's full height),
cropped (random in training, centred otherwise) and flipped at random in training, all drawn from
(seed, epoch, index) and never from a global RNG. EXIF orientation is ignored, as in the standard ImageNet
pipelines.
"""
from __future__ import annotations

import logging
import os
import stat
import statistics
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..errors import EqgenError
from ..imageio import from_uint8

log = logging.getLogger("eqgen")

EXTENSIONS = frozenset(Image.registered_extensions())  # lower case, with the dot: what Pillow can open
# What a broken file raises inside Pillow: truncated or corrupt data (OSError, and SyntaxError / ValueError /
# EOFError from some decoders), or a decompression bomb.
_BROKEN = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
_CHUNK = 256  # files per thread-pool task: millions of files must not become millions of futures


class SkippedFile(NamedTuple):
    path: str  # relative to the root
    reason: str  # files: empty, not an image, not a file, unreadable, missing;
    #              folders: unreadable, symlink loop, linked twice, empty class, no usable image
    detail: str


@dataclass
class FolderIndex:
    """What `index_folder` found: the usable samples and the skipped files and folders, all plain data."""

    root: Path
    classes: list[str]
    samples: list[tuple[str, int]]  # (path relative to root, label)
    sizes: list[tuple[int, int]] | None  # (width, height) per sample; None when files were not verified
    skipped: list[SkippedFile]
    skipped_folders: list[SkippedFile] = field(default_factory=list)  # not indexed, or class folders dropped

    def skip_summary(self) -> str:
        total = len(self.samples) + len(self.skipped)
        summary = f"skipped {len(self.skipped)} of {total} files{_reasons(self.skipped)}"
        if self.skipped_folders:
            summary += f" and {len(self.skipped_folders)} folder(s){_reasons(self.skipped_folders)}"
        return summary

    def require_images(self) -> None:
        if not self.samples:
            raise EqgenError(f"{self.root} has no readable image: {self.skip_summary()}")


def _reasons(skipped: list[SkippedFile]) -> str:
    reasons = Counter(s.reason for s in skipped)
    return " (" + ", ".join(f"{n} {r}" for r, n in reasons.most_common()) + ")" if skipped else ""


def index_folder(root: str | Path, list_file: str | Path | None = None, *, verify: bool = True,
                 workers: int | None = None) -> FolderIndex:
    """List the images under `root` (class subfolders, or the lines of `list_file`) and check each one.

    verify=True opens and decodes every file in `workers` threads (default: Python's thread-pool size). A
    plain `Image.verify()` skips JPEG pixel data, so a truncated JPEG would pass; decoding JPEGs at 1/8 scale
    (`draft`) reads every byte for a fraction of a full decode. verify=False only rejects empty files and
    unknown extensions: fast on ImageNet-size folders, and a broken file is then caught at load time.
    Class folders left without a usable image are dropped from the classes (and reported); list files keep
    their classes, whose integer labels may name classes defined elsewhere.
    """
    root = Path(root)
    if not root.is_dir():
        raise EqgenError(f"image folder {root} not found" if not root.exists() else f"{root} is not a folder")
    folders: list[SkippedFile] = []
    classes, candidates = _read_list(root, Path(list_file)) if list_file is not None else _scan(root, folders)
    probe = _probe if verify else _stat
    chunks = [[root / path for path, _ in candidates[i:i + _CHUNK]] for i in range(0, len(candidates), _CHUNK)]
    with ThreadPoolExecutor(workers) as pool:
        results = [r for chunk in pool.map(lambda paths: [probe(p) for p in paths], chunks) for r in chunk]
    index = FolderIndex(root, classes, [], [] if verify else None, [], folders)
    for (path, label), (size, problem) in zip(candidates, results):
        if problem:
            index.skipped.append(SkippedFile(path, *problem))
        else:
            index.samples.append((path, label))
            if verify:
                index.sizes.append(size)
    if list_file is None:
        _drop_classes_without_images(index, Counter(label for _, label in candidates))
    return index


def _scan(root: Path, skipped: list[SkippedFile]) -> tuple[list[str], list[tuple[str, int]]]:
    """Every non-hidden file under each class subfolder, in a fixed (sorted) order; the folders that could
    not be read, or were reached a second time through a symlink, go to `skipped`."""
    try:
        entries = _list(root)
    except OSError as err:
        raise EqgenError(f"cannot read image folder {root}: {_message(err)}") from None
    classes = [e.name for e in entries if _is_dir(e) and not e.name.startswith(".")]
    if not classes:
        raise EqgenError(f"{root} has no class subfolders: expected {root}/<class>/<image> (the ImageNet layout)")
    seen = {_identity(root): "."}  # (device, inode) -> the first path that reached the folder
    files = []
    for label, name in enumerate(classes):
        files += [(path, label) for path in _walk(root, Path(name), seen, skipped)]
    if not files:
        also = f"; skipped {len(skipped)} folder(s){_reasons(skipped)}" if skipped else ""
        raise EqgenError(f"{root} has no files in its {len(classes)} class folder(s){also}")
    return classes, files


def _walk(root: Path, start: Path, seen: dict, skipped: list[SkippedFile]) -> list[str]:
    """The non-hidden files under root/start (paths relative to root), depth first in sorted order, entering
    each folder once however many symlinks lead to it: a link back up (a loop) is followed once, not until
    the path grows too long, and two links to one folder do not count its images twice."""
    files, pending = [], [start]
    while pending:
        folder = pending.pop()
        rel = folder.as_posix()
        try:
            identity = _identity(root / folder)
            if identity in seen:
                first = seen[identity]
                if first == "." or rel.startswith(first + "/"):
                    skipped.append(SkippedFile(rel, "symlink loop", f"leads back to {_name(first)}"))
                else:
                    skipped.append(SkippedFile(rel, "linked twice", f"leads to {_name(first)}, indexed already"))
                continue
            seen[identity] = rel
            entries = _list(root / folder)
        except OSError as err:
            skipped.append(SkippedFile(rel, "unreadable", _message(err)))
            continue
        visible = [(e.name, _is_dir(e)) for e in entries if not e.name.startswith(".")]  # hidden: .git, ._mac
        files += [(folder / name).as_posix() for name, is_dir in visible if not is_dir]
        pending += [folder / name for name, is_dir in reversed(visible) if is_dir]
    return files


def _name(rel: str) -> str:
    return "the image folder itself" if rel == "." else rel


def _identity(path: Path) -> tuple[int, int]:
    info = path.stat()  # through symlinks: the folder itself
    return info.st_dev, info.st_ino


def _list(folder: Path) -> list[os.DirEntry]:
    with os.scandir(folder) as entries:
        return sorted(entries, key=lambda e: e.name)


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows symlinks; a broken link is a (missing) file
    except OSError:
        return False


def _drop_classes_without_images(index: FolderIndex, files: Counter) -> None:
    """Class folders with no usable image are not classes: report them and renumber the others."""
    usable = Counter(label for _, label in index.samples)
    reported = {s.path for s in index.skipped_folders}  # an unreadable or twice-linked class folder
    for label, name in enumerate(index.classes):
        if not usable[label] and name not in reported:
            reason = "empty class" if not files[label] else "no usable image"
            detail = "no files" if not files[label] else f"all {files[label]} of its files skipped"
            index.skipped_folders.append(SkippedFile(name, reason, detail + "; not made a class"))
    kept = [label for label in range(len(index.classes)) if usable[label]]
    renumber = {old: new for new, old in enumerate(kept)}
    index.classes = [index.classes[label] for label in kept]
    index.samples = [(path, renumber[label]) for path, label in index.samples]


def _read_list(root: Path, list_file: Path) -> tuple[list[str], list[tuple[str, int]]]:
    try:
        lines = list_file.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise EqgenError(f"cannot read list file {list_file}: {err}") from None
    entries = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.rsplit(maxsplit=1)  # the label is the last field: paths may contain spaces
        if len(fields) != 2:
            raise EqgenError(f"{list_file}:{number}: expected 'relative/path label', got {line.strip()!r}")
        entries.append((fields[0].strip().lstrip("/"), fields[1]))  # Places lists write /a/airfield/1.jpg
    if not entries:
        raise EqgenError(f"list file {list_file} lists no images")
    labels = [label for _, label in entries]
    if all(label.isdigit() for label in labels):
        classes = [str(i) for i in range(max(map(int, labels)) + 1)]  # the names live elsewhere; keep the ids
        return classes, [(path, int(label)) for path, label in entries]
    classes = sorted(set(labels))
    class_to_idx = {name: i for i, name in enumerate(classes)}
    return classes, [(path, class_to_idx[label]) for path, label in entries]


Probe = tuple[tuple[int, int] | None, tuple[str, str] | None]  # (width, height), or (reason, detail)


def _stat(path: Path) -> Probe:
    if path.suffix.lower() not in EXTENSIONS:
        return None, ("not an image", f"unknown extension {path.suffix!r}")
    try:
        info = path.stat()
    except FileNotFoundError as err:  # listed but absent, or a broken symlink
        return None, ("missing", err.strerror or str(err))
    except OSError as err:
        return None, ("unreadable", _message(err))
    if not stat.S_ISREG(info.st_mode):  # a FIFO would block the reader, a device never end
        return None, ("not a file", "a FIFO, socket or device")
    if info.st_size == 0:
        return None, ("empty", "0 bytes")
    return None, None


def _probe(path: Path) -> Probe:
    size, problem = _stat(path)
    if problem:
        return size, problem
    try:
        with Image.open(path) as image:
            size = image.size
            image.draft(None, (1, 1))  # JPEG only: decode at 1/8 scale
            image.load()
    except UnidentifiedImageError:
        return None, ("not an image", "Pillow does not recognise its contents")
    except _BROKEN as err:
        return None, ("unreadable", _message(err))
    return size, None


def _message(err: BaseException) -> str:
    return str(err) or type(err).__name__


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow image -> 8-bit RGB. Transparency (RGBA, LA, P or a colour key) is composited on white;
    16- and 32-bit integer greyscale (I;16, I) is scaled from the 16-bit range (65535 -> 255), where Pillow's
    own conversion would clip everything above 255 to white."""
    if image.mode == "I" or image.mode.startswith("I;16"):
        level = np.asarray(image).astype(np.float64) / 257
        return Image.fromarray(np.clip(np.rint(level), 0, 255).astype(np.uint8)).convert("RGB")
    if image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, P without transparency, RGB (a copy)


def _cover(size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int]:
    """The size (width, height) an image of `size` takes when resized to just cover `target`: the short
    side matches a square target, the height a wide one, and a small image is upscaled."""
    (w, h), (tw, th) = size, target
    scale = max(tw / w, th / h)
    return max(tw, round(w * scale)), max(th, round(h * scale))


class ImageFolder(Dataset):
    """A class-labelled image folder: `dataset[i]` is (image float [3, height, width] in [-1, 1], label).

    `classes` are the sorted class names (label i is `classes[i]`). `dataset[epoch, i]` draws the crop and flip
    of that epoch (`dataset[i]`: of epoch 0). `load_failures` counts files that broke at load time (per process).
    """

    def __init__(self, root: str | Path, height: int, width: int | None = None, *, train: bool = True,
                 list_file: str | Path | None = None, seed: int = 0, verify: bool = True,
                 workers: int | None = None):
        width = height if width is None else width
        if height <= 0 or width <= 0:
            raise EqgenError(f"image size must be positive, got {height}x{width} (height x width)")
        self.index = index_folder(root, list_file, verify=verify, workers=workers)
        self.index.require_images()
        if self.index.skipped or self.index.skipped_folders:  # one line, however many files: the details are in `eqgen data inspect`
            log.warning("eqgen: %s in %s; `eqgen data inspect` lists them", self.index.skip_summary(), root)
        self.height, self.width, self.train, self.seed = height, width, train, seed
        self.load_failures = 0
        self._broken: set[int] = set()

    @property
    def classes(self) -> list[str]:
        return self.index.classes

    def __len__(self) -> int:
        return len(self.index.samples)

    def __getitem__(self, index: int | tuple[int, int]) -> tuple[torch.Tensor, int]:
        # The sampler's items are (epoch, index) pairs: every epoch draws new crops and flips, in DataLoader
        # workers too, which share no state with the sampler.
        epoch, index = index if isinstance(index, tuple) else (0, index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        # A file that breaks now (it changed on disk, or was never verified) gives way to the next good one;
        # the crop and flip stay those of the requested index.
        for offset in range(len(self)):
            i = (index + offset) % len(self)
            if i in self._broken:
                continue
            path = self.index.root / self.index.samples[i][0]
            try:
                return self._load(path, index, epoch), self.index.samples[i][1]
            except _BROKEN as err:
                self._broken.add(i)
                self.load_failures += 1
                log.warning("eqgen: skipped %s at load time (%s)", path, _message(err))
        raise EqgenError(f"no image under {self.index.root} could be loaded")

    def _load(self, path: Path, index: int, epoch: int) -> torch.Tensor:
        target = (self.width, self.height)
        with Image.open(path) as file:
            file.draft(None, _cover(file.size, target))  # JPEG: decode at 1/2..1/8 scale if that still covers
            image = to_rgb(file)
        w, h = image.size
        cover_w, cover_h = _cover(image.size, target)
        if self.train:
            rng = np.random.default_rng([self.seed % 2 ** 64, epoch, index])
            x0, y0 = int(rng.integers(cover_w - self.width + 1)), int(rng.integers(cover_h - self.height + 1))
            flip = bool(rng.random() < 0.5)
        else:
            x0, y0, flip = (cover_w - self.width) // 2, (cover_h - self.height) // 2, False
        # Resizing only the crop's source box equals resizing the whole image to the cover size, then cropping.
        box = (x0 * w / cover_w, y0 * h / cover_h, (x0 + self.width) * w / cover_w, (y0 + self.height) * h / cover_h)
        pixels = from_uint8(np.array(image.resize(target, Image.Resampling.BICUBIC, box=box)))
        return pixels.flip(-1) if flip else pixels


def describe(index: FolderIndex, listed: int = 20) -> str:
    """A report for `eqgen data inspect`: classes, images per class, sizes, and the skipped files and folders."""
    lines = [f"{index.root}: {len(index.samples)} images in {len(index.classes)} classes"]
    if index.classes:
        per_class = Counter(label for _, label in index.samples)
        counts = [per_class[i] for i in range(len(index.classes))]
        fewest = min(range(len(counts)), key=counts.__getitem__)
        lines.append(f"images per class: {_spread(counts)} (fewest: {index.classes[fewest]!r})")
    if index.sizes:
        widths, heights = zip(*index.sizes)
        lines += [f"width (px):  {_spread(widths)}", f"height (px): {_spread(heights)}",
                  f"aspect w/h:  {_spread([w / h for w, h in index.sizes], '.2f')}"]
    total = len(index.samples) + len(index.skipped)
    lines += _listing(f"skipped {len(index.skipped)} of {total} files", "skipped no files", index.skipped, listed)
    lines += _listing(f"skipped {len(index.skipped_folders)} folder(s)", "skipped no folders", index.skipped_folders,
                      listed)
    return "\n".join(lines)


def _listing(title: str, none: str, skipped: list[SkippedFile], listed: int) -> list[str]:
    if not skipped:
        return [none]
    lines = [f"{title}{_reasons(skipped)}:"]
    lines += [f"  {s.path}: {s.reason} ({s.detail})" for s in skipped[:listed]]
    if len(skipped) > listed:
        lines.append(f"  ... and {len(skipped) - listed} more")
    return lines


def _spread(values, fmt: str = "g") -> str:
    return f"min {min(values):{fmt}}, median {statistics.median(values):{fmt}}, max {max(values):{fmt}}"
