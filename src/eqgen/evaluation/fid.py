"""Inception-FID, Inception Score and precision/recall of samples against a reference: the ADM evaluator's
protocol on eqgen's own feature extraction.

    scores = evaluate_fid("samples/", "VIRTUAL_imagenet256_labeled.npz", "inception-2015-12-05.pt")

- Samples: a folder of images or an npz (`arr_0`), taken as they are.
- Reference: a folder of real images (prepared at the samples' size as ADM prepares its reference), an npz with
  images (ADM's reference batch; its `mu`/`sigma`, whole-dataset statistics, are used for FID when present),
  or a statistics npz (`mu`, `sigma`: ADM's or torch-fidelity's files, or one written by `save`).
- FID on pool features; IS from the network's bias-free probabilities in 10 parts after torch-fidelity's
  shuffle; precision/recall with k = 3 against 10,000 reference images (ADM's reference batch size).

Features are extracted in batches on the given device. Under torchrun every rank reads a contiguous share of
each set and the shares are gathered, so a run on K GPUs gives the scores of one process. A set reduces to
sums of features and of their outer products (float64), so a 1.28M-image folder needs no 10 GB of features.
"""
from __future__ import annotations

import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from ..errors import EqgenError
from ..files import atomic_write_bytes
from .image_sets import Crops, FolderImages, NpzImages, open_images
from .inception import InceptionFeatures
from .long_images import offset_stats
from .metrics import frechet_distance, inception_score, precision_recall

log = logging.getLogger("eqgen")

PR_REFERENCE = 10_000   # reference images kept for precision/recall, as in ADM's reference batch
IS_SPLITS = 10
IS_SHUFFLE_SEED = 2020  # torch-fidelity's: IS does not depend on the order of the files


@dataclass
class Statistics:
    """What a set of images reduces to. `features` (pool features of up to PR_REFERENCE images) serve
    precision/recall, `seam`/`texture` (mean largest and mean column-to-column jump) the long-image scores."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int | None = None
    size: tuple[int, int] | None = None           # (height, width) of the images
    network: str | None = None                    # SHA-256 of the feature network's file
    features: np.ndarray | None = None
    seam: float | None = None
    texture: float | None = None
    probabilities: np.ndarray | None = None       # samples: every image's class probabilities, for IS

    def save(self, path: str | Path) -> Path:
        """An npz with `mu` and `sigma` under the names ADM and torch-fidelity use, plus what eqgen checks."""
        path = Path(path)
        extra = {name: value for name, value in (("features", self.features), ("seam", self.seam),
                                                 ("texture", self.texture), ("network", self.network),
                                                 ("count", self.count), ("size", self.size)) if value is not None}
        buffer = io.BytesIO()
        np.savez(buffer, mu=self.mu, sigma=self.sigma, **extra)
        try:
            atomic_write_bytes(path, buffer.getvalue())
        except OSError as err:
            raise EqgenError(f"cannot write {path}: {err.strerror or err}") from None
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Statistics":
        try:
            with np.load(path) as data:
                values = {k: data[k] for k in data.files if k in ("mu", "sigma", "features", "seam", "texture",
                                                                  "network", "count", "size")}
        except (OSError, ValueError) as err:
            raise EqgenError(f"cannot read statistics {path}: {err}") from None
        if "mu" not in values or "sigma" not in values:
            raise EqgenError(f"{path} holds neither images (arr_0) nor statistics (mu, sigma)")
        mu, sigma = values["mu"].astype(np.float64), values["sigma"].astype(np.float64)
        if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
            raise EqgenError(f"{path}: mu must be [D] and sigma [D, D], got {list(mu.shape)} and {list(sigma.shape)}")
        scalar = {k: values[k].item() for k in ("seam", "texture", "network", "count") if k in values}
        size = tuple(int(x) for x in values["size"]) if "size" in values else None
        return cls(mu, sigma, size=size, features=values.get("features"), **scalar)


# ---------------------------------------------------------------------------------------------------------
# Extraction


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather(part):
    """Every rank's `part`, in rank order (just [part] in one process)."""
    world = _world()[1]
    if world == 1:
        return [part]
    parts = [None] * world
    dist.all_gather_object(parts, part)
    return parts


