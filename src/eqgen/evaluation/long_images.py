"""Long-image fidelity: is a panorama as good far from its left edge as near it?

The built-in landscapes are stationary along x, so a ground-truth crop at any horizontal offset is distributed
like any other. Generated panoramas are cut into windows of the training width; for each offset window we
compare simple statistics with renders of the same class at the same offsets:

- colour: the mean RGB of the window (how far it drifts from the class's colours),
- texture: the mean absolute difference between neighbouring columns (detail vs blur or noise),
- seams: the largest column-to-column jump inside the window, against ground truth's (tiling artefacts).

A flat curve over offsets is the equivariance claim made measurable; a curve that bends after
window × depth tokens is drift.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.landscapes import render_batch


@dataclass
class OffsetStats:
    offsets: np.ndarray   # [K] first pixel column of each window
    colour: np.ndarray    # [N, K, 3] mean RGB per image and window (0-255)
    texture: np.ndarray   # [N, K] mean |column difference|
    seam: np.ndarray      # [N, K] largest mean |column difference| between two neighbouring columns


def offset_stats(images: np.ndarray, window: int) -> OffsetStats:
    """images uint8 [N, H, W, 3] cut into W // window windows."""
    x = images.astype(np.float64)
    N, H, W, _ = x.shape
    K = W // window
    x = x[:, :, : K * window].reshape(N, H, K, window, 3)
    jumps = np.abs(np.diff(x, axis=3)).mean(axis=(1, 4))  # [N, K, window-1]
    return OffsetStats(np.arange(K) * window, x.mean(axis=(1, 3)), jumps.mean(axis=2), jumps.max(axis=2))


def drift_table(generated: OffsetStats, truth: OffsetStats) -> list[dict[str, float]]:
    """Per offset: colour distance of the generated mean from the ground-truth mean (in units of the
    ground truth's spread between images), and texture and seam ratios (1 = like the ground truth)."""
    spread = truth.colour.std(axis=0).mean() + 1e-6
    rows = []
    for k, offset in enumerate(generated.offsets):
        colour = np.linalg.norm(generated.colour[:, k].mean(axis=0) - truth.colour[:, k].mean(axis=0)) / spread
        rows.append({"offset": int(offset), "colour_z": float(colour),
                     "texture_ratio": float(generated.texture[:, k].mean() / truth.texture[:, k].mean()),
                     "seam_ratio": float(generated.seam[:, k].mean() / truth.seam[:, k].mean())})
    return rows


def drift_summary(rows: list[dict[str, float]]) -> dict[str, tuple[float, float]]:
    """Each statistic's mean over the first and over the last quarter of the offsets: equal pairs = no drift."""
    quarter = max(1, len(rows) // 4)
    return {key: (float(np.mean([r[key] for r in rows[:quarter]])), float(np.mean([r[key] for r in rows[-quarter:]])))
            for key in ("colour_z", "texture_ratio", "seam_ratio")}


def ground_truth(cls: str, n: int, width: int, height: int, seed: int = 10**6) -> np.ndarray:
    """n renders of the class at the panoramas' size, from seeds no training run uses."""
    return render_batch([cls] * n, [seed + i for i in range(n)], width, height)


def panorama_drift(pipe, cls: str | int, multiple: int, images: int, options) -> list[dict[str, float]]:
    """`eqgen eval long`: `images` panoramas of `multiple` × the training width (seeds options.seed + i) against
    renders of the class, one row per training-width window (`drift_table`)."""
    cls = pipe.classes[int(pipe.labels(cls))]  # a name or an index: the renders need the name
    window = pipe.generator.config.train_tokens * pipe.token_width
    width = window * multiple
    truth = ground_truth(cls, max(images, 8), width, pipe.height)  # before the panoramas: fails fast
    seed = options.seed or 0
    panoramas = np.stack([pipe.panorama(cls, width, progress=False, options=options, seed=seed + i)
                          for i in range(images)])
    return drift_table(offset_stats(panoramas, window), offset_stats(truth, window))
