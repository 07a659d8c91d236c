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
    classifier = LandscapeClassifier.from_pretrained()
    n = per_class * len(pipe.classes)
    labels = torch.arange(len(pipe.classes)).repeat_interleave(per_class)
    feats, logits = [], []
    for i, chunk in enumerate(labels.split(batch)):
        images = pipe.generate(chunk.tolist(), seed=seed + i, **options)
        feats.append(classifier.features(images))
        logits.append(classifier.head(feats[-1]))
    fake, fake_logits = torch.cat(feats), torch.cat(logits)
    width = pipe.generator.config.train_tokens * pipe.token_width
    real_images, _ = next(iterate_landscapes(n, pipe.height, width, seed=10**6 + seed))
    real = torch.cat([classifier.features(chunk) for chunk in real_images.split(batch)])
    precision, recall = precision_recall(real.numpy(), fake.numpy())
    return {"landscape_fid": fid_from_features(real.numpy(), fake.numpy()),
            "landscape_is": inception_score(fake_logits)[0],
            "precision": precision, "recall": recall,
            "class_accuracy": float((fake_logits.argmax(1) == labels).float().mean()),
            "reference_fid_real_vs_real": fid_from_features(
                real.numpy(), torch.cat([classifier.features(c) for c in next(iterate_landscapes(
                    n, pipe.height, width, seed=2 * 10**6 + seed))[0].split(batch)]).numpy())}