@torch.no_grad()
def extract(images: FolderImages | NpzImages | Crops, network: InceptionFeatures, *, batch: int = 64,
            keep: int | None = None, probabilities: bool = False, pixel_stats: bool = False,
            progress: bool = True, desc: str = "features") -> Statistics:
    """Reduce a set of images to `Statistics`. keep: the units whose features are kept (None: all; k: a fixed
    random choice of k, so that a folder sorted by class gives every class its share; 0: none)."""
    if batch < 1:
        raise EqgenError(f"the batch size must be at least 1, got {batch}")
    rank, world = _world()
    n = len(images)
    chosen = None if keep is None or keep >= n else np.random.default_rng(0).choice(n, keep, replace=False)
    start, stop = rank * n // world, (rank + 1) * n // world
    mine = dict(count=0, total=0.0, outer=0.0, kept=[], probabilities=[], seam=0.0, texture=0.0, skipped=[])
    feature_sum, outer_sum = 0.0, 0.0   # on the device until the end: no copy per batch
    bar = tqdm(total=stop - start, disable=not progress or rank != 0, desc=desc, unit="img", dynamic_ncols=True)
    for b in images.batches(start, stop, batch):
        bar.update(len(np.unique(b.index)) + len(b.skipped))
        mine["skipped"] += b.skipped
        if not len(b.pixels):
            continue
        pixels = torch.from_numpy(np.ascontiguousarray(b.pixels)).permute(0, 3, 1, 2)
        features = network.features(pixels)
        f = features.double()
        mine["count"] += len(f)
        feature_sum, outer_sum = feature_sum + f.sum(0), outer_sum + f.T @ f
        rows = np.ones(len(f), bool) if chosen is None else np.isin(b.index, chosen)
        if keep != 0 and rows.any():
            mine["kept"].append(features.cpu().numpy()[rows])
        if probabilities:
            mine["probabilities"].append(network.probabilities(pixels).cpu().numpy())
        if pixel_stats:
            stats = offset_stats(b.pixels, b.pixels.shape[2])
            mine["seam"] += stats.seam.sum()
            mine["texture"] += stats.texture.sum()
    bar.close()
    if mine["count"]:
        mine["total"], mine["outer"] = feature_sum.cpu().numpy(), outer_sum.cpu().numpy()
    parts = _gather(mine)   # in rank order: concatenating the ranks' rows gives the set's order

    def summed(key):
        return sum(part[key] for part in parts)

    def stacked(key):
        arrays = [a for part in parts for a in part[key]]
        return np.concatenate(arrays) if arrays else None

    skipped = [s for part in parts for s in part["skipped"]]
    if skipped:
        log.warning("eqgen: skipped %d of %d files of %s (first: %s)", len(skipped), len(images), images.name,
                    skipped[0])
    count = summed("count")
    if count < 2:
        raise EqgenError(f"{images.name}: need at least 2 usable images, found {count}")
    mu = summed("total") / count
    sigma = (summed("outer") - count * np.outer(mu, mu)) / (count - 1)
    return Statistics(mu, sigma, count, tuple(images.size), features=stacked("kept"),
                      probabilities=stacked("probabilities"), seam=summed("seam") / count if pixel_stats else None,
                      texture=summed("texture") / count if pixel_stats else None)


def reference_statistics(path: str | Path, size: tuple[int, int], network: InceptionFeatures, *, batch: int = 64,
                         workers: int = 0, progress: bool = True) -> Statistics:
    """The reference at the samples' size (height, width): a folder, an npz with images, or statistics."""
    path = Path(path)
    if path.is_file():
        try:
            with np.load(path) as data:
                keys = set(data.files)
        except (OSError, ValueError) as err:
            raise EqgenError(f"{path} is neither an image folder nor an npz: {err}") from None
        if "arr_0" not in keys:
            return _check(Statistics.load(path), path, size, network)
    stats = extract(open_images(path, size, workers), network, batch=batch, keep=PR_REFERENCE, pixel_stats=True,
                    progress=progress, desc="reference")
    stats.network = network.fingerprint()
    if path.is_file() and {"mu", "sigma"} <= keys:   # ADM's reference batch: whole-dataset statistics
        whole = Statistics.load(path)
        stats.mu, stats.sigma, stats.count = whole.mu, whole.sigma, None
    return stats


