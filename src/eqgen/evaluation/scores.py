"""Sample quality of a landscape model, with eqgen's own landscape classifier as the feature extractor:
landscape-FID, an IS-style score, precision/recall and class accuracy against fresh renders.

These are *landscape* scores, comparable between eqgen models on the built-in data — never Inception-FID.
"""
from __future__ import annotations

import torch

from ..data.landscapes import iterate_landscapes
from .classifier import LandscapeClassifier
from .metrics import fid_from_features, inception_score, precision_recall


@torch.no_grad()
def landscape_scores(pipe, per_class: int = 16, seed: int = 0, batch: int = 32, **options) -> dict[str, float]:
    """Scores of `per_class` samples of every class; `reference_fid_real_vs_real` is the same FID between two
    sets of renders of the same size: the floor that sampling noise alone gives."""
    classifier = LandscapeClassifier.from_pretrained()
    n = per_class * len(pipe.classes)
    width = pipe.generator.config.train_tokens * pipe.token_width

    def features(images: torch.Tensor) -> torch.Tensor:
        return torch.cat([classifier.features(chunk) for chunk in images.split(batch)])

    def renders(offset: int) -> torch.Tensor:
        return features(next(iterate_landscapes(n, pipe.height, width, seed=offset + seed))[0]).numpy()

    labels = torch.arange(len(pipe.classes)).repeat_interleave(per_class)
    fake = torch.cat([features(pipe.generate(chunk.tolist(), seed=seed + i, **options))
                      for i, chunk in enumerate(labels.split(batch))])
    logits = classifier.head(fake)
    real = renders(10**6)
    precision, recall = precision_recall(real, fake.numpy())
    return {"landscape_fid": fid_from_features(real, fake.numpy()), "landscape_is": inception_score(logits)[0],
            "precision": precision, "recall": recall,
            "class_accuracy": float((logits.argmax(1) == labels).float().mean()),
            "reference_fid_real_vs_real": fid_from_features(real, renders(2 * 10**6))}
