"""Distribution metrics on features: Fréchet distance (FID's formula), Inception Score, and precision/recall
of manifolds (Kynkäänniemi et al. 2019, as the ADM evaluator computes them); and on pixels, the detail ratio
(sharpness).

They work on any feature extractor. Scores computed with eqgen's landscape classifier are named as such
(`landscape-FID`), never presented as Inception-FID; Inception-FID needs the standard Inception weights,
which `eqgen eval fid|samples|tokenizer --inception FILE` loads from a local file (evaluation/inception.py).
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import EqgenError


def feature_stats(features: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise EqgenError(f"need at least 2 feature vectors [N, D], got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """‖μ1 − μ2‖² + Tr(Σ1) + Tr(Σ2) − 2 Tr((Σ1Σ2)^½).

    Tr((Σ1Σ2)^½) is the sum of the square roots of the eigenvalues of Σ1Σ2, which are those of the symmetric
    Σ1^½ Σ2 Σ1^½: two symmetric eigendecompositions instead of scipy's `sqrtm` of the non-symmetric product (a
    complex Schur form, ~10× slower at 2048 dimensions and the source of the ε-regularisation other tools need
    when the product is singular). Round-off below zero in the eigenvalues is clipped."""
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise EqgenError(f"statistics of {mu1.shape[-1]}-d and {mu2.shape[-1]}-d features cannot be compared "
                         "(were they made with another feature network?)")
    diff = mu1 - mu2
    values, vectors = np.linalg.eigh(sigma1)
    root = (vectors * np.sqrt(values.clip(min=0))) @ vectors.T
    product = root @ sigma2 @ root
    trace_sqrt = np.sqrt(np.linalg.eigvalsh((product + product.T) / 2).clip(min=0)).sum()
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


def fid_from_features(a, b) -> float:
    return frechet_distance(*feature_stats(a), *feature_stats(b))


def inception_score(logits: np.ndarray | torch.Tensor, splits: int = 1,
                    shuffle_seed: int | None = None) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) ‖ p(y))), mean and std over `splits` consecutive parts (part i: rows i·N//splits up to
    (i+1)·N//splits). shuffle_seed: permute the rows first with numpy's RandomState(seed), as torch-fidelity
    does (seed 2020), so that files written class by class do not give parts of few classes."""
    logits = torch.as_tensor(np.asarray(logits), dtype=torch.float64)
    n = len(logits)
    if n < splits:
        raise EqgenError(f"the Inception Score in {splits} parts needs at least {splits} images, got {n}")
    if shuffle_seed is not None:
        logits = logits[np.random.RandomState(shuffle_seed).permutation(n)]
    p = logits.softmax(dim=1)
    scores = []
    for i in range(splits):
        part = p[i * n // splits:(i + 1) * n // splits]
        marginal = part.mean(dim=0, keepdim=True)
        kl = (part * (part.clamp_min(1e-12).log() - marginal.clamp_min(1e-12).log())).sum(dim=1).mean()
        scores.append(float(kl.exp()))
    return float(np.mean(scores)), float(np.std(scores))


def precision_recall(real: np.ndarray | torch.Tensor, fake: np.ndarray | torch.Tensor, k: int = 3,
                     device: str | torch.device = "cpu", rows: int | None = None) -> tuple[float, float]:
    """Precision: share of fake samples inside the real manifold (the union of balls around the real samples,
    each reaching its k-th nearest real neighbour); recall: share of real samples inside the fake manifold.
    The ADM evaluator's definition (k = 3, a point is inside when its distance is ≤ a radius).

    Distances are computed in float64 on `device`, `rows` query rows at a time (default: blocks of about
    2^25 distances), so 50,000 samples never need the full distance matrix."""
    real, fake = (torch.as_tensor(np.asarray(x), dtype=torch.float64, device=device) for x in (real, fake))
    if len(real) <= k or len(fake) <= k:
        raise EqgenError(f"precision/recall with k={k} needs more than {k} samples on each side")

    def blocks(queries: torch.Tensor, support: torch.Tensor):
        size = rows or max(1, 2**25 // len(support))
        return ((chunk, torch.cdist(chunk, support)) for chunk in queries.split(size))

    def radii(support: torch.Tensor) -> torch.Tensor:   # k + 1: a point's nearest neighbour is itself
        return torch.cat([d.kthvalue(k + 1, dim=1).values for _, d in blocks(support, support)])

    def covered(support: torch.Tensor, queries: torch.Tensor) -> float:
        r = radii(support)
        inside = torch.cat([(d <= r[None]).any(dim=1) for _, d in blocks(queries, support)])
        return float(inside.double().mean())

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