def _check(stats: Statistics, path: Path, size: tuple[int, int], network: InceptionFeatures) -> Statistics:
    if stats.network is not None and stats.network != network.fingerprint():
        raise EqgenError(f"{path} was computed with another feature network than {network.path}")
    if stats.size is not None and tuple(stats.size) != tuple(size):
        raise EqgenError(f"{path} holds statistics of {stats.size[1]}x{stats.size[0]} images, the samples are "
                         f"{size[1]}x{size[0]}")
    if stats.size is None:
        log.warning("eqgen: %s records no image size; make sure it was computed from %dx%d images the same way",
                    path, size[1], size[0])
    return stats


# ---------------------------------------------------------------------------------------------------------
# The commands' library calls


def evaluate_fid(samples: str | Path, reference: str | Path, inception: str | Path, *, device: str = "auto",
                 batch: int = 64, workers: int = 0, save_stats: str | Path | None = None,
                 progress: bool = True) -> dict[str, float | int] | None:
    """FID, IS (mean and std over 10 parts), precision and recall of `samples` against `reference`; under
    torchrun the scores on rank 0 and None elsewhere. save_stats: also write the reference's statistics there
    (pass that file as the reference next time)."""
    from ..devices import distributed_device

    device, rank, _ = distributed_device(device)
    network = InceptionFeatures(inception, device)
    images = open_images(samples, None, workers)
    fake = extract(images, network, batch=batch, probabilities=True, progress=progress, desc="samples")
    real = reference_statistics(reference, images.size, network, batch=batch, workers=workers, progress=progress)
    if save_stats and rank == 0:
        real.save(save_stats)
    scores: dict[str, float | int] = {"samples": fake.count}
    if real.count:
        scores["reference_images"] = real.count
    scores["fid"] = frechet_distance(fake.mu, fake.sigma, real.mu, real.sigma)
    scores["is"], scores["is_std"] = inception_score(np.log(np.clip(fake.probabilities, 1e-30, None)), IS_SPLITS,
                                                     IS_SHUFFLE_SEED)
    if real.features is not None:
        scores["precision"], scores["recall"] = precision_recall(real.features, fake.features, device=device)
    else:
        log.warning("eqgen: %s holds statistics only: no precision/recall (they need reference images)", reference)
    return scores if rank == 0 else None


def long_image_scores(panoramas: str | Path, reference: str | Path, inception: str | Path, *,
                      window: int | None = None, bands: int = 4, device: str = "auto", batch: int = 64,
                      workers: int = 0, save_stats: str | Path | None = None,
                      progress: bool = True) -> list[dict[str, float]] | None:
    """Long images on any data: every wide image is cut into windows `window` px wide (default: its height,
    square windows) at offsets 0, window, 2·window, …; the windows are grouped into `bands` of consecutive
    offsets, and each band is scored against real images of the window's size: crop-FID, and seam and texture
    ratios (the mean largest and mean column-to-column jump inside a window, against the real images'; 1 =
    alike). A model that degrades with distance from the left edge shows rising rows. Bands hold the same
    number of windows (±1 per image), so their FIDs share the small-sample bias and compare with each other."""
    from ..devices import distributed_device

    device, rank, _ = distributed_device(device)
    network = InceptionFeatures(inception, device)
    wide = open_images(panoramas, None, workers)
    height, width = wide.size
    window = height if window is None else window
    if window < 1 or bands < 1:
        raise EqgenError(f"the window and the number of bands must be positive, got {window} and {bands}")
    windows = width // window
    if windows < bands:
        raise EqgenError(f"{width}-px-wide images hold {windows} windows of {window} px, fewer than {bands} bands")
    real = reference_statistics(reference, (height, window), network, batch=batch, workers=workers, progress=progress)
    if save_stats and rank == 0:
        real.save(save_stats)
    rows = []
    for b, group in enumerate(np.array_split(np.arange(windows), bands)):
        offsets = (group * window).tolist()
        crops = extract(Crops(wide, window, offsets), network, batch=batch, keep=0, pixel_stats=True,
                        progress=progress, desc=f"band {b + 1}/{bands}")
        rows.append({"band": b, "first_px": offsets[0], "end_px": offsets[-1] + window, "crops": crops.count,
                     "crop_fid": frechet_distance(crops.mu, crops.sigma, real.mu, real.sigma),
                     "seam_ratio": float(crops.seam / real.seam) if real.seam else math.nan,
                     "texture_ratio": float(crops.texture / real.texture) if real.texture else math.nan})
    return rows if rank == 0 else None
