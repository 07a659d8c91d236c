"""Sample quality of a landscape model, with eqgen's own landscape classifier as the feature extractor:
landscape-FID, an IS-style score, precision/recall, class accuracy and the detail ratio (sharpness) against fresh
renders; PSNR, rFID and detail ratio of a tokenizer.

These are *landscape* scores, comparable between eqgen models on the built-in data — never Inception-FID. Given
the standard Inception weights (a local file, `InceptionFeatures`), the same comparisons are also made on
Inception features and named `inception_*`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data.landscapes import iterate_landscapes
from ..sampling import SamplingOptions
from .classifier import SHIPPED, LandscapeClassifier
from .inception import InceptionFeatures
from .metrics import detail_ratio, fid_from_features, inception_score, precision_recall


def _extractors(inception: str | Path | None, batch: int,
                classifier: str | Path | None = None) -> tuple[LandscapeClassifier, dict]:
    """The landscape classifier (a directory from `eqgen eval train-classifier`; default: the shipped one), and
    feature extractors by name: landscape (and inception if given)."""
    classifier = LandscapeClassifier.from_pretrained(classifier or SHIPPED)
    extractors = {"landscape": lambda x: torch.cat([classifier.features(c) for c in x.split(batch)]).numpy()}
    if inception:
        extractors["inception"] = InceptionFeatures(inception)
    return classifier, extractors


def _compare(prefix: str, real: np.ndarray, fake: np.ndarray) -> dict[str, float]:
    precision, recall = precision_recall(real, fake)
    return {f"{prefix}_fid": fid_from_features(real, fake), f"{prefix}_precision": precision,
            f"{prefix}_recall": recall}


@torch.no_grad()
def landscape_scores(pipe, per_class: int = 16, *, options: SamplingOptions = SamplingOptions(), batch: int = 32,
                     inception: str | Path | None = None, classifier: str | Path | None = None,
                     **changes) -> dict[str, float]:
    """Scores of `per_class` samples of every class; `reference_fid_real_vs_real` is the same FID between two
    sets of renders of the same size: the floor that sampling noise alone gives. `options` (or keywords
    changing single fields) sample the images; their seed seeds the renders too (batch i samples with seed + i).
    classifier: the landscape classifier's directory (default: the shipped one)."""
    options = options.replace(**changes)
    seed = options.seed or 0   # the scores need seeds for every batch, not the global RNG
    classifier, extractors = _extractors(inception, batch, classifier)
    n = per_class * len(pipe.classes)
    width = pipe.generator.config.train_tokens * pipe.token_width

    def renders(offset: int) -> torch.Tensor:
        return next(iterate_landscapes(n, pipe.height, width, seed=offset + seed))[0]

    labels = torch.arange(len(pipe.classes)).repeat_interleave(per_class)
    fake = torch.cat([pipe.generate(chunk.tolist(), options=options, seed=seed + i)
                      for i, chunk in enumerate(labels.split(batch))])
    real = renders(10**6)
    features = {name: (extract(real), extract(fake)) for name, extract in extractors.items()}
    scores = {}
    for name, (real_features, fake_features) in features.items():
        scores.update(_compare(name, real_features, fake_features))
    real_features, fake_features = features["landscape"]
    logits = classifier.head(torch.from_numpy(fake_features))
    scores.update({"landscape_is": inception_score(logits)[0], "detail_ratio": detail_ratio(real, fake),
                   "class_accuracy": float((logits.argmax(1) == labels).float().mean()),
                   "reference_fid_real_vs_real": fid_from_features(real_features,
                                                                   extractors["landscape"](renders(2 * 10**6)))})
    return scores


@torch.no_grad()
def tokenizer_scores(tokenizer, n: int = 256, width_tokens: int = 16, seed: int = 0, batch: int = 32,
                     inception: str | Path | None = None, classifier: str | Path | None = None) -> dict[str, float]:
    """Reconstruction quality on `n` fresh renders (classes drawn uniformly): PSNR, the detail ratio (1 = as sharp
    as the originals) and rFID (the FID between the reconstructions and the originals) on landscape features,
    and on Inception features when given. classifier: as for `landscape_scores`."""
    from ..tokenizer_training import psnr

    _, extractors = _extractors(inception, batch, classifier)
    images = next(iterate_landscapes(n, tokenizer.config.height, width_tokens * tokenizer.token_width,
                                     seed=3 * 10**6 + seed))[0]
    recon = torch.cat([tokenizer.decode(tokenizer.encode(c)).clamp(-1, 1) for c in images.split(batch)])
    scores = {"psnr": psnr(recon, images), "detail_ratio": detail_ratio(images, recon)}
    for name, extract in extractors.items():
        scores[f"{name}_rfid"] = fid_from_features(extract(images), extract(recon))
    return scores


@torch.no_grad()
def class_fids(pipe, per_class: int = 32, *, options: SamplingOptions = SamplingOptions(), batch: int = 32,
               classifier: str | Path | None = None, **changes) -> dict[str, tuple[float, float]]:
    """Landscape-FID of each class's samples against renders of that class, and the same FID between two sets
    of renders of the class (the floor that sampling noise gives): {class: (fid, floor)}. options as for
    `landscape_scores`."""
    options = options.replace(**changes)
    seed = options.seed or 0   # the scores need seeds for every batch, not the global RNG
    from ..data.landscapes import render_batch
    from ..imageio import from_uint8

    extract = _extractors(None, batch, classifier)[1]["landscape"]
    width = pipe.generator.config.train_tokens * pipe.token_width

    def renders(cls: str, offset: int) -> np.ndarray:
        seeds = [offset + seed + i for i in range(per_class)]
        return extract(from_uint8(render_batch([cls] * per_class, seeds, width, pipe.height)))

    fids = {}
    for i, cls in enumerate(pipe.classes):
        fake = torch.cat([pipe.generate([cls] * len(chunk), options=options, seed=seed + 1000 * i + j)
                          for j, chunk in enumerate(torch.arange(per_class).split(batch))])
        real = renders(cls, 10**6)
        fids[cls] = (fid_from_features(real, extract(fake)), fid_from_features(real, renders(cls, 2 * 10**6)))
    return fids


@torch.no_grad()
def reconstructions(tokenizer, width_tokens: int = 16, seed: int = 0) -> torch.Tensor:
    """One fresh render of every class followed by its reconstruction, [2·classes, 3, H, W] in [-1, 1]."""
    from ..data.landscapes import CLASSES, render_batch
    from ..imageio import from_uint8

    seeds = [4 * 10**6 + seed + i for i in range(len(CLASSES))]
    images = from_uint8(render_batch(range(len(CLASSES)), seeds, width_tokens * tokenizer.token_width,
                                     tokenizer.config.height))
    recon = tokenizer.decode(tokenizer.encode(images)).clamp(-1, 1)
    return torch.stack([x for pair in zip(images, recon) for x in pair])
