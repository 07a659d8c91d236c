"""Distribution metrics on features: Fréchet distance (FID's formula), Inception-Score-style score, and
precision/recall of manifolds (Kynkäänniemi et al. 2019); and on pixels, the detail ratio (sharpness).

They work on any feature extractor. Scores computed with eqgen's landscape classifier are named as such
(`landscape-FID`), never presented as Inception-FID; Inception-FID needs the standard Inception weights,
which `eqgen eval samples|tokenizer --inception FILE` loads from a local file (evaluation/inception.py).
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import linalg

from ..errors import EqgenError


def feature_stats(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise EqgenError(f"need at least 2 feature vectors [N, D], got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2(Σ1Σ2)^½), with the usual ε-regularisation when the product is singular."""
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(sigma1)) * 1e-6
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid_from_features(a, b) -> float:
    return frechet_distance(*feature_stats(a), *feature_stats(b))


def inception_score(logits: np.ndarray | torch.Tensor, splits: int = 1) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) ‖ p(y))), mean and std over `splits` chunks."""
    p = torch.as_tensor(np.asarray(logits), dtype=torch.float64).softmax(dim=1)
    scores = []
    for chunk in p.chunk(splits):
        marginal = chunk.mean(dim=0, keepdim=True)
        kl = (chunk * (chunk.clamp_min(1e-12).log() - marginal.clamp_min(1e-12).log())).sum(dim=1).mean()
        scores.append(float(kl.exp()))
    return float(np.mean(scores)), float(np.std(scores))


def precision_recall(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Precision: share of fake samples inside the real manifold (union of k-NN balls around real samples);
    recall: share of real samples inside the fake manifold."""
    real, fake = (torch.as_tensor(np.asarray(x), dtype=torch.float64) for x in (real, fake))
    if len(real) <= k or len(fake) <= k:
        raise EqgenError(f"precision/recall with k={k} needs more than {k} samples on each side")

    def covered(support: torch.Tensor, queries: torch.Tensor) -> float:
        radii = torch.cdist(support, support).kthvalue(k + 1, dim=1).values  # +1: the point itself
        return float((torch.cdist(queries, support) <= radii[None]).any(dim=1).double().mean())

    return covered(real, fake), covered(fake, real)


def detail_ratio(real: torch.Tensor, fake: torch.Tensor) -> float:
    """How much fine detail `fake` keeps: the mean energy of its high frequencies (each image minus its 3×3 box
    blur) over that of `real`, both [B,3,H,W]. 1 = as detailed; a blurred reconstruction scores well below 1,
    invented texture above. Blind to where the detail sits, so read it next to a distance such as FID or PSNR."""
    def energy(x: torch.Tensor) -> torch.Tensor:
        x = x.double()
        blurred = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect"), 3, 1)
        return (x - blurred).pow(2).mean()

    return float(energy(fake) / energy(real).clamp_min(1e-12))
