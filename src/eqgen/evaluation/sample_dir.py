"""Sample sets for evaluation: N images of every class, one PNG each, as the ADM protocol asks (50 per class).

    DIR/0003_coast/00012.png      image 12 of class 3 ("coast")
    DIR/samples.npz               with npz=True: arr_0 uint8 [N, H, W, 3], arr_1 labels (ADM's sample format)
    DIR/eqgen_samples.json        the model and sampler settings the set was made with

Image i of class c is generated from its own seed, derived from (seed, c, i), with its own noise stream, so the
set does not depend on the batch size or on the number of processes. Batches are fixed chunks of the list of
(class, index) pairs; under torchrun rank r makes batches r, r + K, r + 2K, … — each batch is the same batch
as in a one-process run, so the files are byte-identical. A file is written under a temporary name and then
renamed, so a killed run never leaves a truncated image, and a rerun skips every batch already on disk (an
interrupted 50,000-image run continues). The npz lists the images in a fixed shuffled order: the ADM evaluator
computes IS over consecutive parts of the file, which must not be single classes.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import time
import zipfile
from pathlib import Path
from typing import Sequence

import numpy as np
import torch.distributed as dist
from PIL import Image
from tqdm.auto import tqdm

from ..errors import EqgenError
from ..files import atomic_write_bytes
from ..imageio import png_bytes, to_uint8
from ..sampling import SamplingOptions

MANIFEST = "eqgen_samples.json"
NPZ = "samples.npz"


def image_seed(seed: int, label: int, index: int) -> int:
    """The seed of image `index` of class `label`: independent streams for every (seed, class, index)."""
    if seed < 0:
        raise EqgenError(f"the seed must be at least 0, got {seed}")
    return int(np.random.SeedSequence([seed, label, index]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def sample_path(out_dir: Path, label: int, name: str, index: int) -> Path:
    """Class index and name (made safe for any file system) in the folder, the image index in the file."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "class"
    return out_dir / f"{label:04d}_{safe}" / f"{index:05d}.png"


def _check_manifest(out_dir: Path, settings: dict) -> None:
    path = out_dir / MANIFEST
    if not path.exists():
        return
    try:
        before = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise EqgenError(f"cannot read {path}: {err}") from None
    changed = sorted(k for k in settings.keys() | before.keys() if settings.get(k) != before.get(k))
    if changed:
        detail = ", ".join(f"{k} {before.get(k)!r} -> {settings.get(k)!r}" for k in changed)
        raise EqgenError(f"{out_dir} holds samples made with other settings ({detail}); choose another --out-dir")


def write_samples(pipe, out_dir: str | Path, per_class: int, *, classes: Sequence[str | int] | None = None,
                  options: SamplingOptions = SamplingOptions(), batch_size: int = 32, width: int | None = None,
                  npz: bool = False, model_name: str = "", progress: bool = True,
                  **changes) -> dict[str, float | int | str]:
    """Write `per_class` images of each class (default: every class of the model) into `out_dir`; under
    torchrun this rank's share. `options` (or keywords changing single fields) as for `Pipeline.generate`;
    their seed is the set's, from which every image's own is derived. Returns counts (of this rank: images
    generated, files written) and this rank's images/s."""
    options = options.replace(**changes)
    seed = options.seed or 0
    if per_class < 1 or batch_size < 1:
        raise EqgenError(f"--per-class and --batch-size must be at least 1, got {per_class} and {batch_size}")
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
    out_dir = Path(out_dir)
    labels = pipe.labels(pipe.classes if classes is None else list(classes)).tolist()
    num_tokens = pipe.tokens_for_width(width) if width else pipe.generator.config.train_tokens
    settings = {"model": model_name, "classes": pipe.classes, "width": num_tokens * pipe.token_width,
                **dict(sorted(dataclasses.asdict(options).items())), "seed": seed}
    _check_manifest(out_dir, settings)   # every rank: all of them stop on a mismatch, none waits for the others
    if world > 1:
        dist.barrier()
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / MANIFEST).write_text(json.dumps(settings, indent=1) + "\n")

    # Index-major: more images per class later append whole batches and leave the earlier ones as they were.
    jobs = [(label, i) for i in range(per_class) for label in labels]
    paths = [sample_path(out_dir, label, pipe.classes[label], i) for label, i in jobs]
    batches = [range(a, min(a + batch_size, len(jobs))) for a in range(0, len(jobs), batch_size)][rank::world]
    todo = [b for b in batches if not all(paths[j].exists() for j in b)]
    generated, written = sum(len(b) for b in todo), 0
    bar = tqdm(total=generated, disable=not progress or rank != 0, desc=f"samples (rank 0 of {world})" if world > 1
               else "samples", unit="img", dynamic_ncols=True)
    tick = time.perf_counter()
    for b in todo:
        seeds = [image_seed(seed, *jobs[j]) for j in b]
        images = to_uint8(pipe.generate([jobs[j][0] for j in b], num_tokens, options=options, rng=seeds))
        for j, image in zip(b, images):
            if not paths[j].exists():
                atomic_write_bytes(paths[j], png_bytes(image))
                written += 1
        bar.update(len(b))
    bar.close()
    seconds = time.perf_counter() - tick
    if world > 1:
        dist.barrier()   # every rank's files are on disk before the npz is read from them
    summary = {"images": len(jobs), "processes": world, "written": written, "generated": generated, "seconds": seconds,
               "images_per_s": generated / seconds if generated else 0.0}
    if npz and rank == 0:
        summary["npz"] = str(write_npz(out_dir / NPZ, paths, [label for label, _ in jobs]))
    if world > 1:
        dist.barrier()
    return summary


def write_npz(path: Path, files: Sequence[Path], labels: Sequence[int], seed: int = 0) -> Path:
    """The ADM evaluator's sample file, written image by image (50,000 256² images are 9.8 GB: never all
    in memory): arr_0 uint8 [N, H, W, 3] and arr_1 int64 labels, in a shuffled order fixed by `seed`."""
    order = np.random.default_rng(seed).permutation(len(files))
    with Image.open(files[0]) as first:
        shape = (len(files), first.height, first.width, 3)
    tmp = path.with_name(f".{path.name}.tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        with archive.open("arr_0.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": shape})
            for i in order:
                with Image.open(files[i]) as image:
                    pixels = np.asarray(image.convert("RGB"))
                if pixels.shape != shape[1:]:
                    raise EqgenError(f"{files[i]} is {pixels.shape[1]}x{pixels.shape[0]}, not {shape[2]}x{shape[1]}")
                f.write(pixels.tobytes())
        with archive.open("arr_1.npy", "w") as f:
            np.lib.format.write_array(f, np.asarray(labels, np.int64)[order])
    os.replace(tmp, path)
    return path


def sample_to_dir(model: str, out_dir: str | Path, per_class: int, *, device: str = "cpu",
                  **kwargs) -> dict[str, float | int | str] | None:
    """`eqgen sample --out-dir`: load the model on this process's device (cuda:LOCAL_RANK under torchrun) and
    write the sample set; the summary on rank 0, None elsewhere."""
    from ..pipeline import Pipeline
    from ..devices import distributed_device

    device, rank, _ = distributed_device(device)
    pipe = Pipeline.from_pretrained(model, device=device)
    name = str(Path(model).resolve()) if Path(model).is_dir() else str(model)   # as the manifest records it
    summary = write_samples(pipe, out_dir, per_class, model_name=name, **kwargs)
    return summary if rank == 0 else None
